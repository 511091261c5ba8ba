"""KeyGroupStore: all declared state of one (operator, key group), over one engine."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ._codec import check_key, decode_key, decode_value, encode_key, encode_value, split_composite
from ._engine import PUT, Engine, Op, Puts
from ._exceptions import (
    DecodeError,
    EncodeError,
    InvalidNameError,
    StoreClosedError,
    StoreDirtyError,
    UnknownStateError,
)
from ._handles import ABSENT, MapState, StateHandle, make_handle
from ._specs import StateSpec

__all__ = ("META_DB", "KeyGroupStatistics", "KeyGroupStore")

#: The internal database holding meta entries (e.g. the checkpoint epoch).
META_DB = "__meta__"


@dataclass(frozen=True, slots=True)
class KeyGroupStatistics:
    """A snapshot of one store's size.

    Attributes:
        operator: The operator name.
        key_group: The key group.
        entries: Committed entries over all states (a MapState counts one per map entry).
        entries_by_state: ``(state name, committed entries)`` pairs in declaration order.
        bytes: LMDB pages in use times the page size (memory backend: encoded key and value
            bytes, meta included).
        dirty: Entries changed since the last flush.
        cached: Entries held in the in-memory cache (a MapState also counts one per key).
    """

    operator: str
    key_group: int
    entries: int
    entries_by_state: tuple[tuple[str, int], ...]
    bytes: int
    dirty: int
    cached: int


class _States:
    """Attribute access to a store's handles: ``store.states.clicks``."""

    def __init__(self, handles: Mapping[str, StateHandle]) -> None:
        self.__dict__.update(handles)

    def __getattr__(self, name: str) -> Any:
        # Only reached when the name is not a declared state.
        declared = ", ".join(sorted(self.__dict__)) or "no states"
        raise AttributeError(f"unknown state {name!r}; declared: {declared}")

    def __dir__(self) -> list[str]:
        return sorted(self.__dict__)


class KeyGroupStore:
    """All declared state of one (operator, key group).

    Returned already open by ``StateBackend.open_store``; use it as a context manager (or call
    ``close()``) to release the environment. The runtime sets ``store.key`` before calling
    user code; the handles in ``store.states`` then read and write that key's state in memory.
    ``flush()`` makes every change durable in one atomic write; nothing else writes, and
    ``close()`` does not flush.

    A store is not thread-safe: one owner (a key-group actor) uses it at a time.

    Attributes:
        operator: The operator name (a directory name under the backend's root).
        key_group: The key group this store holds.
        key: The current key; a plain attribute so setting it per record is cheap.
        states: The handles, as attributes named after the states.
    """

    __slots__ = (
        "__weakref__",
        "_cache_limit",
        "_closed",
        "_engine",
        "_handles",
        "_on_close",
        "key",
        "key_group",
        "operator",
        "states",
    )

    def __init__(
        self,
        operator: str,
        key_group: int,
        specs: Sequence[StateSpec],
        engine: Engine,
        *,
        cache_limit: int,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """Build a store over an open engine (backends do this; users call ``open_store``)."""
        self.operator = operator
        self.key_group = key_group
        self.key: Any = None
        self._engine = engine
        self._cache_limit = cache_limit
        self._on_close = on_close
        self._closed = False
        self._handles: dict[str, StateHandle] = {
            spec.name: make_handle(self, engine, spec) for spec in specs
        }
        self.states: Any = _States(self._handles)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<KeyGroupStore {self.operator}/kg-{self.key_group:05d} {state}>"

    def __enter__(self) -> KeyGroupStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(
                f"store {self.operator}/kg-{self.key_group:05d} is closed; open it again"
            )

    def _handle(self, name: str) -> StateHandle:
        try:
            return self._handles[name]
        except (KeyError, TypeError):
            declared = ", ".join(self._handles) or "no states"
            raise UnknownStateError(
                f"unknown state {name!r}; this store declares: {declared}"
            ) from None

    @property
    def path(self) -> Path | None:
        """The LMDB environment directory (None for the memory backend); valid after close."""
        return self._engine.path

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    def state(self, name: str) -> Any:
        """Return the handle of the state declared as ``name``.

        Raises:
            UnknownStateError: No state of that name is declared (a ``KeyError``).
        """
        self._check_open()
        return self._handle(name)

    def flush(self, meta: Mapping[str, Any] | None = None) -> int:
        """Write every unflushed change, and ``meta``, in one atomic write transaction.

        After a crash either all of it is committed or none of it is, so a meta entry such as
        the checkpoint epoch always describes exactly the state committed with it. When the
        cache then holds more than ``cache_limit`` entries, the oldest-loaded (now clean)
        entries are evicted until it holds half of that.

        Args:
            meta: Entries for the meta database, readable with ``read_meta``.

        Returns:
            The number of entries put or deleted (meta entries included); 0 without a write.

        Raises:
            EncodeError: A value cannot be encoded; nothing is written and the changes stay
                unflushed.
        """
        self._check_open()
        ops: list[Op] = []
        puts: list[Puts] = []
        for handle in self._handles.values():
            handle._collect(ops, puts)
        if meta:
            for name, value in meta.items():
                if not isinstance(name, str) or not name:
                    raise InvalidNameError(f"meta name must be a non-empty str; got {name!r}")
                try:
                    ops.append((PUT, META_DB, encode_key(name), encode_value(value)))
                except EncodeError as exc:
                    raise EncodeError(f"meta {name!r}: {exc}") from exc
        if not ops and not puts:
            return 0
        written = self._engine.write(ops, puts)
        for handle in self._handles.values():
            handle._flushed()
        self._evict_if_needed()
        return written

    def _evict_if_needed(self) -> None:
        counts = [(handle, handle._cached_count()) for handle in self._handles.values()]
        total = sum(count for _, count in counts)
        if total <= self._cache_limit:
            return
        excess = total - self._cache_limit // 2
        for handle, count in counts:
            handle._evict(math.ceil(count * excess / total))

    def read_meta(self, name: str, default: Any = None) -> Any:
        """Return the committed meta entry ``name``, or ``default`` if none was flushed."""
        self._check_open()
        raw = self._engine.get(META_DB, encode_key(name))
        return default if raw is None else decode_value(raw)

    def get(self, state: str, key: Any, default: Any = None) -> Any:
        """Return ``key``'s current value in ``state`` (unflushed changes included).

        Leaves ``store.key`` and the cache untouched: meant for queries and checks. A
        ListState gives a list, a MapState a dict of its entries, an AggregatingState
        ``result(acc)``; a key with no value gives ``default``.

        Raises:
            UnknownStateError: ``state`` is not declared.
            InvalidKeyError: ``key`` is not a valid key.
        """
        self._check_open()
        handle = self._handle(state)
        check_key(key)
        value = handle._read(key)
        return default if value is ABSENT else value

    def items(self, state: str) -> Iterator[tuple[Any, Any]]:
        """Iterate ``(key, value)`` over every key of ``state`` in encoded-key order.

        Committed entries are merged with unflushed changes; values are as ``get`` gives them.
        Changing the state while iterating gives an unspecified mix of old and new values.

        Raises:
            UnknownStateError: ``state`` is not declared.
        """
        self._check_open()
        return self._handle(state)._iter_items()

    def export_entries(self) -> Iterator[tuple[str, bytes, bytes]]:
        """Iterate the committed entries as ``(state name, key bytes, value bytes)``.

        Unflushed changes and meta entries are not included (flush first to include changes).
        The order is deterministic: by state name, then by key bytes. Key bytes are
        ``encode_key(key)``, or ``encode_key(key) + encode_key(map_key)`` for a MapState;
        value bytes are ``encode_value(value)``. The format is independent of LMDB, so it
        can be shipped to another host or written to a savepoint.
        """
        self._check_open()
        return self._export(sorted(self._handles))

    def _export(self, names: list[str]) -> Iterator[tuple[str, bytes, bytes]]:
        for name in names:
            for raw_key, raw_value in self._engine.scan(name, b"", None, b""):
                yield name, raw_key, raw_value

    def import_entries(self, entries: Iterable[tuple[str, bytes, bytes]]) -> int:
        """Write entries made by ``export_entries`` in one atomic transaction.

        Each entry replaces the committed value of its key; other keys are kept.

        Returns:
            The number of entries written.

        Raises:
            StoreDirtyError: The store has unflushed changes (flush or clear_all first).
            UnknownStateError: An entry names a state this store does not declare.
            DecodeError: An entry's key or value bytes are not a valid encoding; nothing is
                written.
        """
        self._check_open()
        if any(handle._dirty_count() for handle in self._handles.values()):
            raise StoreDirtyError("import_entries needs a store without unflushed changes")
        ops: list[Op] = []
        for name, raw_key, raw_value in entries:
            handle = self._handle(name)
            key_bytes, value_bytes = bytes(raw_key), bytes(raw_value)
            if isinstance(handle, MapState):
                head, tail = split_composite(key_bytes)
                decode_key(head)
                if not tail:
                    raise DecodeError(f"state {name!r}: map entry key lacks a map key")
                decode_key(tail)
            else:
                decode_key(key_bytes)
            decode_value(value_bytes)
            ops.append((PUT, name, key_bytes, value_bytes))
        if not ops:
            return 0
        written = self._engine.write(ops)
        for handle in self._handles.values():
            handle._reset()  # the caches were clean; drop them rather than patch them
        return written

    def clear_all(self) -> None:
        """Delete every state entry and meta entry, committed and unflushed, atomically."""
        self._check_open()
        self._engine.drop_all()
        for handle in self._handles.values():
            handle._reset()

    def statistics(self) -> KeyGroupStatistics:
        """Return the store's entry counts, size, dirty and cached entries."""
        self._check_open()
        by_state = tuple((name, self._engine.count(name)) for name in self._handles)
        return KeyGroupStatistics(
            operator=self.operator,
            key_group=self.key_group,
            entries=sum(count for _, count in by_state),
            entries_by_state=by_state,
            bytes=self._engine.size_bytes(),
            dirty=sum(handle._dirty_count() for handle in self._handles.values()),
            cached=sum(handle._cached_count() for handle in self._handles.values()),
        )

    def close(self) -> None:
        """Close the environment without flushing; idempotent.

        Unflushed changes are dropped. Afterwards every method and every handle method raises
        ``StoreClosedError``, and the environment can be opened again (by this or another
        backend on the same root).
        """
        if self._closed:
            return
        self._closed = True
        for handle in self._handles.values():
            handle._close()
        try:
            self._engine.close()
        finally:
            if self._on_close is not None:
                self._on_close()
