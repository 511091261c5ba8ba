"""Benchmark: a 1 s tumbling count per key beside the keyed running count, same events; and
an interval join's events/s.

    python benchmarks/windows.py                      # 500k events, 100k zipf keys
    python benchmarks/windows.py --events 1000000 --rounds 3

The running and windowed jobs read the same zipf clickstream with event time (each split's
clicks stamped with their millisecond inside the split, ``Monotonous`` watermarks) and run in
one worker, in the event loop of a child process of their own, on LMDB state: the running
count emits ``(key, n)`` per event; the windowed count keeps one accumulator per (key,
second) and emits when the watermark passes the window's end. The join reads a clickstream of
``--join-events / 2`` events twice, as two inputs (a self-join: every click pairs with itself
and with its user's other clicks at most ``--join-ms`` later, ``interval_join(.., 0,
join_ms)``); it has its own, smaller size because its cost per event grows with the input
(see docs/benchmarks.md). The jobs run interleaved, round after round. Prints events/s
of each (median of the rounds), the windowed/running ratio (the target is >= 0.7; per round,
and by CPU time, which the machine's other load disturbs less) and each job's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile

import anyio

from shoal import (
    ClickstreamSource,
    CountingSink,
    Flow,
    KeyedStream,
    Monotonous,
    Tumbling,
    run_job,
)

BASE_TS = 1_700_000_000_000


class SplitTime:
    def __init__(self, span: int) -> None:
        self.span = span

    def __call__(self, click: tuple[int, str, int]) -> int:
        return (click[2] - BASE_TS) % self.span


def user_of(click: tuple[int, str, int]) -> int:
    return click[0]


def clicks(flow: Flow, events: int, keys: int, splits: int, name: str) -> KeyedStream:
    return flow.source(
        ClickstreamSource(events=events, users=keys, seed=11, splits=splits, zipf_s=0.9),
        timestamps=SplitTime(events // splits),
        watermarks=Monotonous(),
        name=name,
    ).key_by(user_of)


def build(kind: str, events: int, keys: int, splits: int, join_ms: int) -> Flow:
    flow = Flow(f"bench_{kind}", num_key_groups=128)
    if kind == "join":
        first = clicks(flow, events // 2, keys, splits, "views")
        second = clicks(flow, events // 2, keys, splits, "clicks")
        out = first.interval_join(second, 0, join_ms, name="joined")
    else:
        keyed = clicks(flow, events, keys, splits, "clicks")
        out = keyed.count(name="n") if kind == "running" else keyed.window(Tumbling(1000)).count()
    out.sink(CountingSink())
    return flow


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_job(args: argparse.Namespace) -> None:
    """Run one job in this process and print its figures as JSON (the parent's child)."""
    with tempfile.TemporaryDirectory() as state:
        events = args.join_events if args.job == "join" else args.events
        flow = build(args.job, events, args.keys, args.splits, args.join_ms)
        cpu = cpu_s()
        result = await run_job(flow, state_dir=state, processes=False)
        cpu = cpu_s() - cpu
    figures = {
        "rate": events / result.elapsed_s,
        "elapsed": result.elapsed_s,
        "cpu": cpu,
        "out": result.records_out,
        "rss": peak_rss_mib(),
    }
    print(json.dumps(figures))


def run_child(kind: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--job", kind, "--events", str(args.events)]
    command += ["--keys", str(args.keys), "--splits", str(args.splits)]
    command += ["--join-ms", str(args.join_ms), "--join-events", str(args.join_events)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--splits", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--join-ms", type=int, default=10, help="the join's upper bound (ms)")
    parser.add_argument("--join-events", type=int, default=100_000, help="the join's input")
    parser.add_argument("--no-join", action="store_true", help="skip the interval join")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # a child: run this one job
    args = parser.parse_args()
    if args.job:
        await one_job(args)
        return
    kinds = ["running", "windowed"] + ([] if args.no_join else ["join"])
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for _round in range(args.rounds):
        for kind in kinds:  # interleaved: each round runs every job once, one at a time
            figures = run_child(kind, args)
            runs[kind].append(figures)
            print(
                f"{kind:>8}: {figures['rate']:>10,.0f} events/s ({figures['elapsed']:.2f} s in "
                f"the job, {figures['cpu']:.2f} s of CPU), {figures['out']:,} out, "
                f"peak RSS {figures['rss']:,.0f} MiB",
                flush=True,
            )

    def median(kind: str, figure: str) -> float:
        return statistics.median(run[figure] for run in runs[kind])

    running, windowed = median("running", "rate"), median("windowed", "rate")
    ratios = [w["rate"] / r["rate"] for r, w in zip(runs["running"], runs["windowed"], strict=True)]
    cpu_ratios = [
        r["cpu"] / w["cpu"] for r, w in zip(runs["running"], runs["windowed"], strict=True)
    ]
    print(
        f"{args.events:,} events, {args.keys:,} zipf keys, {args.splits} splits, 1 worker, "
        f"median of {args.rounds}: running count {running:,.0f} events/s "
        f"(peak RSS {median('running', 'rss'):,.0f} MiB), 1 s tumbling count "
        f"{windowed:,.0f} events/s (peak RSS {median('windowed', 'rss'):,.0f} MiB); "
        f"windowed/running per round {statistics.median(ratios):.2f} (target >= 0.7), "
        f"by CPU time {statistics.median(cpu_ratios):.2f}"
    )
    if "join" in runs:
        print(
            f"interval join ({args.join_events:,} events, two inputs of half of them, "
            f"0 .. {args.join_ms} ms): "
            f"{median('join', 'rate'):,.0f} events/s, {median('join', 'out'):,.0f} pairs out, "
            f"peak RSS {median('join', 'rss'):,.0f} MiB"
        )


if __name__ == "__main__":
    anyio.run(main)
