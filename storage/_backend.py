"""State backends: where key-group stores live (LMDB on disk, or dicts for tests)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import lmdb

from ._budget import DEFAULT_STATE_MEMORY, CacheBudget
from ._engine import LmdbEngine, MemoryEngine, take_fence
from ._exceptions import InvalidNameError, StorageError, StoreBusyError
from ._shipping import ShippedTail
from ._specs import StateSpec, check_specs
from ._store import INTERNAL_DBS, KeyGroupStore

__all__ = ("LmdbBackend", "MemoryBackend", "StateBackend")

_OPERATOR = re.compile(r"[A-Za-z0-9_.-]+")
# Where shipped environments wait (see _shipping.py): a name no operator can have.
INCOMING = "shoal~incoming"
OUTGOING = "shoal~outgoing"


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
        state_memory: Bytes the cached entries of every store this backend opens may take
            together (a :class:`CacheBudget`; default 256 MiB); None: no budget.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        map_size: int = 1 << 30,
        cache_limit: int = 1_000_000,
        sync: bool = False,
        state_memory: int | None = DEFAULT_STATE_MEMORY,
    ) -> None:
        if type(map_size) is not int or map_size <= 0:
            raise ValueError(f"map_size must be a positive int; got {map_size!r}")
        if type(cache_limit) is not int or cache_limit < 0:
            raise ValueError(f"cache_limit must be an int >= 0; got {cache_limit!r}")
        self.root = Path(root)
        self.map_size = map_size
        self.cache_limit = cache_limit
        self.sync = sync
        self.budget = None if state_memory is None else CacheBudget(state_memory)
        self._open: set[tuple[str, int]] = set()

    def __repr__(self) -> str:
        return f"LmdbBackend({str(self.root)!r})"

    def path_for(self, operator: str, key_group: int) -> Path:
        """Return the environment directory of ``(operator, key_group)`` (it may not exist)."""
        _check_location(operator, key_group)
        return self.root / operator / f"kg-{key_group:05d}"

    def incoming_path(self, operator: str, key_group: int) -> Path:
        """Where a copy of ``(operator, key_group)`` shipped to this root lands."""
        _check_location(operator, key_group)
        return self.root / INCOMING / operator / f"kg-{key_group:05d}"

    def outgoing_path(self, operator: str, key_group: int) -> Path:
        """Where this root writes the copy of ``(operator, key_group)`` it ships."""
        _check_location(operator, key_group)
        return self.root / OUTGOING / operator / f"kg-{key_group:05d}"

    def install(
        self,
        operator: str,
        key_group: int,
        specs: Sequence[StateSpec],
        tail: ShippedTail,
    ) -> None:
        """Bring the shipped copy of ``(operator, key_group)`` up to date with ``tail`` (one
        transaction) and move it into place, replacing any earlier environment there.

        Raises:
            StorageError: No shipped copy is waiting.
            StoreBusyError: The store is open (here or in another process).
        """
        incoming = self.incoming_path(operator, key_group)
        if not (incoming / "data.mdb").exists():
            raise StorageError(
                f"no shipped copy of {operator}/kg-{key_group:05d} in {incoming.parent}"
            )
        names = [spec.name for spec in check_specs(specs)] + list(INTERNAL_DBS)
        engine = LmdbEngine(incoming, names, map_size=self.map_size, sync=self.sync)
        try:
            engine.apply_tail(tail.cleared, tail.prefixes, tail.entries)
        finally:
            engine.close()
        self._drop(operator, key_group)
        final = self.path_for(operator, key_group)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(incoming, final)
        with contextlib.suppress(OSError):  # the operator's folder, if nothing else is in it
            incoming.parent.rmdir()

    def discard_shipments(self) -> None:
        """Delete every shipped copy waiting here and every copy being shipped from here (a
        move that a failure cut short: the next attempt starts from the placement's owners)."""
        for leftover in (INCOMING, OUTGOING):
            shutil.rmtree(self.root / leftover, ignore_errors=True)

    def remove(self, operator: str, key_group: int) -> None:
        """Delete the environment of ``(operator, key_group)`` (it moved away); no-op if none.

        Raises:
            StoreBusyError: It is open (here or in another process).
        """
        self._drop(operator, key_group)

    def _drop(self, operator: str, key_group: int) -> None:
        path = self.path_for(operator, key_group)
        if (operator, key_group) in self._open:
            raise StoreBusyError(f"store {operator}/kg-{key_group:05d} is open: cannot remove it")
        if not path.exists():
            return
        fence = take_fence(path)  # refuses an environment another process has open
        try:
            shutil.rmtree(path)
        finally:
            os.close(fence)

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
                budget=self.budget,
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
        state_memory: As for :class:`LmdbBackend` (evicted entries are read back from the
            backend's dicts).
    """

    def __init__(
        self, *, cache_limit: int = 1_000_000, state_memory: int | None = DEFAULT_STATE_MEMORY
    ) -> None:
        if type(cache_limit) is not int or cache_limit < 0:
            raise ValueError(f"cache_limit must be an int >= 0; got {cache_limit!r}")
        self.cache_limit = cache_limit
        self.budget = None if state_memory is None else CacheBudget(state_memory)
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
            budget=self.budget,
        )
        self._open.add(location)
        return store
