"""Benchmark: running sum, min, mean and count per key, the keyed runner alone (no source,
exchange or sink), columnar beside record by record.

    python benchmarks/rolling_operator.py                 # 491,520 events, 100k zipf keys
    python benchmarks/rolling_operator.py --rounds 7 --key-groups 1 128

The events are zipf user ids (s = 1.1) in the job's batches of 8,192, cut per key group as the
router cuts them (128 key groups: ~64 records a runner batch; 1 key group: the whole 8,192),
each event's number its user id. Every variant runs the same batches on a fresh LMDB store per
key group, one ``KeyedRunner`` per key group, in interleaved rounds (every variant once per
round), with the garbage collector tuned as in a worker process (``tune_gc``). The batches go
through twice and only the second pass is timed: every key's state is then cached, as a
running job's hot keys are (the first pass is dominated by the LMDB reads of keys seen for the
first time, the same for every variant; ``--passes 1`` times that instead). The figure is CPU
ns per event, median of the rounds, and the ratio to ``reduce(lambda a, b: a + b)`` (what a
user writes without ``sum``). Every variant's final state is checked against the input.

Variants: ``sum()``, ``min()``, ``reduce(operator.add)`` (recognised: the same columnar path),
``sum(columnar=False)`` and ``reduce(lambda ...)`` (record by record), ``mean()``,
``mean(columnar=False)`` and ``aggregate (a mean)`` (the ``aggregate`` a user writes for a
running mean without ``mean``: create, add and result functions), ``count()`` and
``count(columnar=False)`` for scale, and ``numpy sketch``: the int64 segmented running sum
(stable argsort of the key codes, cumsum, per-segment bases) that ``_rolling.py`` does not use,
to show what it would give at each batch size.
"""

from __future__ import annotations

import argparse
import operator
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import _args  # run as a script: its folder is on sys.path
import numpy as np
from shoal.runtime._boot import tune_gc
from shoal.runtime._keys import KeyGroupRouter
from shoal.runtime._operators import DeadLetters, KeyedRunner
from shoal.runtime._plan import compile_plan
from shoal.storage import LmdbBackend, MemoryBackend, StateBackend, ValueState

from shoal import CollectingSink, Flow, IterableSource, KeyedStream

Routed = dict[int, tuple[list[Any], list[Any], list[int]]]

VARIANTS: dict[str, Callable[[KeyedStream], Any]] = {
    "sum()": lambda k: k.sum(name="op"),
    "min()": lambda k: k.min(name="op"),
    "reduce(operator.add)": lambda k: k.reduce(operator.add, name="op"),
    "sum(columnar=False)": lambda k: k.sum(name="op", columnar=False),
    "reduce(lambda a, b: a + b)": lambda k: k.reduce(lambda a, b: a + b, name="op"),
    "mean()": lambda k: k.mean(name="op"),
    "mean(columnar=False)": lambda k: k.mean(name="op", columnar=False),
    "aggregate (a mean)": lambda k: k.aggregate(
        lambda: [0, 0], lambda acc, v: [acc[0] + 1, acc[1] + v], lambda acc: acc[1] / acc[0]
    ),
    "count()": lambda k: k.count(name="op"),
    "count(columnar=False)": lambda k: k.count(name="op", columnar=False),
    "numpy sketch": lambda k: k.reduce(lambda a, b: a + b, name="op"),
}
BASELINE = "reduce(lambda a, b: a + b)"
BATCH = 8192  # the job's source batch


def _key_groups(text: str) -> int:
    value = _args.count(text)
    if value > 32768:
        raise argparse.ArgumentTypeError(f"expected key groups from 1 to 32768, got {text!r}")
    return value


def batches(events: int, keys: int, key_groups: int, size: int) -> list[Routed]:
    rng = random.Random(11)
    weights = list(accumulate(1 / (rank + 1) ** 1.1 for rank in range(keys)))
    users = rng.choices(range(1, keys + 1), cum_weights=weights, k=events)
    router = KeyGroupRouter(key_groups)
    return [
        router.route(users[low : low + size], users[low : low + size], list(range(low, low + size)))
        for low in range(0, events, size)
    ]


def numpy_sum(state: ValueState, keys: list[Any], values: list[Any]) -> list[Any]:
    """The int64 running sum of a batch with numpy (ints only; no overflow check: a sketch)."""
    first = dict.fromkeys(keys)
    held = state.values_of(first)
    code = dict(zip(first, range(len(first)), strict=True))
    n = len(keys)
    codes = np.fromiter(map(code.__getitem__, keys), np.intp, n)
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    sums = np.cumsum(np.fromiter(values, np.int64, n)[order])
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    before = np.concatenate(([0], sums[starts[1:] - 1]))
    bases = np.fromiter((0 if v is None else v for v in held.values()), np.int64, len(first))
    running = np.empty_like(sums)
    running[order] = sums + (bases - before)[ordered]
    out: list[Any] = running.tolist()
    state.update_all(dict(zip(keys, out, strict=True)))
    return out


def run(
    name: str, work: list[Routed], key_groups: int, passes: int, directory: str | None
) -> tuple[float, Any]:
    """CPU seconds of one variant's last pass over ``work``, and its final state."""
    flow = Flow("f", num_key_groups=key_groups)
    VARIANTS[name](flow.source(IterableSource([1])).key_by(int)).sink(CollectingSink())
    op = compile_plan(flow).stages[1].operator
    backend: StateBackend = MemoryBackend() if directory is None else LmdbBackend(directory)
    stores = [backend.open_store("op", group, op.states) for group in range(key_groups)]
    runners = [KeyedRunner(op, store, group, None) for group, store in enumerate(stores)]
    dead = DeadLetters(0)
    sketch = name == "numpy sketch"
    for _pass in range(passes):
        started = time.process_time()
        for routed in work:
            for group, (keys, values, offsets) in routed.items():
                if sketch:
                    numpy_sum(stores[group].state("value"), keys, values)
                else:
                    runners[group].run(keys, values, offsets, "s", dead)
        cpu = time.process_time() - started
    state: dict[Any, Any] = {}
    for store in stores:
        store.flush()
        state.update(store.items("value"))
        store.close()
    assert not dead.count
    return cpu, state


def expected(work: list[Routed], name: str, passes: int) -> dict[Any, Any]:
    counts: Counter[Any] = Counter()
    for routed in work:
        for keys, _values, _offsets in routed.values():
            counts.update(keys)
    counts = Counter({key: n * passes for key, n in counts.items()})
    if name.startswith("count"):
        return dict(counts)
    if name.startswith("min"):
        return {user: user for user in counts}
    if "mean" in name:  # [count, total]
        return {user: [n, user * n] for user, n in counts.items()}
    return {user: user * n for user, n in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=_args.multiple_of(BATCH), default=60 * BATCH)
    parser.add_argument("--keys", type=_args.count, default=100_000)
    parser.add_argument("--rounds", type=_args.count, default=5)
    parser.add_argument("--passes", type=_args.count, default=2, help="the last one is timed")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="the memory backend instead of LMDB (e.g. under valgrind, where 128 LMDB maps "
        "do not fit)",
    )
    parser.add_argument("--key-groups", type=_key_groups, nargs="+", default=[128, 1])
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        metavar="VARIANT",
        help="which to run (default: all): " + ", ".join(repr(name) for name in VARIANTS),
    )
    args = parser.parse_args()
    tune_gc()
    for key_groups in args.key_groups:
        work = batches(args.events, args.keys, key_groups, BATCH)
        cpu: dict[str, list[float]] = {name: [] for name in args.variants}
        for round_ in range(args.rounds):
            for name in args.variants:
                with tempfile.TemporaryDirectory() as directory:
                    where = None if args.memory else directory
                    seconds, state = run(name, work, key_groups, args.passes, where)
                if round_ == 0:
                    want = expected(work, name, args.passes)
                    assert state == want, f"{name}: wrong final state"
                cpu[name].append(seconds)
        ns = {name: statistics.median(s) / args.events * 1e9 for name, s in cpu.items()}
        per_batch = args.events / sum(len(routed) for routed in work)
        print(
            f"{args.events:,} events, {args.keys:,} zipf keys, {key_groups} key group(s) "
            f"(~{per_batch:,.0f} records a runner batch), pass {args.passes} timed, median of "
            f"{args.rounds} rounds, CPU ns per event:"
        )
        base = ns.get(BASELINE)
        for name, value in ns.items():
            ratio = f"  {base / value:.2f}x {BASELINE}" if base else ""
            print(f"  {name:<28} {value:>7,.0f}{ratio}", flush=True)


if __name__ == "__main__":
    main()
