"""The ``shoal`` command line.

``shoal run SCENARIO [--workers N] [--json]`` runs a scenario file and its checks. On a terminal
it shows live progress on stderr; at the end it prints a summary (or, with ``--json``, exactly
one JSON object on stdout). Exit status: 0 when every check passed, 1 when a check failed, 2 on
bad usage (with a message saying what is wrong).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from ._exceptions import JobError, ScenarioError
from ._job import JobResult, Progress, run_job
from ._logging import configure_logging
from ._metrics import JobCollector, serve_metrics
from ._progress import ProgressDisplay
from ._run import loop_options
from ._scenario import Check, load_scenario

__all__ = ("main",)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own usage errors exit 2 as well
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"shoal: error: {message}\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return value


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shoal", description="Stateful stream processing on asyncio.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="run a scenario file and its checks")
    run.add_argument("scenario", help="path to a scenario file (e.g. scenarios/clickstream.py)")
    run.add_argument("--workers", type=_positive, default=1, help="worker processes (default 1)")
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
        "--state-dir", help="keep LMDB state here (default: a temporary directory, removed)"
    )
    run.add_argument("--batch-size", type=_positive, default=None, help="records per source batch")
    run.add_argument(
        "--metrics-port", type=_port, help="serve Prometheus metrics on 127.0.0.1:PORT"
    )
    run.add_argument("--log-format", choices=("console", "json"), default="console")
    run.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="warning"
    )
    run.add_argument("--no-progress", action="store_true", help="no live progress display")
    return parser


def _summary(name: str, result: JobResult, checks: list[Check], passed: bool) -> dict[str, Any]:
    return {
        "scenario": name,
        "workers": result.workers,
        "processes": result.processes,
        "records_in": result.records_in,
        "records_out": result.records_out,
        "dead_letters": result.dead_letters,
        "elapsed_s": round(result.elapsed_s, 4),
        "events_per_s": round(result.events_per_s, 1),
        "key_groups": result.plan.num_key_groups,
        "checks": [check.to_json() for check in checks],
        "passed": passed,
    }


def _print_summary(summary: dict[str, Any], out: Any) -> None:
    mark = "PASSED" if summary["passed"] else "FAILED"
    print(f"\nscenario {summary['scenario']}: {mark}", file=out)
    if summary.get("description"):
        print(f"  {summary['description']}", file=out)
    print(
        f"  {summary['records_in']:,} records in, {summary['records_out']:,} out, "
        f"{summary['dead_letters']:,} dead letters",
        file=out,
    )
    mode = "worker processes" if summary["processes"] else "in-process worker"
    print(
        f"  {summary['workers']} {mode}, {summary['key_groups']} key groups, "
        f"{summary['elapsed_s']:.2f} s, {summary['events_per_s']:,.0f} events/s",
        file=out,
    )
    for check in summary["checks"]:
        tick = "ok  " if check["passed"] else "FAIL"
        detail = f" — {check['detail']}" if check["detail"] else ""
        print(f"  [{tick}] {check['name']}{detail}", file=out)


async def _run(args: argparse.Namespace) -> int:
    try:
        scenario, ref = load_scenario(args.scenario)
        params = scenario.resolve_params(dict(args.param))
    except ScenarioError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.in_process and args.workers != 1:
        print(
            "shoal: error: --in-process runs one worker; drop --workers or --in-process",
            file=sys.stderr,
        )
        return EXIT_USAGE
    configure_logging(args.log_format, args.log_level)
    latest: list[dict[str, Any]] = []
    stop_metrics = None
    if args.metrics_port:
        try:
            stop_metrics = serve_metrics(
                JobCollector(scenario.name, lambda: latest), args.metrics_port
            )
        except OSError as exc:
            print(
                f"shoal: error: cannot serve metrics on 127.0.0.1:{args.metrics_port}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    temporary = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="shoal-state-")) if temporary else Path(args.state_dir)
    show = not args.no_progress and sys.stderr.isatty()
    display = ProgressDisplay(scenario.name, args.workers) if show else None

    def on_progress(progress: Progress) -> None:
        latest[:] = progress.reports
        if display is not None:
            display.update(progress)

    stop = anyio.Event()

    async def stop_on_interrupt() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                print(
                    "\nshoal: stopping: draining what was read (Ctrl-C again to abort)",
                    file=sys.stderr,
                )
                stop.set()
                break

    extra: dict[str, Any] = {}
    if args.batch_size:
        extra["batch_size"] = args.batch_size
    try:
        if display is not None:
            display.start()
        outcome: JobResult | Exception | None = None
        try:
            async with anyio.create_task_group() as signals:
                signals.start_soon(stop_on_interrupt)
                # Errors are caught here, inside the group, so they reach the handlers below
                # as themselves rather than wrapped in an ExceptionGroup.
                try:
                    outcome = await run_job(
                        ref,
                        params=params,
                        workers=args.workers,
                        processes=not args.in_process,
                        state_dir=state_dir,
                        on_progress=on_progress if (display is not None or stop_metrics) else None,
                        stop=stop,
                        log_format=args.log_format,
                        log_level=args.log_level,
                        **extra,
                    )
                except (JobError, ScenarioError) as exc:
                    outcome = exc
                signals.cancel_scope.cancel()
        finally:
            if display is not None:
                display.stop()
        if isinstance(outcome, Exception):
            raise outcome
        assert outcome is not None
        result = outcome
        latest[:] = list(result.reports)
        checks = scenario.run_checks(result, params)
    except JobError as exc:
        print(f"shoal: job failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ScenarioError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if stop_metrics is not None:
            stop_metrics()
        if temporary:
            shutil.rmtree(state_dir, ignore_errors=True)
    passed = all(check.passed for check in checks)
    summary = _summary(scenario.name, result, checks, passed)
    summary["description"] = scenario.description
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary, sys.stdout)
    return EXIT_OK if passed else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shoal`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return anyio.run(_run, args, backend_options=loop_options())
    return EXIT_USAGE  # pragma: no cover - argparse requires a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
