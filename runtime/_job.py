"""Run a flow to completion: in one event loop, or across worker processes.

``await run_job(flow)`` runs everything in the current event loop (one worker): that is how
tests, embedding and small jobs run. ``await run_job("file.py:build", workers=4)`` starts four
worker processes that each rebuild the flow from its reference, connected to each other and to
this driver over Unix sockets; the splits and key groups are spread over them.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from shoal.actors import (
    ActorFailedError,
    ActorStartError,
    ActorStoppedError,
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
    CheckpointCorruptError,
    CheckpointError,
    CheckpointStore,
    KeyGroupStatistics,
    LmdbBackend,
    MemoryBackend,
    StateBackend,
    describe_specs,
    read_savepoint,
)

from ._boot import register_runtime_messages
from ._checkpoints import CheckpointCoordinator, CheckpointStatistics
from ._control import JobControl, write_savepoint_of
from ._dataflow import Flow, KeyedOp
from ._exceptions import JobError, WorkerFailedError, WorkerLostError
from ._faults import Fault, Faults
from ._loader import load_flow, normalize_ref
from ._messages import Finish, StartSources, StopSources, TriggerCheckpoint
from ._names import JOB_ACTOR, controller_name, source_actor_name
from ._plan import Plan, actor_name, compile_plan, place_key_groups, place_splits
from ._recovery import AttemptFailed, Attempts, StartPoint, recovery_point
from ._sinks import DeadLetter, DeadLetterSink, Sink, SinkPartition
from ._sources import check_bounded
from ._statedir import claim_state_dir
from ._supervisor import CheckpointTarget, JobSupervisor
from ._time import Clock, SystemClock
from ._timeline import At, Checkpoint, KillWorker, Savepoint, Stop, TimelineRunner
from ._worker import WorkerEnv, place_directory, start_worker

__all__ = ("JobResult", "Progress", "run_job")

log = get_logger("shoal.job")

# Source batch size: large enough that one Data message per key group carries tens of records
# (a message hop costs a few µs), small enough that a batch is a few ms of work.
DEFAULT_BATCH_SIZE = 8192
# Bytes buffered per peer link (and asked for as kernel socket buffers): with the ~200 KiB
# default socket buffers a peer moved at most that much per event-loop turn (~350k records/s).
DEFAULT_LINK_BUFFER = 4 * 1024 * 1024
# Mailboxes hold this many batches: enough to keep an actor busy while its senders run, small
# enough that a slow key group pushes back on its sources within a few batches.
DEFAULT_MAILBOX_SIZE = 16
_PROGRESS_INTERVAL_S = 0.5
# After a worker failed, how long the others have to exit on SIGTERM before SIGKILL.
_ABORT_GRACE_S = 1.0


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
    #: The job's checkpoints so far (None: checkpoints are off).
    checkpoints: CheckpointStatistics | None = None

    @property
    def events_per_s(self) -> float:
        return self.records_in / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _TemporaryState:
    """A state directory shoal made for one run: removed by close(), at garbage collection of
    the result that holds it, or at interpreter exit, whichever comes first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(path), True)

    @property
    def removed(self) -> bool:
        return not self._finalizer.alive

    def remove(self) -> None:
        self._finalizer()


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a finished job did, and a way to read its final state.

    When the job ran without a ``state_dir``, its state lives in a temporary directory that
    this result owns: it stays readable (:meth:`read_state`) until the result is closed
    (:meth:`close`, or leaving ``with result:``), garbage-collected, or the interpreter exits,
    and is then removed. With a ``state_dir``, the state stays where the caller put it.
    """

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
    #: Checkpoints taken while the job ran (None: checkpoints were off). A checkpoint counts
    #: as completed once its manifest is written in ``checkpoint_dir``.
    checkpoints: CheckpointStatistics | None = None
    #: Where the checkpoints were written (a directory or fsspec URL; None: checkpoints off).
    checkpoint_dir: str | None = None
    #: One entry per recovery while the job ran: seconds from the failure being noticed to
    #: every worker processing again from the last completed checkpoint.
    recoveries: tuple[float, ...] = ()
    _temporary: _TemporaryState | None = field(default=None, repr=False, compare=False)

    def close(self) -> None:
        """Remove the temporary state directory, if the job made one (idempotent)."""
        if self._temporary is not None:
            self._temporary.remove()

    def __enter__(self) -> JobResult:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._temporary is not None and self._temporary.removed:
            raise RuntimeError(
                "this result's temporary state directory was removed by close(); read state "
                "before closing the result, or pass state_dir=... to keep the state"
            )

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
        self._check_open()
        out: dict[Any, Any] = {}
        for group in range(self.plan.num_key_groups):
            with self.backend.open_store(op.name, group, op.states) as store:
                out.update(store.items(state))
        return out

    def key_group_statistics(self, operator: str) -> tuple[KeyGroupStatistics, ...]:
        """Entries and bytes of keyed ``operator``'s state, one record per key group."""
        op = self._operator(operator)
        self._check_open()
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
class _Run:
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

    def checkpoint_store(self) -> CheckpointStore | None:
        """A handle on the job's checkpoint store (None: checkpoints are off)."""
        if self.checkpoint_interval is None or self.checkpoint_dir is None:
            return None
        return CheckpointStore(self.checkpoint_dir)


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
    checkpoint_interval: float | None = None,
    checkpoint_dir: str | Path | None = None,
    link_buffer: int = DEFAULT_LINK_BUFFER,
    max_restarts: int = 3,
    restart_backoff: float = 0.1,
    faults: Sequence[Fault] = (),
    resume: bool = False,
    from_savepoint: str | Path | None = None,
    timeline: Sequence[At] = (),
    clock: Clock | None = None,
) -> JobResult:
    """Run ``flow`` until its bounded source is exhausted and every record is processed.

    A source with ``bounded = False`` runs until ``stop`` is set, and is refused without it.

    Args:
        flow: a :class:`Flow` (one worker, this event loop), or a reference
            ``"path/to/file.py:name"`` / ``"package.module:name"`` to a Flow, a scenario, or a
            function building one from ``params`` (required for worker processes, which each
            rebuild the flow: nothing is pickled).
        workers: number of workers. More than one means worker processes, unless
            ``processes=False``.
        processes: force worker processes (True) even for one worker, or run every worker
            in this event loop (False: no parallelism, but the same routing, exchanges and
            flow control as processes, without encoding; for tests, embedding and
            debugging). Default: processes when ``workers > 1``.
        state_dir: where LMDB state lives. It must be fresh (missing or without a shoal
            manifest) unless ``resume``: a run records itself there and a second run into the
            same directory raises :class:`StateDirectoryInUseError` rather than applying its
            input twice; a run holds a lock on it while it runs. If omitted, a temporary
            directory that the result owns (removed by :meth:`JobResult.close`, when the
            result is garbage-collected, or at exit).
        resume: go on from the latest complete checkpoint of the earlier run recorded in
            ``state_dir`` (same job; needs ``checkpoint_interval``): key groups come back to
            it, sources reopen at its positions. ``checkpoint_dir`` defaults to the earlier
            run's. A run that finished took a final checkpoint at its end: resuming it reads
            nothing more. With no checkpoint completed, the job starts from the beginning
            with empty state.
        backend: ``"lmdb"`` (default) or ``"memory"`` (workers in this loop only).
        dead_letters: where records that failed go; by default an in-memory sink that also
            writes ``dead-letters.jsonl`` in the state directory.
        on_progress: called about twice a second with a :class:`Progress` record.
        log_format: ``"console"`` or ``"json"`` for worker processes. This process's logging
            is the host's: run_job never configures structlog.
        log_level: ``"debug"``, ``"info"``, ``"warning"`` (default) or ``"error"``, likewise.
        link_buffer: bytes a worker process buffers for one peer before its senders wait
            (default 4 MiB; the connection's kernel socket buffers are asked for at the same
            size). Smaller bounds memory per peer; no size can deadlock the job (credits per
            stage and destination keep every socket reader moving).
        checkpoint_interval: seconds between checkpoints (``None``, the default for now:
            none). Sources take barrier ``n`` between batches and record their positions, key
            groups align the barriers of their input channels and commit their state for epoch
            ``n``, and write their files to ``checkpoint_dir`` off the event loop; the driver
            then writes the checkpoint's manifest. The result's ``checkpoints`` counts the
            checkpoints whose manifest was written. A checkpoint whose files or manifest
            cannot be written (e.g. no space left) is aborted, counted as failed, and the job
            goes on. (Recovery from them comes next.)
        max_restarts: with checkpoints on, a worker that fails (a process killed, an engine
            error) makes the job restart every worker from the last completed checkpoint:
            state comes back to it and sources reread from its positions, so every record's
            effect on state counts once. The job fails (:class:`JobError`) after
            ``max_restarts`` failures in a row with no checkpoint completed in between. With
            checkpoints off, the first failure fails the job.
        restart_backoff: seconds before the first restart, doubled after each failure in a
            row (at most 10 s).
        from_savepoint: start from this savepoint (a directory or fsspec URL written by a
            savepoint action, ``shoal state savepoint``, or ``shoal state rewrite``): every key
            group's state is loaded from it and each split reopens at its position. Any
            worker count; the flow's ``num_key_groups`` must be the savepoint's, and each of
            its operators' states must be declared by the flow with the same kind (states
            the flow adds start empty). Into a fresh ``state_dir``, or with ``resume`` into
            the job's own (its checkpoints then go on above the savepoint's epoch).
        timeline: actions on the running job at record counts or times (``at(...)`` steps,
            see ``shoal.runtime._timeline``): checkpoints, kill -9 of a worker process,
            savepoints, stop. Scenario files give theirs to ``shoal run``.
        faults: a schedule of injected failures (:class:`Fault`), for testing recovery.
        clock: where processing time comes from (processing-time timers, idle splits):
            a ``ManualClock`` in tests; default the system clock. Workers in this loop only.
        checkpoint_dir: where checkpoints are written: a directory or any fsspec URL
            (``memory://...`` only with ``processes=False``: each process has its own memory
            filesystem). Default ``<state_dir>/checkpoints``. Ignored without
            ``checkpoint_interval``.
        stop: when this event is set, every split ends as if its source had ended: what was
            read drains through the job, state is flushed, and the result is returned. This is
            how an unbounded job is stopped. Cancelling the call aborts the job without a
            result: worker processes get SIGTERM and, a second later, SIGKILL.

    Raises:
        ValueError / TypeError: bad arguments, named in the message; an unbounded source
            without ``stop``.
        StateDirectoryInUseError: ``state_dir`` holds the state of an earlier run.
        WorkerFailedError: a worker process failed; carries its exception (type, message,
            actor, operator, key group) and traceback.
        WorkerLostError: a worker process died without saying why (e.g. killed by SIGKILL).
        JobError: the engine failed (for example a sink raised); the cause is chained.
    """
    _check_positive("workers", workers)
    _check_positive("batch_size", batch_size)
    _check_positive("mailbox_size", mailbox_size)
    if checkpoint_interval is not None and (
        isinstance(checkpoint_interval, bool)
        or not isinstance(checkpoint_interval, int | float)
        or not checkpoint_interval > 0
    ):
        raise ValueError(
            f"checkpoint_interval must be a positive number of seconds or None; "
            f"got {checkpoint_interval!r}"
        )
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts must be an int >= 0; got {max_restarts!r}")
    if (
        isinstance(restart_backoff, bool)
        or not isinstance(restart_backoff, int | float)
        or not restart_backoff >= 0
    ):
        raise ValueError(
            f"restart_backoff must be a number of seconds >= 0; got {restart_backoff!r}"
        )
    if resume and (state_dir is None or checkpoint_interval is None):
        raise ValueError(
            "resume=True needs the state_dir of the run to resume and checkpoints on "
            "(checkpoint_interval): it restores that run's latest checkpoint and goes on "
            "checkpointing"
        )
    use_processes = workers > 1 if processes is None else processes
    _check_timeline(timeline, workers, use_processes, checkpoint_interval)
    if not all(isinstance(fault, Fault) for fault in faults):
        raise TypeError(f"faults must be Fault objects; got {list(faults)!r}")
    if log_format not in ("console", "json"):
        raise ValueError(f"log_format must be 'console' or 'json'; got {log_format!r}")
    if log_level not in ("debug", "info", "warning", "error"):
        raise ValueError(
            f"log_level must be 'debug', 'info', 'warning' or 'error'; got {log_level!r}"
        )
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, str | Path):
        raise TypeError(
            f"checkpoint_dir must be a path or an fsspec URL string; got {checkpoint_dir!r}"
        )
    if isinstance(link_buffer, bool) or not isinstance(link_buffer, int) or link_buffer < 1024:
        raise ValueError(f"link_buffer must be an int of at least 1024 bytes; got {link_buffer!r}")
    if clock is not None and use_processes:
        raise ValueError(
            "a clock object cannot cross into worker processes; pass clock= with "
            "processes=False (worker processes use the system clock)"
        )
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
    temporary = state_dir is None
    directory = (
        Path(tempfile.mkdtemp(prefix="shoal-state-")) if state_dir is None else Path(state_dir)
    )
    claim = None
    try:
        claim = claim_state_dir(
            directory,
            plan.flow.name,
            resume=resume,
            checkpoint_dir=(
                str(checkpoint_dir)
                if checkpoint_dir is not None
                else None
                if resume
                else str(directory / "checkpoints")
            ),
        )
        manifest = claim.manifest
        checkpoints = manifest.checkpoint_dir or str(directory / "checkpoints")
        dlq = (
            dead_letters
            if dead_letters is not None
            else DeadLetterSink(str(directory / "dead-letters.jsonl"))
        )
        register_runtime_messages()
        run = _Run(
            plan,
            directory,
            temporary,
            manifest.run_id,
            dlq,
            batch_size,
            mailbox_size,
            on_progress,
            stop,
            log_format,
            log_level,
            None if checkpoint_interval is None else float(checkpoint_interval),
            link_buffer,
            checkpoints,
            max_restarts,
            float(restart_backoff),
            tuple(faults),
            (
                _savepoint_point(str(from_savepoint), plan)
                if from_savepoint is not None
                else _resume_point(checkpoints)
                if resume
                else StartPoint()
            ),
            TimelineRunner(timeline) if timeline else None,
            clock=clock,
        )
        if use_processes:
            assert ref is not None
            result = await _run_processes(run, ref, params or {}, workers)
        else:
            state: StateBackend = LmdbBackend(directory) if backend == "lmdb" else MemoryBackend()
            try:
                result = await _run_in_loop(run, state, workers)
            except ActorFailedError as exc:
                raise JobError(f"job {plan.flow.name!r} failed: {exc}") from exc
        await _stop_savepoint(run, result)
    except BaseException:
        if temporary:  # nobody can read a failed run's temporary state
            shutil.rmtree(directory, ignore_errors=True)
        raise
    else:
        return result
    finally:
        if claim is not None:
            claim.release()


def _check_timeline(
    timeline: Sequence[At], workers: int, processes: bool, checkpoint_interval: float | None
) -> None:
    for step in timeline:
        if not isinstance(step, At):
            raise TypeError(
                f"timeline steps are at(...) records; got {step!r} (resume(...) steps belong "
                "to scenario timelines: each run of the scenario is one run_job)"
            )
        action = step.action
        if isinstance(action, KillWorker):
            if not processes:
                raise ValueError(
                    f"{action}: kill_worker needs worker processes (workers > 1, or processes=True)"
                )
            if action.worker >= workers:
                raise ValueError(f"{action}: the job has workers 0..{workers - 1}")
        needs = isinstance(action, Checkpoint | KillWorker | Savepoint) or (
            isinstance(action, Stop) and action.savepoint is not None
        )
        if needs and checkpoint_interval is None:
            raise ValueError(f"{action}: this timeline action needs checkpoints on")


async def _stop_savepoint(run: _Run, result: JobResult) -> None:
    """A timeline's ``stop(savepoint=...)``: the final checkpoint, written as a savepoint."""
    runner = run.timeline
    if runner is not None and runner.error is not None:
        raise JobError(f"job {run.plan.flow.name!r}: {runner.error}")
    if runner is not None and runner.done < len(runner.steps):
        raise JobError(
            f"job {run.plan.flow.name!r} ended before its timeline step "
            f"{runner.steps[runner.done]} ran ({runner.done} of {len(runner.steps)} steps ran); "
            "a step at more records than the job reads never runs, and a fast job can pass "
            "the later steps while an earlier one (a checkpoint) is being taken: pace the "
            "source, or move the steps"
        )
    if runner is None or runner.stop_savepoint is None:
        return
    store = run.checkpoint_store()
    if store is None or result.checkpoints is None or not result.checkpoints.last_completed:
        raise JobError(f"stop(savepoint={runner.stop_savepoint!r}): no checkpoint completed")
    url = runner.stop_savepoint
    if "://" not in url and not Path(url).is_absolute():
        url = str(run.state_dir / url)
    await anyio.to_thread.run_sync(
        write_savepoint_of, store, result.checkpoints.last_completed, url
    )


def _savepoint_point(url: str, plan: Plan) -> StartPoint:
    """Where a run from a savepoint starts; refuses a savepoint this flow cannot load.

    Raises:
        CheckpointCorruptError: the savepoint's manifest is missing or fails its checksum.
        ValueError: its key-group count, operators or states do not fit the flow (named).
    """
    manifest = read_savepoint(url)
    name = plan.flow.name
    if manifest.num_key_groups != plan.num_key_groups:
        raise ValueError(
            f"savepoint {url!r} has {manifest.num_key_groups} key groups; flow {name!r} has "
            f"{plan.num_key_groups}: rewrite it first (shoal state rewrite {url} --key-groups "
            f"{plan.num_key_groups} OUT)"
        )
    declared = {
        stage.operator.name: {s["name"]: s["kind"] for s in describe_specs(stage.operator.states)}
        for stage in plan.keyed_stages
        if stage.operator is not None
    }
    for operator, states in manifest.operators.items():
        if operator not in declared:
            raise ValueError(
                f"savepoint {url!r} holds state of operator {operator!r}, which flow {name!r} "
                f"does not have (its keyed operators: {', '.join(sorted(declared)) or 'none'})"
            )
        for state in states:
            kind = declared[operator].get(state["name"])
            if kind != state["kind"]:
                found = "does not declare it" if kind is None else f"declares it as {kind}"
                raise ValueError(
                    f"savepoint {url!r} holds {state['kind']} state {operator}.{state['name']};"
                    f" flow {name!r} {found}"
                )
    return StartPoint(restoring=True, manifest=manifest, savepoint=url)


def _resume_point(checkpoint_dir: str) -> StartPoint:
    """Where a resumed run starts: the earlier run's latest complete checkpoint."""
    store = CheckpointStore(checkpoint_dir)
    start = recovery_point(store, attempt=0)
    if start.manifest is None:
        log.warning(
            "no complete checkpoint to resume from; the job starts from the beginning",
            checkpoint_dir=checkpoint_dir,
        )
    store.discard_incomplete()
    return start


def _last_stage_actors(plan: Plan) -> set[str]:
    """The actors whose :class:`Drained` reports mean the whole job has drained."""
    last = plan.stages[-1]
    if last.operator is None:  # no keyed operator: the source actors, one per split
        return {source_actor_name(split) for split in plan.splits}
    return {actor_name(last.name, group) for group in range(plan.num_key_groups)}


async def _watch_progress(
    reports: Callable[[], Any],
    started: float,
    on_progress: Callable[[Progress], None],
    coordinator: CheckpointCoordinator | None,
) -> None:
    while True:
        await anyio.sleep(_PROGRESS_INTERVAL_S)
        snaps = await reports()
        checkpoints = None if coordinator is None else coordinator.statistics()
        on_progress(_progress(snaps, time.perf_counter() - started, checkpoints))


async def _stop_when_set(stop: anyio.Event, controllers: Sequence[Any]) -> None:
    await stop.wait()
    for controller in controllers:
        await controller.ask(StopSources())


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


def _result(
    run: _Run,
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
        checkpoints=None if coordinator is None else coordinator.statistics(),
        checkpoint_dir=None if coordinator is None else run.checkpoint_dir,
        recoveries=tuple(attempts.recoveries),
        _temporary=_TemporaryState(run.state_dir) if run.temporary else None,
    )


async def _run_in_loop(run: _Run, backend: StateBackend, workers: int) -> JobResult:
    """Every worker, and the driver's job supervisor, in this event loop.

    The workers are separate kernels (ids ``0..workers-1``, the driver ``workers``) in a
    namespace of this run's own, so another job in this loop has its own worker 0. They reach
    each other by reference (no encoding), through the same exchanges and credits as
    processes. Sinks are written where the records are: a gathering sink's one partition is
    shared, others get one partition per worker. A worker that fails (an engine error in one of
    its actors) fails the attempt; with checkpoints on, the job restarts from the last one.
    """
    plan = run.plan
    shared = _ClosesOnce(plan.sink.open_partition(0, 1)) if plan.sink.gather else None
    sinks = [shared or _ClosesOnce(plan.sink.open_partition(i, workers)) for i in range(workers)]
    dead_sink = _ClosesOnce(run.dlq.open_partition(0, 1))
    store = run.checkpoint_store()  # one for every worker here: it is thread-safe
    attempts = _attempts(run, store)
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


def _attempts(run: _Run, store: CheckpointStore | None) -> Attempts:
    return Attempts(
        max_restarts=run.max_restarts,
        backoff_s=run.restart_backoff,
        coordinator=_coordinator(run),
        store=store,
    )


async def _loop_attempt(
    run: _Run,
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
    await _recover_sink(run, start)
    try:
        async with AsyncExitStack() as stack:
            kernel = await stack.enter_async_context(
                open_worker(worker_id=driver, peers=peers, namespace=namespace)
            )
            place_directory(kernel, plan, groups, driver, workers)
            controllers = [kernel.ref(controller_name(i)) for i in range(workers)]
            supervisor = _supervisor(
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
                control = _control(run, kernel, supervisor, controllers, store, all_reports, None)
                _start_companions(tg, run, all_reports, started, control)
                await _start_and_wait(
                    controllers, supervisor, attempts.running, kernel.ref(JOB_ACTOR)
                )
                tg.cancel_scope.cancel()
            elapsed = time.perf_counter() - started
            reports = [await controller.ask(Finish()) for controller in controllers]
            await kernel.ref(JOB_ACTOR).ask("settle")
        return _result(run, workers, False, elapsed, reports, backend, supervisor, attempts)
    except (ActorFailedError, ActorStartError) as exc:
        raise _loop_failure(run, exc, kernels) from exc


async def _recover_sink(run: _Run, start: StartPoint) -> None:
    """Before an attempt starts, a transactional sink publishes the output of the checkpoint
    it starts from that a crash kept from being published, and drops what came after."""
    sink = run.plan.sink
    if getattr(sink, "transactional", False):
        committed = start.epoch if start.restoring and start.epoch else None
        report = await anyio.to_thread.run_sync(sink.recover, committed)  # type: ignore[attr-defined]
        log.debug("transactional sink recovered", committed=committed, report=str(report))


def _loop_failure(
    run: _Run, exc: ActorFailedError | ActorStartError, kernels: Sequence[Worker]
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


def _supervisor(
    run: _Run,
    groups: list[int],
    sink: SinkPartition | None,
    dead_sink: SinkPartition,
    controllers: Sequence[Ref],
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
            operators={
                stage.operator.name: describe_specs(stage.operator.states)
                for stage in plan.keyed_stages
                if stage.operator is not None
            },
            layout={"workers": len(controllers), "group_owner": list(groups)},
            key_groups={
                actor_name(stage.name, group): kernel.ref(actor_name(stage.name, group))
                for stage in plan.keyed_stages
                for group in range(plan.num_key_groups)
            },
        )
    return JobSupervisor(
        expected=_last_stage_actors(plan),
        group_owner=groups,
        sink=sink,
        dead_sink=dead_sink,
        coordinator=coordinator,
        controllers=controllers,
        target=target,
        transactional=bool(getattr(plan.sink, "transactional", False)),
    )


def _coordinator(run: _Run) -> CheckpointCoordinator | None:
    """The job's checkpoint coordinator (None: checkpoints off); it outlives attempts."""
    if run.checkpoint_interval is None:
        return None
    plan = run.plan
    store = run.checkpoint_store()
    start = run.start
    coordinator = CheckpointCoordinator(
        sources={source_actor_name(split) for split in plan.splits},
        key_groups={
            actor_name(stage.name, group)
            for stage in plan.keyed_stages
            for group in range(plan.num_key_groups)
        },
        clock=time.perf_counter,
        # Epochs only grow, across restarts and resumed runs: a checkpoint is never named
        # like one already in the store.
        first_epoch=max(max(store.epochs(), default=0) if store is not None else 0, start.epoch)
        + 1,
    )
    if start.restoring:
        coordinator.restart(restored=start.base, first_epoch=coordinator.next_epoch)
    return coordinator


def _control(
    run: _Run,
    kernel: Worker,
    supervisor: JobSupervisor,
    controllers: Sequence[Ref],
    store: CheckpointStore | None,
    reports: Callable[[], Awaitable[list[dict[str, Any]]]],
    kill: Callable[[int], None] | None,
) -> JobControl:
    """This attempt's :class:`JobControl` (``kill``: None when the workers share this loop)."""
    return JobControl(
        job=kernel.ref(JOB_ACTOR),
        supervisor=supervisor,
        controllers=controllers,
        store=store,
        reports=reports,
        kill=kill,
        state_dir=run.state_dir,
    )


def _start_companions(
    tg: TaskGroup,
    run: _Run,
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
            _watch_progress(reports, started, run.on_progress, supervisor.coordinator),
        )
    if run.stop is not None:
        tg.start_soon(_companion, _stop_when_set(run.stop, control.controllers))
    if run.checkpoint_interval is not None:
        tg.start_soon(
            _companion, _checkpoint_every(run.checkpoint_interval, control.job, supervisor)
        )
    if run.timeline is not None:
        tg.start_soon(_companion, _run_timeline(run.timeline, control))


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
        await job.ask(TriggerCheckpoint())


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


def _mark_aborting(
    kernel: Worker,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> bool:
    if exc_type is not None:
        kernel.aborting = True
    return False


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


async def _run_processes(run: _Run, ref: str, params: Mapping[str, Any], workers: int) -> JobResult:
    """Every worker in a process of its own; a worker that dies or fails fails the attempt, and
    with checkpoints on the job restarts from the last one (see ``_recovery``)."""
    plan = run.plan
    sink = _ClosesOnce(plan.sink.open_partition(0, 1)) if plan.sink.gather else None
    dead_sink = _ClosesOnce(run.dlq.open_partition(0, 1))
    store = run.checkpoint_store()
    attempts = _attempts(run, store)
    try:
        return await attempts.run(
            run.start,
            partial(_process_attempt, run, ref, params, workers, sink, dead_sink, store, attempts),
            plan.flow.name,
        )
    finally:
        with anyio.CancelScope(shield=True):
            if sink is not None:
                await sink.aclose()
            await dead_sink.aclose()


async def _process_attempt(
    run: _Run,
    ref: str,
    params: Mapping[str, Any],
    workers: int,
    sink: SinkPartition | None,
    dead_sink: SinkPartition,
    store: CheckpointStore | None,
    attempts: Attempts,
    start: StartPoint,
) -> JobResult:
    plan = run.plan
    driver = workers
    peers = list(range(workers + 1))
    groups = place_key_groups(plan.num_key_groups, workers)
    await _recover_sink(run, start)
    mesh_dir = Path(tempfile.mkdtemp(prefix="shoal-mesh-", dir=_mesh_parent()))
    # Processes in the order they ended while the job ran (the first cause comes first).
    ended: list[int] = []
    noticed: list[float] = []
    driver_lost: list[PeerLostError] = []
    reports: list[dict[str, Any]] = []
    procs: list[WorkerProcess] = []
    try:
        async with open_worker(
            worker_id=driver, mesh_dir=mesh_dir, peers=peers, link_buffer=run.link_buffer
        ) as kernel:
            place_directory(kernel, plan, groups, driver, workers)
            controllers = [kernel.ref(controller_name(i)) for i in range(workers)]
            supervisor = _supervisor(
                run, groups, sink, dead_sink, controllers, kernel, store, attempts.coordinator
            )
            await kernel.spawn(lambda: supervisor, name=JOB_ACTOR)
            async with AsyncExitStack() as stack:
                for index in range(workers):
                    procs.append(
                        await stack.enter_async_context(
                            open_worker_process(
                                index,
                                mesh_dir,
                                peers,
                                bootstrap="shoal.runtime._boot:bootstrap",
                                args=_worker_args(run, ref, params, index, workers, driver, start),
                                # If this driver dies, its workers remove what it cannot.
                                cleanup=[run.state_dir] if run.temporary else [],
                                link_buffer=run.link_buffer,
                                wait_ready=False,  # they boot in parallel; waited for below
                            )
                        )
                    )
                for proc in procs:
                    await proc.wait_ready()
                # Unwinding by an exception (a cancellation: Ctrl-C twice) marks the driver as
                # aborting before the processes are terminated: their going is then no news.
                stack.push(partial(_mark_aborting, kernel))
                started = time.perf_counter()

                async def all_reports() -> list[dict[str, Any]]:
                    return [await c.ask("report") for c in controllers]

                async def watch(index: int, scope: anyio.CancelScope) -> None:
                    await procs[index].wait()
                    if not supervisor.ended.is_set():
                        ended.append(index)
                        noticed.append(time.perf_counter())
                        scope.cancel()

                async with anyio.create_task_group() as tg:
                    for index in range(workers):
                        tg.start_soon(watch, index, tg.cancel_scope)
                    control = _control(
                        run,
                        kernel,
                        supervisor,
                        controllers,
                        store,
                        all_reports,
                        # A real kill -9, like one from outside: reported as the cause.
                        lambda index: os.kill(procs[index].pid, signal.SIGKILL),
                    )
                    _start_companions(tg, run, all_reports, started, control)
                    try:
                        await _start_and_wait(
                            controllers, supervisor, attempts.running, kernel.ref(JOB_ACTOR)
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
                        reports = [await c.ask(Finish()) for c in controllers]
                    except PeerLostError as exc:
                        # A worker died after the final checkpoint, before its report: the
                        # next attempt restores that checkpoint and finishes at once.
                        noticed.append(time.perf_counter())
                        driver_lost.append(exc)
                if ended or driver_lost:
                    # With checkpoints, the job restarts: nothing of the survivors is kept but
                    # their LMDB, which is crash-safe, so they go at once.
                    await _abort_all(procs, grace=0.0 if store is not None else _ABORT_GRACE_S)
                else:
                    await kernel.ref(JOB_ACTOR).ask("settle")
                    for proc in procs:  # all at once; leaving the stack then waits for each
                        proc.request_stop()
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
        error = _first_cause(plan, procs, ended, driver_lost)
        corrupt = isinstance(error, WorkerFailedError) and "CheckpointCorruptError" in (
            f"{error.error_type} {error.error_message}"
        )
        raise AttemptFailed(error, noticed=min(noticed), corrupt=corrupt)
    log.debug("job finished", job=plan.flow.name, workers=workers, seconds=round(elapsed, 3))
    return _result(
        run, workers, True, elapsed, reports, LmdbBackend(run.state_dir), supervisor, attempts
    )


def _worker_args(
    run: _Run,
    ref: str,
    params: Mapping[str, Any],
    index: int,
    workers: int,
    driver: int,
    start: StartPoint,
) -> dict[str, Any]:
    return {
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
        "checkpoints": run.checkpoint_interval is not None,
        "checkpoint_dir": run.checkpoint_dir if run.checkpoint_interval is not None else None,
        "attempt": start.attempt,
        "restoring": start.restoring,
        "restore_epoch": None if start.manifest is None else start.manifest.epoch,
        "restore_savepoint": start.savepoint,
        "faults": [fault.to_data() for fault in run.faults],
    }


async def _start_and_wait(
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


def _first_cause(
    plan: Plan,
    procs: Sequence[WorkerProcess],
    ended: Sequence[int],
    driver_lost: Sequence[PeerLostError],
) -> JobError:
    """The error that names the first cause of a failed multi-process run.

    Every worker has exited (see _abort_all). Workers are ranked in the order they ended (those
    that ended by themselves first): a worker's own error or a signal from outside beats an
    unexplained exit, which beats losing a peer (the consequence of another's death).
    """
    order = list(dict.fromkeys([*ended, *range(len(procs))]))
    causes = [c for c in (_failure_cause(plan, i, procs[i]) for i in order) if c is not None]
    if causes:
        return min(causes, key=lambda cause: cause[0])[1]
    lost = driver_lost[0] if driver_lost else None
    return JobError(f"job {plan.flow.name!r} failed: lost a worker: {lost}")
