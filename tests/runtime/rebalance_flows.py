"""Flows of the rebalancing tests, importable by worker processes (which rebuild them): the
recovery tests' ``stats`` operator over a skewed, paced input whose hot words all hash into the
key groups the initial placement gives worker 0 (the first half), so one worker carries most
of the load until a rebalance."""

from __future__ import annotations

import random
from typing import Any

from recovery_flows import track, word_of
from shoal.runtime import key_group_of

from shoal import CollectingSink, Flow, IterableSource, ValueStateSpec


def hot_words(vocabulary: int, key_groups: int, hot: int) -> list[str]:
    """``hot`` words of the vocabulary in distinct key groups of the first half."""
    words: list[str] = []
    groups: set[int] = set()
    for i in range(vocabulary):
        word = f"w{i}"
        group = key_group_of(word, key_groups)
        if group < key_groups // 2 and group not in groups:
            words.append(word)
            groups.add(group)
            if len(words) == hot:
                return words
    raise ValueError("not enough distinct key groups in the first half")


def skewed_records(
    seed: int, n: int, vocabulary: int, key_groups: int, hot: int, skew: float
) -> list[dict[str, Any]]:
    """``n`` records; a ``skew`` share of them on the hot words, the rest uniform."""
    rng = random.Random(seed)
    heavy = hot_words(vocabulary, key_groups, hot)
    return [
        {
            "word": rng.choice(heavy) if rng.random() < skew else f"w{rng.randrange(vocabulary)}",
            "n": rng.randrange(-500, 500),
        }
        for _ in range(n)
    ]


def skewed_stats(
    seed: int = 0,
    n: int = 20_000,
    vocabulary: int = 300,
    splits: int = 4,
    key_groups: int = 16,
    hot: int = 4,
    skew: float = 0.8,
    rate: float = 20_000.0,
    collect: CollectingSink | None = None,
) -> Flow:
    """Per word: count, sum, min and max of the skewed input, read at ``rate`` records/s."""
    flow = Flow("skewed", num_key_groups=key_groups)
    inputs = skewed_records(seed, n, vocabulary, key_groups, hot, skew)
    flow.source(IterableSource(inputs, splits=splits, rate=rate)).key_by(word_of).process(
        track,
        states=[
            ValueStateSpec("count", default=0),
            ValueStateSpec("sum", default=0),
            ValueStateSpec("min", default=0),
            ValueStateSpec("max", default=0),
        ],
        name="per_word",
    ).sink(collect if collect is not None else CollectingSink())
    return flow


def skewed_oracle(p: dict[str, Any]) -> dict[str, dict[Any, Any]]:
    """Every state's expected final value per word, recomputed from the input alone."""
    out: dict[str, dict[Any, Any]] = {"count": {}, "sum": {}, "min": {}, "max": {}}
    for record in skewed_records(
        p["seed"], p["n"], p["vocabulary"], p["key_groups"], p["hot"], p["skew"]
    ):
        word, n = record["word"], record["n"]
        out["count"][word] = out["count"].get(word, 0) + 1
        out["sum"][word] = out["sum"].get(word, 0) + n
        out["min"][word] = min(out["min"].get(word, n), n)
        out["max"][word] = max(out["max"].get(word, n), n)
    return out
