"""The memory budget of cached state (storage/_budget.py), pinned with a tiny budget on both
backends: it holds across the stores of a backend, only clean entries are evicted (never an
unflushed change), a read after an eviction returns the committed value, and the unflushed
changes alone over the budget are reported so the owner writes them back early."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.storage import (
    CacheBudget,
    KeyGroupStore,
    LmdbBackend,
    MapStateSpec,
    MemoryBackend,
    StateBackend,
    ValueStateSpec,
)

SPECS = (ValueStateSpec("count", default=0), MapStateSpec("pages"))
LIMIT = 40_000  # bytes: about 150 entries at the estimated cost of a small one


@pytest.fixture(params=["lmdb", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> StateBackend:
    if request.param == "lmdb":
        return LmdbBackend(tmp_path / "state", map_size=1 << 22, state_memory=LIMIT)
    return MemoryBackend(state_memory=LIMIT)


def _fill(store: object, keys: range, value: int) -> None:
    for key in keys:
        store.key = key  # type: ignore[attr-defined]
        store.states.count.update(value + key)  # type: ignore[attr-defined]
        store.states.pages.put(f"p{key % 3}", key)  # type: ignore[attr-defined]


def test_a_flush_evicts_clean_entries_down_to_the_budget_and_reads_come_back(
    backend: StateBackend,
) -> None:
    budget = backend.budget  # type: ignore[attr-defined]
    assert isinstance(budget, CacheBudget)
    with backend.open_store("op", 1, SPECS) as store:
        _fill(store, range(2_000), 10)
        assert store.cached_bytes() > LIMIT  # unflushed: nothing may go
        store.flush()
        assert store.cached_bytes() <= LIMIT
        assert budget.cached_bytes() <= LIMIT
        assert budget.evicted > 0
        # Every key reads its committed value, evicted or not.
        for key in range(0, 2_000, 7):
            store.key = key
            assert store.states.count.value() == 10 + key
            assert store.states.pages.get(f"p{key % 3}") == key


def test_the_budget_is_shared_and_never_drops_another_stores_unflushed_changes(
    backend: StateBackend,
) -> None:
    budget = backend.budget  # type: ignore[attr-defined]
    with backend.open_store("op", 1, SPECS) as first, backend.open_store("op", 2, SPECS) as second:
        _fill(first, range(500), 1)  # unflushed
        _fill(second, range(3_000), 2)
        # The budget is over, mostly with the first store's unflushed changes, which cannot
        # go: the flushing store gives up what it can.
        second.flush()
        assert first.statistics().dirty == 1_000  # 500 keys x 2 states, all still there
        assert first.cached_bytes() > LIMIT
        assert second.cached_bytes() < LIMIT
        first.flush()
        assert budget.cached_bytes() <= LIMIT
        for store, value in ((first, 1), (second, 2)):
            for key in range(0, 500, 11):
                store.key = key
                assert store.states.count.value() == value + key


def test_unflushed_changes_over_the_budget_are_reported_for_an_early_write_back(
    backend: StateBackend,
) -> None:
    budget = backend.budget  # type: ignore[attr-defined]
    with backend.open_store("op", 1, SPECS) as store:
        _fill(store, range(50), 0)
        store.report_usage()
        assert not budget.dirty_over()
        _fill(store, range(50, 2_000), 0)
        assert not budget.dirty_over()  # not reported yet: the owner reports after a batch
        store.report_usage()
        assert budget.dirty_over()
        store.flush()  # reports by itself
        assert not budget.dirty_over()


def test_a_budget_is_a_positive_number_of_bytes(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"^the state memory budget must be an int of bytes >= 1; got 0$"
    ):
        LmdbBackend(tmp_path, state_memory=0)
    assert LmdbBackend(tmp_path, state_memory=None).budget is None


def test_keys_read_again_are_evicted_last(backend: StateBackend) -> None:
    with backend.open_store("op", 1, (ValueStateSpec("count", default=0),)) as store:
        for key in range(100):  # loaded first (the oldest entries), under the budget
            store.key = key
            store.states.count.update(1)
        store.flush()
        assert len(store.states.count._cache) == 100
        for key in range(100, 1_000):  # read once, from the engine: cold
            store.key = key
            store.states.count.value()
        for key in range(100):  # read again from the cache, and written: hot
            store.key = key
            store.states.count.update(store.states.count.value() + 1)
        store.flush()  # over the budget: the cold entries go first
        cached = store.states.count._cache
        assert all(key in cached for key in range(100))
        assert any(key not in cached for key in range(100, 1_000))
        # The keys it passed over moved to the back (CLOCK's second chance): the next
        # eviction starts with the cold keys still cached, not with them.
        assert list(cached)[-100:] == list(range(100))


@pytest.mark.parametrize("kind", ["lmdb", "memory"])
def test_a_key_loaded_and_written_but_never_read_again_is_not_kept(
    kind: str, tmp_path: Path
) -> None:
    """A write is not a use by itself: the one-off keys of a read-modify-write (read from
    the engine once, written, never asked for again) go before the keys read again."""
    roomy = 10_000_000  # nothing is evicted until the test asks
    backend: StateBackend = (
        LmdbBackend(tmp_path / "state", map_size=1 << 22, state_memory=roomy)
        if kind == "lmdb"
        else MemoryBackend(state_memory=roomy)
    )
    with backend.open_store("op", 1, (ValueStateSpec("count", default=0),)) as store:
        for key in range(1_000):
            store.key = key
            store.states.count.update(store.states.count.value() + 1)
        store.flush()
        for key in range(500, 1_000):  # the newer half read again
            store.key = key
            assert store.states.count.value() == 1
        store.report_usage()
        store.evict_bytes(int(400 * store._per_entry()))  # 400 entries' worth
        cached = store.states.count._cache
        assert all(key in cached for key in range(500, 1_000))  # read again: kept
        assert sum(key in cached for key in range(500)) == 100  # 400 of the one-offs gone
        for key in range(1_000):  # and every value is still there, cached or read back
            store.key = key
            assert store.states.count.value() == 1


# Operations on a store: (name, key). The keys are few, so reads hit and miss, maps fill up
# and entries are evicted and read back.
OPERATIONS = st.lists(
    st.tuples(
        st.integers(0, 2),  # which store
        st.sampled_from(
            [
                "write",
                "read",
                "clear",
                "put",
                "get",
                "clear_map",
                "many",
                "report",
                "trim",
                "flush",
                "flush_epoch",
                "rollback",
                "reopen",
                "clear_all",
            ]
        ),
        st.integers(0, 40),
    ),
    max_size=60,
)
#: Operations after which the store has reported by itself (no ``report_usage`` needed).
SELF_REPORTING = {"trim", "flush", "flush_epoch", "rollback", "reopen", "clear_all"}


def _operate(
    backend: StateBackend, stores: list[KeyGroupStore], which: int, name: str, key: int
) -> None:
    store = stores[which]
    store.key = key
    count, pages = store.states.count, store.states.pages
    if name == "write":
        count.update(key * 3)
    elif name == "read":
        count.value()
    elif name == "clear":
        count.clear()
    elif name == "put":
        pages.put(key % 4, key)
    elif name == "get":
        pages.get(key % 4)
    elif name == "clear_map":
        pages.clear()
    elif name == "many":
        count.update_all({k: k for k in count.values_of(range(key, key + 5))})
    elif name == "report":
        store.report_usage()
    elif name == "trim":  # as the runtime does after a batch (it reports first)
        store.report_usage()
        backend.budget.trim(store)  # type: ignore[attr-defined]
    elif name == "flush":
        store.flush()
    elif name == "flush_epoch":
        store.flush_epoch((store.epoch or 0) + 1)
    elif name == "rollback":
        store.rollback_to(store.epoch or 0)  # drops the unflushed changes
    elif name == "reopen":
        store.close()
        stores[which] = backend.open_store("op", which, SPECS)
    elif name == "clear_all":
        store.clear_all()


def _check_totals(budget: CacheBudget, stores: list[KeyGroupStore]) -> None:
    assert budget.cached_bytes() == sum(store.cached_bytes() for store in stores)
    assert budget.dirty_bytes() == sum(store.dirty_bytes() for store in stores)


@pytest.mark.parametrize("kind", ["lmdb", "memory"])
@settings(max_examples=40, deadline=None)
@given(operations=OPERATIONS)
def test_the_running_totals_are_the_sums_of_the_stores_after_any_operations(
    kind: str, operations: list[tuple[int, str, int]]
) -> None:
    with tempfile.TemporaryDirectory() as root:
        backend: StateBackend = (
            LmdbBackend(Path(root), map_size=1 << 22, state_memory=3_000)
            if kind == "lmdb"
            else MemoryBackend(state_memory=3_000)  # a few entries: flushes evict
        )
        budget = backend.budget  # type: ignore[attr-defined]
        stores = [backend.open_store("op", which, SPECS) for which in range(3)]
        try:
            for which, name, key in operations:
                _operate(backend, stores, which, name, key)
                if name in SELF_REPORTING:
                    _check_totals(budget, stores)  # it reported by itself
                for store in stores:
                    store.report_usage()
                _check_totals(budget, stores)
        finally:
            for store in stores:
                store.close()
        assert budget.cached_bytes() == budget.dirty_bytes() == 0  # closed: nothing charged


def test_reads_are_counted_as_hits_and_misses(backend: StateBackend) -> None:
    budget = backend.budget  # type: ignore[attr-defined]
    with backend.open_store("op", 1, SPECS) as store:
        _fill(store, range(10), 0)
        store.flush()
    with backend.open_store("op", 1, SPECS) as store:  # a cold cache
        store.key = 0
        store.states.count.value()  # a miss
        store.states.count.value()  # a hit
        store.states.count.values_of([0, 1, 2, 3])  # one hit, three misses
        store.states.pages.get("p0")  # a miss
        store.states.pages.get("p0")  # a hit
        store.states.pages.get("p1")  # a miss (absent, but LMDB had to say so)
        stats = store.statistics()
        assert (stats.hits, stats.misses) == (3, 6)
        assert (budget.hits, budget.misses) == (0, 0)  # not reported yet
        store.report_usage()
        assert (budget.hits, budget.misses) == (3, 6)
        assert budget.hit_rate == pytest.approx(3 / 9)
        store.report_usage()  # reported once only
        assert (budget.hits, budget.misses) == (3, 6)


def test_trimming_between_flushes_evicts_clean_entries_only(backend: StateBackend) -> None:
    budget = backend.budget  # type: ignore[attr-defined]
    with backend.open_store("op", 1, SPECS) as store:
        _fill(store, range(1_000), 10)
        store.flush()  # committed: 10 + key, and a page per key
        for key in range(1_000):  # load everything back: clean entries over the budget
            store.key = key
            store.states.count.value()
            store.states.pages.get(f"p{key % 3}")
        _fill(store, range(0, 1_000, 50), 20)  # and some unflushed changes
        store.report_usage()
        assert budget.over()
        assert budget.trim(store) > 0
        assert not budget.over()
        assert store.statistics().dirty == 40  # 20 keys x 2 states: none evicted
        for key in range(1_000):  # unflushed values, or committed ones read back
            store.key = key
            expected = 20 + key if key % 50 == 0 else 10 + key
            assert store.states.count.value() == expected
            assert store.states.pages.get(f"p{key % 3}") == key
        store.flush()  # and the unflushed changes were still there to write
    with backend.open_store("op", 1, SPECS) as store:
        assert store.get("count", 50) == 70
        assert store.get("count", 51) == 61


def test_a_key_read_since_the_last_eviction_keeps_its_second_chance(
    backend: StateBackend,
) -> None:
    with backend.open_store("op", 1, (ValueStateSpec("count", default=0),)) as store:
        for key in range(50):  # loaded first, written in the first interval only
            store.key = key
            store.states.count.update(1)
        store.flush()
        for key in range(50):  # hot: read again from the cache
            store.key = key
            assert store.states.count.value() == 1
        for key in range(100, 150):  # written in the second interval
            store.key = key
            store.states.count.update(1)
        store.flush()
        for key in range(1_000, 1_500):  # read only: cold
            store.key = key
            store.states.count.value()
        store.key = 5_000
        store.states.count.update(1)
        store.flush()  # over the budget: the cold entries go, not the hot ones
        cached = store.states.count._cache
        assert all(key in cached for key in range(50))
        assert any(key not in cached for key in range(1_000, 1_500))
