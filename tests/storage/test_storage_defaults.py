"""Each key starts from its own copy of a state's default (#10 item 3)."""

from __future__ import annotations

from _storage_helpers import Opener
from shoal.storage import AggregatingStateSpec, ValueStateSpec


def test_a_mutable_default_is_a_fresh_copy_for_every_key(open_store: Opener) -> None:
    specs = (ValueStateSpec("items", default=[]), ValueStateSpec("seen", default={"n": [0]}))
    store = open_store(specs=specs)
    for key, value in [("a", 1), ("b", 2), ("a", 3)]:
        store.key = key
        items = store.states.items.value()
        items.append(value)
        store.states.items.update(items)
        seen = store.states.seen.value()
        seen["n"][0] += 1
        store.states.seen.update(seen)
    assert dict(store.items("items")) == {"a": [1, 3], "b": [2]}
    assert dict(store.items("seen")) == {"a": {"n": [2]}, "b": {"n": [1]}}
    store.flush()
    store.close()
    store = open_store(specs=specs)  # what was committed (LMDB or the memory engine)
    assert dict(store.items("items")) == {"a": [1, 3], "b": [2]}
    assert dict(store.items("seen")) == {"a": {"n": [2]}, "b": {"n": [1]}}
    store.key = "c"
    assert store.states.items.value() == []
    assert specs[0].default == []  # the spec's own default is never handed out


def test_a_default_read_but_not_updated_is_not_stored(open_store: Opener) -> None:
    store = open_store(specs=(ValueStateSpec("items", default=[]),))
    store.key = "a"
    store.states.items.value().append(1)  # mutating without update() is not a write
    assert store.states.items.value() == []
    assert store.flush() == 0


def test_an_immutable_default_is_handed_out_as_is(open_store: Opener) -> None:
    default = ("x", 1)
    store = open_store(specs=(ValueStateSpec("pair", default=default),))
    store.key = "a"
    assert store.states.pair.value() is default


def test_an_aggregating_state_creates_an_accumulator_per_key(open_store: Opener) -> None:
    def add(acc: list[int], value: int) -> list[int]:
        acc.append(value)
        return acc

    spec = AggregatingStateSpec("acc", create=list, add=add)
    store = open_store(specs=(spec,))
    for key, value in [("a", 1), ("b", 2), ("a", 3)]:
        store.key = key
        store.states.acc.add(value)
    assert dict(store.items("acc")) == {"a": [1, 3], "b": [2]}
