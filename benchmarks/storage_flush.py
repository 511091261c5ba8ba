"""Micro-benchmark of the storage layer's flush and ValueState hot path.

Run from the repository root::

    python benchmarks/storage_flush.py            # 100k and 300k dirty keys, int and str
    python benchmarks/storage_flush.py --sizes 100000 --repeat 5

Flush: a store on LmdbBackend with two ValueStates ("count", an int, and "last", a short str),
N keys each updated in both states, so 2*N dirty ValueState entries. Printed is the best of
``--repeat`` runs of ``flush()`` in µs per dirty entry, for a first flush into empty databases
("insert") and for a second flush overwriting every key ("overwrite").

Hot path: ``value()`` then ``update()`` on one ValueState over 1k cached keys, in ns per pair,
with the cost of the loop and of setting ``store.key`` subtracted.
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from shoal.storage import KeyGroupStore, LmdbBackend, ValueStateSpec

SPECS = (ValueStateSpec("count", default=0), ValueStateSpec("last", default=""))
_RUNS = iter(range(1 << 30))  # every run gets a fresh environment


def _keys(kind: str, n: int) -> list[Any]:
    rng = random.Random(n)
    if kind == "int":
        keys: list[Any] = rng.sample(range(10 * n), n)
    else:
        keys = [f"user-{i:08x}" for i in rng.sample(range(10 * n), n)]
    return keys


def _dirty(store: KeyGroupStore, keys: list[Any], round_: int) -> None:
    count = store.states.count
    last = store.states.last
    for i, key in enumerate(keys):
        store.key = key
        count.update(i + round_)
        last.update(f"page-{i % 97}")


def _time_flush(root: Path, kind: str, n: int) -> tuple[float, float]:
    keys = _keys(kind, n)
    backend = LmdbBackend(root, map_size=1 << 28)
    with backend.open_store(f"bench-{kind}-{n}", next(_RUNS), SPECS) as store:
        _dirty(store, keys, 0)
        gc.collect()
        start = time.process_time()
        written = store.flush(meta={"epoch": 1})
        insert = time.process_time() - start
        assert written == 2 * n + 1, written
        _dirty(store, keys, 1)
        gc.collect()
        start = time.process_time()
        written = store.flush(meta={"epoch": 2})
        overwrite = time.process_time() - start
        assert written == 2 * n + 1, written
    return insert / (2 * n) * 1e6, overwrite / (2 * n) * 1e6


def _best(repeat: int, run: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    results = [run() for _ in range(repeat)]
    return min(r[0] for r in results), min(r[1] for r in results)


def _time_hot_path(root: Path, repeat: int) -> float:
    keys: list[Any] = [f"user-{i:08x}" for i in range(1000)]
    backend = LmdbBackend(root, map_size=1 << 24)
    rounds = 200
    with backend.open_store("bench-hot", 0, SPECS) as store:
        count = store.states.count
        _dirty(store, keys, 0)

        def both() -> float:
            start = time.process_time()
            for _ in range(rounds):
                for key in keys:
                    store.key = key
                    count.update(count.value() + 1)
            return time.process_time() - start

        def loop_only() -> float:
            start = time.process_time()
            for _ in range(rounds):
                for key in keys:
                    store.key = key
                    _ = 0 + 1
            return time.process_time() - start

        best = min(both() for _ in range(repeat))
        base = min(loop_only() for _ in range(repeat))
    return (best - base) / (rounds * len(keys)) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        root = Path(tmp)
        print("flush, µs per dirty ValueState entry (best of", args.repeat, "runs)")
        for kind in ("int", "str"):
            for n in args.sizes:
                insert, overwrite = _best(args.repeat, partial(_time_flush, root, kind, n))
                print(
                    f"  {kind:3} keys, {n:>7} keys ({2 * n:>7} entries): "
                    f"insert {insert:5.2f} µs   overwrite {overwrite:5.2f} µs"
                )
        hot = _time_hot_path(root, args.repeat)
        print(f"hot path, value()+update() on 1k cached keys: {hot:6.1f} ns per pair")


if __name__ == "__main__":
    main()
