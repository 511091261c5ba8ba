"""Run a job's workers in this event loop: one kernel per worker, and the driver's."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import anyio
import anyio.abc
from anyio.abc import TaskGroup
from shoal.actors import (
    ActorFailedError,
    ActorStartError,
    ActorStoppedError,
    PeerLostError,
    Ref,
    Worker,
    open_worker,
)
from shoal.actors._log import get_logger
from shoal.storage import (
    CheckpointCorruptError,
    CheckpointStore,
    StateBackend,
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
from ._exceptions import JobError
from ._faults import Faults
from ._messages import Finish
from ._names import DRIVER_ID, JOB_ACTOR, controller_name
from ._placement import Placement, split_homes
from ._recovery import AttemptFailed, Attempts, StartPoint
from ._result import JobResult
from ._sinks import SinkPartition
from ._time import SystemClock
from ._worker import WorkerEnv, place_directory, start_worker

__all__ = ("run_in_loop",)

log = get_logger("shoal.job")


async def run_in_loop(run: Run, backend: StateBackend, workers: int) -> JobResult:
    """Every worker, and the driver's job supervisor, in this event loop.

    The workers are separate kernels (ids ``0, 1, ...``, the driver :data:`DRIVER_ID`) in a
    namespace of this run's own, so another job in this loop has its own worker 0. They reach
    each other by reference (no encoding), through the same exchanges and credits as
    processes. Sinks are written where the records are: a gathering sink's one partition is
    shared, others get one partition per worker. A worker that fails (an engine error in one of
    its actors) fails the attempt; with checkpoints on, the job restarts from the last one.
    """
    plan = run.plan
    sinks = _Partitions(run, workers)
    dead_sink = ClosesOnce(run.dlq.open_partition(0, 1))
    store = run.checkpoint_store()  # one for every worker here: it is thread-safe
    attempts = make_attempts(run, store)
    try:
        return await attempts.run(
            run.start,
            partial(_loop_attempt, run, backend, sinks, dead_sink, store, attempts),
            plan.flow.name,
        )
    finally:
        with anyio.CancelScope(shield=True):
            await sinks.aclose()
            await dead_sink.aclose()


class _Partitions:
    """Sink partitions by worker id (one shared partition for a gathering sink), opened on
    first use. A plain sink's partitions are kept across attempts (a worker id can come back
    in a restarted attempt; reopening would truncate its file) and closed once, at the end of
    the job; a transactional sink's are opened afresh in every attempt, after ``recover``."""

    def __init__(self, run: Run, workers: int) -> None:
        self._run = run
        self._workers = workers
        self._by_id: dict[int, ClosesOnce] = {}

    def get(self, worker: int) -> SinkPartition:
        sink = self._run.plan.sink
        key = -1 if sink.gather else worker
        partition = self._by_id.get(key)
        if partition is None:
            partition = ClosesOnce(
                sink.open_partition(0, 1)
                if sink.gather
                else sink.open_partition(worker, max(self._workers, worker + 1))
            )
            self._by_id[key] = partition
        return partition

    async def renew(self) -> None:
        """Before an attempt: a transactional sink's partitions of the last one are closed
        (the sink's ``recover`` then sorts out what they staged)."""
        if self._run.plan.transactional:
            await self.aclose()

    async def aclose(self) -> None:
        partitions, self._by_id = list(self._by_id.values()), {}
        for partition in partitions:
            try:
                await partition.aclose()
            except Exception as exc:  # a failed partition: recover() cleans up after it
                log.debug("sink partition did not close cleanly", error=str(exc))


class _LoopPool:
    """The workers of one in-loop attempt, each a kernel in a task of its own: started at the
    attempt's start or by a rescale, stopped when retired or at the end."""

    def __init__(
        self,
        run: Run,
        backend: StateBackend,
        sinks: _Partitions,
        dead_sink: SinkPartition,
        store: CheckpointStore | None,
        start: StartPoint,
        namespace: str,
        tg: TaskGroup,
    ) -> None:
        self.run = run
        self.backend = backend
        self.sinks = sinks
        self.dead_sink = dead_sink
        self.store = store
        self.start_point = start
        self.namespace = namespace
        self.tg = tg
        self.envs: dict[int, WorkerEnv] = {}
        self.kernels: dict[int, Worker] = {}
        self._stops: dict[int, anyio.Event] = {}

    async def stop(self, worker: int) -> None:
        self._stops[worker].set()

    def stop_all(self) -> None:
        for stop in self._stops.values():
            stop.set()

    async def _run_worker(
        self,
        index: int,
        placement: Placement,
        members: list[int],
        joining: bool = False,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run worker ``index`` until it is stopped; ``joining``: started by a rescale (it
        owns nothing yet, so it restores nothing)."""
        run = self.run
        plan = run.plan
        start = StartPoint(attempt=self.start_point.attempt) if joining else self.start_point
        peers = sorted({*members, index})
        async with open_worker(
            worker_id=index, peers=[*peers, DRIVER_ID], namespace=self.namespace
        ) as worker:
            env = WorkerEnv(
                plan=plan,
                index=index,
                workers=len(peers),
                driver=DRIVER_ID,
                kernel=worker,
                backend=run.worker_backend(index, self.backend),
                group_owner=list(placement.group_owner),
                split_owner=list(placement.split_owner),
                batch_size=run.batch_size,
                mailbox_size=run.mailbox_size,
                move_hold_records=run.move_hold_records,
                sink=self.sinks.get(index),
                dead_sink=self.dead_sink,
                checkpoints=run.checkpoint_interval is not None,
                checkpoint_store=self.store,
                restoring=start.restoring,
                restore_from=start.manifest,
                restore_savepoint=start.savepoint,
                faults=Faults(run.faults, worker=index, attempt=start.attempt),
                clock=SystemClock() if run.clock is None else run.clock,
                peers=peers,
                placement_version=placement.version,
                close_sinks=False,  # shared across attempts: closed at the job's end
                ship_state=run.per_worker_state,
                hold_ends=run.timeline is not None and run.timeline.pending,
            )
            place_directory(
                worker, plan, placement.group_owner, DRIVER_ID, peers, placement.split_owner
            )
            await start_worker(env)
            self.kernels[index] = worker
            self.envs[index] = env
            stop = self._stops[index] = anyio.Event()
            task_status.started()
            await stop.wait()


async def _loop_attempt(
    run: Run,
    backend: StateBackend,
    sinks: _Partitions,
    dead_sink: SinkPartition,
    store: CheckpointStore | None,
    attempts: Attempts,
    start: StartPoint,
) -> JobResult:
    plan = run.plan
    workers = run.scaling.workers
    placement = Placement.initial(plan.num_key_groups, len(plan.splits), workers, split_homes(plan))
    run.tidy_state(placement)
    namespace = f"job-{run.run_id}-{start.attempt}"
    pool: _LoopPool | None = None
    await sinks.renew()
    await recover_sink(run, start)
    try:
        async with open_worker(
            worker_id=DRIVER_ID, peers=[*placement.workers, DRIVER_ID], namespace=namespace
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
                run, placement, None, dead_sink, controllers, kernel, store, attempts.coordinator
            )
            await kernel.spawn(lambda: supervisor, name=JOB_ACTOR)
            async with anyio.create_task_group() as worker_tasks:
                pool = _LoopPool(
                    run, backend, sinks, dead_sink, store, start, namespace, worker_tasks
                )
                for index in placement.workers:
                    await worker_tasks.start(
                        pool._run_worker, index, placement, list(placement.workers)
                    )
                assert supervisor.rescaler is not None
                supervisor.rescaler.pool = _LoopPoolHandle(pool, kernel)
                started = time.perf_counter()
                envs = pool.envs

                async def all_reports() -> list[dict[str, Any]]:
                    return [
                        env.report() for env in envs.values() if env.index in supervisor.members
                    ]

                async with anyio.create_task_group() as tg:
                    control = attempt_control(run, kernel, supervisor, store, all_reports, None)
                    start_companions(tg, run, all_reports, started, control)
                    await start_and_wait(
                        supervisor.controllers, supervisor, attempts.running, kernel.ref(JOB_ACTOR)
                    )
                    tg.cancel_scope.cancel()
                elapsed = time.perf_counter() - started
                reports = [await controller.ask(Finish()) for controller in supervisor.controllers]
                reports += supervisor.rescaler.retired_reports
                await kernel.ref(JOB_ACTOR).ask("settle")
                pool.stop_all()
        return attempt_result(
            run, len(supervisor.members), False, elapsed, reports, backend, supervisor, attempts
        )
    except BaseException as exc:
        failure = _first_failure(exc)
        if failure is None:
            single = _single(exc)
            if single is exc:
                raise
            raise single from None  # one error out of the worker tasks' group: as itself
        raise _loop_failure(
            run, failure, list(pool.kernels.values()) if pool is not None else []
        ) from failure


class _LoopPoolHandle:
    """The :class:`WorkerPool` a rescale uses in this loop."""

    def __init__(self, pool: _LoopPool, driver: Worker) -> None:
        self._pool = pool
        self._driver = driver

    async def start(self, ids: Sequence[int], placement: Placement) -> dict[int, Ref]:
        members = sorted({*placement.workers, *ids})
        for index in ids:
            await self._pool.tg.start(self._pool._run_worker, index, placement, members, True)
        return {index: self._driver.ref(controller_name(index)) for index in ids}

    async def stop(self, worker: int) -> None:
        await self._pool.stop(worker)


def _single(exc: BaseException) -> BaseException:
    """``exc`` without the exception groups of one exception around it."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _first_failure(exc: BaseException) -> ActorFailedError | ActorStartError | None:
    """The worker failure in ``exc`` (maybe inside exception groups from the worker tasks)."""
    if isinstance(exc, ActorFailedError | ActorStartError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_failure(inner)
            if found is not None:
                return found
    return None


def _loop_failure(
    run: Run, exc: ActorFailedError | ActorStartError, kernels: Sequence[Worker]
) -> BaseException:
    """What an in-loop attempt's failure means: a worker's actor failed (a restart from the
    last checkpoint may repair it), or the driver's own (the job fails).

    When one actor fails, others fail in turn (a peer's exchange is gone); the exceptions
    chain, and the one whose cause is not such a consequence is named.
    """
    noticed = time.perf_counter()
    failures: list[BaseException] = [k.failure for k in kernels if k.failure is not None]
    seen: BaseException | None = exc
    while seen is not None and len(failures) < 100:
        if isinstance(seen, ActorFailedError | ActorStartError):
            failures.append(seen)
        seen = seen.__context__
    consequences = (PeerLostError, ActorStoppedError)
    root = next((f for f in failures if not isinstance(f.__cause__, consequences)), exc)
    error = JobError(f"job {run.plan.flow.name!r} failed: {root}")
    if getattr(root, "actor", None) == JOB_ACTOR:
        return error
    cause: BaseException | None = root
    corrupt = False
    while cause is not None:
        corrupt = corrupt or isinstance(cause, CheckpointCorruptError)
        cause = cause.__cause__
    return AttemptFailed(error, noticed=noticed, corrupt=corrupt)
