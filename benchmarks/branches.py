"""Benchmark: what branches and joins cost, beside a plain keyed running count, same events.

    python benchmarks/branches.py                     # 100k events, 10k zipf keys, 3 rounds
    python benchmarks/branches.py --events 1000000 --rounds 5

Every job reads the same zipf clickstream with event time (each split's clicks stamped with
their millisecond inside the split, ``Monotonous`` watermarks), in one worker in this event
loop, on LMDB state, and counts events/s of input:

* ``count``: source -> key_by -> count -> sink (the baseline);
* ``fan-out 2``: the same keyed stream read by two counts, each with its sink (twice the keyed
  work and output per input event);
* ``side output``: a process function keeping a count and sending odd counts to a side output
  (two sinks);
* ``interval join``: the clicks split in two inputs by page parity, joined per user within
  +-5 ms;
* ``window join``: the same two inputs joined per user and 10 ms tumbling window.

The variants run interleaved, one of each per round; prints every run, then each variant's
median events/s and its ratio to ``count``'s median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Any

import anyio

from shoal import (
    ClickstreamSource,
    CountingSink,
    Flow,
    Monotonous,
    OutputTag,
    Tumbling,
    ValueStateSpec,
    run_job,
)

BASE_TS = 1_700_000_000_000
ODD = OutputTag("odd")


class SplitTime:
    def __init__(self, span: int) -> None:
        self.span = span

    def __call__(self, click: tuple[int, str, int]) -> int:
        return (click[2] - BASE_TS) % self.span


def user_of(click: tuple[int, str, int]) -> int:
    return click[0]


def odd_page(click: tuple[int, str, int]) -> bool:
    return int(click[1][-1]) % 2 == 1


def even_page(click: tuple[int, str, int]) -> bool:
    return int(click[1][-1]) % 2 == 0


def count_and_split(user: int, _click: Any, ctx: Any) -> None:
    n = ctx.state.n.value() + 1
    ctx.state.n.update(n)
    if n % 2:
        ctx.output(ODD, (user, n))
    else:
        ctx.emit((user, n))


def pair(x: Any, y: Any) -> int:
    return 1


VARIANTS = ("count", "fan-out 2", "side output", "interval join", "window join")


def build(kind: str, events: int, keys: int, splits: int) -> Flow:
    flow = Flow(f"bench_{kind.replace(' ', '_')}", num_key_groups=128)
    source = flow.source(
        ClickstreamSource(events=events, users=keys, seed=11, splits=splits, zipf_s=0.9),
        timestamps=SplitTime(events // splits),
        watermarks=Monotonous(),
    )
    keyed = source.key_by(user_of)
    if kind == "count":
        keyed.count(name="n").sink(CountingSink())
    elif kind == "fan-out 2":
        keyed.count(name="n").sink(CountingSink())
        keyed.count(name="m").sink(CountingSink())
    elif kind == "side output":
        split = keyed.process(count_and_split, states=[ValueStateSpec("n", default=0)])
        split.sink(CountingSink())
        split.side_output(ODD).sink(CountingSink())
    else:
        left = source.filter(odd_page).key_by(user_of)
        right = source.filter(even_page).key_by(user_of)
        joined = (
            left.interval_join(right, -5, 5, pair)
            if kind == "interval join"
            else left.window_join(right, Tumbling(10), pair)
        )
        joined.sink(CountingSink())
    return flow


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--splits", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    # Watermarks move once per batch: a join buffers about a batch per split of each key.
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {kind: [] for kind in VARIANTS}
    for _round in range(args.rounds):
        for kind in VARIANTS:
            with tempfile.TemporaryDirectory() as state:
                flow = build(kind, args.events, args.keys, args.splits)
                result = await run_job(
                    flow, state_dir=state, processes=False, batch_size=args.batch_size
                )
            rate = args.events / result.elapsed_s
            rates[kind].append(rate)
            print(
                f"{kind:>13}: {rate:>10,.0f} events/s ({result.elapsed_s:.2f} s), "
                f"{result.records_out:,} out, {result.dead_letters} dead letters"
            )
    base = statistics.median(rates["count"])
    print(
        f"{args.events:,} events, {args.keys:,} zipf keys, {args.splits} splits, batches of "
        f"{args.batch_size}, 1 worker:"
    )
    for kind in VARIANTS:
        median = statistics.median(rates[kind])
        print(f"{kind:>13}: median {median:>10,.0f} events/s, {median / base:.2f}x count")


if __name__ == "__main__":
    anyio.run(main)
