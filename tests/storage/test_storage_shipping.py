"""Shipping an environment to another root: pre-copy while writing, then the tail.

The claim (storage/_shipping.py): a copy taken after ``begin_shipping``, brought up to date
with ``take_tail`` by ``LmdbBackend.install``, holds exactly what the original holds — every
state entry, meta entry and undo record — whatever the owner did in between (writes, epochs,
prunes, rollbacks, restores, clears). Checked entry by entry against the original, for
seeded random programs (hypothesis) and for the named cases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _storage_helpers import SPECS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.storage import (
    KeyGroupStore,
    LmdbBackend,
    MemoryBackend,
    ShippedTail,
    StorageError,
    StoreBusyError,
    begin_shipping,
    copy_environment,
    end_shipping,
    shipping,
    take_tail,
)
from shoal.storage._store import INTERNAL_DBS

OP = "op"
GROUP = 3


def _contents(store: KeyGroupStore) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every raw entry of every database of ``store``'s environment."""
    engine = store._engine
    names = [spec.name for spec in SPECS] + list(INTERNAL_DBS)
    return {name: list(engine.scan(name, b"", None, b"")) for name in names}


def _ship(source_root: Path, target_root: Path, store: KeyGroupStore) -> None:
    """Take the copy now (the journal already runs) into the target's incoming directory."""
    target = LmdbBackend(target_root)
    copy_environment(store, target.incoming_path(OP, GROUP))
    assert source_root != target_root


def _installed(target_root: Path, tail: ShippedTail) -> KeyGroupStore:
    target = LmdbBackend(target_root)
    target.install(OP, GROUP, SPECS, tail)
    return target.open_store(OP, GROUP, SPECS)


def _write(store: KeyGroupStore, key: Any, n: int) -> None:
    store.key = key
    store.states.count.update(n)
    store.states.by_page.put(f"p{n % 3}", n)
    store.states.seen.add(n)


# One step of an owner's life, as hypothesis draws them.
_STEPS = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 20), st.integers(0, 1000)),
    st.tuples(st.just("delete"), st.integers(0, 20)),
    st.tuples(st.just("clear_map"), st.integers(0, 20)),
    st.just(("flush",)),
    st.just(("epoch",)),
    st.just(("prune",)),
    st.just(("rollback",)),
    st.just(("restore",)),
    st.just(("clear_all",)),
)


def _step(store: KeyGroupStore, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "write":
        _write(store, step[1], step[2])
    elif kind == "delete":
        store.key = step[1]
        store.states.count.clear()
    elif kind == "clear_map":
        store.key = step[1]
        store.states.by_page.clear()  # a prefix delete
    elif kind == "flush":
        store.flush()
    elif kind == "epoch":
        store.flush_epoch((store.epoch or 0) + 1)
    elif kind == "prune":
        if store.epoch:
            store.prune_undo(store.epoch)
    elif kind == "rollback":
        floor = store.undo_floor
        if floor is not None and store.epoch is not None and floor <= store.epoch:
            store.rollback_to(floor)
    elif kind == "restore":
        entries = [(name, key, value) for name, key, value in store.export_entries()][:5]
        store.restore(entries, epoch=(store.epoch or 0) + 1)
    elif kind == "clear_all":
        store.clear_all()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    before=st.lists(_STEPS, max_size=25),
    after=st.lists(_STEPS, max_size=25),
)
def test_a_copy_plus_its_tail_equals_the_original_whatever_ran_in_between(
    tmp_path_factory: pytest.TempPathFactory, before: list[Any], after: list[Any]
) -> None:
    base = tmp_path_factory.mktemp("ship")
    source = LmdbBackend(base / "a")
    with source.open_store(OP, GROUP, SPECS) as store:
        for step in before:
            _step(store, step)
        store.flush()
        begin_shipping(store)
        assert shipping(store)
        _ship(base / "a", base / "b", store)
        for step in after:
            _step(store, step)
        store.flush()
        tail = take_tail(store)
        assert not shipping(store)
        expected = _contents(store)
        epoch, floor = store.epoch, store.undo_floor
    # Across processes the tail travels as CBOR-able data.
    with _installed(base / "b", ShippedTail.from_data(tail.to_data())) as copy:
        assert _contents(copy) == expected
        assert (copy.epoch, copy.undo_floor) == (epoch, floor)


def test_the_tail_carries_only_what_changed_after_the_copy(tmp_path: Path) -> None:
    source = LmdbBackend(tmp_path / "a")
    with source.open_store(OP, GROUP, SPECS) as store:
        for key in range(1000):
            _write(store, key, key)
        store.flush_epoch(1)
        begin_shipping(store)
        size = copy_environment(store, LmdbBackend(tmp_path / "b").incoming_path(OP, GROUP))
        _write(store, 7, 70_000)
        store.flush_epoch(2)
        tail = take_tail(store)
        value = store.get("count", 7)
    assert size > 0
    # key 7's entries in three states, the meta epoch, the undo record of epoch 2
    assert {db for db, _key, _value in tail.entries} == {
        "count",
        "by_page",
        "seen",
        "__meta__",
        "__undo__",
    }
    assert len(tail.entries) < 10
    with _installed(tmp_path / "b", tail) as copy:
        assert copy.get("count", 7) == value == 70_000
        assert copy.get("count", 8) == 8
        assert copy.epoch == 2
        # the undo log came along: the copy rolls back as the original would have
        copy.rollback_to(1)
        assert copy.get("count", 7) == 7


def test_install_replaces_a_stale_environment_and_remove_deletes_it(tmp_path: Path) -> None:
    target = LmdbBackend(tmp_path / "b")
    with target.open_store(OP, GROUP, SPECS) as stale:
        _write(stale, "old", 1)
        stale.flush()
    with LmdbBackend(tmp_path / "a").open_store(OP, GROUP, SPECS) as store:
        _write(store, "new", 2)
        store.flush()
        begin_shipping(store)
        copy_environment(store, target.incoming_path(OP, GROUP))
        tail = take_tail(store)
    target.install(OP, GROUP, SPECS, tail)
    assert not target.incoming_path(OP, GROUP).exists()
    with target.open_store(OP, GROUP, SPECS) as copy:
        assert copy.get("count", "old") is None
        assert copy.get("count", "new") == 2
    target.remove(OP, GROUP)
    assert not target.path_for(OP, GROUP).exists()
    target.remove(OP, GROUP)  # nothing there: no error


def test_shipping_refuses_what_would_lose_or_mix_state(tmp_path: Path) -> None:
    backend = LmdbBackend(tmp_path / "a")
    with backend.open_store(OP, GROUP, SPECS) as store:
        with pytest.raises(StorageError, match=r"^store op/kg-00003 is not being shipped"):
            take_tail(store)
        begin_shipping(store)
        with pytest.raises(StorageError, match=r"^store op/kg-00003 is being shipped already$"):
            begin_shipping(store)
        _write(store, 1, 1)
        with pytest.raises(StorageError, match=r"^store op/kg-00003 has unflushed changes"):
            take_tail(store)
        end_shipping(store)
        assert not shipping(store)
        directory = tmp_path / "copy"
        copy_environment(store, directory)
        with pytest.raises(StorageError, match=r"holds an environment already"):
            copy_environment(store, directory)
        with pytest.raises(StoreBusyError, match=r"^store op/kg-00003 is open: cannot remove"):
            backend.remove(OP, GROUP)
    with pytest.raises(StorageError, match=r"^no shipped copy of op/kg-00003 in "):
        LmdbBackend(tmp_path / "b").install(OP, GROUP, SPECS, ShippedTail(False, (), ()))
    memory = MemoryBackend().open_store(OP, GROUP, SPECS)
    with pytest.raises(StorageError, match=r"is not in LMDB: only an LMDB environment"):
        begin_shipping(memory)
    memory.close()
