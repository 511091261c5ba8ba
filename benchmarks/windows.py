"""Benchmark: a 1 s tumbling count per key beside the keyed running count, same events; and
an interval join's events/s.

    python benchmarks/windows.py                      # 500k events, 100k zipf keys
    python benchmarks/windows.py --events 1000000 --rounds 3

The running and windowed jobs read the same zipf clickstream with event time (each split's
clicks stamped with their millisecond inside the split, ``Monotonous`` watermarks) and run in
one worker in this event loop, on LMDB state: the running count emits ``(key, n)`` per event;
the windowed count keeps one accumulator per (key, second) and emits when the watermark passes
the window's end. The join reads two such clickstreams of half the events each (seeds 11 and
12, stamped alike) and pairs each click of the first with the second's clicks of the same user
at most ``--join-ms`` later (``interval_join(.., 0, join_ms)``). The jobs run interleaved,
round after round. Prints events/s of each (median of the rounds), the windowed/running ratio
(the target is >= 0.7) and this process's peak RSS after each job (peak RSS never goes down:
each figure is the largest so far).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

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


def clicks(flow: Flow, events: int, keys: int, splits: int, seed: int) -> KeyedStream:
    return flow.source(
        ClickstreamSource(events=events, users=keys, seed=seed, splits=splits, zipf_s=0.9),
        timestamps=SplitTime(events // splits),
        watermarks=Monotonous(),
        name=f"clicks{seed}",
    ).key_by(user_of)


def build(kind: str, events: int, keys: int, splits: int, join_ms: int) -> Flow:
    flow = Flow(f"bench_{kind}", num_key_groups=128)
    if kind == "join":
        first = clicks(flow, events // 2, keys, splits, 11)
        second = clicks(flow, events - events // 2, keys, splits, 12)
        out = first.interval_join(second, 0, join_ms, name="joined")
    else:
        keyed = clicks(flow, events, keys, splits, 11)
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
    parser.add_argument("--join-ms", type=int, default=10, help="the join's upper bound (ms)")
    parser.add_argument("--no-join", action="store_true", help="skip the interval join")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"running": [], "windowed": []}
    if not args.no_join:
        rates["join"] = []
    for _round in range(args.rounds):
        for kind in rates:
            with tempfile.TemporaryDirectory() as state:
                flow = build(kind, args.events, args.keys, args.splits, args.join_ms)
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
    if "join" in rates:
        print(
            f"interval join (0 .. {args.join_ms} ms, two inputs of half the events each): "
            f"{statistics.median(rates['join']):,.0f} events/s"
        )


if __name__ == "__main__":
    anyio.run(main)
