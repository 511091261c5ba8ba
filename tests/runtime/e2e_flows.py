"""Flows the end-to-end tests run, importable by worker processes (which rebuild them)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shoal import (
    ClickstreamSource,
    CollectingSink,
    Flow,
    IterableSource,
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
