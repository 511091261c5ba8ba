"""Micro-benchmark of the storage layer's flush and ValueState hot path.

Run from the repository root::

    python benchmarks/storage_flush.py            # 100k and 300k dirty keys, int and str
    python benchmarks/storage_flush.py --sizes 100000 --repeat 5

Flush: a store on LmdbBackend with two ValueStates ("count", an int, and "last", a short str),
N keys each updated in both states, so 2*N dirty ValueState entries. Printed is the best of
``--repeat`` runs of ``flush()`` in µs per dirty entry, for a first flush into empty databases
("insert") and for a second flush overwriting every key ("overwrite").

Epoch commit: the same two flushes with ``flush_epoch`` (the checkpointing runtime's flush: it
also reads what each entry overwrites, writes that as an undo record in the same transaction,
and returns the delta), then ``rollback_to`` the first epoch, and a restore of the first
epoch from its checkpoint file (``load_group``: read, verify, decode; ``restore``), in µs per
entry.

Checkpoint files: the overwrite's delta written by ``CheckpointStore.write_delta`` to a local
directory (encode as canonical CBOR, XXH3-128, write, fsync), and the whole state written by
``write_full`` from a ``snapshot()``, in ms.

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

from shoal.storage import CheckpointStore, KeyGroupStore, LmdbBackend, ValueStateSpec

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


def _time_flush_epoch(root: Path, kind: str, n: int) -> tuple[float, ...]:
    """flush_epoch insert, overwrite, rollback, restore from files in µs per entry; delta and
    full files in ms."""
    keys = _keys(kind, n)
    backend = LmdbBackend(root, map_size=1 << 28)
    run = next(_RUNS)
    with backend.open_store(f"bench-epoch-{kind}-{n}-{run}", 0, SPECS) as store:
        _dirty(store, keys, 0)
        gc.collect()
        start = time.process_time()
        store.flush_epoch(1)
        insert = time.process_time() - start
        _dirty(store, keys, 1)
        gc.collect()
        start = time.process_time()
        delta = store.flush_epoch(2)
        overwrite = time.process_time() - start
        assert len(delta) == 2 * n, len(delta)
        checkpoints = CheckpointStore(root / f"ckpt-{run}")
        with store.snapshot() as snapshot:  # epoch 2's state, as a periodic full
            start = time.perf_counter()
            record = checkpoints.write_full(1, store.operator, 0, snapshot.entries())
            full_ms = (time.perf_counter() - start) * 1e3
        checkpoints.commit(1, [record], num_key_groups=1, operators={store.operator: SPECS})
        start = time.perf_counter()
        checkpoints.write_delta(2, delta, 1)
        delta_ms = (time.perf_counter() - start) * 1e3
        gc.collect()
        start = time.process_time()
        store.rollback_to(1)
        rollback = time.process_time() - start
        manifest = checkpoints.read_manifest(1)
        gc.collect()
        start = time.perf_counter()
        entries = checkpoints.load_group(manifest, store.operator, 0)
        store.restore(entries, epoch=1, check=False)
        restore = time.perf_counter() - start
    per = 1e6 / (2 * n)
    return insert * per, overwrite * per, rollback * per, restore * per, delta_ms, full_ms


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
        print("flush_epoch (undo record + delta), µs per entry; checkpoint files, ms")
        for kind in ("int", "str"):
            for n in args.sizes:
                runs = [_time_flush_epoch(root, kind, n) for _ in range(args.repeat)]
                insert, overwrite, rollback, restore, delta_ms, full_ms = (
                    min(run[i] for run in runs) for i in range(6)
                )
                print(
                    f"  {kind:3} keys, {n:>7} keys ({2 * n:>7} entries): "
                    f"insert {insert:5.2f} µs   overwrite {overwrite:5.2f} µs   "
                    f"rollback {rollback:5.2f} µs   restore from files {restore:5.2f} µs   "
                    f"delta file {delta_ms:6.1f} ms   full file {full_ms:6.1f} ms"
                )
        hot = _time_hot_path(root, args.repeat)
        print(f"hot path, value()+update() on 1k cached keys: {hot:6.1f} ns per pair")


if __name__ == "__main__":
    main()
