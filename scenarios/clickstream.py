"""Default scenario: per-user click counts and last-seen page over a zipf-skewed clickstream.

    shoal run scenarios/clickstream.py --workers 2

One million synthetic clicks from a population of users whose activity is zipf-skewed (a few
users click a lot, most click rarely). A keyed process function keeps, per user, the click count
and the page of the latest click (by timestamp, so the result does not depend on how the
generator's splits interleave) in LMDB state, and emits the running count for every click.

The checks recompute every user's count and last page independently from the generator and
compare them with the state the job left in LMDB, key by key. Two more checks judge the
workload itself against the distribution it promises, with thresholds derived from the
parameters (and named in the checks): the number of distinct users, and the clicks of the
busiest user (the skew).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from shoal import (
    Check,
    ClickstreamSource,
    CountingSink,
    Flow,
    JobResult,
    ProcessContext,
    Scenario,
    ValueStateSpec,
    clickstream_oracle,
)


def user_of(click: tuple[int, str, int]) -> int:
    return click[0]


def track_user(user: int, click: tuple[int, str, int], ctx: ProcessContext) -> None:
    """Count the user's clicks and remember the page of their latest click."""
    state = ctx.state
    clicks = state.clicks.value() + 1
    state.clicks.update(clicks)
    _user, page, ts = click
    last = state.last.value()
    if last is None or ts > last[1]:
        state.last.update((page, ts))
    ctx.emit((user, clicks))


def source(events: int, users: int, seed: int, splits: int, zipf_s: float) -> ClickstreamSource:
    return ClickstreamSource(events=events, users=users, seed=seed, splits=splits, zipf_s=zipf_s)


def build(events: int, users: int, seed: int, splits: int, zipf_s: float, key_groups: int) -> Flow:
    flow = Flow("clickstream", num_key_groups=key_groups)
    (
        flow.source(source(events, users, seed, splits, zipf_s))
        .key_by(user_of)
        .process(
            track_user,
            states=[ValueStateSpec("clicks", default=0), ValueStateSpec("last")],
            name="users",
        )
        .sink(CountingSink())
    )
    return flow


def workload_bounds(events: int, users: int, zipf_s: float) -> tuple[int, float, int]:
    """Lower bounds on what the workload must show: (distinct users, their expectation, clicks
    of the busiest user).

    User rank ``r`` is drawn with probability ``p_r`` proportional to ``1/r**zipf_s``. Over
    ``events`` draws, user ``r`` appears at least once with probability
    ``q_r = 1 - (1 - p_r)**events``; the distinct count has mean ``sum(q_r)`` and a variance
    below ``sum(q_r * (1 - q_r))``. The rank-1 user's clicks are binomial(events, p_1), and the
    busiest user has at least as many. Each bound is the mean minus five standard deviations:
    a correct generator misses it with negligible probability; a generator that loses users or
    skew does not reach it.
    """
    weights = 1.0 / np.arange(1, users + 1, dtype=np.float64) ** zipf_s
    p = weights / weights.sum()
    q = -np.expm1(events * np.log1p(-p))
    expected = float(q.sum())
    min_users = math.floor(expected - 5 * math.sqrt(float((q * (1 - q)).sum())))
    top = events * float(p[0])
    min_top = math.floor(top - 5 * math.sqrt(top * (1 - float(p[0]))))
    return max(min_users, 0), expected, max(min_top, 0)


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    expected = clickstream_oracle(
        source(
            params["events"], params["users"], params["seed"], params["splits"], params["zipf_s"]
        )
    )
    events = params["events"]
    # The whole job's counts: a run resumed from a checkpoint counts what was read and
    # emitted before it (result.resumed_from) once, with what it read itself.
    start = result.resumed_from
    before = (
        f" ({start.records_in:,} before the resume)"
        if start is not None and start.records_in is not None
        else ""
    )
    yield Check(
        "every event read",
        result.records_in == events,
        f"{result.records_in:,} of {events:,}{before}",
    )
    yield Check(
        "one running count per event",
        result.records_out == events,
        f"{result.records_out:,} emitted",
    )
    yield Check("no dead letters", result.dead_letters == 0, f"{result.dead_letters} dead letters")

    clicks = result.read_state("users", "clicks")
    last = result.read_state("users", "last")
    wrong_counts = [u for u, (n, _page, _ts) in expected.items() if clicks.get(u) != n]
    wrong_pages = [
        u
        for u, (_n, page, ts) in expected.items()
        if last.get(u) is None or tuple(last[u]) != (page, ts)
    ]
    extra = set(clicks) - set(expected)
    extra_last = set(last) - set(expected)
    yield Check(
        "per-user click counts equal the oracle",
        not wrong_counts and not extra,
        f"{len(expected):,} users compared; {len(wrong_counts):,} differ"
        + (f" (first: user {wrong_counts[0]})" if wrong_counts else "")
        + (f"; {len(extra)} unexpected users in state" if extra else ""),
    )
    yield Check(
        "per-user last page equals the oracle",
        not wrong_pages and not extra_last,
        f"{len(wrong_pages):,} differ"
        + (f" (first: user {wrong_pages[0]})" if wrong_pages else "")
        + (f"; {len(extra_last)} unexpected users in state" if extra_last else ""),
    )
    min_users, mean_users, min_top = workload_bounds(events, params["users"], params["zipf_s"])
    top = max((n for n, _page, _ts in expected.values()), default=0)
    yield Check(
        f"workload has >= {min_users:,} distinct users",
        len(expected) >= min_users,
        f"{len(expected):,} distinct users of {params['users']:,}; {mean_users:,.0f} expected",
    )
    yield Check(
        f"workload is zipf-skewed: the busiest user has >= {min_top:,} clicks",
        top >= min_top,
        f"the busiest user has {top:,} clicks; a uniform workload would give about "
        f"{events / params['users']:,.1f}",
    )


scenario = Scenario(
    name="clickstream",
    build=build,
    checks=checks,
    params={
        "events": 1_000_000,
        "users": 200_000,
        "seed": 7,
        "splits": 8,
        "zipf_s": 0.9,
        "key_groups": 128,
    },
    description=(
        "per-user click count and last page over zipf-skewed clicks, checked against an oracle"
    ),
)
