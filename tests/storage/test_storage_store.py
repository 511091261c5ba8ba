"""KeyGroupStore: flush with meta, statistics, export/import, clear_all, errors, eviction."""

from __future__ import annotations

import re
from typing import Any

import pytest
from _storage_helpers import SPECS, Opener, reopen
from shoal.storage import (
    EncodeError,
    InvalidKeyError,
    KeyGroupStore,
    LmdbBackend,
    MapStateSpec,
    MemoryBackend,
    StateBackend,
    StateEncodeError,
    StoreBusyError,
    StoreClosedError,
    StoreDirtyError,
    UnknownStateError,
    ValueStateSpec,
    encode_key,
)


def test_flush_commits_state_and_meta_together(store: KeyGroupStore, open_store: Opener) -> None:
    store.key = "k"
    store.states.count.update(1)
    assert store.flush(meta={"epoch": 1}) == 2
    store.states.count.update(2)
    store = reopen(store, open_store)
    assert store.read_meta("epoch") == 1
    store.key = "k"
    assert store.states.count.value() == 1
    assert store.read_meta("missing", "default") == "default"


def test_flush_is_all_or_nothing_when_a_value_cannot_be_encoded(
    store: KeyGroupStore, open_store: Opener
) -> None:
    store.key = "good"
    store.states.count.update(1)
    store.key = "bad"
    store.states.seen.add([1, {"x": object()}])  # inside a list: found at flush
    with pytest.raises(
        StateEncodeError,
        match=r"^state 'seen' of operator 'op' \(key group 1\), key 'bad': cannot encode a list"
        r" holding an object as CBOR; ",
    ):
        store.flush(meta={"epoch": 5})
    assert store.statistics().dirty == 2  # still unflushed
    store = reopen(store, open_store)
    assert store.read_meta("epoch") is None
    assert store.statistics().entries == 0


def test_lmdb_flush_is_all_or_nothing_when_lmdb_refuses_mid_transaction(
    tmp_path: object,
) -> None:
    backend = LmdbBackend(str(tmp_path), map_size=1 << 20)
    with backend.open_store("op", 0, SPECS) as store:
        for key in ["a", "b", "x" * 600, "c"]:  # the long key fails inside the transaction
            store.key = key
            store.states.count.update(1)
        with pytest.raises(EncodeError, match=r"^state 'count': encoded key of 603 bytes exceeds"):
            store.flush(meta={"epoch": 1})
    with backend.open_store("op", 0, SPECS) as store:
        assert store.read_meta("epoch") is None
        assert store.statistics().entries == 0


def test_flush_without_changes_writes_nothing(store: KeyGroupStore) -> None:
    assert store.flush() == 0
    store.key = "k"
    store.states.count.value()  # a read is not a change
    assert store.flush() == 0


def test_meta_values_must_encode_and_names_must_be_strings(store: KeyGroupStore) -> None:
    with pytest.raises(EncodeError, match=r"^meta 'epoch': cannot encode object value"):
        store.flush(meta={"epoch": object()})
    with pytest.raises(ValueError, match=r"^meta name must be a non-empty str; got ''$"):
        store.flush(meta={"": 1})


def test_statistics_grow_after_flush(store: KeyGroupStore) -> None:
    before = store.statistics()
    assert before.entries == 0
    assert (before.operator, before.key_group) == ("op", 1)
    for i in range(200):
        store.key = i
        store.states.count.update(i)
        store.states.by_page.put("p", "x" * 50)
        store.states.by_page.put("q", "y")
    dirty = store.statistics()
    assert dirty.dirty == 600
    assert dirty.entries == 0
    store.flush()
    after = store.statistics()
    assert after.dirty == 0
    assert after.entries == 600
    assert after.entries_by_state == (
        ("count", 200),
        ("seen", 0),
        ("by_page", 400),
        ("total", 0),
        ("mean", 0),
    )
    assert after.bytes > before.bytes
    assert after.cached >= 600


def test_unknown_state_names_the_declared_ones(store: KeyGroupStore) -> None:
    message = (
        "^"
        + re.escape(
            "unknown state 'clicks'; this store declares: count, seen, by_page, total, mean"
        )
        + "$"
    )
    with pytest.raises(UnknownStateError, match=message):
        store.state("clicks")
    with pytest.raises(KeyError, match=message):
        store.get("clicks", "k")
    with pytest.raises(
        AttributeError,
        match=r"^unknown state 'clicks'; declared: by_page, count, mean, seen, total$",
    ):
        _ = store.states.clicks


def test_every_method_and_handle_raises_after_close(store: KeyGroupStore) -> None:
    count = store.states.count
    pages = store.states.by_page
    store.key = "k"
    count.update(1)
    store.close()
    store.close()  # idempotent
    assert store.closed
    message = r"^store op/kg-00001 is closed; open it again$"
    calls = [
        lambda: store.flush(),
        lambda: store.read_meta("epoch"),
        lambda: store.get("count", "k"),
        lambda: store.items("count"),
        lambda: store.export_entries(),
        lambda: store.import_entries([]),
        lambda: store.clear_all(),
        lambda: store.statistics(),
        lambda: store.state("count"),
    ]
    for call in calls:
        with pytest.raises(StoreClosedError, match=message):
            call()
    handle_message = r"^the store is closed; open it again to use its state$"
    for call in [
        count.value,
        lambda: count.update(2),
        count.clear,
        store.states.seen.get,
        lambda: store.states.total.add(1),
        lambda: pages.get(1),
        lambda: pages.put(1, 1),
    ]:
        with pytest.raises(StoreClosedError, match=handle_message):
            call()


def test_a_store_cannot_be_opened_twice(backend: StateBackend) -> None:
    busy = r"^store op/kg-00003 is already open"
    with backend.open_store("op", 3, SPECS), pytest.raises(StoreBusyError, match=busy):
        backend.open_store("op", 3, SPECS)
    backend.open_store("op", 3, SPECS).close()  # free again after close


def test_export_is_committed_only_and_deterministic(store: KeyGroupStore) -> None:
    store.key = "b"
    store.states.count.update(2)
    store.states.by_page.put(1, "x")
    store.key = "a"
    store.states.count.update(1)
    store.flush(meta={"epoch": 3})
    store.states.count.update(100)  # unflushed: not exported
    exported = list(store.export_entries())
    assert exported == [
        ("by_page", bytes.fromhex("6162") + bytes.fromhex("01"), bytes.fromhex("6178")),
        ("count", bytes.fromhex("6161"), bytes.fromhex("01")),
        ("count", bytes.fromhex("6162"), bytes.fromhex("02")),
    ]


def test_export_then_import_across_backends(tmp_path: object) -> None:
    source = MemoryBackend().open_store("op", 0, SPECS)
    for i in range(50):
        source.key = ("user", i)
        source.states.count.update(i)
        source.states.seen.add_all([i, i + 1])
        source.states.by_page.put_all({"a": i, "b": -i})
    source.flush()
    entries = list(source.export_entries())
    with LmdbBackend(str(tmp_path)).open_store("op", 0, SPECS) as target:
        target.key = ("user", 3)
        target.states.count.update(-1)
        with pytest.raises(
            StoreDirtyError, match=r"^import_entries needs a store without unflushed changes$"
        ):
            target.import_entries(entries)
        target.flush()
        assert target.import_entries(entries) == 200
        assert list(target.export_entries()) == entries
        assert target.states.count.value() == 3  # the cached -1 was replaced
        assert target.get("by_page", ("user", 7)) == {"a": 7, "b": -7}
    source.close()


def test_import_refuses_unknown_states_and_bad_bytes(store: KeyGroupStore) -> None:
    with pytest.raises(UnknownStateError):
        store.import_entries([("nope", b"\x01", b"\x01")])
    with pytest.raises(ValueError, match=r"^not a canonical key encoding"):
        store.import_entries([("count", b"\x18\x01", b"\x01")])
    with pytest.raises(ValueError, match=r"^state 'by_page': map entry key lacks a map key$"):
        store.import_entries([("by_page", b"\x01", b"\x01")])
    assert store.statistics().entries == 0


def test_clear_all_drops_committed_and_unflushed_state(
    store: KeyGroupStore, open_store: Opener
) -> None:
    store.key = "k"
    store.states.count.update(1)
    store.states.by_page.put(1, 1)
    store.flush(meta={"epoch": 1})
    store.states.total.add(5)
    store.clear_all()
    assert store.states.count.value() == 0
    assert store.states.by_page.is_empty()
    assert store.states.total.get() is None
    assert store.statistics().dirty == 0
    store = reopen(store, open_store)
    assert store.statistics().entries == 0
    assert store.read_meta("epoch") is None


def test_cache_is_evicted_after_flush_beyond_the_limit(tmp_path: object) -> None:
    for backend in (LmdbBackend(str(tmp_path), cache_limit=100), MemoryBackend(cache_limit=100)):
        with backend.open_store("op", 0, SPECS) as store:
            for i in range(300):
                store.key = i
                store.states.count.update(i)
            assert store.statistics().cached == 300
            store.flush()
            assert store.statistics().cached <= 50
            for i in range(300):  # evicted keys reload from the committed data
                store.key = i
                assert store.states.count.value() == i


def test_stores_of_different_key_groups_are_independent(open_store: Opener) -> None:
    one, two = open_store(1), open_store(2)
    one.key = two.key = "k"
    one.states.count.update(1)
    one.flush()
    assert two.states.count.value() == 0


def test_a_new_state_can_be_declared_on_reopen(open_store: Opener) -> None:
    store = open_store(5, (ValueStateSpec("a"),))
    store.key = "k"
    store.states.a.update(1)
    store.flush()
    store.close()
    store = open_store(5, (ValueStateSpec("a"), MapStateSpec("b")))
    store.key = "k"
    assert store.states.a.value() == 1
    assert store.states.b.is_empty()


# Flush encodes and writes whole batches of cached entries; these pin what it writes.


def test_flush_of_many_keys_writes_each_entry_and_deletes_cleared_ones(
    store: KeyGroupStore, open_store: Opener
) -> None:
    keys: list[object] = [*range(-50, 250), *(f"user-{i}" for i in range(300)), b"\x00", ("t", 1)]
    for key in keys:
        store.key = key
        store.states.count.update([key] if type(key) is tuple else key)
        store.states.seen.add(1)
    assert store.flush() == 2 * len(keys)
    for key in keys[::3]:
        store.key = key
        store.states.count.clear()
    for key in keys[1::3]:
        store.key = key
        store.states.count.update("new")
    # Not every cached key is dirty now (the path that looks dirty keys up in the cache).
    assert store.flush() == len(keys[::3]) + len(keys[1::3])
    store = reopen(store, open_store)
    exported = {(name, k) for name, k, _v in store.export_entries()}
    for index, key in enumerate(keys):
        expected = (
            None
            if index % 3 == 0
            else "new"
            if index % 3 == 1
            else [key]
            if type(key) is tuple
            else key
        )
        assert store.get("count", key) == expected
        assert (("count", encode_key(key)) in exported) == (expected is not None)
        assert store.get("seen", key) == [1]


def test_flush_names_the_key_of_a_bad_value_among_many(store: KeyGroupStore) -> None:
    for i in range(100):
        store.key = i
        store.states.count.update((i, object()) if i == 57 else i)
    with pytest.raises(StateEncodeError) as caught:
        store.flush()
    assert str(caught.value) == (
        "state 'count' of operator 'op' (key group 1), key 57: cannot encode a tuple holding an"
        " object as CBOR; state values must be None, bool, int, float, str, bytes, or lists,"
        " tuples and dicts of those: convert the object (to a dict, a str, ...) before storing it"
    )
    error = caught.value
    assert (error.operator, error.key_group, error.state, error.key, error.value_type) == (
        "op",
        1,
        "count",
        57,
        "object",
    )
    assert store.statistics().dirty == 100
    assert store.statistics().entries == 0


def test_flush_still_refuses_a_key_that_reached_the_cache_as_an_equal_bool(
    store: KeyGroupStore,
) -> None:
    store.key = 1
    store.states.seen.add("a")
    store.flush()
    store.key = True  # reaches 1's cached list without a check (see the handles' docstring)
    store.states.seen.add("b")
    with pytest.raises(InvalidKeyError, match=r"got bool$"):
        store.flush()


class _Thing:
    """Not a CBOR type."""


@pytest.mark.parametrize(
    ("state", "write", "where"),
    [
        ("count", lambda h: h.update(_Thing()), "key 'k'"),
        ("seen", lambda h: h.add(_Thing()), "key 'k'"),
        ("seen", lambda h: h.add_all([1, _Thing()]), "key 'k'"),
        ("seen", lambda h: h.update([_Thing()]), "key 'k'"),
        ("by_page", lambda h: h.put("p", _Thing()), "key 'k', map key 'p'"),
        ("by_page", lambda h: h.put_all({"q": _Thing()}), "key 'k', map key 'q'"),
        ("total", lambda h: h.add(_Thing()), "key 'k'"),
    ],
)
def test_a_value_of_a_type_cbor_cannot_encode_is_refused_when_written(
    store: KeyGroupStore, state: str, write: Any, where: str
) -> None:
    store.key = "k"
    handle = store.state(state)
    with pytest.raises(
        StateEncodeError,
        match=rf"^state '{state}' of operator 'op' \(key group 1\), {where}: cannot encode a"
        r" _Thing as CBOR; .* convert the _Thing \(to a dict, a str, \.\.\.\) before storing it$",
    ):
        write(handle)
    assert store.statistics().dirty == 0  # nothing was written
    assert store.flush() == 0


def test_values_cbor_can_encode_beyond_the_plain_types_are_accepted_when_written(
    store: KeyGroupStore,
) -> None:
    store.key = "k"
    store.states.count.update(frozenset({1, 2}))  # encoded once to check it, kept as is
    assert store.flush() == 1
