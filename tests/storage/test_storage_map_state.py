"""MapState ordering, ranges, and the merge of unflushed changes with committed entries."""

from __future__ import annotations

from shoal.storage import KeyGroupStore


def test_items_are_in_encoded_map_key_order(store: KeyGroupStore) -> None:
    pages = store.states.by_page
    store.key = "k"
    for user_key in [300, 2, 24, 0, 1000, 23, 255, 256]:
        pages.put(user_key, user_key)
    expected = [0, 2, 23, 24, 255, 256, 300, 1000]  # numeric for non-negative ints
    assert pages.keys() == expected
    store.flush()
    assert pages.keys() == expected
    store.key = "s"
    pages.put_all({"bb": 1, "a": 2, "c": 3, "": 4})
    assert pages.keys() == ["", "a", "c", "bb"]  # str: shorter first, then bytewise


def test_range_is_half_open(store: KeyGroupStore) -> None:
    pages = store.states.by_page
    store.key = "k"
    pages.put_all({i: str(i) for i in range(0, 100, 10)})
    store.flush()
    assert pages.items(20, 50) == [(20, "20"), (30, "30"), (40, "40")]
    assert pages.items(start=85) == [(90, "90")]
    assert pages.items(stop=10) == [(0, "0")]
    assert pages.items(21, 29) == []
    pages.put(25, "25")  # unflushed, inside the range
    pages.put(55, "55")  # unflushed, outside it
    assert pages.items(20, 50) == [(20, "20"), (25, "25"), (30, "30"), (40, "40")]


def test_unflushed_entries_merge_with_committed(store: KeyGroupStore, open_store: object) -> None:
    pages = store.states.by_page
    store.key = "k"
    pages.put_all({1: "a", 3: "c", 5: "e"})
    store.flush()
    # Fresh cache: drop and reopen so nothing about the map is known in memory.
    store.close()
    store = open_store()  # type: ignore[operator]
    pages = store.states.by_page
    store.key = "k"
    pages.put(2, "b")
    pages.put(3, "C")
    pages.remove(5)
    pages.put(6, "f")
    assert pages.items(0, 6) == [(1, "a"), (2, "b"), (3, "C")]
    assert pages.get(5) is None
    assert pages.items() == [(1, "a"), (2, "b"), (3, "C"), (6, "f")]
    assert store.get("by_page", "k") == {1: "a", 2: "b", 3: "C", 6: "f"}
    store.flush()
    store.close()
    store = open_store()  # type: ignore[operator]
    store.key = "k"
    assert store.states.by_page.items() == [(1, "a"), (2, "b"), (3, "C"), (6, "f")]


def test_removes_shadow_committed_entries_until_flushed(
    store: KeyGroupStore, open_store: object
) -> None:
    pages = store.states.by_page
    store.key = "k"
    pages.put_all({1: "a", 2: "b"})
    store.flush()
    store.close()
    store = open_store()  # type: ignore[operator]
    pages = store.states.by_page
    store.key = "k"
    pages.remove(1)
    pages.remove(2)
    assert pages.is_empty()
    assert pages.items() == []
    assert not pages.contains(1)
    pages.put(2, "again")
    assert not pages.is_empty()
    assert store.flush() == 2
    assert store.statistics().entries_by_state[2] == ("by_page", 1)


def test_clear_then_put_replaces_the_whole_map(store: KeyGroupStore, open_store: object) -> None:
    pages = store.states.by_page
    store.key = "k"
    pages.put_all({1: "a", 2: "b"})
    store.key = "other"
    pages.put(1, "keep")
    store.flush()
    store.key = "k"
    pages.clear()
    pages.put(3, "c")
    assert pages.items() == [(3, "c")]
    assert store.flush() == 3  # two deleted, one written
    store.close()
    store = open_store()  # type: ignore[operator]
    store.key = "k"
    assert store.states.by_page.items() == [(3, "c")]
    store.key = "other"
    assert store.states.by_page.items() == [(1, "keep")]


def test_map_keys_of_one_key_never_leak_into_another(store: KeyGroupStore) -> None:
    # ("a",) and "a" encode differently and neither encoding prefixes the other.
    pages = store.states.by_page
    for key in ["a", ("a",), "ab", ("a", 1)]:
        store.key = key
        pages.put("x", key)
    store.flush()
    for key in ["a", ("a",), "ab", ("a", 1)]:
        assert store.get("by_page", key) == {"x": key}


def test_map_can_be_changed_while_looping_over_a_snapshot(store: KeyGroupStore) -> None:
    pages = store.states.by_page
    store.key = "k"
    pages.put_all({i: i for i in range(5)})
    snapshot = pages.keys()
    for user_key in snapshot:
        pages.remove(user_key)
    assert pages.is_empty()
