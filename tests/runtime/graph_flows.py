"""Flows that branch and merge (fan-out, side outputs, merges after keyed operators, window
joins) and their oracles; importable by worker processes (flow references)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from shoal import (
    BoundedOutOfOrderness,
    CollectingSink,
    Flow,
    IterableSource,
    OutputTag,
    TransactionalJsonlSink,
    Tumbling,
)

Event = tuple[str, int, int]  # (key, timestamp, value)

SINKS = ("counts", "milestones", "small", "big", "mixed")
BIG = OutputTag("big")


def events(count: int, *, seed: int, keys: int = 6, disorder: int = 0) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        ts = max(0, i * 2 - (rng.randrange(disorder + 1) if disorder else 0))
        out.append((f"k{rng.randrange(keys)}", ts, rng.randrange(1000)))
    return out


def norm(item: Any) -> Any:
    """Lists (what JSON and a trip between processes make of tuples) as tuples."""
    if isinstance(item, list | tuple):
        return tuple(norm(part) for part in item)
    return item


def _key(event: Any) -> str:
    return str(event[0])


def _first(pair: Any) -> Any:
    return pair[0]


def _milestone(pair: Any) -> bool:
    return int(pair[1]) % 5 == 0


def _split(key: Any, event: Any, ctx: Any) -> None:
    """Small values go on (main output), big ones to the side output ``big``."""
    if int(event[2]) < 500:
        ctx.emit(event)
    else:
        ctx.output(BIG, event)


def _mark_big(event: Any) -> list[Any]:
    return ["big", *event]


def _one(pair: Any) -> tuple[str, int]:
    return (pair[0], 1)


def _ten(event: Any) -> tuple[str, int]:
    return (event[0], 10)


def _add(a: Any, b: Any) -> tuple[str, int]:
    return (a[0], a[1] + b[1])


def _sinks(output: str | None) -> dict[str, Any]:
    if output is None:
        return {name: CollectingSink() for name in SINKS}
    return {name: TransactionalJsonlSink(str(Path(output) / name)) for name in SINKS}


def branched(count: int = 400, seed: int = 3, output: str | None = None) -> Flow:
    """One input read by three operators, a keyed operator read by a sink and another keyed
    operator, a process function with a side output, and a keyed operator's output merged with
    the input again (sinks named in :data:`SINKS`)."""
    flow = Flow("branched", num_key_groups=8)
    sinks = _sinks(output)
    source = flow.source(IterableSource(events(count, seed=seed), splits=3), name="events")
    keyed = source.key_by(_key)
    counts = keyed.count(name="counts")
    counts.sink(sinks["counts"])
    counts.filter(_milestone).key_by(_first).count(name="milestones").sink(sinks["milestones"])
    split = keyed.process(_split, name="split")
    split.sink(sinks["small"])
    split.side_output(BIG).map(_mark_big).sink(sinks["big"])
    (
        counts.map(_one)
        .union(source.map(_ten))
        .key_by(_first)
        .reduce(_add, name="mixed")
        .sink(sinks["mixed"])
    )
    return flow


def branched_oracle(count: int = 400, seed: int = 3) -> dict[str, Counter[Any]]:
    """What every sink of :func:`branched` holds, recomputed from the events (``mixed``: its
    last total per key and how many totals it emitted, as :func:`mixed_summary` reads it)."""
    evs = events(count, seed=seed)
    per_key = Counter(e[0] for e in evs)
    return {
        "counts": Counter((k, n) for k, total in per_key.items() for n in range(1, total + 1)),
        "milestones": Counter(
            (k, m) for k, total in per_key.items() for m in range(1, total // 5 + 1)
        ),
        "small": Counter(e for e in evs if e[2] < 500),
        "big": Counter(("big", *e) for e in evs if e[2] >= 500),
        "mixed": Counter({(k, 11 * n, 2 * n): 1 for k, n in per_key.items()}),
    }


def mixed_summary(items: list[Any]) -> Counter[Any]:
    """Per key of the ``mixed`` sink: ``(key, last total, totals emitted)``."""
    last: dict[str, int] = defaultdict(int)
    emitted: Counter[str] = Counter()
    for key, (_key, total) in items:  # a reduce emits (key, accumulator)
        last[key] = max(last[key], int(total))
        emitted[key] += 1
    return Counter({(k, last[k], emitted[k]): 1 for k in emitted})


def read(sinks: dict[str, list[Any]]) -> dict[str, Counter[Any]]:
    """The sinks' items as the oracle states them."""
    out = {name: Counter(norm(item) for item in items) for name, items in sinks.items()}
    out["mixed"] = mixed_summary(sinks["mixed"])
    return out


def collected(flow: Flow) -> dict[str, list[Any]]:
    return dict(zip(SINKS, (sink.items for sink in flow.sinks), strict=True))


def published(output: str) -> dict[str, list[Any]]:
    return {name: TransactionalJsonlSink(str(Path(output) / name)).read() for name in SINKS}


# -- window join --------------------------------------------------------------------------------


def _ts(event: Any) -> int:
    return int(event[1])


def _pair(x: Any, y: Any) -> list[Any]:
    return [list(x), list(y)]


def window_joined(
    count: int = 300, seed: int = 5, size: int = 10, disorder: int = 4, output: str | None = None
) -> Flow:
    """A tumbling window join of two inputs (3 and 2 splits) keyed by the event's key."""
    flow = Flow("window_joined", num_key_groups=8)
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
    sink = CollectingSink() if output is None else TransactionalJsonlSink(output)
    left.key_by(_key).window_join(right.key_by(_key), Tumbling(size), _pair, name="wj").sink(sink)
    return flow


def join_inputs(count: int, seed: int, disorder: int) -> tuple[list[Event], list[Event]]:
    return (
        events(count, seed=seed, disorder=disorder),
        events(count * 2 // 3, seed=seed + 50, disorder=disorder),
    )


def window_join_oracle(a: list[Any], b: list[Any], assign: Any) -> Counter[Any]:
    """Every pair with the same key in the same window, once per window (nested loop)."""
    out: Counter[Any] = Counter()
    for x in a:
        for y in b:
            if x[0] == y[0]:
                shared = set(assign(x[1])) & set(assign(y[1]))
                out[(tuple(x), tuple(y))] += len(shared)
    return +out


def pairs(items: list[Any]) -> Counter[Any]:
    return Counter((tuple(x), tuple(y)) for x, y in items)
