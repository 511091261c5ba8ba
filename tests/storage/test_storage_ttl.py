"""State TTL: values expire on access, in an incremental pass and at a flush; update types,
visibility, processing and event time; state stays bounded under a moving key set."""

from __future__ import annotations

from typing import Any

import pytest
from _storage_helpers import Opener
from shoal.storage import (
    AggregatingStateSpec,
    KeyGroupStore,
    ListStateSpec,
    MapStateSpec,
    ReducingStateSpec,
    StateTtl,
    ValueStateSpec,
)


class Now:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _store(open_store: Opener, *specs: Any) -> tuple[KeyGroupStore, Now]:
    store = open_store(specs=tuple(specs))
    now = Now()
    store.processing_time = now
    return store, now


def test_an_expired_value_is_gone_on_access_and_a_write_starts_afresh(open_store: Opener) -> None:
    store, now = _store(open_store, ListStateSpec("seen", ttl=StateTtl(10)))
    seen = store.states.seen
    store.key = "a"
    seen.add(1)
    now.t = 9.0
    seen.add(2)  # a write: expires at 19 now
    now.t = 18.0
    assert seen.get() == [1, 2]
    now.t = 19.0
    assert seen.get() == []
    seen.add(3)
    assert seen.get() == [3]
    assert store.statistics().expired == 1


def test_on_read_and_write_extends_the_life_of_a_value_read(open_store: Opener) -> None:
    store, now = _store(
        open_store,
        ValueStateSpec("v", default=0, ttl=StateTtl(10, update="on_read_and_write")),
        ValueStateSpec("w", default=0, ttl=StateTtl(10)),
    )
    store.key = "a"
    store.states.v.update(1)
    store.states.w.update(1)
    now.t = 8.0
    assert (store.states.v.value(), store.states.w.value()) == (1, 1)
    now.t = 15.0
    assert (store.states.v.value(), store.states.w.value()) == (1, 0)  # v was read at 8


def test_return_expired_if_not_cleaned_up_keeps_it_until_a_pass_removes_it(
    open_store: Opener,
) -> None:
    ttl = StateTtl(10, visibility="return_expired_if_not_cleaned_up")
    store, now = _store(open_store, ReducingStateSpec("sum", lambda a, b: a + b, ttl=ttl))
    store.key = "a"
    store.states.sum.add(5)
    store.flush()
    now.t = 30.0
    assert store.states.sum.get() == 5  # expired, not cleaned up yet
    assert store.get("sum", "a") == 5
    assert store.cleanup_expired(100) == 1
    assert store.states.sum.get() is None
    store.flush()
    assert store.statistics().entries == 0


def test_a_flush_never_writes_an_expired_value(open_store: Opener) -> None:
    store, now = _store(
        open_store, AggregatingStateSpec("n", lambda: 0, lambda acc, v: acc + v, ttl=StateTtl(5))
    )
    for key in ("a", "b"):
        store.key = key
        store.states.n.add(1)
    now.t = 3.0
    store.key = "b"
    store.states.n.add(1)  # b lives until 8
    now.t = 6.0
    store.flush_epoch(1)  # a checkpoint
    assert store.get("n", "a") is None
    assert dict(store.items("n")) == {"b": 2}
    assert store.statistics().entries == 1


def test_values_keep_their_timestamp_through_the_disk(open_store: Opener) -> None:
    store, now = _store(open_store, ValueStateSpec("v", ttl=StateTtl(10)))
    store.key = "a"
    store.states.v.update("x")
    store.flush()
    store.clear_all()
    store.key = "a"
    store.states.v.update("y")
    store.flush()
    # forget the cache: the value and its stamp come back from the engine
    store.rollback_to(store.epoch or 0)
    now.t = 9.0
    assert store.states.v.value() == "y"
    now.t = 10.0
    assert store.states.v.value() is None


def test_event_time_ttl_follows_the_stores_event_time(open_store: Opener) -> None:
    store = open_store(specs=(ValueStateSpec("v", ttl=StateTtl(100, time="event_time")),))
    store.key = "a"
    store.states.v.update(1)  # before any event time is known: nothing expires meanwhile
    assert store.states.v.value() == 1
    event = [50.0]
    store.event_time = lambda: event[0]
    store.key = "b"
    store.states.v.update(2)  # stamped 50
    event[0] = 149.0
    assert store.states.v.value() == 2
    event[0] = 150.0
    assert store.states.v.value() is None


@pytest.mark.parametrize("visibility", ["never_return_expired", "return_expired_if_not_cleaned_up"])
def test_state_stays_bounded_under_a_moving_key_set(open_store: Opener, visibility: str) -> None:
    # Each key is written for 20 time units and never again; 2,000 keys over the run. With a
    # TTL of 50 only the keys of the last ~50 units (plus one pass's lag) may remain, committed
    # or cached, whatever the run's length.
    ttl = StateTtl(50, visibility=visibility)
    store, now = _store(open_store, ValueStateSpec("last", ttl=ttl))
    sizes = []
    for i in range(40_000):
        now.t = i / 20  # one time unit per 20 records
        store.key = i // 400 if i % 2 else f"k{i // 20}"
        store.states.last.update(i)
        if i % 16 == 15:  # a batch of 16 records
            store.cleanup_expired(2 * 16)
        if i % 1000 == 999:  # a checkpoint
            store.flush()
            stats = store.statistics()
            sizes.append(stats.entries)
            assert stats.cached - stats.entries <= 200
    assert max(sizes) <= 2 * (50 + 20) + 5
    assert store.statistics().expired >= 900


def test_the_bulk_methods_of_a_ttl_value_state_stamp_and_expire(open_store: Opener) -> None:
    store, now = _store(open_store, ValueStateSpec("v", default=0, ttl=StateTtl(10)))
    v = store.states.v
    v.update_all({"a": 1, "b": 2})
    now.t = 5.0
    v.update_all({"b": 3})
    v.clear_all(["a"])
    assert v.values_of(["a", "b"]) == {"a": 0, "b": 3}
    now.t = 15.0  # b was written at 5
    assert v.values_of(["b"]) == {"b": 0}
    store.flush()
    assert store.statistics().entries == 0


# -- MapState: every entry expires on its own -------------------------------------------------


def test_a_map_entry_expires_on_its_own_and_a_put_starts_it_afresh(open_store: Opener) -> None:
    store, now = _store(open_store, MapStateSpec("pages", ttl=StateTtl(10)))
    pages = store.states.pages
    store.key = "a"
    pages.put("/x", 1)
    now.t = 5.0
    pages.put("/y", 2)  # lives until 15
    now.t = 9.0
    assert pages.items() == [("/x", 1), ("/y", 2)]
    now.t = 10.0
    assert pages.get("/x") is None  # 10 after its put: gone, the other entry stays
    assert not pages.contains("/x")
    assert pages.items() == [("/y", 2)]
    assert store.get("pages", "a") == {"/y": 2}
    pages.put("/x", 3)
    now.t = 15.0
    assert (pages.keys(), pages.values()) == (["/x"], [3])
    now.t = 20.0
    assert pages.is_empty()
    assert store.statistics().expired == 3


def test_on_read_and_write_extends_the_life_of_a_map_entry_read(open_store: Opener) -> None:
    store, now = _store(open_store, MapStateSpec("m", ttl=StateTtl(10, update="on_read_and_write")))
    m = store.states.m
    store.key = "a"
    m.put(1, "one")
    m.put(2, "two")
    now.t = 8.0
    assert m.get(1) == "one"  # read at 8: lives until 18
    now.t = 12.0
    assert m.items() == [(1, "one")]
    now.t = 21.0  # items() at 12 read it too: lives until 22
    assert m.get(1) == "one"


def test_return_expired_if_not_cleaned_up_keeps_a_map_entry_until_a_pass_removes_it(
    open_store: Opener,
) -> None:
    ttl = StateTtl(10, visibility="return_expired_if_not_cleaned_up")
    store, now = _store(open_store, MapStateSpec("m", ttl=ttl))
    m = store.states.m
    store.key = "a"
    m.put("cached", 1)
    store.key = "b"
    m.put("committed", 2)
    store.flush()
    store.rollback_to(store.epoch or 0)  # forget the cache: "committed" is only on disk now
    store.key = "a"
    m.put("cached", 1)
    now.t = 30.0
    assert m.get("cached") == 1  # expired, not cleaned up yet
    assert store.get("m", "b") == {"committed": 2}
    assert store.cleanup_expired(100) == 2  # the queue's entry, then the disk's
    assert m.get("cached") is None
    store.flush()
    assert store.statistics().entries == 0


def test_a_flush_never_writes_an_expired_map_entry(open_store: Opener) -> None:
    store, now = _store(open_store, MapStateSpec("m", ttl=StateTtl(5)))
    store.key = "a"
    store.states.m.put("old", 1)
    now.t = 3.0
    store.states.m.put("new", 2)  # lives until 8
    now.t = 6.0
    store.flush_epoch(1)  # a checkpoint
    assert dict(store.items("m")) == {"a": {"new": 2}}
    assert store.statistics().entries == 1


def test_map_entries_keep_their_timestamp_through_the_disk(open_store: Opener) -> None:
    store, now = _store(open_store, MapStateSpec("m", ttl=StateTtl(10)))
    store.key = "a"
    store.states.m.put("k", "v")
    now.t = 4.0
    store.states.m.put("j", "w")
    store.flush()
    store.rollback_to(store.epoch or 0)  # forget the cache: entries and stamps from the engine
    now.t = 9.0
    assert store.states.m.items() == [("j", "w"), ("k", "v")]
    now.t = 10.0
    assert store.states.m.items() == [("j", "w")]


def test_event_time_ttl_of_a_map_follows_the_stores_event_time(open_store: Opener) -> None:
    store = open_store(specs=(MapStateSpec("m", ttl=StateTtl(100, time="event_time")),))
    event = [50.0]
    store.event_time = lambda: event[0]
    store.key = "a"
    store.states.m.put(1, "x")
    event[0] = 149.0
    assert store.states.m.get(1) == "x"
    event[0] = 150.0
    assert store.states.m.get(1) is None


@pytest.mark.parametrize("visibility", ["never_return_expired", "return_expired_if_not_cleaned_up"])
def test_map_state_stays_bounded_under_a_moving_key_set(
    open_store: Opener, visibility: str
) -> None:
    # Keys come and go (each used for 20 time units), and so do the map keys within a key
    # (one per record, each put once): 40,000 entries over the run. With a TTL of 50 only the
    # entries of the last ~50 units (plus one pass's lag) may remain, committed or cached.
    ttl = StateTtl(50, visibility=visibility)
    store, now = _store(open_store, MapStateSpec("seen", ttl=ttl))
    sizes = []
    for i in range(40_000):
        now.t = i / 20  # one time unit per 20 records
        store.key = i // 400 if i % 2 else f"k{i // 20}"
        store.states.seen.put(i, i)
        if i % 16 == 15:  # a batch of 16 records
            store.cleanup_expired(2 * 16)
        if i % 1000 == 999:  # a checkpoint
            store.flush()
            stats = store.statistics()
            sizes.append(stats.entries)
            assert stats.cached - stats.entries <= 2_000  # cached maps and entries, not 40,000
    assert max(sizes) <= 20 * (50 + 20) + 50
    assert store.statistics().expired >= 38_000


def test_ttl_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"^StateTtl: ttl must be a finite number > 0; got 0$"):
        StateTtl(0)
    with pytest.raises(
        ValueError,
        match=r"^StateTtl: update must be 'on_create_and_write' or 'on_read_and_write'; "
        r"got 'on_read'$",
    ):
        StateTtl(1, update="on_read")
    with pytest.raises(
        ValueError, match=r"^StateTtl: time must be 'processing_time' or 'event_time'; got 'x'$"
    ):
        StateTtl(1, time="x")
    with pytest.raises(
        TypeError, match=r"^state 'v': ttl must be a StateTtl\(...\) or None; got 10$"
    ):
        ValueStateSpec("v", ttl=10)  # type: ignore[arg-type]
