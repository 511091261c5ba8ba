"""Checkpoint files off the event loop: the worker's writer and the driver's manifest commit.

A key group commits its epoch locally at the barrier (the processing pause) and hands a
:class:`WriteSnapshot` to its worker's :class:`CheckpointWriter`, then goes straight back to
processing records. The writer writes the key group's file with the checkpoint store in a
worker thread (``anyio.to_thread``): a delta over the checkpoint's base when the store's plan
allows, else a full from the snapshot taken right after the flush. It closes the snapshot and
acks the coordinator with the file's record (``GroupRecord.to_data()``), or with the error.

On the driver, :func:`commit_checkpoint` writes the manifest, also in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel
from shoal.actors import Actor, Ref
from shoal.actors._log import get_logger
from shoal.storage import CheckpointError, CheckpointStore, GroupRecord, Manifest

from ._faults import Faults
from ._messages import BarrierAck, WriteSnapshot

__all__ = ("CheckpointWriter", "abort_checkpoint", "commit_checkpoint", "write_snapshot")

log = get_logger("shoal.checkpoint")

#: Key-group files of at most this many entries are written on the event loop, as many of
#: them per loop turn as fit in this many entries (~15-20 ms here); larger files go to a
#: worker thread. Why not always a thread: against a busy event loop a thread pays a GIL
#: convoy on every system call (it gets the GIL back only at the loop's next switch
#: interval, 5 ms): on this 2-core machine five small files, 10 ms of work, took 2.2 s in a
#: thread while the loop processed records. Why not one file per turn: a turn of a busy loop
#: is a whole batch (~17 ms), so 128 files took ~2 s. On the loop a small file costs its
#: encoding (~1 us an entry) and one fsync (~0.2 ms here).
LOOP_WRITE_ENTRIES = 16384


def job_entries(job: WriteSnapshot) -> int:
    """How many entries ``job``'s file holds at most (its delta, else the whole state)."""
    if job.delta is not None and job.base > 0 and job.delta.since == job.base:
        return len(job.delta)
    return int(job.stats.get("entries", 0))


def write_snapshot(store: CheckpointStore, job: WriteSnapshot) -> GroupRecord:
    """Write ``job``'s key-group file (blocking: run it in a thread) and close its snapshot.

    A delta when there is a base the store's plan accepts and ``job.delta`` is relative to it;
    otherwise a full from the snapshot. An unchanged key group writes no file and keeps its
    chain (``write_delta`` of an empty delta).

    Raises:
        CheckpointError: Writing failed (``CheckpointWriteError`` for the filesystem).
    """
    snapshot = job.snapshot
    try:
        operator, key_group = snapshot.operator, snapshot.key_group
        base = job.base if job.base > 0 else None
        delta = job.delta
        if (
            base is not None
            and delta is not None
            and delta.since == base
            and store.plan(operator, key_group, base) == "delta"
        ):
            return store.write_delta(job.epoch, delta, base)
        return store.write_full(job.epoch, operator, key_group, snapshot.entries())
    finally:
        snapshot.close()


class CheckpointWriter(Actor):
    """Writes the checkpoint files of one worker's key groups in a worker thread.

    One per worker. A key group appends its :class:`WriteSnapshot` to ``queue`` (the worker's
    ``pending_snapshots`` order) and tells the writer the job; the writer takes every job queued
    by then and writes them all in ONE thread call: a busy event loop hands a thread's result
    back only between batches, so one round trip per file would make a checkpoint of 128 key
    groups wait 128 loop turns. Each job is acked on its own (its record, or its error). Its
    mailbox holds one message per key group per checkpoint (only one checkpoint is in flight),
    so a key group never waits on it. When the worker stops, the writer closes the snapshots it
    will not write (a snapshot must be closed before its store); each key group waits for its
    own.
    """

    def __init__(
        self,
        store: CheckpointStore,
        job_actor: Ref,
        pending: set[WriteSnapshot],
        faults: Faults | None = None,
    ) -> None:
        self.store = store
        self.job_actor = job_actor
        self.pending = pending
        self.faults = faults if faults is not None else Faults()

    async def receive(self, message: Any) -> Any:
        if message == "settle":
            return None  # every write queued before this ask is done and acked
        if type(message) is not WriteSnapshot:
            raise TypeError(f"checkpoint writer got an unexpected message {message!r}")
        jobs = [job for job in self.pending if not job.started]
        if not jobs:
            return None  # written with an earlier batch
        jobs.sort(key=lambda job: (job.epoch, job.actor))
        for job in jobs:
            job.started = True
        started = time.perf_counter()
        # Small files on the loop, one per turn; large ones together in one thread call (see
        # LOOP_WRITE_ENTRIES).
        large = [job for job in jobs if job_entries(job) > LOOP_WRITE_ENTRIES]
        written: dict[int, GroupRecord | str] = {}
        if large:
            for job, outcome in zip(
                large, await anyio.to_thread.run_sync(self._write_all, large), strict=True
            ):
                written[id(job)] = outcome
        budget = LOOP_WRITE_ENTRIES
        for job in jobs:
            if id(job) not in written:
                if budget <= 0:
                    # This turn's share is written: let the records flow for one turn. (One
                    # file per turn made 128 files wait 128 turns of a busy loop: ~2 s.)
                    await anyio.lowlevel.checkpoint()
                    budget = LOOP_WRITE_ENTRIES
                written[id(job)] = self._write_all([job])[0]
                budget -= max(1, job_entries(job))
        results = [written[id(job)] for job in jobs]
        write_s = time.perf_counter() - started
        for job, outcome in zip(jobs, results, strict=True):
            self._done(job)
            stats = dict(job.stats)
            stats["write_s"] = write_s
            error: str | None = None
            if isinstance(outcome, GroupRecord):
                stats["record"] = outcome.to_data()
                stats["file_bytes"] = sum(f.size for f in outcome.chain if f.epoch == job.epoch)
            else:
                error = f"{job.actor}: checkpoint {job.epoch}: {outcome}"
                log.warning(
                    "checkpoint file write failed", epoch=job.epoch, actor=job.actor, error=outcome
                )
            await self.job_actor.tell(
                BarrierAck(job.epoch, job.actor, job.worker, {}, stats, error)
            )
        return None

    def _write_all(self, jobs: list[WriteSnapshot]) -> list[GroupRecord | str]:
        results: list[GroupRecord | str] = []
        for job in jobs:
            try:
                self.faults.hit("checkpoint.write")
                results.append(write_snapshot(self.store, job))
            except (CheckpointError, OSError) as exc:
                results.append(str(exc))
        return results

    def _done(self, job: WriteSnapshot) -> None:
        self.pending.discard(job)
        job.done.set()

    async def on_stop(self) -> None:
        # Snapshots of messages this writer will never handle: close them before their stores.
        for job in list(self.pending):
            if not job.started:
                job.snapshot.close()
                self._done(job)


def commit_checkpoint(
    store: CheckpointStore,
    epoch: int,
    records: Sequence[Mapping[str, Any]],
    *,
    num_key_groups: int,
    operators: Mapping[str, Sequence[Mapping[str, str]]],
    positions: Mapping[str, Any],
    layout: Any,
    counters: Mapping[str, int] | None = None,
) -> Manifest:
    """Write checkpoint ``epoch``'s manifest (blocking: run it in a thread).

    Raises:
        CheckpointError: A record is missing, or the manifest could not be written (the
            store has then removed the checkpoint's files).
    """
    return store.commit(
        epoch,
        [GroupRecord.from_data(record) for record in records],
        num_key_groups=num_key_groups,
        operators=operators,
        positions=dict(positions),
        layout=layout,
        counters=None if counters is None else dict(counters),
    )


def abort_checkpoint(store: CheckpointStore, epoch: int) -> None:
    """Remove the files of checkpoint ``epoch`` (blocking); failures are logged, not raised:
    files left behind are deleted by the retention of a later commit."""
    try:
        store.abort(epoch)
    except (CheckpointError, OSError) as exc:
        log.warning("could not remove an aborted checkpoint's files", epoch=epoch, error=str(exc))
