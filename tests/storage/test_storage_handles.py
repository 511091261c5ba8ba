"""Every handle type on both backends: semantics, flush and reopen, clear, defaults."""

from __future__ import annotations

import pytest
from _storage_helpers import Opener, reopen
from shoal.storage import (
    AggregatingState,
    KeyGroupStore,
    ListState,
    MapState,
    ReducingState,
    ValueState,
)


def test_handles_have_the_declared_types(store: KeyGroupStore) -> None:
    assert isinstance(store.states.count, ValueState)
    assert isinstance(store.states.seen, ListState)
    assert isinstance(store.states.by_page, MapState)
    assert isinstance(store.states.total, ReducingState)
    assert isinstance(store.states.mean, AggregatingState)
    assert store.state("count") is store.states.count


def test_value_state(store: KeyGroupStore, open_store: Opener) -> None:
    count = store.states.count
    store.key = "alice"
    assert count.value() == 0  # the spec default
    count.update(5)
    store.key = "bob"
    assert count.value() == 0
    count.update(7)
    store.key = "alice"
    assert count.value() == 5
    store.flush()
    store.key = "bob"
    count.clear()
    assert count.value() == 0
    store.key = ("carol", 1)
    count.update(1)  # never flushed: lost on reopen

    store = reopen(store, open_store)
    count = store.states.count
    store.key = "alice"
    assert count.value() == 5
    store.key = "bob"
    assert count.value() == 7  # the clear was not flushed
    store.key = ("carol", 1)
    assert count.value() == 0


def test_value_state_clear_is_persisted(store: KeyGroupStore, open_store: Opener) -> None:
    store.key = 1
    store.states.count.update(3)
    store.flush()
    store.states.count.clear()
    assert store.flush() == 1
    store = reopen(store, open_store)
    store.key = 1
    assert store.states.count.value() == 0
    assert store.get("count", 1, default="none") == "none"


def test_list_state(store: KeyGroupStore, open_store: Opener) -> None:
    seen = store.states.seen
    store.key = "k"
    assert seen.get() == []
    seen.add("a")
    seen.add_all(["b", "c"])
    seen.add_all([])
    got = seen.get()
    got.append("not stored")  # get() returns a copy
    assert seen.get() == ["a", "b", "c"]
    store.flush()
    seen.add("d")  # not flushed

    store = reopen(store, open_store)
    seen = store.states.seen
    store.key = "k"
    assert seen.get() == ["a", "b", "c"]
    seen.add("d")
    assert seen.get() == ["a", "b", "c", "d"]
    values = ["x"]
    seen.update(values)
    values.append("y")  # update() copies
    assert seen.get() == ["x"]
    seen.update([])
    assert seen.get() == []
    seen.add(1)
    seen.clear()
    assert seen.get() == []
    store.flush()
    assert store.statistics().entries_by_state[1] == ("seen", 0)


def test_reducing_state(store: KeyGroupStore, open_store: Opener) -> None:
    total = store.states.total
    store.key = b"k"
    assert total.get() is None
    total.add(2)
    total.add(3)
    assert total.get() == 5
    store.flush()
    store = reopen(store, open_store)
    total = store.states.total
    store.key = b"k"
    total.add(10)
    assert total.get() == 15
    total.clear()
    assert total.get() is None


def test_aggregating_state(store: KeyGroupStore, open_store: Opener) -> None:
    mean = store.states.mean
    store.key = 7
    assert mean.get() is None
    mean.add(2)
    mean.add(4)
    assert mean.get() == 3.0
    store.flush()
    assert store.get("mean", 7) == 3.0
    store = reopen(store, open_store)
    mean = store.states.mean
    store.key = 7
    mean.add(9)
    assert mean.get() == 5.0
    mean.clear()
    assert mean.get() is None
    mean.add(1)
    assert mean.get() == 1.0


def test_map_state_basics(store: KeyGroupStore, open_store: Opener) -> None:
    pages = store.states.by_page
    store.key = "u"
    assert pages.is_empty()
    assert pages.get("/") is None
    assert pages.get("/", 0) == 0
    assert not pages.contains("/")
    pages.put("/", 1)
    pages.put_all({"/a": 2, "/b": 3})
    assert pages.contains("/a")
    assert not pages.is_empty()
    pages.remove("/b")
    pages.remove("/never")
    assert pages.keys() == ["/", "/a"]
    assert pages.values() == [1, 2]
    store.flush()
    pages.put("/c", 4)  # not flushed

    store = reopen(store, open_store)
    pages = store.states.by_page
    store.key = "u"
    assert pages.items() == [("/", 1), ("/a", 2)]
    assert pages.get("/a") == 2
    assert not pages.contains("/c")
    store.key = "other"
    assert pages.is_empty()
    assert pages.items() == []
    store.key = "u"
    pages.clear()
    assert pages.is_empty()
    assert pages.get("/a") is None
    store.flush()
    store = reopen(store, open_store)
    store.key = "u"
    assert store.states.by_page.is_empty()
    assert store.statistics().entries == 0


def test_keys_are_independent_per_state_and_per_key(store: KeyGroupStore) -> None:
    store.key = 1
    store.states.count.update(1)
    store.states.total.add(1)
    store.key = (1,)
    assert store.states.count.value() == 0
    assert store.states.total.get() is None
    store.key = "1"
    assert store.states.count.value() == 0


def test_store_get_reads_without_moving_the_current_key(store: KeyGroupStore) -> None:
    store.key = "a"
    store.states.count.update(3)
    store.states.seen.add(1)
    store.states.by_page.put(2, "two")
    store.states.total.add(4)
    store.key = "b"
    assert store.get("count", "a") == 3
    assert store.get("seen", "a") == [1]
    assert store.get("by_page", "a") == {2: "two"}
    assert store.get("total", "a") == 4
    assert store.get("count", "zzz") is None
    assert store.get("by_page", "zzz", {}) == {}
    assert store.key == "b"
    store.flush()
    assert store.get("seen", "a") == [1]
    assert store.get("by_page", "a") == {2: "two"}


def test_items_merge_committed_and_unflushed(store: KeyGroupStore) -> None:
    count = store.states.count
    for key in [3, 1, 2]:
        store.key = key
        count.update(key * 10)
    store.flush()
    store.key = 2
    count.clear()
    store.key = 0
    count.update(0)
    store.key = 3
    count.update(33)
    assert list(store.items("count")) == [(0, 0), (1, 10), (3, 33)]
    pages = store.states.by_page
    store.key = "x"
    pages.put(1, "a")
    store.flush()
    store.key = "w"
    pages.put(2, "b")
    assert list(store.items("by_page")) == [("w", {2: "b"}), ("x", {1: "a"})]
    store.key = "x"
    pages.remove(1)
    assert list(store.items("by_page")) == [("w", {2: "b"})]


def test_values_are_kept_by_reference_until_reloaded(
    store: KeyGroupStore, open_store: Opener
) -> None:
    store.key = "k"
    value = {"n": (1, 2)}
    store.states.count.update(value)
    assert store.states.count.value() is value
    store.flush()
    store = reopen(store, open_store)
    store.key = "k"
    assert store.states.count.value() == {"n": [1, 2]}  # CBOR has no tuples


@pytest.mark.parametrize("key", [[1], 1.5, None, ("a", [1])])
def test_handles_refuse_bad_keys(store: KeyGroupStore, key: object) -> None:
    store.key = key
    with pytest.raises(TypeError, match=r"^key must be str, bytes, int or a tuple of those; got "):
        store.states.count.value()
    with pytest.raises(TypeError, match=r"^key must be str, bytes, int or a tuple of those; got "):
        store.states.count.update(1)
    with pytest.raises(TypeError, match=r"^key must be str, bytes, int or a tuple of those; got "):
        store.states.seen.add(1)
    with pytest.raises(TypeError, match=r"^key must be str, bytes, int or a tuple of those; got "):
        store.states.by_page.put(1, 1)
    assert store.statistics().dirty == 0


def test_map_state_refuses_bad_map_keys(store: KeyGroupStore) -> None:
    store.key = "k"
    with pytest.raises(
        TypeError,
        match=(
            r"^map key must be str, bytes, int or a tuple of those; "
            r"got list — did you mean a tuple\?$"
        ),
    ):
        store.states.by_page.put([1], 1)
    with pytest.raises(TypeError, match=r"^map key must be .*; got float$"):
        store.states.by_page.get(1.5)
    with pytest.raises(TypeError, match=r"^map key must be .*; got bool$"):
        store.states.by_page.items(start=True)
