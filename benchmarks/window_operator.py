"""Benchmark: the keyed operators alone, the running count beside the 1 s tumbling count.

    python benchmarks/window_operator.py              # 500k events, 100k zipf keys, 3 rounds

No source, exchange or sink: the events of ``benchmarks/windows.py`` (zipf users, 4 splits,
each split's events stamped with their millisecond inside the split) are generated and routed
to 128 key groups beforehand, then fed to one ``KeyedRunner`` per key group (LMDB stores) in
the job's batches (8,192 events of one split, round robin over the splits, cut per key group),
with the watermark (the minimum over the splits) advanced after each batch and the windows
fired. Prints CPU time per event of each operator (median of the rounds, interleaved) and of
the window with Python's garbage collector off, which shows the collector's share.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import tempfile
import time
from itertools import accumulate
from typing import Any

from shoal.runtime._keys import KeyGroupRouter
from shoal.runtime._operators import DeadLetters, KeyedRunner
from shoal.runtime._plan import compile_plan
from shoal.runtime._time import ManualClock
from shoal.runtime._timers import KeyedTime
from shoal.storage import LmdbBackend
from windows import build

Routed = dict[int, tuple[list[Any], list[Any], list[int], list[Any]]]


def batches(events: int, keys: int, splits: int, size: int) -> list[tuple[Routed, int, int]]:
    """``(routed batch, split, watermark of that split after it)`` in reading order."""
    rng = random.Random(11)
    weights = list(accumulate(1 / (rank + 1) ** 0.9 for rank in range(keys)))
    users = rng.choices(range(keys), cum_weights=weights, k=events)
    span = events // splits
    router = KeyGroupRouter(128)
    out = []
    for position in range(0, span, size):
        for split in range(splits):
            low = split * span + position
            high = min(low + size, (split + 1) * span)
            chunk = users[low:high]
            stamps = list(range(position, position + high - low))
            routed = router.route_timed(chunk, chunk, list(range(low, high)), stamps)
            out.append((routed, split, stamps[-1]))
    return out


def run(kind: str, work: list[tuple[Routed, int, int]], splits: int, directory: str) -> float:
    """CPU seconds of one operator over ``work``."""
    op = compile_plan(build(kind, 10, 10, 1, 10)).stages[1].operator
    backend = LmdbBackend(directory)
    groups = []
    for key_group in range(128):
        store = backend.open_store(op.name, key_group, op.states)
        keyed_time = KeyedTime.for_operator(("c",), ManualClock(), store, op.states)
        groups.append((store, keyed_time, KeyedRunner(op, store, key_group, keyed_time)))
    dead = DeadLetters(0)
    marks = [-math.inf] * splits
    started = time.process_time()
    for routed, split, mark in work:
        for key_group, (keys, values, offsets, stamps) in routed.items():
            groups[key_group][2].run(keys, values, offsets, "s", dead, stamps)
        marks[split] = mark
        watermark = min(marks)
        for _store, keyed_time, runner in groups:
            if keyed_time.combiner.update("c", watermark) is not None:
                runner.fire_timers(watermark, "s", dead)
    for _store, keyed_time, runner in groups:
        keyed_time.combiner.update("c", math.inf)
        runner.fire_timers(math.inf, "s", dead)
    cpu = time.process_time() - started
    for store, _time, _runner in groups:
        store.close()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--splits", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = batches(args.events, args.keys, args.splits, 8192)
    variants = {"running": ("running", True), "windowed": ("windowed", True)}
    variants["windowed, gc off"] = ("windowed", False)
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _round in range(args.rounds):
        for name, (kind, collect) in variants.items():
            with tempfile.TemporaryDirectory() as directory:
                if not collect:
                    gc.disable()
                try:
                    cpu[name].append(run(kind, work, args.splits, directory))
                finally:
                    gc.enable()
    per_event = {name: statistics.median(s) / args.events * 1e9 for name, s in cpu.items()}
    print(
        f"{args.events:,} events, {args.keys:,} zipf keys, 128 key groups, median of "
        f"{args.rounds}, CPU ns per event: "
        + ", ".join(f"{name} {ns:,.0f}" for name, ns in per_event.items())
        + f"; running/windowed {per_event['running'] / per_event['windowed']:.2f}"
    )


if __name__ == "__main__":
    main()
