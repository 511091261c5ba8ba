"""Flows and oracles of the recovery tests, importable by worker processes (which rebuild them).

``stats`` keeps per word its count, sum, min and max (one ValueState each), and with
``stages=2`` counts every first-stage update again per last letter: a second keyed stage whose
input is the first's output, so a replayed record that was counted twice upstream would show.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from shoal import (
    CollectingSink,
    Flow,
    IterableSource,
    ProcessContext,
    TransactionalJsonlSink,
    ValueStateSpec,
)


def records(seed: int, n: int, vocabulary: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"word": f"w{rng.randrange(vocabulary)}", "n": rng.randrange(-500, 500)} for _ in range(n)
    ]


def word_of(record: dict[str, Any]) -> str:
    return str(record["word"])


def last_letter(update: tuple[str, int]) -> str:
    return update[0][-1]


def track(word: str, record: dict[str, Any], ctx: ProcessContext) -> None:
    state = ctx.state
    n = record["n"]
    count = state.count.value() + 1
    state.count.update(count)
    state.sum.update(state.sum.value() + n)
    state.min.update(n if count == 1 else min(state.min.value(), n))
    state.max.update(n if count == 1 else max(state.max.value(), n))
    ctx.emit((word, count))


def stats(
    seed: int = 0,
    n: int = 10_000,
    vocabulary: int = 300,
    splits: int = 3,
    key_groups: int = 8,
    stages: int = 1,
    output: str = "",
) -> Flow:
    """``output``: a directory for a transactional sink (exactly-once output); else the
    output is collected (at-least-once across recoveries)."""
    source = IterableSource(records(seed, n, vocabulary), splits=splits)
    return stats_over(source, key_groups=key_groups, stages=stages, output=output)


def stats_over(
    source: Any,
    *,
    key_groups: int,
    stages: int,
    output: str = "",
    collect: CollectingSink | None = None,
) -> Flow:
    """The ``stats`` flow over ``source`` (``collect``: the sink to collect the output in)."""
    flow = Flow("stats", num_key_groups=key_groups)
    out = (
        flow.source(source)
        .key_by(word_of)
        .process(
            track,
            states=[
                ValueStateSpec("count", default=0),
                ValueStateSpec("sum", default=0),
                ValueStateSpec("min", default=0),
                ValueStateSpec("max", default=0),
            ],
            name="per_word",
        )
    )
    if stages == 2:
        out = out.key_by(last_letter).count(name="per_letter")
    sink: Any = CollectingSink() if collect is None else collect  # (an empty one is falsy)
    if output:
        sink = TransactionalJsonlSink(output)
    out.sink(sink)
    return flow


def oracle(params: dict[str, Any]) -> dict[str, dict[Any, Any]]:
    """Every state's expected final value per key, recomputed from the input alone."""
    out: dict[str, dict[Any, Any]] = {"count": {}, "sum": {}, "min": {}, "max": {}}
    inputs = records(params["seed"], params["n"], params["vocabulary"])
    for record in inputs:
        word, n = record["word"], record["n"]
        out["count"][word] = out["count"].get(word, 0) + 1
        out["sum"][word] = out["sum"].get(word, 0) + n
        out["min"][word] = min(out["min"].get(word, n), n)
        out["max"][word] = max(out["max"].get(word, n), n)
    if params.get("stages", 1) == 2:
        out["per_letter"] = dict(Counter(record["word"][-1] for record in inputs))
    return out


def check_output(params: dict[str, Any]) -> None:
    """The transactional sink published each running count exactly once: per key, the counts
    ``1..n`` (for the last stage: per word, or per letter with two stages)."""
    inputs = records(params["seed"], params["n"], params["vocabulary"])
    if params.get("stages", 1) == 2:
        expected = Counter(record["word"][-1] for record in inputs)
    else:
        expected = Counter(record["word"] for record in inputs)
    published: dict[str, list[int]] = {}
    for key, count in TransactionalJsonlSink(params["output"]).read():
        published.setdefault(key, []).append(count)
    wrong = {
        key: (sorted(published.get(key, [])), n)
        for key, n in expected.items()
        if sorted(published.get(key, [])) != list(range(1, n + 1))
    }
    assert not wrong, (
        f"{len(wrong)} keys' published counts are not 1..n, e.g. {next(iter(wrong.items()))}"
    )
    assert set(published) == set(expected)


def final_state(result: Any, params: dict[str, Any]) -> dict[str, dict[Any, Any]]:
    """The job's final state, in the oracle's shape."""
    out = {name: result.read_state("per_word", name) for name in ("count", "sum", "min", "max")}
    if params.get("stages", 1) == 2:
        out["per_letter"] = result.read_state("per_letter", "value")
    return out
