"""Flows the end-to-end tests run, importable by worker processes (which rebuild them)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shoal import (
    ClickstreamSource,
    CollectingSink,
    Flow,
    IterableSource,
    ListStateSpec,
    ProcessContext,
    ValueStateSpec,
)


def click_user(click: tuple[int, str, int]) -> int:
    return click[0]


def count_and_sum(user: int, click: tuple[int, str, int], ctx: ProcessContext) -> None:
    state = ctx.state
    n = state.n.value() + 1
    state.n.update(n)
    state.total.update(state.total.value() + click[2] % 1000)
    ctx.emit((user, n))


def clicks(events: int = 20_000, users: int = 500, splits: int = 4, key_groups: int = 16) -> Flow:
    """Count and sum per user; collect every emitted running count at the driver."""
    flow = Flow("clicks", num_key_groups=key_groups)
    (
        flow.source(ClickstreamSource(events=events, users=users, seed=3, splits=splits))
        .key_by(click_user)
        .process(
            count_and_sum,
            states=[ValueStateSpec("n", default=0), ValueStateSpec("total", default=0)],
            name="per_user",
        )
        .sink(CollectingSink())
    )
    return flow


def clicks_oracle(
    events: int = 20_000, users: int = 500, splits: int = 4
) -> tuple[Counter[int], Counter[int]]:
    n: Counter[int] = Counter()
    total: Counter[int] = Counter()
    for user, _page, ts in ClickstreamSource(
        events=events, users=users, seed=3, splits=splits
    ).iter_all():
        n[user] += 1
        total[user] += ts % 1000
    return n, total


def word_of(line: Any) -> str:
    return str(line["word"])


def two_stage(words: int = 3000, key_groups: int = 8) -> Flow:
    """Count words, then count how many words reached each count (a second keyed exchange)."""
    flow = Flow("two_stage", num_key_groups=key_groups)
    items = [{"word": f"w{i % 97}"} for i in range(words)]
    (
        flow.source(IterableSource(items, splits=3))
        .key_by(word_of)
        .count(name="words")
        .key_by(lambda kv: kv[1])
        .count(name="by_count")
        .sink(CollectingSink())
    )
    return flow


def _die_at_777(value: int) -> int:
    if value == 777:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)  # a real kill -9 of this worker process
    return value


def doomed() -> Flow:
    """A flow whose worker process SIGKILLs itself on record 777."""
    flow = Flow("doomed", num_key_groups=4)
    (
        flow.source(IterableSource(list(range(2000)), splits=2))
        .map(_die_at_777)
        .key_by(lambda v: v % 10)
        .count()
        .sink(CollectingSink())
    )
    return flow


def random_words(seed: int, n: int, vocabulary: int) -> list[dict[str, Any]]:
    """A seeded list of records ``{"word": ..., "n": ...}`` for randomized jobs."""
    import random

    rng = random.Random(seed)
    return [{"word": f"w{rng.randrange(vocabulary)}", "n": rng.randrange(100)} for _ in range(n)]


def sum_per_word(key: str, record: dict[str, Any], ctx: ProcessContext) -> None:
    total = ctx.state.total.value() + record["n"]
    ctx.state.total.update(total)
    ctx.state.seen.add(record["n"])
    ctx.emit((key, total))


def last_letter(item: tuple[str, Any]) -> str:
    """The second exchange's key: the last character of the word an update came from."""
    return item[0][-1]


def randomized(
    seed: int = 0,
    n: int = 1000,
    vocabulary: int = 50,
    splits: int = 2,
    key_groups: int = 8,
    op: str = "process",
    stages: int = 1,
) -> Flow:
    """A randomized job: per word, a running sum (ValueState) and the values seen (ListState).

    With ``stages=2`` every update of the first keyed operator goes through a second exchange,
    keyed by the word's last character, into a running count (``per_letter``): two keyed
    stages, so records cross workers twice.
    """
    flow = Flow("randomized", num_key_groups=key_groups)
    keyed = flow.source(IterableSource(random_words(seed, n, vocabulary), splits=splits)).key_by(
        word_of
    )
    if op == "count":
        out = keyed.count(name="per_word")
    elif op == "reduce":
        out = keyed.reduce(lambda a, b: {"word": a["word"], "n": a["n"] + b["n"]}, name="per_word")
    elif op == "sum":
        out = keyed.sum(lambda record: record["n"], name="per_word")
    else:
        out = keyed.process(
            sum_per_word,
            states=[ValueStateSpec("total", default=0), ListStateSpec("seen")],
            name="per_word",
        )
    if stages == 2:
        out = out.key_by(last_letter).count(name="per_letter")
    out.sink(CollectingSink())
    return flow
