"""The memory budget of cached state (storage/_budget.py), pinned with a tiny budget on both
backends: it holds across the stores of a backend, only clean entries are evicted (never an
unflushed change), a read after an eviction returns the committed value, and the unflushed
changes alone over the budget are reported so the owner writes them back early."""

from __future__ import annotations

from pathlib import Path

import pytest
from shoal.storage import (
    CacheBudget,
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
        assert not budget.dirty_over(max_age=0)
        _fill(store, range(50, 2_000), 0)
        assert not budget.dirty_over()  # asked a moment ago: the answer is reused
        assert budget.dirty_over(max_age=0)
        store.flush()
        assert not budget.dirty_over(max_age=0)


def test_a_budget_is_a_positive_number_of_bytes(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"^the state memory budget must be an int of bytes >= 1; got 0$"
    ):
        LmdbBackend(tmp_path, state_memory=0)
    assert LmdbBackend(tmp_path, state_memory=None).budget is None


def test_keys_the_last_flush_wrote_are_evicted_last(backend: StateBackend) -> None:
    with backend.open_store("op", 1, (ValueStateSpec("count", default=0),)) as store:
        for key in range(100):  # loaded first (the oldest entries), under the budget
            store.key = key
            store.states.count.update(1)
        store.flush()
        assert len(store.states.count._cache) == 100
        for key in range(100, 1_000):  # read only: cold
            store.key = key
            store.states.count.value()
        for key in range(100):  # written again: hot, and still the oldest in the cache
            store.key = key
            store.states.count.update(2)
        store.flush()  # over the budget: the cold entries go first
        cached = store.states.count._cache
        assert all(key in cached for key in range(100))
        assert any(key not in cached for key in range(100, 1_000))
