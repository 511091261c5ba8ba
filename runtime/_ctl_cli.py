"""``shoal rescale``, ``shoal rebalance`` and ``shoal status``: control a job that ``shoal run``
is running, through its control socket in the state directory (see ``_control_socket.py``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from ._control_socket import request, running_pid

__all__ = ("add_control_parsers", "run_control")

#: Exit status: the job answered that the request failed, or no job listens there.
EXIT_FAILED = 1
#: How long a request waits for a restarting job to come back, and how often it tries.
WAIT_S = 120.0
RETRY_S = 0.5


def add_control_parsers(commands: Any, positive: Any) -> None:
    """Add ``rescale``, ``rebalance`` and ``status`` to the ``shoal`` parser's subcommands."""
    rescale = commands.add_parser(
        "rescale",
        help="scale a running `shoal run` job to N workers, live",
        description=(
            "Scale the job that `shoal run ... --state-dir DIR` is running to N worker "
            "processes while it runs: key groups and splits move one placement version at "
            "a time, every other key group keeps processing. Returns once it is done."
        ),
    )
    rescale.add_argument("workers", metavar="N", type=positive, help="the new worker count")
    rebalance = commands.add_parser(
        "rebalance",
        help="move the hottest key groups of a running `shoal run` job off its busiest workers",
        description=(
            "Measure every key group's load (records/s since the last reading) in the job "
            "that `shoal run ... --state-dir DIR` is running, and move the fewest key groups "
            "that lower its most loaded worker's load by more than 10 %, live (same "
            "workers). Nothing moves when the load is balanced. Returns once it is done."
        ),
    )
    status = commands.add_parser(
        "status",
        help="workers, placement version and records read of a running `shoal run` job",
    )
    for command in (rescale, rebalance, status):
        command.add_argument(
            "--state-dir",
            required=True,
            metavar="DIR",
            help="the running job's state directory (its --state-dir)",
        )
        command.add_argument("--json", action="store_true", help="print the answer as JSON")


def run_control(args: argparse.Namespace) -> int:
    """Run a parsed ``shoal rescale`` / ``shoal status``; return its exit status."""
    message: dict[str, Any] = {"command": args.command}
    if args.command == "rescale":
        message["workers"] = args.workers
    answer = _send(Path(args.state_dir), message, wait=args.command != "status")
    if args.json:
        print(json.dumps(answer))
    elif not answer.get("ok"):
        print(f"shoal: error: {answer.get('error')}", file=sys.stderr)
    elif args.command == "rescale":
        print(
            f"rescaled {answer['workers_before']} -> {answer['workers_after']} workers in "
            f"{answer['seconds']:.2f} s ({answer['moves']} moves)"
        )
    elif args.command == "rebalance":
        print(_rebalance_line(answer))
    else:
        print(
            f"{answer['workers']} workers {answer['worker_ids']}, placement version "
            f"{answer['placement_version']}, {answer['records_in']:,} records read"
        )
    return 0 if answer.get("ok") else EXIT_FAILED


def _send(state_dir: Path, message: dict[str, Any], *, wait: bool) -> dict[str, Any]:
    """Send ``message`` to the job running in ``state_dir``; its answer. With ``wait``, a
    request the job could not take because it is restarting (its run ended before the request
    started, or it is not listening yet while its process lives) goes again once it is back,
    for up to :data:`WAIT_S`."""
    deadline = time.monotonic() + WAIT_S
    told = False
    while True:
        try:
            answer: dict[str, Any] = anyio.run(request, state_dir, message)
        except ConnectionError as exc:
            answer = {"ok": False, "error": str(exc), "retry": running_pid(state_dir) is not None}
        if answer.get("ok") or not (wait and answer.get("retry")):
            return answer
        if time.monotonic() > deadline:
            answer["error"] += f"; gave up after waiting {WAIT_S:.0f} s for it to come back"
            return answer
        if not told:
            print(
                f"shoal: {answer['error']}; sending the request again once the job is back",
                file=sys.stderr,
            )
            told = True
        time.sleep(RETRY_S)


def _rebalance_line(answer: dict[str, Any]) -> str:
    moves = ", ".join(f"key group {g}: {a} -> {b}" for g, a, b in answer["moves"]) or "none"
    peak_before = max(answer["load_before"].values(), default=0.0)
    peak_after = max(answer["load_after"].values(), default=0.0)
    return (
        f"rebalanced in {answer['seconds']:.2f} s; moves: {moves}; busiest worker "
        f"{peak_before:,.0f} -> {peak_after:,.0f} records/s (predicted)"
    )
