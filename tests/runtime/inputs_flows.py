"""Flows with several inputs and their oracles; importable by worker processes (flow references)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from shoal import (
    BoundedOutOfOrderness,
    CollectingSink,
    Flow,
    IterableSource,
    MapStateSpec,
    TransactionalJsonlSink,
)

Event = tuple[str, int, int]  # (key, timestamp, value)


def events(count: int, *, seed: int, disorder: int, keys: int = 5, step: int = 3) -> list[Event]:
    """``count`` events whose timestamps are at most ``disorder`` behind the newest so far."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        ts = i * step + rng.randrange(disorder + 1) - disorder if disorder else i * step
        out.append((f"k{rng.randrange(keys)}", max(ts, 0), rng.randrange(1000)))
    return out


def _ts(event: Any) -> int:
    return int(event[1])


def _key(event: Any) -> str:
    return str(event[0])


def _pair(x: Any, y: Any) -> list[Any]:
    return [list(x), list(y)]


def _sink(output: str | None) -> Any:
    return CollectingSink() if output is None else TransactionalJsonlSink(output)


def joined(
    count: int = 300,
    seed: int = 1,
    disorder: int = 6,
    lower: int = -5,
    upper: int = 7,
    output: str | None = None,
) -> Flow:
    """An interval join of two inputs (3 and 2 splits) keyed by the event's key."""
    flow = Flow("joined", num_key_groups=8)
    a, b = join_inputs(count, seed, disorder)
    left = flow.source(
        IterableSource(a, splits=3),
        timestamps=_ts,
        watermarks=BoundedOutOfOrderness(disorder),
        name="a",
    )
    right = flow.source(
        IterableSource(b, splits=2),
        timestamps=_ts,
        watermarks=BoundedOutOfOrderness(disorder),
        name="b",
    )
    left.key_by(_key).interval_join(right.key_by(_key), lower, upper, _pair, name="j").sink(
        _sink(output)
    )
    return flow


def join_inputs(count: int, seed: int, disorder: int) -> tuple[list[Event], list[Event]]:
    return (
        events(count, seed=seed, disorder=disorder),
        events(count * 2 // 3, seed=seed + 100, disorder=disorder, step=4),
    )


def join_oracle(a: list[Any], b: list[Any], lower: int, upper: int) -> Counter[Any]:
    """Every pair with the same key and ``x.ts + lower <= y.ts <= x.ts + upper`` (nested loop)."""
    return Counter(
        (tuple(x), tuple(y))
        for x in a
        for y in b
        if x[0] == y[0] and x[1] + lower <= y[1] <= x[1] + upper
    )


def pairs(items: list[Any]) -> Counter[Any]:
    return Counter((tuple(x), tuple(y)) for x, y in items)


# -- an enrichment join: each order with its customer's profile as of the order's time ---------


def _order(key: Any, order: Any, ctx: Any) -> None:
    """Keep the order until the watermark is past its time, then emit it (``_fire``)."""
    ts = int(order[1])
    pending = ctx.state.orders.get(ts) or []
    ctx.state.orders.put(ts, [*pending, list(order)])
    ctx.timers.register_event_time(ts + 1)


def _profile(key: Any, profile: Any, ctx: Any) -> None:
    ts = int(profile[1])
    ctx.state.profiles.put(ts, max(ctx.state.profiles.get(ts, -1), int(profile[2])))


def _fire(key: Any, ts: float, ctx: Any) -> None:
    """Every profile at or before the order's time has arrived: emit each order with the
    newest one (ties: the largest value), or None."""
    at = int(ts) - 1
    orders = ctx.state.orders.get(at) or []
    ctx.state.orders.remove(at)
    known = [(t, v) for t, v in ctx.state.profiles.items() if t <= at]
    profile = max(known)[1] if known else None
    for order in orders:
        ctx.emit([list(order), profile])


def enriched(count: int = 300, seed: int = 2, disorder: int = 6, output: str | None = None) -> Flow:
    """Orders (3 splits) enriched with the profile in force at their time (2 splits), by a
    co-process function sharing the key's state and timers between the two inputs."""
    flow = Flow("enriched", num_key_groups=8)
    orders, profiles = enrich_inputs(count, seed, disorder)
    a = flow.source(
        IterableSource(orders, splits=3),
        timestamps=_ts,
        watermarks=BoundedOutOfOrderness(disorder),
        name="orders",
    )
    b = flow.source(
        IterableSource(profiles, splits=2),
        timestamps=_ts,
        watermarks=BoundedOutOfOrderness(disorder),
        name="profiles",
    ).filter(_has_key)
    (
        a.connect(b)
        .key_by(_key, _key)
        .process(
            _order,
            _profile,
            states=(MapStateSpec("orders"), MapStateSpec("profiles")),
            on_timer=_fire,
            name="enrich",
        )
        .sink(_sink(output))
    )
    return flow


def _has_key(event: Any) -> bool:
    return bool(event[0])


def enrich_inputs(count: int, seed: int, disorder: int) -> tuple[list[Event], list[Event]]:
    return (
        events(count, seed=seed, disorder=disorder),
        events(count // 3, seed=seed + 7, disorder=disorder, step=9),
    )


def enrich_oracle(orders: list[Any], profiles: list[Any]) -> Counter[Any]:
    out: Counter[Any] = Counter()
    for order in orders:
        known = [(p[1], p[2]) for p in profiles if p[0] == order[0] and p[1] <= order[1]]
        out[(tuple(order), max(known)[1] if known else None)] += 1
    return out


def enrichments(items: list[Any]) -> Counter[Any]:
    return Counter((tuple(order), profile) for order, profile in items)
