"""The checkpoint coordinator: which checkpoint is in flight, who has acked, when it completes.

The job supervisor owns one. ``begin()`` opens checkpoint ``n`` (at most one at a time, as
Flink's default); the supervisor then tells every worker controller ``InjectBarrier(n)``, and
every key group that has already drained ``SnapshotDrained(n)`` (``owing()``). Every source
actor acks with its split's position, every key-group actor with the record of the file its
snapshot wrote (``BarrierAck``). Once every part has acked, ``ack`` returns the checkpoint
*ready* (:class:`ReadyCheckpoint`): the supervisor writes its manifest, and only then calls
``committed(n)``, which counts it completed. A part that failed, a failed manifest, or a
checkpoint older than ``timeout_s`` (while still collecting acks) aborts it: counted, logged,
and the next one is tried; acks of an aborted checkpoint are ignored.

Pure bookkeeping with an injected clock: no I/O, no awaiting, testable alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.actors._log import get_logger

from ._checkpoint_stats import CheckpointFigures, CheckpointStatistics
from ._messages import BarrierAck

__all__ = (
    "CheckpointCoordinator",
    "CheckpointStatistics",
    "CompletedCheckpoint",
    "ReadyCheckpoint",
)

log = get_logger("shoal.checkpoint")

#: A checkpoint not complete after this long is aborted (a stuck or lost part).
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class CompletedCheckpoint:
    """A checkpoint every part acknowledged.

    Attributes:
        epoch: the checkpoint's number (1, 2, ...).
        positions: split -> position to reopen it at (``None``: from its start).
        key_groups: key-group actor name -> what its snapshot reported (entries, bytes,
            written, pause_s, alignment_s); drained key groups are absent.
        duration_s: from trigger to the manifest written.
        manifest_s: writing the manifest (0.0 when the job has no checkpoint store).
    """

    epoch: int
    positions: dict[str, Any]
    key_groups: dict[str, dict[str, Any]]
    duration_s: float
    manifest_s: float = 0.0

    @property
    def max_pause_s(self) -> float:
        """The longest processing pause of one key group for this checkpoint (its flush)."""
        return max((s.get("pause_s", 0.0) for s in self.key_groups.values()), default=0.0)


@dataclass(slots=True)
class ReadyCheckpoint:
    """A checkpoint every part acknowledged, whose manifest is still to be written.

    Attributes:
        epoch: the checkpoint's number.
        started: the clock when it was triggered.
        positions: split -> position, from the sources' acks.
        key_groups: key-group actor name -> its ack's stats (``stats["record"]``: the
            ``GroupRecord.to_data()`` of its file, when the job has a checkpoint store).
        sources_acked: the sources that acked.
    """

    epoch: int
    started: float
    positions: dict[str, Any] = field(default_factory=dict)
    key_groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources_acked: set[str] = field(default_factory=set)
    #: Records the sources read and the last stage emitted since the attempt started, up to
    #: this barrier (summed from the acks' ``records_in`` and ``records_out``).
    records_in: int = 0
    records_out: int = 0
    committing: bool = False
    #: Set when a part failed: the checkpoint is aborted, but stays in flight until every
    #: key group that writes a file for it has reported, so that its files are removed only
    #: once no writer is still writing them, and no key group is asked for the next epoch
    #: while its previous file is being written.
    failed: str | None = None
    #: Drained key groups asked for their part (they report like the others).
    asked: set[str] = field(default_factory=set)

    def records(self) -> list[dict[str, Any]]:
        """Every key group's file record (plain data), for the manifest."""
        return [stats["record"] for stats in self.key_groups.values() if "record" in stats]


class CheckpointCoordinator:
    """Tracks checkpoints of one job (see the module docstring)."""

    def __init__(
        self,
        *,
        sources: Iterable[str],
        key_groups: Iterable[str],
        clock: Callable[[], float],
        timeout_s: float = DEFAULT_TIMEOUT_S,
        first_epoch: int = 1,
    ) -> None:
        self.sources = frozenset(sources)
        self.key_groups = frozenset(key_groups)
        self.clock = clock
        self.timeout_s = timeout_s
        self.drained: set[str] = set()
        self.completed: list[CompletedCheckpoint] = []
        #: Durations, pauses, bytes written of the completed checkpoints (statistics());
        #: the supervisor adds each recovery with ``figures.recovered(seconds)``.
        self.figures = CheckpointFigures()
        self.failed = 0
        self.skipped = 0
        self._next = first_epoch
        self._pending: ReadyCheckpoint | None = None
        # The checkpoint the job was restored from (0: none); deltas build on it until one of
        # this run completes.
        self._restored = 0
        self._completed_at_restart = 0
        # What the job had counted at the checkpoint this attempt started from (None: unknown,
        # it predates the counters; then no manifest of this job claims totals).
        self._counted: Mapping[str, int] | None = {}

    @property
    def next_epoch(self) -> int:
        """The epoch the next checkpoint will have."""
        return self._next

    @property
    def base(self) -> int:
        """The checkpoint key groups' next files build on: the newest completed since the
        job (re)started, else the one it was restored from (0: none)."""
        if len(self.completed) > self._completed_at_restart:
            return self.completed[-1].epoch
        return self._restored

    def restart(
        self, *, restored: int, first_epoch: int, counted: Mapping[str, int] | None = None
    ) -> None:
        """The job restarts from checkpoint ``restored`` (0: from nothing): a checkpoint in
        flight is failed, drained key groups run again, epochs go on from ``first_epoch``.
        ``counted``: the counters of the checkpoint it restarts from (``{}``: from nothing,
        None: that checkpoint recorded none)."""
        self.abort("the job restarts after a failure")
        self.drained.clear()
        self._restored = restored
        self._completed_at_restart = len(self.completed)
        self._next = max(self._next, first_epoch)
        self._counted = counted

    def counters(self, ready: ReadyCheckpoint) -> dict[str, int] | None:
        """The job's counters at checkpoint ``ready`` (for its manifest): what was counted at
        the attempt's start point plus what the attempt's sources read and its last stage
        emitted up to the barrier, so each record is counted once across restarts and
        resumed runs. None when the start point's counters are unknown."""
        if self._counted is None:
            return None
        return {
            "records_in": self._counted.get("records_in", 0) + ready.records_in,
            "records_out": self._counted.get("records_out", 0) + ready.records_out,
        }

    @property
    def in_progress(self) -> int | None:
        return None if self._pending is None else self._pending.epoch

    @property
    def last_completed(self) -> CompletedCheckpoint | None:
        return self.completed[-1] if self.completed else None

    @property
    def pending(self) -> ReadyCheckpoint | None:
        """The checkpoint in flight (collecting acks or being committed), or None."""
        return self._pending

    def owing(self) -> list[str]:
        """Drained key groups the checkpoint in flight still needs a snapshot from."""
        pending = self._pending
        if pending is None or pending.committing or pending.failed is not None:
            return []
        return sorted((self.drained & self.key_groups) - pending.key_groups.keys())

    def asked(self, actors: Iterable[str]) -> None:
        """The supervisor asked these drained key groups for their part of the checkpoint in
        flight: if it fails, wait for their reports too before dropping it."""
        if self._pending is not None:
            self._pending.asked.update(actors)

    def begin(self) -> int | None:
        """Open the next checkpoint and return its epoch; None while one is still in flight."""
        if self._pending is not None:
            self.skipped += 1
            return None
        epoch = self._next
        self._next += 1
        self._pending = ReadyCheckpoint(epoch, self.clock())
        return epoch

    def ack(self, ack: BarrierAck) -> ReadyCheckpoint | None:
        """Record one part; return the checkpoint if this ack made it ready to commit."""
        pending = self._pending
        if pending is None or ack.epoch != pending.epoch or pending.committing:
            return None  # an aborted (or unknown) checkpoint's late ack
        if pending.failed is not None:
            pending.key_groups[ack.actor] = {}
            self._finish_failed()
            return None
        if ack.error is not None:
            pending.failed = ack.error
            self.failed += 1
            log.warning("checkpoint aborted", epoch=pending.epoch, reason=ack.error)
            pending.key_groups[ack.actor] = {}
            self._finish_failed()
            return None
        if ack.actor in self.sources:
            pending.sources_acked.add(ack.actor)
            pending.positions.update(ack.positions)
        else:
            pending.key_groups[ack.actor] = dict(ack.stats)
        pending.records_in += ack.stats.get("records_in", 0)
        pending.records_out += ack.stats.get("records_out", 0)
        return self._complete_if_done()

    def drain(self, actor: str) -> bool:
        """``actor`` drained: it takes no more barriers.

        Returns:
            True when the checkpoint in flight still needs ``actor``'s part: ask it with
            ``SnapshotDrained`` (its state is final, so any time after its drain will do).
        """
        self.drained.add(actor)
        pending = self._pending
        if pending is not None and pending.failed is not None:
            self._finish_failed()
            return False
        return actor in self.owing()

    def _finish_failed(self) -> None:
        """Drop a failed checkpoint once every key group that may write a file for it has
        reported: the non-drained ones (barrier ``n`` reaches each) and the drained ones that
        were asked."""
        pending = self._pending
        assert pending is not None
        expected = (self.key_groups - self.drained) | pending.asked
        if expected <= pending.key_groups.keys():
            self._pending = None

    def committed(self, epoch: int, *, manifest_s: float = 0.0) -> CompletedCheckpoint | None:
        """Checkpoint ``epoch``'s manifest is written: it is complete."""
        pending = self._pending
        if pending is None or pending.epoch != epoch or not pending.committing:
            return None
        self._pending = None
        done = CompletedCheckpoint(
            pending.epoch,
            pending.positions,
            pending.key_groups,
            self.clock() - pending.started,
            manifest_s,
        )
        self.completed.append(done)
        written = self.figures.add(done.epoch, done.duration_s, done.key_groups)
        log.info(
            "checkpoint completed", manifest_ms=round(manifest_s * 1000, 2), **written.log_fields()
        )
        return done

    def abort(self, reason: str, *, failed: bool = True) -> int | None:
        """Give up the checkpoint in flight; return its epoch (None: there was none).

        ``failed=False`` when the job ended under it: abandoned, not counted as failed.
        """
        pending = self._pending
        if pending is None:
            return None
        self._pending = None
        if pending.failed is not None:
            return pending.epoch  # counted and logged when its part failed
        if failed:
            self.failed += 1
            log.warning("checkpoint aborted", epoch=pending.epoch, reason=reason)
        else:
            log.info("checkpoint abandoned", epoch=pending.epoch, reason=reason)
        return pending.epoch

    def expire(self) -> int | None:
        """Abort the checkpoint in flight if it is older than ``timeout_s`` and still
        collecting acks (a manifest being written always reports back); return its epoch."""
        pending = self._pending
        if (
            pending is not None
            and not pending.committing
            and self.clock() - pending.started > self.timeout_s
        ):
            missing = sorted(
                (self.sources - pending.sources_acked)
                | (self.key_groups - pending.key_groups.keys())
            )
            return self.abort(f"timed out after {self.timeout_s} s waiting for {missing[:5]}")
        return None

    def _complete_if_done(self) -> ReadyCheckpoint | None:
        """Every source and every key group (drained ones included) acked: ready to commit."""
        pending = self._pending
        assert pending is not None
        if pending.sources_acked != self.sources:
            return None
        if not self.key_groups <= pending.key_groups.keys():
            return None
        pending.committing = True
        return pending

    def statistics(self) -> CheckpointStatistics:
        """Counts and figures of every checkpoint so far (see ``_checkpoint_stats``)."""
        return self.figures.statistics(failed=self.failed, skipped=self.skipped)
