"""The ``shoal`` command line.

``shoal run SCENARIO [options]`` runs a scenario file and its checks. On a terminal it shows live
progress on stderr; at the end it prints a summary (or, with ``--json``, exactly one JSON object
on stdout, also when the run failed). Exit status: 0 when every check passed, 1 when a check
failed or the job failed, 2 on bad usage or a bad scenario file (with a short message saying
what is wrong, never a traceback). ``shoal --version`` prints the installed version.
``shoal state ...`` works on savepoints and checkpoint directories offline (``_state_cli``).

``shoal run`` checkpoints every second by default (``--checkpoint-interval SECONDS``, at
least ``MIN_CHECKPOINT_INTERVAL``, or ``off``), to ``--checkpoint-dir`` (default
``<state-dir>/checkpoints``); the summary reports the checkpoints and recoveries (with
checkpoints off: counts 0, figures ``null``), and, for ``--resume``, the checkpoint the run
resumed from. Its records in and out are the whole job's, each counted once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

import anyio
import structlog
from shoal.storage import DEFAULT_STATE_MEMORY

from ._checkpoint_stats import CheckpointStatistics
from ._control_socket import CONTROL_SOCKET
from ._credits import MAX_WORKERS
from ._ctl_cli import add_control_parsers, run_control
from ._exceptions import JobError, ScenarioError
from ._job import JobResult, Progress
from ._logging import configure_logging
from ._metrics import JobCollector, serve_metrics
from ._progress import ProgressDisplay
from ._rescale import rescale_summary
from ._run import loop_options
from ._scenario import Check, Scenario, load_scenario, run_scenario
from ._sinks import DeadLetter, DeadLetterSink
from ._state_cli import add_state_parser, run_state
from ._statedir import StateClaim, hold_after_run

__all__ = ("main",)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_ABORTED = 130  # a second Ctrl-C: 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # stdout's reader went away: 128 + SIGPIPE, as for `yes | head -1`
DEFAULT_DEAD_LETTERS = "shoal-dead-letters.jsonl"
"""Where dead letters are kept when the state directory is temporary (current directory)."""
SAMPLES = 3
"""How many dead letters the summary shows."""
DEFAULT_CHECKPOINT_INTERVAL = 1.0
"""Seconds between checkpoints unless ``--checkpoint-interval`` says otherwise (or ``off``)."""
MIN_CHECKPOINT_INTERVAL = 0.01
"""The shortest ``--checkpoint-interval`` accepted. A checkpoint of a small job takes a few
milliseconds at least (a barrier round through every key group, a manifest written and
fsynced); below 10 ms a new one would be due before the last completed, so the job would only
skip triggers (1e-9 s was accepted and did exactly that). ``run_job`` itself takes any positive
interval (tests use a few milliseconds)."""
# --checkpoint-interval not given: the scenario's own interval, else the default. (Not a
# string: argparse would pass a string default through the option's type.)
_SCENARIO_DEFAULT: Any = object()


class _UsageError(Exception):
    """A command-line mistake argparse found (the message is argparse's)."""


class _Failure(Exception):
    """The run cannot go on: ``message`` for stderr, ``status`` for the exit."""

    def __init__(self, message: str, status: int, kind: str) -> None:
        super().__init__(message)
        self.message, self.status, self.kind = message, status, kind


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own usage errors exit 2 as well
        # A bad value of one option ("argument --x: expected ...") is one line naming the
        # option and what it takes; the usage block helps only when the command line's shape
        # is wrong (a missing SCENARIO, an unknown option).
        if not message.startswith("argument "):
            self.print_usage(sys.stderr)
        raise _UsageError(message)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _worker_count(text: str) -> int:
    """``--workers N`` / ``shoal rescale N``: 1 to ``MAX_WORKERS``."""
    value = _positive(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"expected a worker count from 1 to {MAX_WORKERS}, got {text!r}"
        )
    return value


def _state_memory(text: str) -> int | None:
    """``--state-memory MB``: megabytes (MiB) of cached state per worker, as bytes; ``off``:
    None (no budget)."""
    if text.strip().lower() == "off":
        return None
    problem = f"expected megabytes (MiB) > 0 (e.g. 256) or 'off', got {text!r}"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(problem) from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(problem)
    size = int(value * 1024 * 1024)
    if size < 1:
        raise argparse.ArgumentTypeError(f"{problem} (less than one byte)")
    return size


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return value


def _interval(text: str) -> float | None:
    if text == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not MIN_CHECKPOINT_INTERVAL <= value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds of at least {MIN_CHECKPOINT_INTERVAL:g}, or 'off'; "
            f"got {text!r}"
        )
    return value


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _version() -> str:
    try:
        return version("shoal")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout without installing
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shoal", description="Stateful stream processing on asyncio.")
    parser.add_argument("--version", action="version", version=f"shoal {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="run a scenario file and its checks")
    run.add_argument(
        "scenario",
        metavar="SCENARIO",
        help="path to a scenario file (e.g. scenarios/clickstream.py)",
    )
    run.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help=f"worker processes (default 1, at most {MAX_WORKERS})",
    )
    run.add_argument(
        "--in-process",
        action="store_true",
        help="with --workers 1: run in this process's event loop",
    )
    run.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    run.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario parameter (repeatable)",
    )
    run.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep LMDB state here (default: a temporary directory, removed)",
    )
    run.add_argument(
        "--dead-letters",
        metavar="PATH",
        help=(
            "write every dead letter to PATH as JSON lines (default: DIR/dead-letters.jsonl "
            f"with --state-dir, else ./{DEFAULT_DEAD_LETTERS} when there are any)"
        ),
    )
    run.add_argument(
        "--checkpoint-interval",
        type=_interval,
        default=_SCENARIO_DEFAULT,
        metavar="SECONDS",
        help=(
            "seconds between checkpoints, or 'off' (default: the scenario's, else "
            f"{DEFAULT_CHECKPOINT_INTERVAL:g})"
        ),
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="go on from the last checkpoint of the run recorded in --state-dir",
    )
    run.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="write checkpoints here: a directory or fsspec URL (default: DIR/checkpoints "
        "of the state directory)",
    )
    run.add_argument(
        "--state-memory",
        type=_state_memory,
        default=DEFAULT_STATE_MEMORY,
        metavar="MB",
        help="cached state a worker may hold, in MiB (default 256; 'off': no budget); beyond "
        "it clean entries are evicted (read back from LMDB) and unflushed ones written back "
        "early",
    )
    run.add_argument(
        "--per-worker-state",
        action="store_true",
        help="each worker keeps its state in a directory of its own (as on separate hosts): "
        "a key group that moves is shipped, copied while it runs, then the changes since",
    )
    run.add_argument(
        "--batch-size", type=_positive, default=None, metavar="N", help="records per source batch"
    )
    run.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT",
    )
    run.add_argument("--log-format", choices=("console", "json"), default="console")
    run.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="warning"
    )
    run.add_argument("--no-progress", action="store_true", help="no live progress display")
    add_state_parser(commands)
    add_control_parsers(commands, _worker_count)
    return parser


def _position(letter: DeadLetter) -> str:
    if letter.split is None:
        return "position unknown"
    return f"{letter.split} offset {letter.offset}" if letter.offset is not None else letter.split


def _sample(letter: DeadLetter) -> dict[str, Any]:
    return {
        "operator": letter.operator,
        "error": f"{letter.error_type}: {letter.error}",
        "split": letter.split,
        "offset": letter.offset,
        "position": _position(letter),
    }


def _ms(seconds: float | None, digits: int = 1) -> float | None:
    return None if seconds is None else round(seconds * 1000, digits)


def _checkpoint_summary(result: JobResult, interval: float | None) -> dict[str, Any]:
    """The checkpoint and recovery fields of the summary.

    Counts are 0 and figures ``None`` (JSON ``null``) when nothing was measured: checkpoints
    off, or none completed. ``checkpoint_interval_s`` (``None``: off) tells the two apart.
    """
    stats = result.checkpoints
    done = stats is not None and stats.completed > 0
    return {
        "checkpoint_interval_s": interval if stats is not None else None,
        "checkpoints_completed": 0 if stats is None else stats.completed,
        "checkpoints_failed": 0 if stats is None else stats.failed,
        "checkpoint_ms_p50": _ms(stats.duration_p50_s) if stats is not None else None,
        "checkpoint_ms_p99": _ms(stats.duration_p99_s) if stats is not None else None,
        "max_pause_ms": _ms(stats.max_pause_s, 2) if stats is not None and done else None,
        "recoveries": len(result.recoveries),
        "recovery_ms": [round(s * 1000, 1) for s in result.recoveries],
    }


def _cache_summary(result: JobResult) -> dict[str, Any]:
    """The state cache's figures of the whole job, all workers (their last reports): what the
    memory budget did. ``state_cache_limit`` is one worker's budget (``None``: no budget) and
    ``state_cache_hit_rate`` ``None`` before any read."""
    reports = result.reports
    hits = sum(r.get("state_cache_hits", 0) for r in reports)
    misses = sum(r.get("state_cache_misses", 0) for r in reports)
    limits = [r.get("state_cache_limit") for r in reports]
    return {
        "state_cache_limit": next((limit for limit in limits if limit is not None), None),
        "state_cache_hits": hits,
        "state_cache_misses": misses,
        "state_cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "state_cache_evicted": sum(r.get("state_cache_evicted", 0) for r in reports),
    }


def _resumed_from(result: JobResult) -> dict[str, Any] | None:
    """Where the run started, for the summary (None: from the beginning)."""
    start = result.resumed_from
    if start is None:
        return None
    return {
        "kind": start.kind,
        "path": start.path,
        "epoch": start.epoch,
        "created": _utc(start.created),
        "records_in": start.records_in,
        "records_out": start.records_out,
    }


def _utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _summary(
    name: str,
    result: JobResult,
    checks: list[Check],
    dead_letters_file: Path | None,
    checkpoint_interval: float | None = None,
) -> dict[str, Any]:
    warnings = []
    # This run's dead letters against this run's reads (records_in is the whole job's).
    read = result.records_in if result.records_read is None else result.records_read
    if read > 0 and result.dead_letters >= read:
        warnings.append(
            f"every record failed: {result.dead_letters:,} dead letters for {read:,} records in"
        )
    return {
        "scenario": name,
        "workers": result.workers,
        "processes": result.processes,
        "records_in": result.records_in,
        "records_out": result.records_out,
        "dead_letters": result.dead_letters,
        "dead_letter_samples": [_sample(x) for x in result.dead_letter_records[:SAMPLES]],
        "dead_letters_file": str(dead_letters_file) if dead_letters_file else None,
        "records_read": result.records_in if result.records_read is None else result.records_read,
        "resumed_from": _resumed_from(result),
        "elapsed_s": round(result.elapsed_s, 4),
        "events_per_s": round(result.events_per_s, 1),
        "key_groups": result.plan.num_key_groups,
        **_checkpoint_summary(result, checkpoint_interval),
        **_cache_summary(result),
        **rescale_summary(result.migrations, result.rescales),
        "checks": [check.to_json() for check in checks],
        "warnings": warnings,
        "passed": all(check.passed for check in checks),
        "error": None,
    }


def _print_summary(summary: dict[str, Any], out: Any) -> None:
    mark = "PASSED" if summary["passed"] else "FAILED"
    print(f"\nscenario {summary['scenario']}: {mark}", file=out)
    if summary.get("description"):
        print(f"  {summary['description']}", file=out)
    for warning in summary["warnings"]:
        print(f"  WARNING: {warning}", file=out)
    print(
        f"  {summary['records_in']:,} records in, {summary['records_out']:,} out, "
        f"{summary['dead_letters']:,} dead letters",
        file=out,
    )
    if summary["resumed_from"] is not None:
        print(f"  {_resumed_line(summary['resumed_from'])}", file=out)
    for sample in summary["dead_letter_samples"]:
        print(
            f"    dead letter: {sample['operator']}: {sample['error']} at {sample['position']}",
            file=out,
        )
    if summary["dead_letters"] and summary["dead_letters_file"]:
        print(f"    all dead letters: {summary['dead_letters_file']}", file=out)
    many = summary["workers"] != 1
    if summary["processes"]:
        mode = "worker processes" if many else "worker process"
    else:
        mode = "in-process workers" if many else "in-process worker"
    # After a recovery or a resume the clock restarts: say whose figures these are.
    last = " (its last attempt)" if summary["recoveries"] or summary["resumed_from"] else ""
    print(
        f"  {summary['workers']} {mode}, {summary['key_groups']} key groups, "
        f"{summary['elapsed_s']:.2f} s, {summary['events_per_s']:,.0f} events/s{last}",
        file=out,
    )
    print(f"  {_checkpoint_line(summary)}", file=out)
    if summary["state_cache_limit"] is not None and summary["state_cache_hit_rate"] is not None:
        print(
            f"  state cache: {summary['state_cache_limit'] / (1024 * 1024):,.0f} MiB a worker, "
            f"hit rate {summary['state_cache_hit_rate']:.2f}, "
            f"{summary['state_cache_evicted']:,} evicted",
            file=out,
        )
    if summary["recoveries"]:
        times = ", ".join(f"{ms:,.0f} ms" for ms in summary["recovery_ms"])
        noun = "recovery" if summary["recoveries"] == 1 else "recoveries"
        print(f"  {summary['recoveries']} {noun} ({times})", file=out)
    if summary["rescales"]:
        print(f"  {_rescale_line(summary)}", file=out)
    for check in summary["checks"]:
        tick = "ok  " if check["passed"] else "FAIL"
        detail = f" — {check['detail']}" if check["detail"] else ""
        print(f"  [{tick}] {check['name']}{detail}", file=out)


def _rescale_line(summary: dict[str, Any]) -> str:
    times = ", ".join(f"{s:.2f} s" for s in summary["rescales"])
    line = f"{len(summary['rescales'])} rescales ({times}), {summary['migrations']:,} moves"
    if summary["migration_pause_ms_p50"] is not None:
        line += (
            f", pause p50 {summary['migration_pause_ms_p50']} ms"
            f" p99 {summary['migration_pause_ms_p99']} ms"
            f" max {summary['migration_pause_ms_max']} ms"
        )
    if summary["events_per_s_during_rescale"] is not None:
        line += f", {summary['events_per_s_during_rescale']:,.0f} events/s while rescaling"
    return line


def _resumed_line(start: dict[str, Any]) -> str:
    """``resumed from checkpoint 7 of DIR, taken 2026-12-02T03:32:10Z: 999,424 records read
    before it, 999,424 out (included above)``: the summary's counts are the job's."""
    where = f"{start['kind']} {start['epoch']} of {start['path']}"
    if start["kind"] == "savepoint":
        where = f"savepoint {start['path']} (epoch {start['epoch']})"
    line = f"resumed from {where}, taken {start['created']}: "
    if start["records_in"] is None:
        return line + "records read before it unknown (a checkpoint of an older shoal)"
    return line + (
        f"{start['records_in']:,} records read before it, {start['records_out']:,} out "
        "(included above)"
    )


def _checkpoint_line(summary: dict[str, Any]) -> str:
    interval = summary["checkpoint_interval_s"]
    if interval is None:
        return "checkpoints off"
    line = (
        f"checkpoints every {interval:g} s: {summary['checkpoints_completed']:,} completed, "
        f"{summary['checkpoints_failed']:,} failed"
    )
    if summary["checkpoints_completed"]:
        line += (
            f", duration p50 {summary['checkpoint_ms_p50']:,.0f} ms"
            f" p99 {summary['checkpoint_ms_p99']:,.0f} ms,"
            f" max pause {summary['max_pause_ms']:,.1f} ms"
        )
    return line


def _failure_json(scenario: str | None, failure: _Failure) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "passed": False,
        "error": {"kind": failure.kind, "message": failure.message},
    }


def _load(args: argparse.Namespace) -> tuple[Scenario, str, dict[str, Any]]:
    try:
        scenario, ref = load_scenario(args.scenario)
        params = scenario.resolve_params(dict(args.param))
    except ScenarioError as exc:
        raise _Failure(str(exc), EXIT_USAGE, "scenario") from exc
    if args.in_process and args.workers != 1:
        raise _Failure(
            "--in-process runs one worker; drop --workers or --in-process", EXIT_USAGE, "usage"
        )
    if args.resume and args.state_dir is None:
        raise _Failure(
            "--resume goes on from the checkpoints of a run's state directory: give it with "
            "--state-dir DIR",
            EXIT_USAGE,
            "usage",
        )
    if args.checkpoint_interval is _SCENARIO_DEFAULT:
        args.checkpoint_interval = (
            scenario.checkpoint_interval
            if scenario.checkpoint_interval is not None
            else DEFAULT_CHECKPOINT_INTERVAL
        )
    return scenario, ref, params


async def _stop_on_interrupt(stop: anyio.Event, job: anyio.CancelScope) -> None:
    """First SIGINT/SIGTERM: stop reading, drain, report. Second: abort the job.

    Aborting cancels ``run_job`` (worker processes get SIGTERM, then SIGKILL a second later).
    Worker processes ignore SIGINT: a terminal sends it to the whole process group, and only
    this process decides what it means.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if stop.is_set():
                # This process is the CLI's own: from here on, what the teardown logs (peers
                # going, messages undelivered) is the abort's consequence, not news.
                structlog.configure(
                    wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL)
                )
                job.cancel()
                return
            print(
                "\nshoal: stopping: draining what was read (Ctrl-C again to abort)",
                file=sys.stderr,
            )
            stop.set()


async def _run_job(
    args: argparse.Namespace,
    scenario: Scenario,
    ref: str,
    params: dict[str, Any],
    state_dir: Path,
    dead_letters: DeadLetterSink,
    display: ProgressDisplay | None,
    latest: list[dict[str, Any]],
    metrics: bool,
    checkpoints: list[CheckpointStatistics | None],
    interrupted: list[bool],
) -> JobResult:
    """Run the job; every failure leaves as a :class:`_Failure`, never as an ExceptionGroup.
    ``interrupted`` gets True when a signal stopped it (the first Ctrl-C: it drained)."""

    def on_progress(progress: Progress) -> None:
        latest[:] = progress.reports
        checkpoints[:] = [progress.checkpoints]
        if display is not None:
            display.update(progress)

    extra: dict[str, Any] = {}
    if args.batch_size:
        extra["batch_size"] = args.batch_size
    if args.per_worker_state:
        extra["per_worker_state"] = True
    extra["state_memory"] = args.state_memory
    stop = anyio.Event()
    outcome: JobResult | BaseException | None = None
    job = anyio.CancelScope()
    async with anyio.create_task_group() as signals:
        signals.start_soon(_stop_on_interrupt, stop, job)
        # Errors are caught here, inside the group, so they reach the handlers below as
        # themselves rather than wrapped in an ExceptionGroup.
        try:
            with job:
                outcome = await run_scenario(
                    scenario,
                    ref,
                    params,
                    workers=args.workers,
                    processes=not args.in_process,
                    state_dir=state_dir,
                    dead_letters=dead_letters,
                    on_progress=on_progress if (display is not None or metrics) else None,
                    stop=stop,
                    log_format=args.log_format,
                    log_level=args.log_level,
                    checkpoint_interval=args.checkpoint_interval,
                    checkpoint_dir=args.checkpoint_dir,
                    resume=args.resume,
                    # `shoal rescale N --state-dir DIR` and `shoal status` reach the job here.
                    control_socket=state_dir / CONTROL_SOCKET,
                    **extra,
                )
        except Exception as exc:
            outcome = exc
        signals.cancel_scope.cancel()
    interrupted[:] = [stop.is_set()]  # only the signal handler sets it
    if job.cancelled_caught:
        raise _Failure("aborted", EXIT_ABORTED, "aborted")
    if isinstance(outcome, JobError):
        raise _Failure(str(outcome), EXIT_FAILED, "job") from outcome
    if isinstance(outcome, ScenarioError):
        raise _Failure(str(outcome), EXIT_USAGE, "scenario") from outcome
    if isinstance(outcome, ValueError | TypeError):  # run_job's checks of its arguments
        raise _Failure(str(outcome), EXIT_USAGE, "usage") from outcome
    if isinstance(outcome, BaseException):
        # A bug, not a mistake of the user's: keep its traceback (one, not a group).
        traceback.print_exception(outcome, file=sys.stderr)
        message = f"internal error: {type(outcome).__name__}: {outcome}"
        raise _Failure(message, EXIT_FAILED, "internal") from outcome
    assert outcome is not None
    return outcome


def _keep_dead_letters(
    result: JobResult, kept_in: Path, temporary: bool, chosen: str | None
) -> Path | None:
    """Where the run's dead letters can be read after ``shoal run`` has returned."""
    if chosen is not None or not temporary:
        return kept_in
    if not result.dead_letters:
        return None
    target = Path.cwd() / DEFAULT_DEAD_LETTERS
    shutil.move(kept_in, target)
    return target


async def _run(
    args: argparse.Namespace, scenario: Scenario, ref: str, params: dict[str, Any]
) -> dict[str, Any]:
    configure_logging(args.log_format, args.log_level)
    latest: list[dict[str, Any]] = []
    checkpoints: list[CheckpointStatistics | None] = [None]  # the newest, for the collector
    interrupted = [False]
    stop_metrics = None
    if args.metrics_port:
        try:
            stop_metrics = serve_metrics(
                JobCollector(scenario.name, lambda: latest, lambda: checkpoints[0]),
                args.metrics_port,
            )
        except OSError as exc:
            raise _Failure(
                f"cannot serve metrics on 127.0.0.1:{args.metrics_port}: {exc.strerror or exc}",
                EXIT_USAGE,
                "usage",
            ) from exc
    temporary = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="shoal-state-")) if temporary else Path(args.state_dir)
    params = scenario.bind(params, state_dir)
    letters_path = (
        Path(args.dead_letters) if args.dead_letters else state_dir / "dead-letters.jsonl"
    )
    if args.dead_letters:
        letters_path.unlink(missing_ok=True)  # this run's dead letters only, not an older run's
    show = not args.no_progress and sys.stderr.isatty()
    display = ProgressDisplay(scenario.name, args.workers) if show else None
    held: StateClaim | None = None
    try:
        if display is not None:
            display.start()
        try:
            result = await _run_job(
                args,
                scenario,
                ref,
                params,
                state_dir,
                DeadLetterSink(letters_path),
                display,
                latest,
                stop_metrics is not None,
                checkpoints,
                interrupted,
            )
        finally:
            if display is not None:
                display.stop()
        if not temporary:  # the checks read the state: no other run may start into it
            held = hold_after_run(state_dir)
        latest[:] = list(result.reports)
        if result.checkpoints is not None:  # the result's recoveries are the final word
            checkpoints[:] = [
                dataclasses.replace(result.checkpoints, recoveries_s=result.recoveries)
            ]
        try:
            checks = scenario.run_checks(result, params)
        except ScenarioError as exc:
            raise _Failure(str(exc), EXIT_USAGE, "scenario") from exc
        kept = _keep_dead_letters(result, letters_path, temporary, args.dead_letters)
    finally:
        if held is not None:
            held.release()
        if stop_metrics is not None:
            stop_metrics()
        if temporary:
            shutil.rmtree(state_dir, ignore_errors=True)
    summary = _summary(scenario.name, result, checks, kept, args.checkpoint_interval)
    summary["description"] = scenario.description
    if interrupted[0]:
        read = result.records_in if result.records_read is None else result.records_read
        again = list(getattr(args, "argv", ["run", args.scenario]))
        if "--resume" not in again:
            again.append("--resume")
        go_on = (
            ""
            if temporary or args.checkpoint_interval is None
            else "; go on with: shoal " + shlex.join(again)
        )
        summary["warnings"].insert(
            0,
            f"stopped by a signal (Ctrl-C) after reading {read:,} records: what was read was "
            "processed, and the checks ran on it (a check that needs the whole input fails)"
            + go_on,
        )
    return summary


def _command(args: argparse.Namespace) -> int:
    name: str | None = None
    try:
        scenario, ref, params = _load(args)
        name = scenario.name
        try:
            summary = anyio.run(_run, args, scenario, ref, params, backend_options=loop_options())
        except KeyboardInterrupt:
            # A second Ctrl-C outside the job (e.g. while the checks run): `finally` blocks
            # have run on the way out; one line, no traceback.
            raise _Failure("aborted", EXIT_ABORTED, "aborted") from None
    except _Failure as failure:
        if failure.kind == "aborted":
            print("\nshoal: aborted", file=sys.stderr)
        else:
            prefix = "job failed" if failure.status == EXIT_FAILED else "error"
            print(f"shoal: {prefix}: {failure.message}", file=sys.stderr)
        if args.json:
            print(json.dumps(_failure_json(name, failure)))
        return failure.status
    for warning in summary["warnings"]:
        print(f"shoal: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary, sys.stdout)
    return EXIT_OK if summary["passed"] else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shoal`` console script.

    When the reader of stdout goes away (``shoal state inspect ... | head -1``), the command
    stops writing and exits quietly with status 141, as a Unix tool killed by SIGPIPE does
    (128 + 13), instead of printing a BrokenPipeError traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _main(argv)
        sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe is a traceback
    except BrokenPipeError:
        # Nothing more can reach the reader; point stdout at /dev/null so that the flush at
        # exit does not fail again (the recipe of Python's signal module documentation).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return status


def _main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        if "--json" in argv:  # asked for JSON: a usage error is one JSON object as well
            print(json.dumps(_failure_json(None, _Failure(str(exc), EXIT_USAGE, "usage"))))
        return EXIT_USAGE
    if args.command == "run":
        args.argv = argv  # the command line a "go on with" hint repeats
        return _command(args)
    if args.command == "state":
        return run_state(args)
    if args.command in ("rescale", "rebalance", "status"):
        return run_control(args)
    return EXIT_USAGE  # pragma: no cover - argparse requires a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
