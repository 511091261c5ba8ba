"""Benchmark: an I/O-bound ``async def`` keyed process function, by concurrency.

    python benchmarks/async_io.py                       # 20,000 records, 1 ms await each
    python benchmarks/async_io.py --records 5000 --rounds 1

Each record's function awaits ``--latency`` seconds (an I/O call: ``anyio.sleep``), then
counts the record in its key's state and emits it. One worker in this event loop, 8 key
groups, 2,000 keys, LMDB state. Run at concurrency 1 (one record of a key group at a time:
what a plain function doing blocking I/O amounts to, without blocking the loop), 10 and 100;
rounds interleaved, medians printed, and the final counts checked against the input.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter

import anyio

from shoal import (
    CountingSink,
    Flow,
    IterableSource,
    ProcessContext,
    ValueStateSpec,
    run_job,
)

KEYS = 2_000
KEY_GROUPS = 8


def build(records: int, latency: float, concurrency: int) -> Flow:
    async def lookup(key: int, value: int, ctx: ProcessContext) -> None:
        await anyio.sleep(latency)  # the I/O call
        ctx.state.count.update(ctx.state.count.value() + 1)
        ctx.emit(value)

    flow = Flow("async-io", num_key_groups=KEY_GROUPS)
    (
        flow.source(IterableSource(range(records), splits=2))
        .key_by(lambda value: value % KEYS)
        .process(
            lookup,
            states=[ValueStateSpec("count", default=0)],
            concurrency=concurrency,
            name="lookup",
        )
        .sink(CountingSink())
    )
    return flow


async def one(records: int, latency: float, concurrency: int) -> float:
    with tempfile.TemporaryDirectory(prefix="shoal-async-bench-") as state:
        started = time.perf_counter()
        result = await run_job(build(records, latency, concurrency), state_dir=state)
        seconds = time.perf_counter() - started
        counts = result.read_state("lookup", "count")
    expected = Counter(value % KEYS for value in range(records))
    assert counts == dict(expected), "a record was not counted exactly once"
    return records / seconds


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.001, help="seconds awaited per record")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    args = parser.parse_args()
    print(
        f"async keyed process function, {args.latency * 1000:g} ms await per record, "
        f"{args.records:,} records, {KEY_GROUPS} key groups, one worker; events/s per round"
    )
    figures: dict[int, list[float]] = {c: [] for c in args.concurrency}
    for n in range(1, args.rounds + 1):
        for concurrency in args.concurrency:  # interleaved: drift hits every setting alike
            rate = await one(args.records, args.latency, concurrency)
            figures[concurrency].append(rate)
            print(f"  round {n} concurrency {concurrency:>4}: {rate:>10,.0f} events/s", flush=True)
    base = statistics.median(figures[args.concurrency[0]])
    print(f"{'concurrency':>11} {'median ev/s':>12} {'vs first':>9}")
    for concurrency, rates in figures.items():
        median = statistics.median(rates)
        print(f"{concurrency:>11} {median:>12,.0f} {median / base:>8.1f}x")


if __name__ == "__main__":
    anyio.run(main)
