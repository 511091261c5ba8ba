"""Benchmark: what checkpoints cost a keyed count (one worker, in this event loop).

    python benchmarks/checkpoint_overhead.py                       # 2M events, 3 rounds
    python benchmarks/checkpoint_overhead.py --events 300000 --rounds 2 --intervals none 1 0.2

Runs the same keyed count (ClickstreamSource, 100k zipf keys) with each checkpoint interval, in
interleaved rounds, and prints per interval: events/s (median over rounds), checkpoints completed
and failed, checkpoint duration p50/p99 (trigger to manifest written) and the largest processing
pause of one key group (its local epoch commit; the file write runs in a thread meanwhile).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Any

import anyio

from shoal import ClickstreamSource, CountingSink, Flow, run_job


def click_user(click: tuple[int, str, int]) -> int:
    return click[0]


def build(events: int, keys: int) -> Flow:
    flow = Flow("checkpoint_overhead")
    flow.source(ClickstreamSource(events=events, users=keys, seed=11, splits=2, zipf_s=1.1)).key_by(
        click_user
    ).count(name="counts").sink(CountingSink())
    return flow


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one(events: int, keys: int, interval: float | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shoal-ckpt-bench-") as state:
        result = await run_job(build(events, keys), state_dir=state, checkpoint_interval=interval)
        stats = result.checkpoints
        return {
            "events_per_s": result.events_per_s,
            "completed": 0 if stats is None else stats.completed,
            "failed": 0 if stats is None else stats.failed,
            "durations": [] if stats is None else list(stats.durations_s),
            "max_pause_s": 0.0 if stats is None else stats.max_pause_s,
        }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--intervals", nargs="+", default=["none", "1.0", "0.2"])
    args = parser.parse_args()
    intervals = [None if i == "none" else float(i) for i in args.intervals]
    runs: dict[float | None, list[dict[str, Any]]] = {i: [] for i in intervals}
    for round_ in range(args.rounds):
        for interval in intervals:
            run = await one(args.events, args.keys, interval)
            runs[interval].append(run)
            print(
                f"round {round_} interval={interval}: {run['events_per_s']:,.0f} events/s, "
                f"{run['completed']} checkpoints ({run['failed']} failed)",
                flush=True,
            )
    base = statistics.median(r["events_per_s"] for r in runs[intervals[0]])
    print(f"\n{args.events:,} events, {args.keys:,} keys, 1 worker, {args.rounds} rounds")
    for interval in intervals:
        rs = runs[interval]
        eps = statistics.median(r["events_per_s"] for r in rs)
        durations = [d for r in rs for d in r["durations"]]
        pause = max(r["max_pause_s"] for r in rs)
        print(
            f"interval {interval!s:>5}: {eps:>10,.0f} events/s ({eps / base:.2f}x), "
            f"checkpoints {sum(r['completed'] for r in rs)} completed / "
            f"{sum(r['failed'] for r in rs)} failed, duration p50 {pct(durations, 0.5) * 1000:.1f}"
            f" ms p99 {pct(durations, 0.99) * 1000:.1f} ms, max pause {pause * 1000:.1f} ms"
        )


if __name__ == "__main__":
    anyio.run(main)
