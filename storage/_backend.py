"""State backends: where key-group stores live (LMDB on disk, or dicts for tests)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import lmdb

from ._engine import LmdbEngine, MemoryEngine
from ._exceptions import InvalidNameError, StoreBusyError
from ._specs import StateSpec, check_specs
from ._store import INTERNAL_DBS, KeyGroupStore

__all__ = ("LmdbBackend", "MemoryBackend", "StateBackend")

_OPERATOR = re.compile(r"[A-Za-z0-9_.-]+")


def _check_location(operator: object, key_group: object) -> None:
    if not isinstance(operator, str) or _OPERATOR.fullmatch(operator) is None:
        raise InvalidNameError(
            f"operator name must match [A-Za-z0-9_.-]+ (it names a directory); got {operator!r}"
        )
    if operator in (".", ".."):
        raise InvalidNameError(f"operator name must not be {operator!r} (it names a directory)")
    if type(key_group) is not int or key_group < 0:
        raise InvalidNameError(f"key_group must be an int >= 0; got {key_group!r}")


class StateBackend(Protocol):
    """Opens the store of one (operator, key group); the runtime's plug-in point for state."""

    def open_store(
        self, operator: str, key_group: int, specs: Sequence[StateSpec]
    ) -> KeyGroupStore:
        """Open (creating if needed) the store of ``operator``'s ``key_group``.

        Raises:
            InvalidNameError: Bad operator name or key group (a ``ValueError``).
            StoreBusyError: That store is already open.
        """
        ...


class LmdbBackend:
    """Stores in LMDB: one environment per (operator, key group) under ``root``.

    The environment of ``(operator, key_group)`` is the directory
    ``root/<operator>/kg-<key_group:05d>/`` with a named database per declared state and one
    internal ``__meta__`` database. A flush commits without fsync unless ``sync=True``: a
    process crash (``kill -9``) keeps committed data (the OS page cache survives it), a machine
    crash may lose the last commits; the checkpoint store is the durable truth.

    Args:
        root: Directory holding every environment; created on first open.
        map_size: Initial LMDB map size in bytes; it doubles whenever a flush fills it.
        cache_limit: Cached entries per store above which a flush evicts clean entries.
        sync: Fsync every flush (slow: ~6 ms per commit).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        map_size: int = 1 << 30,
        cache_limit: int = 1_000_000,
        sync: bool = False,
    ) -> None:
        if type(map_size) is not int or map_size <= 0:
            raise ValueError(f"map_size must be a positive int; got {map_size!r}")
        if type(cache_limit) is not int or cache_limit < 0:
            raise ValueError(f"cache_limit must be an int >= 0; got {cache_limit!r}")
        self.root = Path(root)
        self.map_size = map_size
        self.cache_limit = cache_limit
        self.sync = sync
        self._open: set[tuple[str, int]] = set()

    def __repr__(self) -> str:
        return f"LmdbBackend({str(self.root)!r})"

    def path_for(self, operator: str, key_group: int) -> Path:
        """Return the environment directory of ``(operator, key_group)`` (it may not exist)."""
        _check_location(operator, key_group)
        return self.root / operator / f"kg-{key_group:05d}"

    def open_store(
        self, operator: str, key_group: int, specs: Sequence[StateSpec]
    ) -> KeyGroupStore:
        """Open (creating if needed) the store of ``operator``'s ``key_group``.

        Raises:
            InvalidNameError: Bad operator name or key group (a ``ValueError``).
            DuplicateStateError: Two specs share a name (a ``ValueError``).
            StoreBusyError: That store is already open in this process.
        """
        path = self.path_for(operator, key_group)
        checked = check_specs(specs)
        location = (operator, key_group)
        if location in self._open:
            raise StoreBusyError(f"store {operator}/kg-{key_group:05d} is already open")
        names = [spec.name for spec in checked] + list(INTERNAL_DBS)
        try:
            engine = LmdbEngine(path, names, map_size=self.map_size, sync=self.sync)
        except StoreBusyError as exc:
            # The ownership fence: one writer per environment, across processes too.
            where = str(exc).rpartition(" is already open ")[2]
            raise StoreBusyError(
                f"store {operator}/kg-{key_group:05d} is already open {where}"
            ) from None
        except lmdb.Error as exc:
            if "already open" in str(exc):
                raise StoreBusyError(
                    f"store {operator}/kg-{key_group:05d} is already open in this process"
                ) from exc
            raise
        try:
            store = KeyGroupStore(
                operator,
                key_group,
                checked,
                engine,
                cache_limit=self.cache_limit,
                on_close=lambda: self._open.discard(location),
            )
        except BaseException:
            engine.close()
            raise
        self._open.add(location)
        return store


class MemoryBackend:
    """Stores in dicts, with the same behaviour as LmdbBackend: for tests.

    Flushed data lives as long as the backend object, so closing and reopening a store sees
    what was flushed (and nothing that was not), just as with LMDB.

    Args:
        cache_limit: Cached entries per store above which a flush evicts clean entries.
    """

    def __init__(self, *, cache_limit: int = 1_000_000) -> None:
        if type(cache_limit) is not int or cache_limit < 0:
            raise ValueError(f"cache_limit must be an int >= 0; got {cache_limit!r}")
        self.cache_limit = cache_limit
        self._data: dict[tuple[str, int], dict[str, dict[bytes, bytes]]] = {}
        self._open: set[tuple[str, int]] = set()

    def __repr__(self) -> str:
        return "MemoryBackend()"

    def open_store(
        self, operator: str, key_group: int, specs: Sequence[StateSpec]
    ) -> KeyGroupStore:
        """Open (creating if needed) the store of ``operator``'s ``key_group``.

        Raises:
            InvalidNameError: Bad operator name or key group (a ``ValueError``).
            DuplicateStateError: Two specs share a name (a ``ValueError``).
            StoreBusyError: That store is already open.
        """
        _check_location(operator, key_group)
        checked = check_specs(specs)
        location = (operator, key_group)
        if location in self._open:
            raise StoreBusyError(f"store {operator}/kg-{key_group:05d} is already open")
        names = [spec.name for spec in checked] + list(INTERNAL_DBS)
        engine = MemoryEngine(self._data.setdefault(location, {}), names)
        store = KeyGroupStore(
            operator,
            key_group,
            checked,
            engine,
            cache_limit=self.cache_limit,
            on_close=lambda: self._open.discard(location),
        )
        self._open.add(location)
        return store
