"""Run a flow to completion: in one event loop, or across worker processes.

``await run_job(flow)`` runs everything in the current event loop (one worker): that is how
tests, embedding and small jobs run. ``await run_job("file.py:build", workers=4)`` starts four
worker processes that each rebuild the flow from its reference, connected to each other and to
this driver over Unix sockets; the splits and key groups are spread over them.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from shoal.actors import (
    ActorFailedError,
)
from shoal.actors._log import get_logger
from shoal.storage import (
    DEFAULT_STATE_MEMORY,
    CheckpointCorruptError,
    CheckpointStore,
    LmdbBackend,
    Manifest,
    MemoryBackend,
    StateBackend,
    read_savepoint,
)

from ._attempt import DEFAULT_LINK_BUFFER, Run
from ._boot import register_runtime_messages
from ._control import JobControl, write_savepoint_of
from ._credits import MAX_WORKERS
from ._dataflow import Flow
from ._exceptions import JobError
from ._faults import Fault
from ._loader import load_flow, normalize_ref
from ._plan import Plan, compile_plan
from ._policies import AutoRebalance
from ._push_source import refuse_push_source_in_processes
from ._recovery import StartPoint, recovery_point
from ._rescale import DEFAULT_MAX_MOVES, Scaling
from ._result import JobResult as JobResult
from ._result import Progress as Progress
from ._run_loop import run_in_loop
from ._run_processes import run_processes
from ._sinks import DeadLetterSink
from ._sources import check_bounded
from ._statedir import claim_state_dir, under_state_dir
from ._time import Clock
from ._timeline import At, Checkpoint, KillWorker, Rescale, Savepoint, Stop, TimelineRunner
from ._worker_state import WorkerDirsBackend

__all__ = ("JobResult", "Progress", "run_job")

log = get_logger("shoal.job")

# Source batch size: large enough that one Data message per key group carries tens of records
# (a message hop costs a few µs), small enough that a batch is a few ms of work.
DEFAULT_BATCH_SIZE = 8192
# Mailboxes hold this many batches: enough to keep an actor busy while its senders run, small
# enough that a slow key group pushes back on its sources within a few batches.
DEFAULT_MAILBOX_SIZE = 16


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
    max_moves: int = DEFAULT_MAX_MOVES,
    move_hold_records: int | None = None,
    control_socket: str | Path | None = None,
    on_control: Callable[[JobControl | None], None] | None = None,
    auto_rebalance: AutoRebalance | None = None,
    per_worker_state: bool = False,
    state_memory: int | None = DEFAULT_STATE_MEMORY,
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
            goes on; a failed job restarts from the last completed one (``max_restarts``).
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
        max_moves: how many key groups (or splits) a rescale moves at once, per placement
            version: its pacing (more: a shorter rescale, more key groups paused at once).
        move_hold_records: backpressure on a moving key group: past this many records queued
            for it before its handoff, its senders hold what they route to it (each worker
            up to as many again, then those senders wait); every other key group keeps
            flowing. None: 4 x mailbox_size x batch_size.
        control_socket: a Unix socket path the running job listens on for control requests
            (``shoal rescale``, ``shoal status``; see ``_control_socket.py``); None: none.
        on_control: called with each attempt's ``JobControl`` when it starts and with None
            when it ends (what :func:`start_job` builds its ``Job`` on).
        auto_rebalance: rebalance key groups on its own when one worker stays overloaded
            (an :class:`AutoRebalance`: interval, threshold, consecutive readings, cooldown,
            policy; see ``_policies.py``); None (the default): only when asked.
        per_worker_state: each worker keeps its LMDB environments in a directory of its own,
            ``<state_dir>/workers/w<id>/``, as on separate hosts: a key group that moves
            (rescale, rebalance) is shipped — copied while it runs, then only the changes
            since at the handoff (see ``_ship.py``). Default False: one shared directory,
            where a moving key group's environment changes owner without a copy.
        state_memory: bytes the cached state entries of a worker may take, all its key groups
            together (default 256 MiB): beyond it a key group's flush evicts clean entries
            (reads then go to LMDB), and unflushed changes over it are written back early
            (see ``shoal.storage``'s ``_budget.py``); None: no budget.
        checkpoint_dir: where checkpoints are written: a directory or any fsspec URL
            (``memory://...`` only with ``processes=False``: each process has its own memory
            filesystem). Default ``<state_dir>/checkpoints``. Ignored without
            ``checkpoint_interval``.
        stop: when this event is set, every split stops reading: what was read drains
            through the job, state is flushed, and the result is returned. This is how an
            unbounded job is stopped. Event time stays where it was (not +inf, as at the end
            of an input): open windows and event-time timers do not fire; a resumed run
            completes them. Cancelling the call aborts the job without a
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
    if workers > MAX_WORKERS:
        raise ValueError(f"workers must be at most {MAX_WORKERS}; got {workers}")
    _check_positive("batch_size", batch_size)
    _check_positive("mailbox_size", mailbox_size)
    _check_positive("max_moves", max_moves)
    if move_hold_records is not None:
        _check_positive("move_hold_records", move_hold_records)
    if state_memory is not None and (
        isinstance(state_memory, bool) or not isinstance(state_memory, int) or state_memory < 1
    ):
        raise ValueError(
            "state_memory must be an int number of bytes >= 1, or None for no budget; "
            f"got {state_memory!r}"
        )
    if not isinstance(per_worker_state, bool):
        raise TypeError(f"per_worker_state must be True or False; got {per_worker_state!r}")
    if per_worker_state and backend != "lmdb":
        raise ValueError(
            "per_worker_state keeps each worker's state in LMDB: it needs backend='lmdb'"
        )
    if auto_rebalance is not None and not isinstance(auto_rebalance, AutoRebalance):
        raise TypeError(
            f"auto_rebalance takes an AutoRebalance(...) or None; got {auto_rebalance!r}"
        )
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
            # The fix for a PushSource is not a flow reference (worker processes would each
            # build a PushSource of their own): say so first.
            with contextlib.suppress(ValueError):  # no source yet: validate() says so below
                refuse_push_source_in_processes(flow.get_source(), flow.name)
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
    if use_processes:
        refuse_push_source_in_processes(built.get_source(), built.name)
    check_bounded(built.get_source(), has_stop=stop is not None, flow=built.name)
    temporary = state_dir is None
    directory = (
        Path(tempfile.mkdtemp(prefix="shoal-state-")) if state_dir is None else Path(state_dir)
    )
    claim = None
    try:
        # Checked before the state directory is claimed: a refused savepoint leaves no trace.
        savepoint_start = (
            _savepoint_point(str(from_savepoint), plan) if from_savepoint is not None else None
        )
        claim = claim_state_dir(
            directory,
            plan.flow.name,
            resume=resume,
            checkpoint_dir=(
                _recorded_checkpoint_dir(checkpoint_dir, directory)
                if checkpoint_dir is not None
                else None
                if resume
                else "checkpoints"  # relative to the state directory: a copy stays whole
            ),
        )
        manifest = claim.manifest
        checkpoints = under_state_dir(manifest.checkpoint_dir or "checkpoints", directory)
        dlq = (
            dead_letters
            if dead_letters is not None
            else DeadLetterSink(str(directory / "dead-letters.jsonl"))
        )
        register_runtime_messages()
        run = Run(
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
                savepoint_start
                if savepoint_start is not None
                else _resume_point(checkpoints, plan)
                if resume
                else StartPoint()
            ),
            TimelineRunner(timeline) if timeline else None,
            clock=clock,
            scaling=Scaling(workers),
            max_moves=max_moves,
            move_hold_records=move_hold_records,
            control_socket=None if control_socket is None else Path(control_socket),
            on_control=on_control,
            auto_rebalance=auto_rebalance,
            per_worker_state=per_worker_state,
            state_memory=state_memory,
        )
        if use_processes:
            assert ref is not None
            result = await run_processes(run, ref, params or {})
        else:
            state: StateBackend = (
                WorkerDirsBackend(directory)
                if per_worker_state
                else LmdbBackend(directory, state_memory=state_memory)
                if backend == "lmdb"
                else MemoryBackend(state_memory=state_memory)
            )
            try:
                result = await run_in_loop(run, state, workers)
            except ActorFailedError as exc:
                raise JobError(f"job {plan.flow.name!r} failed: {exc}") from exc
        await _stop_savepoint(run, result, stopped=stop is not None and stop.is_set())
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
    rescaled = False
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
            if action.worker >= workers and not rescaled:
                raise ValueError(f"{action}: the job has workers 0..{workers - 1}")
        if isinstance(action, Rescale):
            rescaled = True
            if action.kill_worker is not None and not processes:
                raise ValueError(
                    f"{action}: kill_worker needs worker processes (workers > 1, or processes=True)"
                )
        needs = isinstance(action, Checkpoint | KillWorker | Savepoint) or (
            isinstance(action, Stop) and action.savepoint is not None
        )
        if needs and checkpoint_interval is None:
            raise ValueError(f"{action}: this timeline action needs checkpoints on")


async def _stop_savepoint(run: Run, result: JobResult, *, stopped: bool = False) -> None:
    """A timeline's ``stop(savepoint=...)``: the final checkpoint, written as a savepoint.

    ``stopped``: the job was stopped from outside (its ``stop`` event: Ctrl-C, the host) —
    the steps it did not reach, or the one it cut short, are not the timeline's failure.
    """
    runner = run.timeline
    if runner is not None and runner.error is not None:
        raise JobError(f"job {run.plan.flow.name!r}: {runner.error}")
    if runner is not None and runner.acting is not None and not stopped:
        raise JobError(
            f"job {run.plan.flow.name!r} ended while its timeline step {runner.acting} was "
            "still running (the job read all its input first): pace the source, or move the "
            "step earlier"
        )
    if runner is not None and runner.done < len(runner.steps) and not stopped:
        raise JobError(
            f"job {run.plan.flow.name!r} ended before its timeline step "
            f"{runner.steps[runner.done]} ran ({runner.done} of {len(runner.steps)} steps ran): "
            "a step at more records than the job's input holds never runs; give it more "
            "input, or move the step earlier"
        )
    if runner is None or runner.stop_savepoint is None:
        return
    store = run.checkpoint_store()
    if store is None or result.checkpoints is None or not result.checkpoints.last_completed:
        raise JobError(f"stop(savepoint={runner.stop_savepoint!r}): no checkpoint completed")
    url = under_state_dir(runner.stop_savepoint, run.state_dir)
    await anyio.to_thread.run_sync(
        write_savepoint_of, store, result.checkpoints.last_completed, url
    )


def _savepoint_point(url: str, plan: Plan) -> StartPoint:
    """Where a run from a savepoint starts; refuses a savepoint this flow cannot load.

    Raises:
        ValueError: no savepoint there; or its key-group count, operators or states do not fit
            the flow (named).
        CheckpointCorruptError: the savepoint's manifest fails its checksum.
    """
    try:
        manifest = read_savepoint(url)
    except CheckpointCorruptError as exc:
        if "missing" not in str(exc):
            raise
        raise ValueError(f"from_savepoint: no savepoint at {url!r} ({exc})") from None
    _check_fits(manifest, plan, f"savepoint {url!r}", f"shoal state rewrite {url}")
    return StartPoint(restoring=True, manifest=manifest, savepoint=url)


def _recorded_checkpoint_dir(checkpoint_dir: str | Path, state_dir: Path) -> str:
    """How the state manifest records a checkpoint directory: URLs as given, local paths
    absolute (or relative to the state directory when inside it), never relative to the
    working directory of the run that wrote it.

    Raises:
        ValueError: a local path that exists and is not a directory.
    """
    text = str(checkpoint_dir)
    if "://" in text:
        return text
    path = Path(text).resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint_dir {text!r} is a file; give a directory (or a URL)")
    try:
        return str(path.relative_to(state_dir.resolve()))
    except ValueError:
        return str(path)


def _check_fits(manifest: Manifest, plan: Plan, what: str, rewrite: str) -> None:
    """Refuse state this flow cannot load: another key-group count, or an operator or state the
    flow does not declare with the same kind."""
    name = plan.flow.name
    if manifest.num_key_groups != plan.num_key_groups:
        raise ValueError(
            f"{what} has {manifest.num_key_groups} key groups; flow {name!r} has "
            f"{plan.num_key_groups}: rewrite it first ({rewrite} --key-groups "
            f"{plan.num_key_groups} OUT)"
        )
    declared = {
        operator: {state["name"]: state["kind"] for state in states}
        for operator, states in plan.state_declarations().items()
    }
    for operator, states in manifest.operators.items():
        if operator not in declared:
            raise ValueError(
                f"{what} holds state of operator {operator!r}, which flow {name!r} "
                f"does not have (its keyed operators: {', '.join(sorted(declared)) or 'none'})"
            )
        for state in states:
            kind = declared[operator].get(state["name"])
            if kind != state["kind"]:
                found = "does not declare it" if kind is None else f"declares it as {kind}"
                raise ValueError(
                    f"{what} holds {state['kind']} state {operator}.{state['name']};"
                    f" flow {name!r} {found}"
                )


def _resume_point(checkpoint_dir: str, plan: Plan) -> StartPoint:
    """Where a resumed run starts: the earlier run's latest complete checkpoint, which must fit
    the flow (a resumed run with another key-group count would hash keys elsewhere)."""
    store = CheckpointStore(checkpoint_dir)
    start = recovery_point(store, attempt=0)
    if start.manifest is not None:
        _check_fits(
            start.manifest,
            plan,
            f"the checkpoint to resume ({checkpoint_dir}, epoch {start.epoch})",
            f"shoal state savepoint {checkpoint_dir} SP, then shoal state rewrite SP",
        )
    if start.manifest is None:
        log.warning(
            "no complete checkpoint to resume from; the job starts from the beginning",
            checkpoint_dir=checkpoint_dir,
        )
    store.discard_incomplete()
    return start
