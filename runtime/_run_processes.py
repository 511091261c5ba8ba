"""Run a job's workers in processes of their own, connected over Unix sockets."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from shoal.actors import (
    ActorFailedError,
    PeerLostError,
    Ref,
    Worker,
    WorkerProcess,
    WorkerProcessError,
    open_worker,
    open_worker_process,
)
from shoal.actors._log import get_logger
from shoal.storage import (
    CheckpointStore,
)

from ._attempt import (
    ClosesOnce,
    Run,
    attempt_control,
    attempt_result,
    make_attempts,
    make_supervisor,
    recover_sink,
    start_and_wait,
    start_companions,
)
from ._exceptions import JobError, WorkerFailedError, WorkerLostError
from ._messages import Finish
from ._names import DRIVER_ID, JOB_ACTOR, controller_name
from ._placement import Placement, split_homes
from ._plan import Plan
from ._recovery import AttemptFailed, Attempts, StartPoint
from ._result import JobResult
from ._sinks import SinkPartition
from ._supervisor import JobSupervisor
from ._worker import place_directory
from ._worker_state import worker_state_root

__all__ = ("run_processes",)

log = get_logger("shoal.job")

# After a worker failed, how long the others have to exit on SIGTERM before SIGKILL.
_ABORT_GRACE_S = 1.0


def _mesh_parent() -> str:
    """Where the mesh's socket folder goes: the temp dir, unless its path is too long.

    A Unix socket path is limited to ~100 bytes; ``<dir>/shoal-mesh-XXXXXXXX/w<id>.sock``
    must fit.
    """
    parent = tempfile.gettempdir()
    return parent if len(parent.encode()) <= 60 else "/tmp"


def _failure_cause(plan: Plan, index: int, proc: WorkerProcess) -> tuple[int, JobError] | None:
    """Why worker ``index`` ended while the job ran, ranked: 0 a root cause (its own error, or
    a signal nobody here sent), 1 an unexplained exit, 2 a consequence (it lost a peer)."""
    name = plan.flow.name
    failure = proc.failure
    code = proc.returncode
    if failure is not None:
        operator = key_group = None
        op_name, sep, group = (failure.actor or "").rpartition("#")
        if sep and group.isdigit() and any(s.name == op_name for s in plan.keyed_stages):
            operator, key_group = op_name, int(group)
        error = WorkerFailedError(
            f"job {name!r} failed on worker {index} (pid {proc.pid}): "
            f"{failure.type_name}: {failure.message}",
            worker=index,
            pid=proc.pid,
            error_type=failure.type_name,
            error_message=failure.message,
            actor=failure.actor,
            operator=operator,
            key_group=key_group,
            remote_traceback=failure.traceback,
        )
        return (2 if failure.type_name == "PeerLostError" else 0), error
    if code is None or proc.signalled_by_parent:
        return None  # still running, or stopped by this driver after the first failure
    rank = 0 if code < 0 else 1
    return rank, WorkerLostError(
        f"worker {index} (pid {proc.pid}) {proc.describe_exit()} while the job was running"
    )


async def _abort_all(procs: Sequence[WorkerProcess], grace: float = _ABORT_GRACE_S) -> None:
    """Terminate every worker still running and wait until all have exited (SIGKILL after
    ``grace`` seconds)."""
    if grace > 0:
        for proc in procs:
            proc.terminate()
        with anyio.move_on_after(grace):
            for proc in procs:
                await proc.wait()
    for proc in procs:
        proc.kill()
    for proc in procs:
        await proc.wait()


async def run_processes(run: Run, ref: str, params: Mapping[str, Any]) -> JobResult:
    """Every worker in a process of its own; a worker that dies or fails fails the attempt, and
    with checkpoints on the job restarts from the last one (see ``_recovery``)."""
    plan = run.plan
    sink = ClosesOnce(plan.sink.open_partition(0, 1)) if plan.sink.gather else None
    dead_sink = ClosesOnce(run.dlq.open_partition(0, 1))
    store = run.checkpoint_store()
    attempts = make_attempts(run, store)
    try:
        return await attempts.run(
            run.start,
            partial(_process_attempt, run, ref, params, sink, dead_sink, store, attempts),
            plan.flow.name,
        )
    finally:
        with anyio.CancelScope(shield=True):
            if sink is not None:
                await sink.aclose()
            await dead_sink.aclose()


class _ProcessPool:
    """The worker processes of one attempt, each held open by a task of its own (started at
    the attempt's start or by a rescale), and watched: a process that ends while the job runs,
    unless it was retired, fails the attempt. Releasing a worker's task stops its process in
    order; cancelling the tasks aborts them."""

    def __init__(
        self,
        run: Run,
        ref: str,
        params: Mapping[str, Any],
        start: StartPoint,
        mesh_dir: Path,
        tg: TaskGroup,
        kernel: Worker,
    ) -> None:
        self.run = run
        self.ref = ref
        self.params = params
        self.start_point = start
        self.mesh_dir = mesh_dir
        self.tg = tg
        self.kernel = kernel
        self.procs: dict[int, WorkerProcess] = {}
        self.retired: set[int] = set()
        self.watch: Callable[[int], None] | None = None  # set once the attempt runs
        self._release: dict[int, anyio.Event] = {}

    async def open(self, ids: Sequence[int], placement: Placement, *, joining: bool) -> None:
        """Start processes ``ids`` routing by ``placement``; they boot in parallel.
        ``joining``: started by a rescale (they own nothing yet, so restore nothing)."""
        members = sorted({*placement.workers, *ids})
        start = StartPoint(attempt=self.start_point.attempt) if joining else self.start_point
        started = [
            await self.tg.start(self._hold, index, members, placement, start) for index in ids
        ]
        for proc in started:
            await proc.wait_ready()
        if self.watch is not None:
            for index in ids:
                self.watch(index)

    async def _hold(
        self,
        index: int,
        members: list[int],
        placement: Placement,
        start: StartPoint,
        *,
        task_status: anyio.abc.TaskStatus[WorkerProcess] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        release = self._release[index] = anyio.Event()
        async with open_worker_process(
            index,
            self.mesh_dir,
            [*members, DRIVER_ID],
            bootstrap="shoal.runtime._boot:bootstrap",
            args=_worker_args(self.run, self.ref, self.params, index, members, placement, start),
            # If this driver dies, its workers remove what it cannot.
            cleanup=[self.run.state_dir] if self.run.temporary else [],
            link_buffer=self.run.link_buffer,
            wait_ready=False,  # they boot in parallel; waited for by open()
        ) as proc:
            self.procs[index] = proc
            task_status.started(proc)
            await release.wait()

    async def start(self, ids: Sequence[int], placement: Placement) -> dict[int, Ref]:
        await self.open(ids, placement, joining=True)
        return {index: self.kernel.ref(controller_name(index)) for index in ids}

    async def stop(self, worker: int) -> None:
        self.retired.add(worker)
        self._release[worker].set()
        await self.procs[worker].wait()

    def release_all(self) -> None:
        """Let every process go: in order if it still runs (see open_worker_process)."""
        for release in self._release.values():
            release.set()

    def running(self) -> list[WorkerProcess]:
        return [proc for index, proc in self.procs.items() if index not in self.retired]


async def _process_attempt(
    run: Run,
    ref: str,
    params: Mapping[str, Any],
    sink: SinkPartition | None,
    dead_sink: SinkPartition,
    store: CheckpointStore | None,
    attempts: Attempts,
    start: StartPoint,
) -> JobResult:
    plan = run.plan
    placement = Placement.initial(
        plan.num_key_groups, len(plan.splits), run.scaling.workers, split_homes(plan)
    )
    run.tidy_state(placement)  # the previous attempt's processes have all exited
    await recover_sink(run, start)
    mesh_dir = Path(tempfile.mkdtemp(prefix="shoal-mesh-", dir=_mesh_parent()))
    # Processes in the order they ended while the job ran (the first cause comes first).
    ended: list[int] = []
    noticed: list[float] = []
    driver_lost: list[PeerLostError] = []
    reports: list[dict[str, Any]] = []
    elapsed = 0.0
    pool: _ProcessPool | None = None
    try:
        async with open_worker(
            worker_id=DRIVER_ID,
            mesh_dir=mesh_dir,
            peers=[*placement.workers, DRIVER_ID],
            link_buffer=run.link_buffer,
        ) as kernel:
            place_directory(
                kernel,
                plan,
                placement.group_owner,
                DRIVER_ID,
                placement.workers,
                placement.split_owner,
            )
            controllers = {i: kernel.ref(controller_name(i)) for i in placement.workers}
            supervisor = make_supervisor(
                run, placement, sink, dead_sink, controllers, kernel, store, attempts.coordinator
            )
            await kernel.spawn(lambda: supervisor, name=JOB_ACTOR)
            async with anyio.create_task_group() as holders:
                pool = _ProcessPool(run, ref, params, start, mesh_dir, holders, kernel)
                try:
                    await pool.open(list(placement.workers), placement, joining=False)
                    assert supervisor.rescaler is not None
                    supervisor.rescaler.pool = pool
                    elapsed, reports = await _run_attempt(
                        run, kernel, supervisor, pool, store, attempts, ended, noticed, driver_lost
                    )
                except BaseException:
                    # Unwinding by an exception (a cancellation: Ctrl-C twice) marks the driver
                    # as aborting before the processes go: their going is then no news.
                    kernel.aborting = True
                    raise
                finally:
                    pool.release_all()
    except* ActorFailedError as group:
        # The driver's own actors (a gathering sink, the dead-letter sink) failed.
        first = group.exceptions[0]
        raise JobError(f"job {plan.flow.name!r} failed: {first}") from first
    except* WorkerProcessError as group:
        # A worker died or failed while starting (restoring its key groups, say).
        start_error = group.exceptions[0]
        raise AttemptFailed(
            WorkerLostError(f"job {plan.flow.name!r}: {start_error}"),
            noticed=time.perf_counter(),
            corrupt="CheckpointCorruptError" in str(start_error),
        ) from start_error
    except* PeerLostError:
        if not (ended or driver_lost):
            raise
    finally:
        shutil.rmtree(mesh_dir, ignore_errors=True)
    if ended or driver_lost:
        assert pool is not None
        error = _first_cause(plan, pool.procs, ended, driver_lost)
        corrupt = isinstance(error, WorkerFailedError) and "CheckpointCorruptError" in (
            f"{error.error_type} {error.error_message}"
        )
        raise AttemptFailed(error, noticed=min(noticed), corrupt=corrupt)
    log.debug("job finished", job=plan.flow.name, seconds=round(elapsed, 3))
    return attempt_result(
        run,
        len(supervisor.members),
        True,
        elapsed,
        reports,
        run.result_backend(),
        supervisor,
        attempts,
    )


async def _run_attempt(
    run: Run,
    kernel: Worker,
    supervisor: JobSupervisor,
    pool: _ProcessPool,
    store: CheckpointStore | None,
    attempts: Attempts,
    ended: list[int],
    noticed: list[float],
    driver_lost: list[PeerLostError],
) -> tuple[float, list[dict[str, Any]]]:
    """Run the started workers until the job ends or a worker is lost; return the elapsed
    time and the workers' final reports (none when a worker was lost)."""
    reports: list[dict[str, Any]] = []
    started = time.perf_counter()
    assert supervisor.rescaler is not None

    async def all_reports() -> list[dict[str, Any]]:
        return [await c.ask("report") for c in supervisor.controllers]

    async def watch(index: int, scope: anyio.CancelScope) -> None:
        await pool.procs[index].wait()
        if not supervisor.ended.is_set() and index not in pool.retired:
            ended.append(index)
            noticed.append(time.perf_counter())
            scope.cancel()

    async with anyio.create_task_group() as tg:
        for index in list(pool.procs):
            tg.start_soon(watch, index, tg.cancel_scope)

        def watch_new(index: int, tg: TaskGroup = tg) -> None:
            tg.start_soon(watch, index, tg.cancel_scope)

        pool.watch = watch_new
        control = attempt_control(
            run,
            kernel,
            supervisor,
            store,
            all_reports,
            # A real kill -9, like one from outside: reported as the cause.
            lambda index: os.kill(pool.procs[index].pid, signal.SIGKILL),
        )
        start_companions(tg, run, all_reports, started, control)
        try:
            await start_and_wait(
                supervisor.controllers,
                supervisor,
                attempts.running,
                kernel.ref(JOB_ACTOR),
            )
        except* PeerLostError as group:
            # A connection to a worker broke: the job cannot finish. Which worker
            # failed first, and why, is read from the processes below.
            noticed.append(time.perf_counter())
            driver_lost.extend(group.exceptions)  # type: ignore[arg-type]
        tg.cancel_scope.cancel()
    elapsed = time.perf_counter() - started
    if not (ended or driver_lost):
        try:
            reports = [await c.ask(Finish()) for c in supervisor.controllers]
            reports += supervisor.rescaler.retired_reports
        except PeerLostError as exc:
            # A worker died after the final checkpoint, before its report: the
            # next attempt restores that checkpoint and finishes at once.
            noticed.append(time.perf_counter())
            driver_lost.append(exc)
    if ended or driver_lost:
        # With checkpoints, the job restarts: nothing of the survivors is kept but
        # their LMDB, which is crash-safe, so they go at once.
        await _abort_all(pool.running(), grace=0.0 if store is not None else _ABORT_GRACE_S)
    else:
        await kernel.ref(JOB_ACTOR).ask("settle")
        for proc in pool.running():  # all at once; leaving the stack waits for each
            proc.request_stop()
    return elapsed, reports


def _worker_args(
    run: Run,
    ref: str,
    params: Mapping[str, Any],
    index: int,
    members: Sequence[int],
    placement: Placement,
    start: StartPoint,
) -> dict[str, Any]:
    return {
        "flow": ref,
        "params": dict(params),
        "index": index,
        "workers": len(members),
        "peers": list(members),
        "placement": placement.to_data(),
        "driver": DRIVER_ID,
        "state_dir": str(run.state_dir),
        "state_root": str(
            worker_state_root(run.state_dir, index) if run.per_worker_state else run.state_dir
        ),
        "ship_state": run.per_worker_state,
        "state_memory": run.state_memory,
        "hold_ends": run.timeline is not None and run.timeline.pending,
        "batch_size": run.batch_size,
        "mailbox_size": run.mailbox_size,
        "move_hold_records": run.move_hold_records,
        "log_format": run.log_format,
        "log_level": run.log_level,
        "checkpoints": run.checkpoint_interval is not None,
        "checkpoint_dir": run.checkpoint_dir if run.checkpoint_interval is not None else None,
        "attempt": start.attempt,
        "restoring": start.restoring,
        "restore_epoch": None if start.manifest is None else start.manifest.epoch,
        "restore_savepoint": start.savepoint,
        "faults": [fault.to_data() for fault in run.faults],
    }


def _first_cause(
    plan: Plan,
    procs: Mapping[int, WorkerProcess],
    ended: Sequence[int],
    driver_lost: Sequence[PeerLostError],
) -> JobError:
    """The error that names the first cause of a failed multi-process run.

    Every worker has exited (see _abort_all). Workers are ranked in the order they ended (those
    that ended by themselves first): a worker's own error or a signal from outside beats an
    unexplained exit, which beats losing a peer (the consequence of another's death).
    """
    order = list(dict.fromkeys([*ended, *procs]))
    causes = [c for c in (_failure_cause(plan, i, procs[i]) for i in order) if c is not None]
    if causes:
        return min(causes, key=lambda cause: cause[0])[1]
    lost = driver_lost[0] if driver_lost else None
    return JobError(f"job {plan.flow.name!r} failed: lost a worker: {lost}")
