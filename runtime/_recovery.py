"""Recovery: restart a failed job from its last completed checkpoint, within a restart budget.

A job runs as a series of *attempts*. The first starts from nothing (or, resuming, from the
latest checkpoint of an earlier run). When a worker fails (a process killed with SIGKILL, an
engine error in one of its actors), the attempt ends: every worker of it is stopped, and the
next attempt starts every worker afresh from the newest checkpoint whose manifest is complete
(:func:`recovery_point`): each key group comes back to that checkpoint's epoch (from its own
LMDB when its committed epoch provably matches, else from the checkpoint's files), each split
reopens at the position recorded there, and the records after it are read again. State is then
exactly as if each record had been applied once.

Restarting every worker, not only the failed one, is the choice Flink makes by default
(``full`` failover): records in flight between workers, half-aligned barriers and credits are
spread over all of them, and a restart of all is the one state that is simple to get right.
The cost is bounded by the local fast path: a surviving worker's key groups restore from their
own LMDB without reading any checkpoint file.

The budget: ``max_restarts`` consecutive failures with no checkpoint completed between them
(a crash loop makes no progress; sporadic failures of a long job do), each restart waiting
``restart_backoff`` seconds, doubled after each consecutive failure (at most
``MAX_BACKOFF_S``). Past the budget the job fails with :class:`JobError` naming the last cause.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import anyio
from shoal.actors._log import get_logger
from shoal.storage import CheckpointCorruptError, CheckpointStore, Manifest

from ._checkpoints import CheckpointCoordinator
from ._exceptions import JobError

__all__ = ("MAX_BACKOFF_S", "AttemptFailed", "Attempts", "StartPoint", "recovery_point")

log = get_logger("shoal.recovery")

T = TypeVar("T")

MAX_BACKOFF_S = 10.0


@dataclass(frozen=True, slots=True)
class StartPoint:
    """Where one attempt of a job starts.

    Attributes:
        attempt: 0 for the first start, then 1, 2, ... after each recovery.
        restoring: Key groups and splits are brought back to ``manifest`` (False: a fresh run,
            nothing to restore).
        manifest: The checkpoint to restore (None with ``restoring``: none had completed, so
            state starts empty and every split from its beginning).
    """

    attempt: int = 0
    restoring: bool = False
    manifest: Manifest | None = None
    #: The savepoint ``manifest`` is of (None: it is a checkpoint of the job's own store).
    savepoint: str | None = None

    @property
    def epoch(self) -> int:
        return 0 if self.manifest is None else self.manifest.epoch

    @property
    def counted(self) -> dict[str, int] | None:
        """What the job had counted at this start (``records_in``, ``records_out``: each
        record once, see ``Manifest.counters``): nothing for a fresh start or when no checkpoint
        had completed, the manifest's counters, or None when the manifest recorded none."""
        if self.manifest is None:
            return {}
        counters = self.manifest.counters
        return None if counters is None else dict(counters)

    @property
    def base(self) -> int:
        """The checkpoint of the job's store that the next files can build on (0: none; a
        savepoint is not in the store, so the first checkpoint after it is full)."""
        return 0 if self.savepoint is not None else self.epoch


class AttemptFailed(Exception):
    """An attempt ended by a failure that restarting from a checkpoint can repair."""

    def __init__(self, error: JobError, *, noticed: float, corrupt: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.noticed = noticed  # perf_counter when the driver noticed the failure
        self.corrupt = corrupt  # the failure was a checkpoint file failing its checksum


def recovery_point(
    store: CheckpointStore, *, attempt: int, skip: set[int] | frozenset[int] = frozenset()
) -> StartPoint:
    """The newest complete checkpoint in ``store`` not in ``skip``, as a restoring start.

    Files are checked for presence and size here (cheap); their checksums are verified as a
    key group reads them, and a checkpoint that fails is skipped by the next attempt.
    """

    def skipped(epoch: int, error: CheckpointCorruptError) -> None:
        log.warning("checkpoint skipped for recovery", epoch=epoch, error=str(error))

    manifest = store.latest_complete(verify=False, on_skip=skipped, exclude=skip)
    return StartPoint(attempt=attempt, restoring=True, manifest=manifest)


def _restart_point(
    store: CheckpointStore, attempt: int, bad: set[int], damaged: str | None
) -> StartPoint:
    # The files of checkpoints the failed attempt left incomplete: their writers are gone, and
    # the next attempt reuses their epochs.
    store.discard_incomplete()
    if damaged is not None:
        # Every checkpoint whose chains hold the damaged file (a full under later deltas) is
        # as unusable as the one that found it: skip them all at once, not one failure each.
        for epoch in store.epochs():
            try:
                if any(record.path == damaged for record in store.read_manifest(epoch).files()):
                    bad.add(epoch)
            except CheckpointCorruptError:
                bad.add(epoch)
    return recovery_point(store, attempt=attempt, skip=bad)


# "...CheckpointCorruptError: data/<epoch>/<operator>/kg-<n>.<kind>: checksum mismatch": the
# file a restore found damaged, as the failure's message carries it across processes.
_DAMAGED = re.compile(r"CheckpointCorruptError: (data/\S+?): (.+)$")


def damaged_file(message: str) -> tuple[str, str] | None:
    """``(file, what is wrong)`` named by a restore's CheckpointCorruptError in ``message``."""
    found = _DAMAGED.search(message)
    return None if found is None else (found[1], found[2])


@dataclass(slots=True)
class Attempts:
    """Runs a job's attempts until one finishes or the restart budget is spent."""

    max_restarts: int
    backoff_s: float
    coordinator: CheckpointCoordinator | None
    store: CheckpointStore | None
    #: Seconds from a failure being noticed to the next attempt's sources running, per recovery.
    recoveries: list[float] = field(default_factory=list)
    #: Where the current (in the end: the last) attempt started.
    current: StartPoint = field(default_factory=StartPoint)
    #: Where the first attempt whose sources ran started: the run's start point, or the
    #: older checkpoint it fell back to when the one it was to resume from was damaged.
    first_running: StartPoint | None = None
    _noticed: float | None = None

    def running(self) -> None:
        """The current attempt's sources run: a recovery in progress is complete."""
        if self.first_running is None:
            self.first_running = self.current
        if self._noticed is not None:
            seconds = time.perf_counter() - self._noticed
            self.recoveries.append(seconds)
            if self.coordinator is not None:  # for Progress.checkpoints and the metrics
                self.coordinator.figures.recovered(seconds)
            self._noticed = None

    async def run(
        self, start: StartPoint, attempt: Callable[[StartPoint], Awaitable[T]], job: str
    ) -> T:
        first = start
        failures = 0  # consecutive, with no checkpoint completed in between
        completed_before = self._completed()
        bad: set[int] = set()
        while True:
            self.current = start
            try:
                return await attempt(start)
            except AttemptFailed as failed:
                if self.coordinator is None or self.store is None:
                    raise failed.error from None
                if self._completed() > completed_before:
                    failures = 0
                completed_before = self._completed()
                failures += 1
                damaged = damaged_file(str(failed.error)) if failed.corrupt else None
                if failed.corrupt and start.manifest is not None:
                    bad.add(start.epoch)
                if failures > self.max_restarts:
                    raise JobError(
                        f"job {job!r} failed {failures} times in a row with no checkpoint "
                        f"completed in between (max_restarts={self.max_restarts}); last "
                        f"failure: {failed.error}"
                    ) from failed.error
                if self._noticed is None:  # else a recovery failed: it lasts until one runs
                    self._noticed = failed.noticed
                delay = min(MAX_BACKOFF_S, self.backoff_s * 2 ** (failures - 1))
                start = await anyio.to_thread.run_sync(
                    _restart_point,
                    self.store,
                    start.attempt + 1,
                    bad,
                    None if damaged is None else damaged[0],
                )
                if first.savepoint is not None and start.epoch < first.epoch:
                    # No checkpoint since the job started from a savepoint: from it again.
                    start = replace(first, attempt=start.attempt)
                if damaged is not None:
                    # One line that says it all: a damaged file is no bug and no crash, and
                    # the recovery that follows is the documented one.
                    log.warning(
                        f"checkpoint file {damaged[0]} is damaged ({damaged[1]}); restarting "
                        + (
                            f"from checkpoint {start.epoch}, the newest that does not use it"
                            if start.manifest is not None
                            else "from the beginning: no checkpoint without it is left"
                        ),
                        job=job,
                        skipped=sorted(bad),
                        attempt=start.attempt,
                    )
                else:
                    log.warning(
                        "job failed; restarting from the last completed checkpoint",
                        job=job,
                        error=str(failed.error),
                        attempt=start.attempt,
                        epoch=start.epoch,
                        backoff_s=delay,
                    )
                self.coordinator.restart(
                    restored=start.base,
                    first_epoch=max(self.store.epochs(), default=0) + 1,
                    counted=start.counted,
                )
                await anyio.sleep(delay)

    def _completed(self) -> int:
        return 0 if self.coordinator is None else len(self.coordinator.completed)
