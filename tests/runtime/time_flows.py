"""Event-time flows and their oracles; importable by worker processes (flow references)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

from shoal import (
    BoundedOutOfOrderness,
    CollectingSink,
    Flow,
    IterableSource,
    Session,
    Sliding,
    TransactionalJsonlSink,
    Tumbling,
)

Event = tuple[str, int, int]  # (key, timestamp, value)


def events(count: int, *, seed: int, disorder: int, keys: int = 7) -> list[Event]:
    """``count`` events whose timestamps are at most ``disorder`` behind the newest so far."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        ts = i * 3 + rng.randrange(disorder + 1) - disorder if disorder else i * 3
        out.append((f"k{rng.randrange(keys)}", max(ts, 0), rng.randrange(100)))
    return out


def assigner(kind: str, size: int, slide: int) -> Tumbling | Sliding | Session:
    if kind == "tumbling":
        return Tumbling(size)
    if kind == "sliding":
        return Sliding(size, slide)
    return Session(slide)


def _ts(event: Event) -> int:
    return event[1]


def _key(event: Event) -> str:
    return event[0]


def windowed(
    kind: str = "tumbling",
    count: int = 400,
    seed: int = 1,
    disorder: int = 10,
    delay: int = 10,
    size: int = 20,
    slide: int = 7,
    lateness: int = 0,
    splits: int = 3,
    fold: str = "count",
    output: str | None = None,
) -> Flow:
    """Windows over :func:`events`: ``fold`` is count, reduce (sum of values) or aggregate
    (min and max of values); ``output``: a directory for a transactional sink (exactly-once
    output), else a collecting sink."""
    flow = Flow(f"windowed_{kind}", num_key_groups=8)
    data = events(count, seed=seed, disorder=disorder)
    keyed = (
        flow.source(
            IterableSource(data, splits=splits),
            timestamps=_ts,
            watermarks=BoundedOutOfOrderness(delay),
        )
        .key_by(_key)
        .window(assigner(kind, size, slide), allowed_lateness=lateness)
    )
    if fold == "count":
        stream = keyed.count(name="w")
    elif fold == "reduce":
        stream = keyed.reduce(_sum_events, name="w")
    elif fold == "process":
        stream = keyed.process(_sorted_values, name="w")
    elif fold == "aggregate_sum":
        stream = keyed.aggregate(_zero, _sum, merge=_plus, name="w")
    else:
        stream = keyed.aggregate(_none, _min_max, merge=_merge_min_max, name="w")
    stream.sink(TransactionalJsonlSink(output) if output else CollectingSink())
    return flow


def _sorted_values(key: str, window: tuple[int, int], records: list[Event]) -> list[int]:
    start, end = window
    assert all(record[0] == key and start <= record[1] < end for record in records)
    return sorted(record[2] for record in records)


def _sum_events(a: Event, b: Event) -> Event:
    return (a[0], max(a[1], b[1]), a[2] + b[2])


def _zero() -> int:
    return 0


def _sum(acc: int, event: Event) -> int:
    return acc + event[2]


def _plus(a: int, b: int) -> int:
    return a + b


def _none() -> Any:
    return None


def _min_max(acc: Any, event: Event) -> list[int]:
    value = event[2]
    return [value, value] if acc is None else [min(acc[0], value), max(acc[1], value)]


def _merge_min_max(a: list[int], b: list[int]) -> list[int]:
    return [min(a[0], b[0]), max(a[1], b[1])]


def oracle(
    data: list[Event], kind: str, size: int, slide: int, fold: str = "count"
) -> Counter[tuple[Any, ...]]:
    """Every window's result, recomputed from the events in plain Python."""
    members: dict[tuple[str, int, int], list[int]] = defaultdict(list)
    if kind == "session":
        by_key: dict[str, list[Event]] = defaultdict(list)
        for event in data:
            by_key[event[0]].append(event)
        for key, evs in by_key.items():
            evs.sort(key=_ts)
            group = [evs[0]]
            for event in evs[1:]:
                if event[1] - group[-1][1] <= slide:
                    group.append(event)
                else:
                    members[(key, group[0][1], group[-1][1] + slide)] = [e[2] for e in group]
                    group = [event]
            members[(key, group[0][1], group[-1][1] + slide)] = [e[2] for e in group]
    else:
        step = size if kind == "tumbling" else slide
        for key, ts, value in data:
            start = (ts // step) * step
            while start > ts - size:
                members[(key, start, start + size)].append(value)
                start -= step
    out: Counter[tuple[Any, ...]] = Counter()
    for (key, start, end), values in members.items():
        if fold == "count":
            result: Any = len(values)
        elif fold == "process":
            result = sorted(values)
        elif fold in ("reduce", "aggregate_sum"):
            result = sum(values)
        else:
            result = [min(values), max(values)]
        out[(key, start, end, repr(result))] += 1
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):  # a reduce's accumulator: an event; its value is the sum
        return value[2]
    return list(value) if isinstance(value, list) else value


def results(items: list[Any]) -> Counter[tuple[Any, ...]]:
    """Fired windows as the oracle counts them (key, start, end, repr(value))."""
    return Counter((key, start, end, repr(_plain(value))) for key, start, end, value in items)
