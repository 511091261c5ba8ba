"""Stateless chains: fast paths, and bad records go to dead letters with their positions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shoal.runtime._dataflow import FilterOp, FlatMapOp, MapOp
from shoal.runtime._keys import KeyGroupRouter
from shoal.runtime._operators import DeadLetters, apply_chain, key_and_route

from shoal import CollectingSink, Flow, IterableSource, ProcessContext, ValueStateSpec, run


def test_chain_applies_in_order_and_keeps_positions() -> None:
    dead = DeadLetters(worker=0)
    chain = [MapOp(lambda x: x * 10), FilterOp(lambda x: x != 20), FlatMapOp(lambda x: [x, x + 1])]
    values, offsets = apply_chain(chain, [1, 2, 3], [100, 101, 102], "s", dead)
    assert values == [10, 11, 30, 31]
    assert offsets == [100, 100, 102, 102]
    assert dead.count == 0


def test_a_failing_record_becomes_a_dead_letter_and_the_rest_goes_on() -> None:
    dead = DeadLetters(worker=3)
    values, offsets = apply_chain(
        [MapOp(lambda x: 10 // x, name="invert")], [5, 0, 2], [7, 8, 9], "split-a", dead
    )
    assert values == [2, 5]
    assert offsets == [7, 9]
    (letter,) = dead.take()
    assert (
        letter.operator,
        letter.error_type,
        letter.split,
        letter.offset,
        letter.record,
        letter.worker,
    ) == (
        "invert",
        "ZeroDivisionError",
        "split-a",
        8,
        0,
        3,
    )


def test_failing_filter_and_flat_map_records_are_dead_lettered() -> None:
    dead = DeadLetters(worker=0)
    chain = [FilterOp(lambda x: 1 / x > 0), FlatMapOp(lambda x: range(x) if x < 3 else None)]
    values, offsets = apply_chain(chain, [1, 0, 2, 3], [0, 1, 2, 3], "s", dead)
    assert values == [0, 0, 1]
    assert offsets == [0, 2, 2]
    assert [letter.offset for letter in dead.take()] == [1, 3]


def test_bad_keys_are_dead_lettered_not_fatal() -> None:
    dead = DeadLetters(worker=0)
    router = KeyGroupRouter(4)
    records = [{"u": "a"}, {"u": ["list"]}, {"v": 1}, {"u": "b"}]
    routed = key_and_route("count", lambda r: r["u"], router, records, [0, 1, 2, 3], "s", dead)
    kept = sorted(o for _keys, _values, offsets in routed.values() for o in offsets)
    assert kept == [0, 3]
    letters = dead.take()
    assert [(letter.operator, letter.offset, letter.error_type) for letter in letters] == [
        ("count.key_by", 1, "InvalidKeyError"),  # a TypeError subclass
        ("count.key_by", 2, "KeyError"),
    ]


class _Counting:
    """A user function that counts its calls per record and fails on one record."""

    def __init__(self, fn: Callable[[Any], Any], bad: Any) -> None:
        self.fn = fn
        self.bad = bad
        self.calls: Counter[Any] = Counter()

    def __call__(self, value: Any) -> Any:
        self.calls[value] += 1
        if value == self.bad:
            raise ValueError(f"bad record {value!r}")
        return self.fn(value)


def test_a_key_function_runs_once_per_record_when_one_record_fails() -> None:
    dead = DeadLetters(worker=0)
    key_fn = _Counting(lambda v: f"k{v}", bad=50)
    values = list(range(100))
    routed = key_and_route("count", key_fn, KeyGroupRouter(8), values, values, "s", dead)
    assert key_fn.calls == Counter(values)
    kept = sorted(o for _keys, _values, offsets in routed.values() for o in offsets)
    assert kept == [v for v in values if v != 50]
    assert [(letter.operator, letter.offset) for letter in dead.take()] == [("count.key_by", 50)]


def test_a_key_function_runs_once_per_record_when_a_key_is_invalid() -> None:
    dead = DeadLetters(worker=0)
    key_fn = _Counting(lambda v: [v] if v in (3, 7) else v, bad=None)
    values = list(range(10))
    routed = key_and_route("count", key_fn, KeyGroupRouter(8), values, values, "s", dead)
    assert key_fn.calls == Counter(values)
    kept = sorted(o for _keys, _values, offsets in routed.values() for o in offsets)
    assert kept == [0, 1, 2, 4, 5, 6, 8, 9]
    assert [letter.offset for letter in dead.take()] == [3, 7]


def test_map_and_filter_run_once_per_record_when_records_fail() -> None:
    dead = DeadLetters(worker=0)
    mapper = _Counting(lambda v: v * 10, bad=3)
    keeper = _Counting(lambda v: v != 50, bad=60)
    values = list(range(10))
    out, offsets = apply_chain(
        [MapOp(mapper, name="m"), FilterOp(keeper, name="f")], values, values, "s", dead
    )
    assert mapper.calls == Counter(values)
    assert keeper.calls == Counter(v * 10 for v in values if v != 3)
    assert out == [0, 10, 20, 40, 70, 80, 90]
    assert offsets == [0, 1, 2, 4, 7, 8, 9]
    assert [(letter.operator, letter.offset) for letter in dead.take()] == [("m", 3), ("f", 6)]


def test_several_failures_in_one_batch_keep_positions() -> None:
    dead = DeadLetters(worker=0)
    values = [1, 0, 2, 0, 0, 4]
    out, offsets = apply_chain(
        [MapOp(lambda x: 8 // x, name="inv")], values, [10, 11, 12, 13, 14, 15], "s", dead
    )
    assert out == [8, 4, 2]
    assert offsets == [10, 12, 15]
    assert [letter.offset for letter in dead.take()] == [11, 13, 14]


def _append_item(key: str, value: int, ctx: ProcessContext) -> None:
    items = ctx.state.items.value()
    items.append(value)
    ctx.state.items.update(items)


@pytest.mark.parametrize("backend", ["lmdb", "memory"])
def test_every_key_starts_from_its_own_copy_of_a_mutable_default(
    backend: str, tmp_path: Path
) -> None:
    flow = Flow("defaults", num_key_groups=4)
    (
        flow.source(IterableSource([("a", 1), ("b", 2), ("a", 3)]))
        .key_by(lambda record: record[0])
        .process(
            lambda key, record, ctx: _append_item(key, record[1], ctx),
            states=[ValueStateSpec("items", default=[])],
            name="collect",
        )
        .sink(CollectingSink())
    )
    result = run(flow, state_dir=tmp_path, backend=backend)
    assert result.read_state("collect", "items") == {"a": [1, 3], "b": [2]}
