"""Benchmark: a 1 s tumbling count per key beside the keyed running count, same events.

    python benchmarks/windows.py                      # 500k events, 100k zipf keys
    python benchmarks/windows.py --events 1000000 --rounds 3

Both jobs read the same zipf clickstream with event time (each split's clicks stamped with
their millisecond inside the split, ``Monotonous`` watermarks) and run in one worker in this
event loop, on LMDB state: the running count emits ``(key, n)`` per event; the windowed count
keeps one accumulator per (key, second) and a timer per window, and emits when the watermark
passes the window's end. Prints events/s of each (median of the rounds), their ratio (the
target is >= 0.7) and this process's peak RSS after each job.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

import anyio

from shoal import ClickstreamSource, CountingSink, Flow, Monotonous, Tumbling, run_job

BASE_TS = 1_700_000_000_000


class SplitTime:
    def __init__(self, span: int) -> None:
        self.span = span

    def __call__(self, click: tuple[int, str, int]) -> int:
        return (click[2] - BASE_TS) % self.span


def user_of(click: tuple[int, str, int]) -> int:
    return click[0]


def build(kind: str, events: int, keys: int, splits: int) -> Flow:
    flow = Flow(f"bench_{kind}", num_key_groups=128)
    keyed = flow.source(
        ClickstreamSource(events=events, users=keys, seed=11, splits=splits, zipf_s=0.9),
        timestamps=SplitTime(events // splits),
        watermarks=Monotonous(),
    ).key_by(user_of)
    out = keyed.count(name="n") if kind == "running" else keyed.window(Tumbling(1000)).count()
    out.sink(CountingSink())
    return flow


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--splits", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"running": [], "windowed": []}
    for _round in range(args.rounds):
        for kind in rates:
            with tempfile.TemporaryDirectory() as state:
                flow = build(kind, args.events, args.keys, args.splits)
                started = time.perf_counter()
                result = await run_job(flow, state_dir=state, processes=False)
                wall = time.perf_counter() - started
            rate = args.events / result.elapsed_s
            rates[kind].append(rate)
            print(
                f"{kind:>8}: {rate:>10,.0f} events/s ({result.elapsed_s:.2f} s in the job, "
                f"{wall:.2f} s wall), {result.records_out:,} out, "
                f"peak RSS {peak_rss_mib():,.0f} MiB"
            )
    running = statistics.median(rates["running"])
    windowed = statistics.median(rates["windowed"])
    print(
        f"{args.events:,} events, {args.keys:,} zipf keys, {args.splits} splits, 1 worker: "
        f"running count {running:,.0f} events/s, 1 s tumbling count {windowed:,.0f} events/s, "
        f"ratio {windowed / running:.2f} (target >= 0.7)"
    )


if __name__ == "__main__":
    anyio.run(main)
