"""Default scenario: per-user click counts and last-seen page over a zipf-skewed clickstream.

    shoal run scenarios/clickstream.py --workers 2

One million synthetic clicks from a population of users whose activity is zipf-skewed (a few
users click a lot, most click rarely). A keyed process function keeps, per user, the click count
and the page of the latest click (by timestamp, so the result does not depend on how the
generator's splits interleave) in LMDB state, and emits the running count for every click.

The checks recompute every user's count and last page independently from the generator and
compare them with the state the job left in LMDB, key by key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

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


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    expected = clickstream_oracle(
        source(
            params["events"], params["users"], params["seed"], params["splits"], params["zipf_s"]
        )
    )
    events = params["events"]
    yield Check(
        "every event read", result.records_in == events, f"{result.records_in:,} of {events:,}"
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
    yield Check(
        "per-user click counts equal the oracle",
        not wrong_counts and not extra,
        f"{len(expected):,} users compared; {len(wrong_counts)} differ"
        + (f" (first: user {wrong_counts[0]})" if wrong_counts else "")
        + (f"; {len(extra)} unexpected users in state" if extra else ""),
    )
    yield Check(
        "per-user last page equals the oracle",
        not wrong_pages,
        f"{len(wrong_pages)} differ" + (f" (first: user {wrong_pages[0]})" if wrong_pages else ""),
    )
    top = max(expected.values(), key=lambda v: v[0])[0] if expected else 0
    yield Check(
        "workload is zipf-skewed with >= 100k distinct users",
        len(expected) >= 100_000 or events < 1_000_000,
        f"{len(expected):,} distinct users; the busiest has {top:,} clicks",
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
