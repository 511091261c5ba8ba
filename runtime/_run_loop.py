"""Run a job's workers in this event loop: one kernel per worker, and the driver's."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import anyio
from shoal.actors import (
    ActorFailedError,
    ActorStartError,
    ActorStoppedError,
    PeerLostError,
    Worker,
    open_worker,
)
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
from ._names import JOB_ACTOR, controller_name
from ._plan import place_key_groups, place_splits
from ._recovery import AttemptFailed, Attempts, StartPoint
from ._result import JobResult
from ._sinks import SinkPartition
from ._time import SystemClock
from ._worker import WorkerEnv, place_directory, start_worker

__all__ = ("run_in_loop",)


async def run_in_loop(run: Run, backend: StateBackend, workers: int) -> JobResult:
    """Every worker, and the driver's job supervisor, in this event loop.

    The workers are separate kernels (ids ``0..workers-1``, the driver ``workers``) in a
    namespace of this run's own, so another job in this loop has its own worker 0. They reach
    each other by reference (no encoding), through the same exchanges and credits as
    processes. Sinks are written where the records are: a gathering sink's one partition is
    shared, others get one partition per worker. A worker that fails (an engine error in one of
    its actors) fails the attempt; with checkpoints on, the job restarts from the last one.
    """
    plan = run.plan
    shared = ClosesOnce(plan.sink.open_partition(0, 1)) if plan.sink.gather else None
    sinks = [shared or ClosesOnce(plan.sink.open_partition(i, workers)) for i in range(workers)]
    dead_sink = ClosesOnce(run.dlq.open_partition(0, 1))
    store = run.checkpoint_store()  # one for every worker here: it is thread-safe
    attempts = make_attempts(run, store)
    try:
        return await attempts.run(
            run.start,
            partial(_loop_attempt, run, backend, workers, sinks, dead_sink, store, attempts),
            plan.flow.name,
        )
    finally:
        with anyio.CancelScope(shield=True):
            for partition in {id(p): p for p in sinks}.values():
                await partition.aclose()
            await dead_sink.aclose()


async def _loop_attempt(
    run: Run,
    backend: StateBackend,
    workers: int,
    sinks: Sequence[SinkPartition],
    dead_sink: SinkPartition,
    store: CheckpointStore | None,
    attempts: Attempts,
    start: StartPoint,
) -> JobResult:
    plan = run.plan
    driver = workers
    peers = list(range(workers + 1))
    groups = place_key_groups(plan.num_key_groups, workers)
    namespace = f"job-{run.run_id}-{start.attempt}"
    kernels: list[Worker] = []
    await recover_sink(run, start)
    try:
        async with AsyncExitStack() as stack:
            kernel = await stack.enter_async_context(
                open_worker(worker_id=driver, peers=peers, namespace=namespace)
            )
            place_directory(kernel, plan, groups, driver, workers)
            controllers = [kernel.ref(controller_name(i)) for i in range(workers)]
            supervisor = make_supervisor(
                run, groups, None, dead_sink, controllers, kernel, store, attempts.coordinator
            )
            await kernel.spawn(lambda: supervisor, name=JOB_ACTOR)
            envs: list[WorkerEnv] = []
            for index in range(workers):
                worker = await stack.enter_async_context(
                    open_worker(worker_id=index, peers=peers, namespace=namespace)
                )
                kernels.append(worker)
                env = WorkerEnv(
                    plan=plan,
                    index=index,
                    workers=workers,
                    driver=driver,
                    kernel=worker,
                    backend=backend,
                    group_owner=groups,
                    split_owner=place_splits(plan.splits, workers),
                    batch_size=run.batch_size,
                    mailbox_size=run.mailbox_size,
                    sink=sinks[index],
                    dead_sink=dead_sink,
                    checkpoints=run.checkpoint_interval is not None,
                    checkpoint_store=store,
                    restoring=start.restoring,
                    restore_from=start.manifest,
                    restore_savepoint=start.savepoint,
                    faults=Faults(run.faults, worker=index, attempt=start.attempt),
                    clock=SystemClock() if run.clock is None else run.clock,
                )
                place_directory(worker, plan, groups, driver, workers)
                await start_worker(env)
                envs.append(env)
            started = time.perf_counter()

            async def all_reports() -> list[dict[str, Any]]:
                return [env.report() for env in envs]

            async with anyio.create_task_group() as tg:
                control = attempt_control(
                    run, kernel, supervisor, controllers, store, all_reports, None
                )
                start_companions(tg, run, all_reports, started, control)
                await start_and_wait(
                    controllers, supervisor, attempts.running, kernel.ref(JOB_ACTOR)
                )
                tg.cancel_scope.cancel()
            elapsed = time.perf_counter() - started
            reports = [await controller.ask(Finish()) for controller in controllers]
            await kernel.ref(JOB_ACTOR).ask("settle")
        return attempt_result(run, workers, False, elapsed, reports, backend, supervisor, attempts)
    except (ActorFailedError, ActorStartError) as exc:
        raise _loop_failure(run, exc, kernels) from exc


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
