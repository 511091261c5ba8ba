"""Run a flow to completion: in one event loop, or across worker processes.

``await run_job(flow)`` runs everything in the current event loop (one worker): that is how
tests, embedding and small jobs run. ``await run_job("file.py:build", workers=4)`` starts four
worker processes that each rebuild the flow from its reference, connected to each other and to
this driver over Unix sockets; the splits and key groups are spread over them.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog
from shoal.actors import ActorFailedError, PeerLostError, open_worker, open_worker_process
from shoal.storage import KeyGroupStatistics, LmdbBackend, MemoryBackend, StateBackend

from ._boot import register_runtime_messages
from ._dataflow import Flow, KeyedOp
from ._exceptions import JobError, WorkerLostError
from ._loader import load_flow, normalize_ref
from ._logging import configure_logging
from ._messages import Finish, StartSources, StopSources
from ._plan import Plan, actor_name, compile_plan, place_key_groups, place_splits
from ._sinks import DeadLetter, DeadLetterSink, Sink, SinkPartition
from ._sources import check_bounded
from ._supervisor import JobSupervisor
from ._worker import (
    JOB_ACTOR,
    WorkerEnv,
    controller_name,
    place_directory,
    source_actor_name,
    start_worker,
)

__all__ = ("JobResult", "Progress", "run_job")

log = structlog.get_logger("shoal.job")

# Source batch size: large enough that one Data message per key group carries tens of records
# (a message hop costs a few µs), small enough that a batch is a few ms of work.
DEFAULT_BATCH_SIZE = 8192
# Mailboxes hold this many batches: enough to keep an actor busy while its senders run, small
# enough that a slow key group pushes back on its sources within a few batches.
DEFAULT_MAILBOX_SIZE = 16
_PROGRESS_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class Progress:
    """A running job's progress, passed to ``on_progress`` about twice a second."""

    elapsed_s: float
    records_in: int
    records_out: int
    dead_letters: int
    per_worker_in: tuple[int, ...]
    mailbox_depth: tuple[int, ...]
    reports: tuple[dict[str, Any], ...]

    @property
    def events_per_s(self) -> float:
        return self.records_in / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a finished job did, and a way to read its final state."""

    name: str
    workers: int
    processes: bool
    records_in: int
    records_out: int
    dead_letters: int
    elapsed_s: float
    state_dir: Path | None
    plan: Plan
    reports: tuple[dict[str, Any], ...]
    dead_letter_sink: DeadLetterSink
    backend: StateBackend

    @property
    def events_per_s(self) -> float:
        """Source records per second of processing (start of reading to last key group done)."""
        return self.records_in / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def flow(self) -> Flow:
        return self.plan.flow

    @property
    def sink(self) -> Sink:
        """The sink of the driver's copy of the flow (a gathering sink holds the output here)."""
        return self.plan.sink

    @property
    def dead_letter_records(self) -> list[DeadLetter]:
        return list(self.dead_letter_sink.letters)

    def _operator(self, operator: str) -> KeyedOp:
        ops = {op.name: op for op in self.plan.flow.keyed_operators()}
        if operator not in ops:
            raise KeyError(f"no keyed operator {operator!r}; the flow has {sorted(ops)}")
        return ops[operator]

    def read_state(self, operator: str, state: str) -> dict[Any, Any]:
        """Every key's committed value of ``state`` of keyed ``operator``, over all key groups."""
        op = self._operator(operator)
        out: dict[Any, Any] = {}
        for group in range(self.plan.num_key_groups):
            with self.backend.open_store(op.name, group, op.states) as store:
                out.update(store.items(state))
        return out

    def key_group_statistics(self, operator: str) -> tuple[KeyGroupStatistics, ...]:
        """Entries and bytes of keyed ``operator``'s state, one record per key group."""
        op = self._operator(operator)
        stats = []
        for group in range(self.plan.num_key_groups):
            with self.backend.open_store(op.name, group, op.states) as store:
                stats.append(store.statistics())
        return tuple(stats)


class _ClosesOnce:
    """A sink partition whose ``aclose`` runs once, whoever calls it first (finish or failure)."""

    __slots__ = ("_closed", "_partition")

    def __init__(self, partition: SinkPartition) -> None:
        self._partition = partition
        self._closed = False

    async def write_batch(self, items: list[Any]) -> None:
        await self._partition.write_batch(items)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._partition.aclose()


@dataclass(frozen=True, slots=True)
class _Run:
    """What both ways of running a job need, validated once by :func:`run_job`."""

    plan: Plan
    state_dir: Path
    dlq: DeadLetterSink
    batch_size: int
    mailbox_size: int
    on_progress: Callable[[Progress], None] | None
    stop: anyio.Event | None
    log_format: str
    log_level: str


def _check_positive(name: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


async def run_job(
    flow: Flow | str,
    *,
    params: Mapping[str, Any] | None = None,
    workers: int = 1,
    processes: bool | None = None,
    state_dir: str | Path | None = None,
    backend: str = "lmdb",
    batch_size: int = DEFAULT_BATCH_SIZE,
    mailbox_size: int = DEFAULT_MAILBOX_SIZE,
    dead_letters: DeadLetterSink | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: anyio.Event | None = None,
    log_format: str = "console",
    log_level: str = "warning",
) -> JobResult:
    """Run ``flow`` until its bounded source is exhausted and every record is processed.

    A source with ``bounded = False`` runs until ``stop`` is set, and is refused without it.

    Args:
        flow: a :class:`Flow` (one worker, this event loop), or a reference
            ``"path/to/file.py:name"`` / ``"package.module:name"`` to a Flow, a scenario, or a
            function building one from ``params`` (required for worker processes, which each
            rebuild the flow: nothing is pickled).
        workers: number of workers. More than one means worker processes.
        processes: force worker processes (True) even for one worker; False with
            ``workers > 1`` is an error. Default: processes when ``workers > 1``.
        state_dir: where LMDB state lives; a temporary directory if omitted (kept so the result
            can read it; delete it when done).
        backend: ``"lmdb"`` (default) or ``"memory"`` (one worker in this loop only).
        dead_letters: where records that failed go; by default an in-memory sink that also
            writes ``dead-letters.jsonl`` in the state directory.
        on_progress: called about twice a second with a :class:`Progress` record.
        log_format: ``"console"`` or ``"json"`` for worker processes (and for this process when
            the application has not configured structlog).
        log_level: ``"debug"``, ``"info"``, ``"warning"`` (default) or ``"error"``, likewise.
        stop: when this event is set, every split ends as if its source had ended: what was
            read drains through the job, state is flushed, and the result is returned. This is
            how an unbounded job is stopped (cancelling the call also stops it, without a
            result).

    Raises:
        ValueError / TypeError: bad arguments, named in the message; an unbounded source
            without ``stop``.
        WorkerLostError: a worker process died while the job ran.
        JobError: the engine failed (for example a sink raised); the cause is chained.
    """
    _check_positive("workers", workers)
    _check_positive("batch_size", batch_size)
    _check_positive("mailbox_size", mailbox_size)
    use_processes = workers > 1 if processes is None else processes
    if workers > 1 and not use_processes:
        raise ValueError("workers > 1 runs worker processes; processes=False allows only workers=1")
    if backend not in ("lmdb", "memory"):
        raise ValueError(f"backend must be 'lmdb' or 'memory'; got {backend!r}")
    if use_processes and backend != "lmdb":
        raise ValueError("worker processes keep state in LMDB; backend='memory' needs workers=1")
    if isinstance(flow, Flow):
        if use_processes:
            raise TypeError(
                "worker processes rebuild the flow from its definition: pass a reference "
                "'path/to/file.py:name' or 'package.module:name' instead of a Flow object"
            )
        if params:
            raise TypeError("params go with a flow reference, not with a Flow object")
        built, ref = flow, None
    elif isinstance(flow, str):
        ref = normalize_ref(flow)
        built = load_flow(ref, params)
    else:
        raise TypeError(f"flow must be a Flow or a reference string; got {type(flow).__name__}")
    plan = compile_plan(built)
    check_bounded(built.get_source(), has_stop=stop is not None, flow=built.name)
    directory = (
        Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="shoal-state-"))
    )
    directory.mkdir(parents=True, exist_ok=True)
    dlq = (
        dead_letters
        if dead_letters is not None
        else DeadLetterSink(str(directory / "dead-letters.jsonl"))
    )
    register_runtime_messages()
    if not structlog.is_configured():
        # The application has not configured structlog: apply ours (warnings and up, to stderr)
        # rather than structlog's print-everything default. Never at import; never over a
        # host's own configuration.
        configure_logging(log_format, log_level)
    run = _Run(
        plan, directory, dlq, batch_size, mailbox_size, on_progress, stop, log_format, log_level
    )
    if use_processes:
        assert ref is not None
        return await _run_processes(run, ref, params or {}, workers)
    state: StateBackend = LmdbBackend(directory) if backend == "lmdb" else MemoryBackend()
    try:
        return await _run_in_loop(run, state)
    except ActorFailedError as exc:
        raise JobError(f"job {plan.flow.name!r} failed: {exc}") from exc


def _last_stage_actors(plan: Plan) -> set[str]:
    """The actors whose :class:`Drained` reports mean the whole job has drained."""
    last = plan.stages[-1]
    if last.operator is None:  # no keyed operator: the source actors, one per split
        return {source_actor_name(split) for split in plan.splits}
    return {actor_name(last.name, group) for group in range(plan.num_key_groups)}


async def _watch_progress(
    reports: Callable[[], Any], started: float, on_progress: Callable[[Progress], None]
) -> None:
    while True:
        await anyio.sleep(_PROGRESS_INTERVAL_S)
        snaps = await reports()
        on_progress(_progress(snaps, time.perf_counter() - started))


async def _stop_when_set(stop: anyio.Event, controllers: Sequence[Any]) -> None:
    await stop.wait()
    for controller in controllers:
        await controller.ask(StopSources())


def _progress(snaps: Sequence[dict[str, Any]], elapsed: float) -> Progress:
    return Progress(
        elapsed_s=elapsed,
        records_in=sum(s["records_in"] for s in snaps),
        records_out=sum(s["records_out"] for s in snaps),
        dead_letters=sum(s["dead_letters"] for s in snaps),
        per_worker_in=tuple(s["records_in"] for s in snaps),
        mailbox_depth=tuple(s["mailbox_depth"] for s in snaps),
        reports=tuple(snaps),
    )


def _result(
    run: _Run,
    workers: int,
    processes: bool,
    elapsed: float,
    reports: Sequence[dict[str, Any]],
    backend: StateBackend,
) -> JobResult:
    plan = run.plan
    return JobResult(
        name=plan.flow.name,
        workers=workers,
        processes=processes,
        records_in=sum(r["records_in"] for r in reports),
        records_out=sum(r["records_out"] for r in reports),
        dead_letters=sum(r["dead_letters"] for r in reports),
        elapsed_s=elapsed,
        state_dir=run.state_dir,
        plan=plan,
        reports=tuple(reports),
        dead_letter_sink=run.dlq,
        backend=backend,
    )


async def _run_in_loop(run: _Run, backend: StateBackend) -> JobResult:
    plan = run.plan
    groups = place_key_groups(plan.num_key_groups, 1)
    sink = _ClosesOnce(plan.sink.open_partition(0, 1))
    dead_sink = _ClosesOnce(run.dlq.open_partition(0, 1))
    try:
        async with open_worker(worker_id=0) as kernel:
            env = WorkerEnv(
                plan=plan,
                index=0,
                workers=1,
                driver=0,
                kernel=kernel,
                backend=backend,
                group_owner=groups,
                split_owner=place_splits(plan.splits, 1),
                batch_size=run.batch_size,
                mailbox_size=run.mailbox_size,
                sink=sink,
                dead_sink=dead_sink,
            )
            place_directory(kernel, plan, groups, 0, 1)
            supervisor = JobSupervisor(
                expected=_last_stage_actors(plan),
                group_owner=groups,
                sink=None,
                dead_sink=dead_sink,
            )
            await kernel.spawn(lambda: supervisor, name=JOB_ACTOR)
            await start_worker(env)
            controller = kernel.ref(controller_name(0))
            started = time.perf_counter()
            await controller.ask(StartSources())
            async with anyio.create_task_group() as tg:
                if run.on_progress is not None:

                    async def one_report() -> list[dict[str, Any]]:
                        return [env.report()]

                    tg.start_soon(_watch_progress, one_report, started, run.on_progress)
                if run.stop is not None:
                    tg.start_soon(_stop_when_set, run.stop, [controller])
                await supervisor.finished.wait()
                tg.cancel_scope.cancel()
            elapsed = time.perf_counter() - started
            report = await controller.ask(Finish())
        return _result(run, 1, False, elapsed, [report], backend)
    finally:
        with anyio.CancelScope(shield=True):
            await sink.aclose()
            await dead_sink.aclose()


async def _run_processes(run: _Run, ref: str, params: Mapping[str, Any], workers: int) -> JobResult:
    plan = run.plan
    driver = workers
    peers = list(range(workers + 1))
    groups = place_key_groups(plan.num_key_groups, workers)
    sink = _ClosesOnce(plan.sink.open_partition(0, 1)) if plan.sink.gather else None
    dead_sink = _ClosesOnce(run.dlq.open_partition(0, 1))
    mesh_dir = Path(tempfile.mkdtemp(prefix="shoal-mesh-", dir="/tmp"))
    lost: list[tuple[int, WorkerLostError]] = []  # (exit code, error) of workers that died
    reports: list[dict[str, Any]] = []
    try:
        async with open_worker(worker_id=driver, mesh_dir=mesh_dir, peers=peers) as kernel:
            place_directory(kernel, plan, groups, driver, workers)
            supervisor = JobSupervisor(
                expected=_last_stage_actors(plan),
                group_owner=groups,
                sink=sink,
                dead_sink=dead_sink,
            )
            await kernel.spawn(lambda: supervisor, name=JOB_ACTOR)
            async with AsyncExitStack() as stack:
                procs = []
                for index in range(workers):
                    args = {
                        "flow": ref,
                        "params": dict(params),
                        "index": index,
                        "workers": workers,
                        "driver": driver,
                        "state_dir": str(run.state_dir),
                        "batch_size": run.batch_size,
                        "mailbox_size": run.mailbox_size,
                        "log_format": run.log_format,
                        "log_level": run.log_level,
                    }
                    procs.append(
                        await stack.enter_async_context(
                            open_worker_process(
                                index,
                                mesh_dir,
                                peers,
                                bootstrap="shoal.runtime._boot:bootstrap",
                                args=args,
                            )
                        )
                    )
                controllers = [kernel.ref(controller_name(i)) for i in range(workers)]
                started = time.perf_counter()

                async def start_and_wait() -> None:
                    try:
                        # All at once: a worker answers only after a turn of its (now busy)
                        # event loop, and starting them one by one measurably delayed the
                        # last worker (~0.2 s), which then finished that much later.
                        async with anyio.create_task_group() as starting:
                            for controller in controllers:
                                starting.start_soon(controller.ask, StartSources())
                        await supervisor.finished.wait()
                    except* PeerLostError:
                        # A worker died under us: its watcher says which, and how.
                        await anyio.sleep_forever()

                async def all_reports() -> list[dict[str, Any]]:
                    return [await c.ask("report") for c in controllers]

                async def watch(index: int, scope: anyio.CancelScope) -> None:
                    code = await procs[index].wait()
                    if not supervisor.finished.is_set():
                        error = WorkerLostError(
                            f"worker {index} (pid {procs[index].pid}) exited with status "
                            f"{code} while the job was running"
                        )
                        lost.append((code, error))
                        # Its peers fail right after it (they lose a connection): give their
                        # exits a moment to arrive, so the report can name the first cause.
                        await anyio.sleep(0.2)
                        scope.cancel()

                async with anyio.create_task_group() as tg:
                    for index in range(workers):
                        tg.start_soon(watch, index, tg.cancel_scope)
                    if run.on_progress is not None:
                        tg.start_soon(_watch_progress, all_reports, started, run.on_progress)
                    if run.stop is not None:
                        tg.start_soon(_stop_when_set, run.stop, controllers)
                    await start_and_wait()
                    tg.cancel_scope.cancel()
                elapsed = time.perf_counter() - started
                if lost:
                    for proc in procs:  # the others cannot finish without the lost one
                        proc.kill()
                else:
                    reports = [await c.ask(Finish()) for c in controllers]
    except* PeerLostError:
        # Workers still talking to a killed peer fail too; the first loss is what to report.
        if not lost:
            raise
    finally:
        shutil.rmtree(mesh_dir, ignore_errors=True)
        with anyio.CancelScope(shield=True):
            if sink is not None:
                await sink.aclose()
            await dead_sink.aclose()
    if lost:
        # A worker killed by a signal is the cause; workers that then exited because they lost
        # their connection to it are the consequence.
        killed = [error for code, error in lost if code < 0]
        raise (killed or [error for _code, error in lost])[0]
    log.debug("job finished", job=plan.flow.name, workers=workers, seconds=round(elapsed, 3))
    return _result(run, workers, True, elapsed, reports, LmdbBackend(run.state_dir))
