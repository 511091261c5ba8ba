"""Flows whose records and state hold tuples and lists nested in each other (#10 item 7).

Importable by worker processes, which rebuild the flow from this file.
"""

from __future__ import annotations

from typing import Any

from shoal import CollectingSink, Flow, IterableSource, ProcessContext


def records(n: int = 400) -> list[Any]:
    """Records mixing tuples and lists at several depths, with int, float and str fields."""
    out: list[Any] = []
    for i in range(n):
        key = ("k", i % 7) if i % 2 else f"k{i % 5}"
        if i % 3 == 0:
            out.append((key, (i, [i, (i % 4, "x")]), i / 4))
        elif i % 3 == 1:
            out.append((key, [i, (i,)], -i / 8))
        else:
            out.append((key, (), float(i)))
    return out


def _add(acc: tuple[int, tuple[Any, ...]], record: Any) -> tuple[int, tuple[Any, ...]]:
    n, _last = acc
    return (n + 1, (record[1], [record[2]]))


def _result(acc: tuple[int, tuple[Any, ...]]) -> Any:
    return (acc[0], acc[1], [acc[0], (acc[0],)])


def _second_key(item: Any) -> Any:
    return item[1][0] % 3


def _tag(key: int, item: Any, ctx: ProcessContext) -> None:
    ctx.emit((key, item, [(key,)]))


def nested_types(n: int = 400) -> Flow:
    """aggregate with a tuple accumulator, then a second keyed stage over the outputs.

    One split, so each key's records reach ``agg`` in the same order in every mode; the second
    stage emits one item per input (its output, as a multiset, does not depend on the order in
    which the first stage's key groups interleave).
    """
    flow = Flow("nested_types", num_key_groups=8)
    (
        flow.source(IterableSource(records(n)))
        .key_by(lambda record: record[0])
        .aggregate(lambda: (0, ()), _add, _result, name="agg")
        .map(lambda item: (item[0], item[1], {"k": [item[1][0], (item[1][0],)]}))
        .key_by(_second_key)
        .process(_tag, name="tag")
        .sink(CollectingSink())
    )
    return flow
