"""``await job.statistics()``: a running job's figures as one frozen record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._control import JobControl

__all__ = ("JobStatistics", "WorkerLoad", "job_statistics")


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """One worker's share of the work, since its attempt started.

    Attributes:
        worker: the worker id.
        records_in: records its source splits read.
        records_out: records its last stage emitted to the sink.
        mailbox_depth: messages waiting in its actors' mailboxes now (a backlog).
        key_groups: key groups it owns now.
        records_crossing: records it sent to key groups on other workers (each crossing
            costs encoding, a socket and decoding: a key-partitioned source keeps its records
            off this count at the first keyed operator).
    """

    worker: int
    records_in: int
    records_out: int
    mailbox_depth: int
    key_groups: int
    records_crossing: int = 0


@dataclass(frozen=True, slots=True)
class JobStatistics:
    """A running job's figures (see :meth:`Job.statistics`).

    Attributes:
        records_in: records read. After a restart from a checkpoint: the checkpoint's count
            plus what was read since, so a record reread after a failure counts once.
        records_out: records the last stage emitted (likewise).
        dead_letters: records that went to the dead-letter sink in the current attempt.
        workers: how many workers the job runs on now.
        per_worker: each active worker's :class:`WorkerLoad`, by worker id.
        placement_version: the placement table's version (+1 per applied change).
        checkpoints_completed / checkpoints_failed: checkpoints so far (0 with checkpoints
            off).
        last_checkpoint: the newest completed epoch (0: none).
        migrations: key groups and splits moved live so far (rescales and rebalances).
        rescales: rescales completed.
        restarts: recoveries from a failure (a new attempt each).
        uptime_s: seconds since the job was started (the host's event-loop clock).
    """

    records_in: int
    records_out: int
    dead_letters: int
    workers: int
    per_worker: tuple[WorkerLoad, ...]
    placement_version: int
    checkpoints_completed: int
    checkpoints_failed: int
    last_checkpoint: int
    migrations: int
    rescales: int
    restarts: int
    uptime_s: float


def job_statistics(
    control: JobControl, reports: Sequence[dict[str, Any]], uptime_s: float
) -> JobStatistics:
    """The record for ``control``'s attempt from its workers' ``reports``."""
    supervisor = control.supervisor
    coordinator = supervisor.coordinator
    rescaler = supervisor.rescaler
    retired = list(rescaler.retired_reports) if rescaler is not None else []
    everyone = [*reports, *retired]
    # What the checkpoint this attempt started from had counted (see CheckpointCoordinator).
    counted: dict[str, int] = dict(getattr(coordinator, "_counted", None) or {})
    checkpoints = coordinator.statistics() if coordinator is not None else None
    return JobStatistics(
        records_in=counted.get("records_in", 0) + sum(int(r["records_in"]) for r in everyone),
        records_out=counted.get("records_out", 0) + sum(int(r["records_out"]) for r in everyone),
        dead_letters=sum(int(r["dead_letters"]) for r in everyone),
        workers=control.workers,
        per_worker=tuple(
            WorkerLoad(
                worker=int(r["worker"]),
                records_in=int(r["records_in"]),
                records_out=int(r["records_out"]),
                mailbox_depth=int(r["mailbox_depth"]),
                key_groups=int(r["key_groups"]),
                records_crossing=int(r.get("records_crossing", 0)),
            )
            for r in sorted(reports, key=lambda r: int(r["worker"]))
        ),
        placement_version=supervisor.placement.version,
        checkpoints_completed=0 if checkpoints is None else checkpoints.completed,
        checkpoints_failed=0 if checkpoints is None else checkpoints.failed,
        last_checkpoint=0 if checkpoints is None else checkpoints.last_completed,
        migrations=0 if rescaler is None else len(rescaler.scaling.moves),
        rescales=0 if rescaler is None else len(rescaler.scaling.rescales),
        restarts=0 if checkpoints is None else len(checkpoints.recoveries_s),
        uptime_s=uptime_s,
    )
