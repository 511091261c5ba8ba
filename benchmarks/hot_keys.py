"""Benchmark: the data-path cost of per-key-group load tracking (the hot-key sketch).

    python benchmarks/hot_keys.py

Per record of a batch, for batches of 64, 512 and 8192 string keys (half on 5 hot keys, the
rest over 100k): ``GroupLoad.observe`` as the key-group actor calls it (a counter add and one
key in ``SAMPLE_STRIDE`` into DataSketches' frequent-items sketch), the same sketch fed every
key, and a hand-written Misra-Gries (dict of at most 48 counters) fed every key and fed the
same sample, for comparison.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from datasketches import frequent_items_sketch  # type: ignore[import-untyped]
from shoal.runtime._load import LG_MAP, SAMPLE_STRIDE, GroupLoad


def misra_gries(capacity: int) -> Callable[[Sequence[Any], int, int], None]:
    counters: dict[Any, int] = {}

    def update(keys: Sequence[Any], start: int, stride: int) -> None:
        for key in keys[start::stride]:
            if key in counters:
                counters[key] += stride
            elif len(counters) < capacity:
                counters[key] = stride
            else:
                for other in list(counters):
                    counters[other] -= stride
                    if counters[other] <= 0:
                        del counters[other]

    return update


def per_record(fn: Callable[[list[str]], None], batches: list[list[str]]) -> float:
    records = sum(len(b) for b in batches)
    started = time.perf_counter()
    for batch in batches:
        fn(batch)
    return (time.perf_counter() - started) / records * 1e9


def measure(batches: list[list[str]]) -> dict[str, float]:
    load = GroupLoad()
    sketch = frequent_items_sketch(LG_MAP)
    every = misra_gries(48)
    sampled = misra_gries(48)
    turn = [0]

    def all_keys(batch: list[str]) -> None:
        for key in batch:
            sketch.update(key)

    def sampled_mg(batch: list[str]) -> None:
        turn[0] += 1
        sampled(batch, turn[0] % SAMPLE_STRIDE, SAMPLE_STRIDE)

    figures = {
        "observe (sampled sketch)": per_record(load.observe, batches),
        "sketch, every key": per_record(all_keys, batches),
        "Misra-Gries in Python, every key": per_record(lambda b: every(b, 0, 1), batches),
        "Misra-Gries in Python, sampled": per_record(sampled_mg, batches),
    }
    assert load.top()[0].key.startswith("'hot")
    return figures


def main() -> None:
    rng = random.Random(0)
    hot = [f"hot{i}" for i in range(5)]
    print(f"ns per record (sample stride {SAMPLE_STRIDE}, lg map {LG_MAP})")
    for size in (64, 512, 8192):
        batches = [
            [
                rng.choice(hot) if rng.random() < 0.5 else f"k{rng.randrange(100_000)}"
                for _ in range(size)
            ]
            for _ in range(max(1, 400_000 // size))
        ]
        line = ", ".join(f"{name} {ns:.0f}" for name, ns in measure(batches).items())
        print(f"batch {size:>5}: {line}")


if __name__ == "__main__":
    main()
