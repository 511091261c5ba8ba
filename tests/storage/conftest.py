"""Fixtures for the storage tests: every behaviour test runs on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _storage_helpers import SPECS, Opener
from shoal.storage import KeyGroupStore, LmdbBackend, MemoryBackend, StateBackend, StateSpec


@pytest.fixture(params=["lmdb", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> StateBackend:
    """Each backend in turn; LMDB under a fresh directory."""
    if request.param == "lmdb":
        return LmdbBackend(tmp_path / "state", map_size=1 << 22)
    return MemoryBackend()


@pytest.fixture
def open_store(backend: StateBackend) -> Iterator[Opener]:
    """Open stores of operator "op" (default key group 1, default SPECS); closes them after."""
    opened: list[KeyGroupStore] = []

    def opener(key_group: int = 1, specs: tuple[StateSpec, ...] = SPECS) -> KeyGroupStore:
        store = backend.open_store("op", key_group, specs)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> KeyGroupStore:
    """An open store declaring SPECS."""
    return open_store()
