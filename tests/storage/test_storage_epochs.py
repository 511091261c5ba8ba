"""Epoch commits for checkpoints: deltas, the undo log, rollback, snapshots, atomic restore."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
from _storage_helpers import SPECS, Opener, reopen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.storage import (
    DecodeError,
    KeyGroupStore,
    LmdbBackend,
    MemoryBackend,
    RollbackError,
    StorageError,
    encode_key,
    encode_value,
)

Entries = dict[tuple[str, bytes], bytes]


def committed(store: KeyGroupStore) -> Entries:
    return {(state, key): value for state, key, value in store.export_entries()}


def apply_delta(entries: Entries, delta: Any) -> Entries:
    result = dict(entries)
    for state, key, value in delta.entries():
        if value is None:
            result.pop((state, key), None)
        else:
            result[(state, key)] = value
    return result


def test_flush_epoch_returns_the_changes_of_the_write(store: KeyGroupStore) -> None:
    store.key = "a"
    store.states.count.update(1)
    store.states.by_page.put("home", 2)
    store.key = "b"
    store.states.count.update(5)
    first = store.flush_epoch(1)
    assert (first.epoch, first.since, first.operator, first.key_group) == (1, 0, "op", 1)
    assert sorted(first.entries()) == sorted(
        [
            ("count", encode_key("a"), encode_value(1)),
            ("count", encode_key("b"), encode_value(5)),
            ("by_page", encode_key("a") + encode_key("home"), encode_value(2)),
        ]
    )
    store.key = "a"
    store.states.count.clear()
    store.states.by_page.clear()
    store.key = "b"
    store.states.count.update(6)
    second = store.flush_epoch(2)
    assert (second.epoch, second.since) == (2, 1)
    assert sorted(second.entries()) == sorted(
        [
            ("count", encode_key("a"), None),
            ("count", encode_key("b"), encode_value(6)),
            ("by_page", encode_key("a") + encode_key("home"), None),
        ]
    )
    assert store.read_meta("epoch") == 2
    assert store.epoch == 2


def test_flush_epoch_with_nothing_changed_gives_an_empty_delta(store: KeyGroupStore) -> None:
    delta = store.flush_epoch(1, meta={"positions": [1, 2]})
    assert delta.empty
    assert len(delta) == 0
    assert store.read_meta("positions") == [1, 2]


def test_flush_epoch_refuses_an_epoch_not_above_the_committed_one(store: KeyGroupStore) -> None:
    store.flush_epoch(3)
    with pytest.raises(
        ValueError, match=r"^epoch must be an int greater than the committed epoch 3; got 3$"
    ):
        store.flush_epoch(3)


def test_rollback_to_brings_back_the_previous_epoch_after_reopen(open_store: Opener) -> None:
    store = open_store()
    store.key = "a"
    store.states.count.update(1)
    store.states.seen.add("x")
    store.flush_epoch(1)
    at_one = committed(store)
    store.states.count.update(2)
    store.states.seen.add("y")
    store.states.by_page.put("p", 1)
    store.key = "new"
    store.states.total.add(3)
    store.flush_epoch(2)
    store = reopen(store, open_store)  # as after a kill -9: the commit of epoch 2 is there
    assert store.epoch == 2
    assert store.rollback_to(1) == 1
    assert committed(store) == at_one
    assert store.read_meta("epoch") == 1
    store = reopen(store, open_store)
    assert store.epoch == 1
    assert committed(store) == at_one
    store.key = "a"
    assert store.states.count.value() == 1


def test_rollback_to_drops_unflushed_changes(store: KeyGroupStore) -> None:
    store.key = "a"
    store.states.count.update(1)
    store.flush_epoch(1)
    store.states.count.update(99)
    assert store.rollback_to(1) == 0
    assert store.states.count.value() == 1


def test_rollback_below_the_floor_names_the_fix(store: KeyGroupStore) -> None:
    store.key = "a"
    for epoch in (1, 2, 3):
        store.states.count.update(epoch)
        store.flush_epoch(epoch)
    assert store.prune_undo(2) == 2
    assert store.undo_floor == 2
    with pytest.raises(
        RollbackError,
        match=r"^rollback_to\(1\): store op/kg-00001 has an undo log from 2; "
        r"restore it from a checkpoint instead$",
    ):
        store.rollback_to(1)
    store.rollback_to(2)
    assert store.states.count.value() == 2


def test_rollback_without_an_undo_log_names_the_fix(store: KeyGroupStore) -> None:
    store.key = "a"
    store.states.count.update(1)
    store.flush(meta={"epoch": 4})
    with pytest.raises(
        RollbackError,
        match=r"^rollback_to\(3\): store op/kg-00001 has no undo log; "
        r"restore it from a checkpoint instead$",
    ):
        store.rollback_to(3)
    with pytest.raises(
        RollbackError,
        match=r"^rollback_to\(5\): store op/kg-00001 is at epoch 4; "
        r"an epoch above it cannot be reached$",
    ):
        store.rollback_to(5)


def test_prune_undo_refuses_an_epoch_above_the_committed_one(store: KeyGroupStore) -> None:
    store.flush_epoch(1)
    with pytest.raises(
        ValueError,
        match=r"^upto_epoch 2 is above the committed epoch 1; "
        r"prune only up to a checkpoint this store has committed$",
    ):
        store.prune_undo(2)


def test_plain_flushes_inside_an_epoch_are_undone_and_in_its_delta(open_store: Opener) -> None:
    store = open_store()
    store.key = "a"
    store.states.count.update(1)
    store.flush_epoch(1)
    at_one = committed(store)
    store.states.count.update(2)
    store.key = "b"
    store.states.count.update(7)
    store.flush()  # e.g. the runtime relieving memory between barriers
    store = reopen(store, open_store)
    store.key = "a"
    store.states.count.update(3)
    delta = store.flush_epoch(2)
    assert apply_delta(at_one, delta) == committed(store)
    assert sorted(key for _state, key, _value in delta.entries()) == [
        encode_key("a"),
        encode_key("b"),
    ]
    store.rollback_to(1)
    assert committed(store) == at_one


def test_delta_since_an_older_epoch_carries_every_change(store: KeyGroupStore) -> None:
    store.key = "a"
    store.states.count.update(1)
    store.flush_epoch(1)
    at_one = committed(store)
    store.states.count.update(2)
    store.key = "b"
    store.states.seen.add("x")
    store.flush_epoch(2)  # say checkpoint 2 failed: checkpoint 3 must carry 2's changes
    store.key = "a"
    store.states.count.clear()
    store.flush_epoch(3)
    delta = store.delta_since(1)
    assert (delta.since, delta.epoch) == (1, 3)
    assert apply_delta(at_one, delta) == committed(store)


def test_export_entries_is_one_consistent_snapshot(store: KeyGroupStore) -> None:
    # More entries than one of the old per-chunk read transactions (1024) held.
    for i in range(3000):
        store.key = i
        store.states.count.update(1)
    store.flush()
    entries = store.export_entries()
    first = next(entries)
    for i in range(3000):
        store.key = i
        store.states.count.update(2)
    store.flush()
    rest = list(entries)
    values = {value for _state, _key, value in [first, *rest]}
    assert values == {encode_value(1)}
    assert len(rest) + 1 == 3000


def test_a_snapshot_read_from_another_thread_shows_its_epoch(store: KeyGroupStore) -> None:
    store.key = "a"
    store.states.count.update(1)
    store.flush_epoch(1)
    snapshot = store.snapshot()
    store.states.count.update(2)
    store.flush_epoch(2)
    seen: list[tuple[str, bytes, bytes]] = []
    reader = threading.Thread(target=lambda: seen.extend(snapshot.entries()))
    reader.start()
    reader.join()
    snapshot.close()
    assert snapshot.epoch == 1
    assert seen == [("count", encode_key("a"), encode_value(1))]


def test_restore_replaces_everything_with_the_epoch_in_one_write(open_store: Opener) -> None:
    store = open_store()
    store.key = "old"
    store.states.count.update(1)
    store.flush_epoch(5)
    entries = [
        ("count", encode_key("a"), encode_value(3)),
        ("by_page", encode_key("a") + encode_key("p"), encode_value(4)),
    ]
    store.key = "dirty"
    store.states.count.update(9)
    store.restore(entries, epoch=2, meta={"positions": {"s": 1}})
    assert sorted(store.export_entries()) == sorted(entries)
    assert store.epoch == 2
    assert store.read_meta("positions") == {"s": 1}
    assert store.undo_floor == 2
    store = reopen(store, open_store)
    assert store.epoch == 2
    assert store.get("count", "dirty") is None
    assert store.get("count", "a") == 3


def test_a_bad_restore_leaves_the_store_as_it_was(store: KeyGroupStore) -> None:
    store.key = "a"
    store.states.count.update(1)
    store.flush_epoch(1)
    before = committed(store)
    with pytest.raises(DecodeError):
        store.restore([("count", b"\xff\xff", encode_value(1))], epoch=7)
    assert committed(store) == before
    assert store.epoch == 1


# A random history of writes, plain flushes and epoch commits, on a small key space.
_KEYS = st.sampled_from(["a", "b", "c", 1, 2])
_STEP = st.one_of(
    st.tuples(st.just("put"), _KEYS, st.integers(0, 9)),
    st.tuples(st.just("clear"), _KEYS, st.just(0)),
    st.tuples(st.just("map_put"), _KEYS, st.integers(0, 3)),
    st.tuples(st.just("map_clear"), _KEYS, st.just(0)),
    st.tuples(st.just("add"), _KEYS, st.integers(0, 9)),
    st.tuples(st.just("flush"), st.just("a"), st.just(0)),
    st.tuples(st.just("epoch"), st.just("a"), st.just(0)),
    st.tuples(st.just("prune"), st.just("a"), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_STEP, max_size=40), backward=st.integers(0, 10), lmdb=st.booleans())
def test_random_histories_roll_back_and_deltas_rebuild_every_epoch(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[str, Any, int]],
    backward: int,
    lmdb: bool,
) -> None:
    backend: Any = (
        LmdbBackend(tmp_path_factory.mktemp("h"), map_size=1 << 22) if lmdb else MemoryBackend()
    )
    with backend.open_store("op", 0, SPECS) as store:
        at: dict[int, Entries] = {0: {}}
        chained: Entries = {}
        epoch = 0
        floor = 0
        for kind, key, value in steps:
            store.key = key
            if kind == "put":
                store.states.count.update(value)
            elif kind == "clear":
                store.states.count.clear()
            elif kind == "map_put":
                store.states.by_page.put(value, value)
            elif kind == "map_clear":
                store.states.by_page.clear()
            elif kind == "add":
                store.states.seen.add(value)
            elif kind == "flush":
                store.flush()
            elif kind == "epoch":
                if epoch == 0:
                    # Plain flushes before the first epoch commit are the undo log's floor.
                    at[0] = chained = committed(store)
                epoch += 1
                delta = store.flush_epoch(epoch)
                assert delta.since == epoch - 1
                chained = apply_delta(chained, delta)
                at[epoch] = committed(store)
                assert chained == at[epoch]
            elif epoch:
                floor = epoch
                store.prune_undo(epoch)
        if epoch == 0:
            at[0] = committed(store)
        target = max(floor, epoch - backward)
        store.rollback_to(target)
        assert committed(store) == at[target]
        assert store.read_meta("epoch", 0) == target


def test_a_full_map_cannot_grow_under_an_open_snapshot(tmp_path: Path) -> None:
    backend = LmdbBackend(tmp_path, map_size=1 << 16)
    with backend.open_store("op", 0, SPECS) as store:
        store.flush_epoch(1)
        with store.snapshot():
            for i in range(5000):
                store.key = i
                store.states.count.update("x" * 20)
            with pytest.raises(
                StorageError,
                match=r"^LMDB map of .*kg-00000 is full while a snapshot is open, so it cannot "
                r"grow now; open the backend with a larger map_size \(unused map space costs "
                r"nothing\)$",
            ):
                store.flush_epoch(2)
        # Closed, the map grows as usual and the changes (still unflushed) commit.
        store.flush_epoch(2)
        assert store.get("count", 4999) == "x" * 20


def test_a_snapshot_read_while_the_owner_flushes_shows_one_epoch(store: KeyGroupStore) -> None:
    for i in range(2000):
        store.key = i
        store.states.count.update(1)
    store.flush_epoch(1)
    snapshot = store.snapshot()
    halfway = threading.Event()
    flushed = threading.Event()
    seen: list[bytes] = []

    def read() -> None:
        entries = snapshot.entries()
        seen.extend(value for _s, _k, value in itertools.islice(entries, 1000))
        halfway.set()
        assert flushed.wait(timeout=30)
        seen.extend(value for _s, _k, value in entries)

    reader = threading.Thread(target=read)
    reader.start()
    assert halfway.wait(timeout=30)
    for epoch in (2, 3):
        for i in range(2000):
            store.key = i
            store.states.count.update(epoch)
        store.flush_epoch(epoch)
    flushed.set()
    reader.join()
    snapshot.close()
    assert len(seen) == 2000
    assert set(seen) == {encode_value(1)}
