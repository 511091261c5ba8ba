"""Flows of the running sum/min/max tests, importable by worker processes (which rebuild them).

``builtin_stats`` computes the recovery tests' per-word count, sum, min and max with the
built-in operators (``count``, ``sum``, ``min``, ``max``: one keyed operator each, every state a
ValueState ``value``), so ``recovery_flows.oracle`` and ``rescale_flows.oracle_of`` check it,
and a ``mean`` whose ``[count, total]`` must equal the count's and the sum's.
``mixed`` folds values of every kind, bad ones among them, into a running sum, min, max and
mean.
"""

from __future__ import annotations

import random
from operator import itemgetter
from typing import Any

from recovery_flows import records, word_of

from shoal import CollectingSink, Flow, IterableSource

OPERATORS = ("count", "sum", "min", "max")
amount = itemgetter("n")


def builtin_stats(
    seed: int = 0,
    n: int = 10_000,
    vocabulary: int = 300,
    splits: int = 3,
    key_groups: int = 8,
    rate: float | None = None,
) -> Flow:
    flow = Flow("builtin_stats", num_key_groups=key_groups)
    keyed = flow.source(
        IterableSource(records(seed, n, vocabulary), splits=splits, rate=rate)
    ).key_by(word_of)
    keyed.count(name="count").sink(CollectingSink())
    keyed.sum(amount, name="sum").sink(CollectingSink())
    keyed.min(amount, name="min").sink(CollectingSink())
    keyed.max(amount, name="max").sink(CollectingSink())
    keyed.mean(amount, name="mean").sink(CollectingSink())
    return flow


def final_state(result: Any) -> dict[str, dict[Any, Any]]:
    """The job's final state, in ``recovery_flows.oracle``'s shape; the mean's state
    (``[count, total]``) must be the count's and the sum's, key by key."""
    state = {name: result.read_state(name, "value") for name in OPERATORS}
    means = result.read_state("mean", "value")
    assert means == {w: [n, state["sum"][w]] for w, n in state["count"].items()}
    return state


#: Values a ``mixed`` record may carry: ints (some past int64), floats (signed zeros,
#: infinities), and bad ones (a bool, a str, None) that are dead letters.
_SPECIAL = (0.0, -0.0, float("inf"), float("-inf"), 2**70, -(2**64), 2**63 - 1, True, "7", None)


def mixed_records(seed: int, n: int, vocabulary: int) -> list[tuple[str, Any]]:
    """``(word, value)`` pairs: runs of all-int and all-float values with bad ones among
    them, so some batches go as columns and some record by record."""
    rng = random.Random(seed)
    out: list[tuple[str, Any]] = []
    while len(out) < n:
        kind = rng.choice(("int", "float", "mixed"))
        for _ in range(rng.randrange(1, 200)):
            if kind == "int":
                value: Any = rng.randrange(-1000, 1000)
            elif kind == "float":
                value = rng.uniform(-1e6, 1e6)
            else:
                value = rng.choice(_SPECIAL)
            out.append((f"w{rng.randrange(vocabulary)}", value))
    return out[:n]


def mixed(
    seed: int = 0, n: int = 5_000, vocabulary: int = 40, key_groups: int = 8, columnar: bool = True
) -> Flow:
    """One split (each key's records reach it in input order, so its running values are
    fixed by the input)."""
    flow = Flow("mixed", num_key_groups=key_groups)
    keyed = flow.source(IterableSource(mixed_records(seed, n, vocabulary))).key_by(itemgetter(0))
    value = itemgetter(1)
    keyed.sum(value, name="sum", columnar=columnar).sink(CollectingSink())
    keyed.min(value, name="min", columnar=columnar).sink(CollectingSink())
    keyed.max(value, name="max", columnar=columnar).sink(CollectingSink())
    keyed.mean(value, name="mean", columnar=columnar).sink(CollectingSink())
    return flow
