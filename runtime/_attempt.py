"""What both ways of running a job share: the validated run (:class:`Run`), the driver's
supervisor and coordinator, its companion tasks (progress, stop, checkpoint trigger, timeline)
and the result of an attempt. One attempt is one start of every worker (see ``_recovery``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from shoal.actors import (
    ActorStoppedError,
    PeerLostError,
    Ref,
    Worker,
)
from shoal.actors._log import get_logger
from shoal.storage import (
    CheckpointError,
    CheckpointStore,
    LmdbBackend,
    StateBackend,
)

from ._checkpoints import CheckpointCoordinator, CheckpointStatistics
from ._control import JobControl
from ._control_socket import serve_control
from ._faults import Fault
from ._load import LoadMonitor, hot_key_summary
from ._messages import StartSources, TriggerCheckpoint
from ._names import JOB_ACTOR, shipper_name, source_actor_name
from ._placement import Placement
from ._plan import Plan, actor_name
from ._policies import AutoRebalance, run_auto_rebalance
from ._recovery import Attempts, StartPoint
from ._rescale import DEFAULT_MAX_MOVES, Rescaler, Scaling
from ._result import JobResult, Progress, ResumedFrom, TemporaryState
from ._sinks import DeadLetterSink, SinkPartition
from ._supervisor import CheckpointTarget, JobSupervisor
from ._time import Clock
from ._timeline import TimelineRunner
from ._worker import place_workers
from ._worker_state import WorkerDirsBackend, tidy_worker_state, worker_state_root

__all__ = (
    "DEFAULT_LINK_BUFFER",
    "ClosesOnce",
    "Run",
    "attempt_control",
    "attempt_result",
    "make_attempts",
    "make_supervisor",
    "recover_sink",
    "start_and_wait",
    "start_companions",
)

log = get_logger("shoal.job")

# Bytes buffered per peer link (and asked for as kernel socket buffers): with the ~200 KiB
# default socket buffers a peer moved at most that much per event-loop turn (~350k records/s).
DEFAULT_LINK_BUFFER = 4 * 1024 * 1024


_PROGRESS_INTERVAL_S = 0.5


class ClosesOnce:
    """A sink partition whose ``aclose`` runs once, whoever calls it first (finish or failure)."""

    __slots__ = ("_closed", "_partition")

    def __init__(self, partition: SinkPartition) -> None:
        self._partition = partition
        self._closed = False

    async def write_batch(self, items: list[Any]) -> None:
        await self._partition.write_batch(items)

    # A transactional partition's phases (see _txn_sink.py), passed through.
    async def write_epoch(self, epoch: int, items: list[Any]) -> None:
        await self._partition.write_epoch(epoch, items)  # type: ignore[attr-defined]

    async def pre_commit(self, epoch: int) -> None:
        await self._partition.pre_commit(epoch)  # type: ignore[attr-defined]

    async def commit(self, epoch: int) -> None:
        await self._partition.commit(epoch)  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._partition.aclose()


@dataclass(frozen=True, slots=True)
class Run:
    """What both ways of running a job need, validated once by :func:`run_job`."""

    plan: Plan
    state_dir: Path
    temporary: bool
    run_id: str
    dlq: DeadLetterSink
    batch_size: int
    mailbox_size: int
    on_progress: Callable[[Progress], None] | None
    stop: anyio.Event | None
    log_format: str
    log_level: str
    checkpoint_interval: float | None = None
    link_buffer: int = DEFAULT_LINK_BUFFER
    checkpoint_dir: str | None = None
    max_restarts: int = 3
    restart_backoff: float = 0.1
    faults: tuple[Fault, ...] = ()
    start: StartPoint = field(default_factory=StartPoint)
    timeline: TimelineRunner | None = None
    clock: Clock | None = None  # None: the system clock
    # Key groups moved at once by a rescale (its pacing; see _rescale.py).
    max_moves: int = DEFAULT_MAX_MOVES
    # Records queued for a moving key group before its senders hold (None: the default).
    move_hold_records: int | None = None
    # The job's worker count (a rescale changes it) and the moves made, across attempts.
    scaling: Scaling = field(default_factory=lambda: Scaling(1))
    # Where the running job listens for `shoal rescale` / `shoal status` (None: nowhere).
    control_socket: Path | None = None
    # Told each attempt's JobControl when it starts, and None when it ends (start_job's Job).
    on_control: Callable[[JobControl | None], None] | None = None
    # Rebalance on a persistent skew (None: only when asked; see _policies.py).
    auto_rebalance: AutoRebalance | None = None
    # A state directory per worker: moving key groups are shipped (see _worker_state.py).
    per_worker_state: bool = False
    # Bytes of cached state a worker may hold (None: no budget; see shoal.storage's budget).
    state_memory: int | None = None

    def worker_backend(self, worker: int, shared: StateBackend) -> StateBackend:
        """Where worker ``worker`` keeps its state: its own directory, or ``shared``."""
        if not self.per_worker_state:
            return shared
        return LmdbBackend(
            worker_state_root(self.state_dir, worker), state_memory=self.state_memory
        )

    def result_backend(self) -> StateBackend:
        """What the driver reads state from after the job (worker processes)."""
        if self.per_worker_state:
            return WorkerDirsBackend(self.state_dir)
        return LmdbBackend(self.state_dir)

    def tidy_state(self, placement: Placement) -> None:
        """Before an attempt (no worker runs): each worker directory keeps what its worker
        owns in ``placement`` (see _worker_state.py)."""
        if self.per_worker_state:
            tidy_worker_state(self.state_dir, self.plan, placement)

    def checkpoint_store(self) -> CheckpointStore | None:
        """A handle on the job's checkpoint store (None: checkpoints are off)."""
        if self.checkpoint_interval is None or self.checkpoint_dir is None:
            return None
        return CheckpointStore(self.checkpoint_dir)


def _last_stage_actors(plan: Plan) -> set[str]:
    """The actors whose :class:`Drained` reports mean the whole job has drained: those of
    every stage that writes a sink (see ``Plan.drain_actors``)."""
    inputs, keyed = plan.drain_actors()
    names = {source_actor_name(split) for i in inputs for split in plan.splits_of(i)}
    for index in keyed:
        name = plan.stages[index].name
        names.update(actor_name(name, group) for group in range(plan.num_key_groups))
    return names


async def _watch_progress(
    reports: Callable[[], Any],
    started: float,
    on_progress: Callable[[Progress], None],
    coordinator: CheckpointCoordinator | None,
    num_key_groups: int,
) -> None:
    monitor = LoadMonitor(num_key_groups)  # its own window: one progress record to the next
    while True:
        await anyio.sleep(_PROGRESS_INTERVAL_S)
        snaps = await reports()
        checkpoints = None if coordinator is None else coordinator.statistics()
        progress = _progress(snaps, time.perf_counter() - started, checkpoints)
        on_progress(dataclasses.replace(progress, key_groups=monitor.measure(snaps)))


async def _stop_when_set(stop: anyio.Event, control: JobControl) -> None:
    await stop.wait()
    await control.stop()


def _progress(
    snaps: Sequence[dict[str, Any]], elapsed: float, checkpoints: CheckpointStatistics | None
) -> Progress:
    return Progress(
        elapsed_s=elapsed,
        records_in=sum(s["records_in"] for s in snaps),
        records_out=sum(s["records_out"] for s in snaps),
        dead_letters=sum(s["dead_letters"] for s in snaps),
        per_worker_in=tuple(s["records_in"] for s in snaps),
        mailbox_depth=tuple(s["mailbox_depth"] for s in snaps),
        reports=tuple(snaps),
        checkpoints=checkpoints,
    )


def attempt_result(
    run: Run,
    workers: int,
    processes: bool,
    elapsed: float,
    reports: Sequence[dict[str, Any]],
    backend: StateBackend,
    supervisor: JobSupervisor,
    attempts: Attempts,
) -> JobResult:
    plan = run.plan
    coordinator = supervisor.coordinator
    read = sum(r["records_in"] for r in reports)
    # The last attempt counted from its start point; before it, the checkpoint's counters.
    before = attempts.current.counted or {}
    hot_keys = hot_key_summary(reports)  # one warning per attempt at most (see _load.py)
    if hot_keys is not None:
        log.warning(hot_keys)
    return JobResult(
        name=plan.flow.name,
        workers=workers,
        processes=processes,
        records_in=before.get("records_in", 0) + read,
        records_out=before.get("records_out", 0) + sum(r["records_out"] for r in reports),
        dead_letters=sum(r["dead_letters"] for r in reports),
        elapsed_s=elapsed,
        state_dir=run.state_dir,
        plan=plan,
        reports=tuple(reports),
        dead_letter_sink=run.dlq,
        backend=backend,
        checkpoints=None if coordinator is None else coordinator.statistics(),
        checkpoint_dir=None if coordinator is None else run.checkpoint_dir,
        recoveries=tuple(attempts.recoveries),
        migrations=tuple(run.scaling.moves),
        rescales=tuple(run.scaling.rescales),
        resumed_from=_resumed_from(run, attempts),
        records_read=read,
        rebalances=tuple(run.scaling.rebalances),
        _temporary=TemporaryState(run.state_dir) if run.temporary else None,
    )


def _resumed_from(run: Run, attempts: Attempts) -> ResumedFrom | None:
    """The checkpoint or savepoint the run started from (None: from the beginning): where its
    first attempt that ran started, an older checkpoint when the newest was damaged."""
    start = attempts.first_running or run.start
    manifest = start.manifest
    if not start.restoring or manifest is None:
        return None
    counted = start.counted
    return ResumedFrom(
        kind="checkpoint" if start.savepoint is None else "savepoint",
        path=str(run.checkpoint_dir if start.savepoint is None else start.savepoint),
        epoch=manifest.epoch,
        created=manifest.created,
        records_in=None if counted is None else counted.get("records_in", 0),
        records_out=None if counted is None else counted.get("records_out", 0),
    )


def make_attempts(run: Run, store: CheckpointStore | None) -> Attempts:
    return Attempts(
        max_restarts=run.max_restarts,
        backoff_s=run.restart_backoff,
        coordinator=_coordinator(run),
        store=store,
    )


async def recover_sink(run: Run, start: StartPoint) -> None:
    """Before an attempt starts, a transactional sink publishes the output of the checkpoint
    it starts from that a crash kept from being published, and drops what came after."""
    sink = run.plan.sink
    if run.plan.transactional:
        committed = start.epoch if start.restoring and start.epoch else None
        report = await anyio.to_thread.run_sync(sink.recover, committed)  # type: ignore[attr-defined]
        log.debug("transactional sink recovered", committed=committed, report=str(report))


def make_supervisor(
    run: Run,
    placement: Placement,
    sink: SinkPartition | None,
    dead_sink: SinkPartition,
    controllers: dict[int, Ref],
    kernel: Any,
    store: CheckpointStore | None,
    coordinator: CheckpointCoordinator | None,
) -> JobSupervisor:
    plan = run.plan
    target = None
    if store is not None:
        target = CheckpointTarget(
            store=store,
            num_key_groups=plan.num_key_groups,
            operators=plan.state_declarations(),
            key_groups={name: kernel.ref(name) for name in plan.key_group_actors()},
        )

    def admit_driver(workers: Sequence[int]) -> None:
        kernel.admit(*workers)
        place_workers(kernel, plan, workers)

    rescaler = Rescaler(
        plan=plan,
        placement=placement,
        members=dict(controllers),
        admit_driver=admit_driver,
        scaling=run.scaling,
        max_moves=run.max_moves,
        shipper=(lambda worker: kernel.ref(shipper_name(worker))) if run.per_worker_state else None,
    )
    return JobSupervisor(
        expected=_last_stage_actors(plan),
        group_owner=list(placement.group_owner),
        sink=sink,
        dead_sink=dead_sink,
        coordinator=coordinator,
        target=target,
        transactional=plan.transactional,
        rescaler=rescaler,
        directory=kernel.directory,
        fanned=len(plan.sinks) > 1,
    )


def _coordinator(run: Run) -> CheckpointCoordinator | None:
    """The job's checkpoint coordinator (None: checkpoints off); it outlives attempts."""
    if run.checkpoint_interval is None:
        return None
    plan = run.plan
    store = run.checkpoint_store()
    start = run.start
    coordinator = CheckpointCoordinator(
        sources={source_actor_name(split) for split in plan.splits},
        key_groups=set(plan.key_group_actors()),
        clock=time.perf_counter,
        # Epochs only grow, across restarts and resumed runs: a checkpoint is never named
        # like one already in the store.
        first_epoch=max(max(store.epochs(), default=0) if store is not None else 0, start.epoch)
        + 1,
    )
    if start.restoring:
        coordinator.restart(
            restored=start.base, first_epoch=coordinator.next_epoch, counted=start.counted
        )
    return coordinator


def attempt_control(
    run: Run,
    kernel: Worker,
    supervisor: JobSupervisor,
    store: CheckpointStore | None,
    reports: Callable[[], Awaitable[list[dict[str, Any]]]],
    kill: Callable[[int], None] | None,
) -> JobControl:
    """This attempt's :class:`JobControl` (``kill``: None when the workers share this loop)."""
    return JobControl(
        job=kernel.ref(JOB_ACTOR),
        supervisor=supervisor,
        store=store,
        reports=reports,
        kill=kill,
        state_dir=run.state_dir,
    )


def start_companions(
    tg: TaskGroup,
    run: Run,
    reports: Callable[[], Awaitable[list[dict[str, Any]]]],
    started: float,
    control: JobControl,
) -> None:
    """The driver's tasks beside a running job (both ways of running): progress reports, the
    stop event, the checkpoint trigger, the timeline."""
    supervisor = control.supervisor
    if run.on_progress is not None:
        tg.start_soon(
            _companion,
            _watch_progress(
                reports,
                started,
                run.on_progress,
                supervisor.coordinator,
                run.plan.num_key_groups,
            ),
        )
    if run.stop is not None:
        tg.start_soon(_companion, _stop_when_set(run.stop, control))
    if run.checkpoint_interval is not None:
        tg.start_soon(
            _companion, _checkpoint_every(run.checkpoint_interval, control.job, supervisor)
        )
    if run.timeline is not None:
        tg.start_soon(_companion, _run_timeline(run.timeline, control))
        tg.start_soon(_companion, run.timeline.release_when_stuck(control))
    if run.control_socket is not None:
        tg.start_soon(_companion, serve_control(run.control_socket, control))
    if run.on_control is not None:
        tg.start_soon(_companion, _attached(run.on_control, control))
    if run.auto_rebalance is not None:
        tg.start_soon(_companion, run_auto_rebalance(run.auto_rebalance, control))


async def _attached(on_control: Callable[[JobControl | None], None], control: JobControl) -> None:
    """Hand ``control`` to a job handle for as long as this attempt runs."""
    on_control(control)
    try:
        await anyio.sleep_forever()
    finally:
        on_control(None)


async def _companion(task: Awaitable[None]) -> None:
    """A companion ends quietly when a worker is lost under it: the attempt's own watch
    (the failed worker's exit, or the kernels' failure) reports that, with its cause."""
    try:
        await task
    except (PeerLostError, ActorStoppedError) as exc:
        log.debug("driver task ended: a worker was lost", error=str(exc))


async def _run_timeline(runner: TimelineRunner, control: JobControl) -> None:
    await control.supervisor.sources_started.wait()
    await runner.run(control)


async def _checkpoint_every(interval: float, job: Ref, supervisor: JobSupervisor) -> None:
    """Trigger a checkpoint every ``interval`` seconds (skipped while one is in flight), from
    the moment every worker's source actors exist: a barrier injected before that would reach
    no source and wait for acks that never come."""
    await supervisor.sources_started.wait()
    while True:
        await anyio.sleep(interval)
        await job.ask(TriggerCheckpoint(periodic=True))


async def start_and_wait(
    controllers: Sequence[Any],
    supervisor: JobSupervisor,
    on_running: Callable[[], None],
    job: Ref,
) -> None:
    # All at once: a worker answers only after a turn of its (now busy) event loop, and
    # starting them one by one measurably delayed the last worker (~0.2 s), which then
    # finished that much later.
    async with anyio.create_task_group() as starting:
        for controller in controllers:
            starting.start_soon(controller.ask, StartSources())
    supervisor.sources_started.set()
    on_running()
    await supervisor.finished.wait()
    if supervisor.coordinator is not None:
        try:
            await supervisor.take_checkpoint(job, final=True)
        except CheckpointError as exc:
            # The job's output and state are complete; a resumed run would replay from the
            # last completed checkpoint (state stays exact; an at-least-once sink repeats).
            log.warning("the final checkpoint failed", error=str(exc))
    supervisor.ended.set()
