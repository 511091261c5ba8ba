"""State time-to-live: handles whose values expire (a spec with ``ttl=StateTtl(...)``).

A TTL state stores ``[value, timestamp]`` per key (the timestamp of the last write, or read
with ``update="on_read_and_write"``); the handles hand out the value alone, exactly as the
plain handles do. "Now" comes from the store: ``store.processing_time()`` or
``store.event_time()`` (the runtime sets both; this layer knows no clock). An entry is
expired once ``now - timestamp >= ttl`` (so nothing expires while "now" is ``-inf``, an event
time not known yet). It is removed:

* **on access**, with ``visibility="never_return_expired"``: reading an expired value removes
  it and reads as absent; a write then starts afresh;
* **incrementally**: :meth:`KeyGroupStore.cleanup_expired` (the runtime calls it once per
  batch with a budget proportional to the batch) pops the expired cached entries from an
  expiry queue, then scans up to ``budget`` committed entries from where the last pass
  stopped, wrapping around, so the whole state is visited again and again at a cost bounded
  per record;
* **when flushed** (so at every checkpoint): an expired changed entry is deleted, never written.

With ``visibility="return_expired_if_not_cleaned_up"`` an expired value stays readable (and
writable: a write revives it) until one of the passes above removes it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from copy import deepcopy
from itertools import islice
from typing import Any

from ._codec import (
    check_key,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
    split_composite,
)
from ._engine import DELETE, Engine, Op, Puts
from ._exceptions import EncodeError
from ._handles import (
    _PLAIN_TYPES,
    ABSENT,
    AggregatingState,
    ListState,
    MapState,
    ReducingState,
    ValueState,
    _KeyHolder,
    _MapEntry,
    _MapKey,
    _merge,
)
from ._specs import (
    EVENT_TIME_TTL,
    NEVER_RETURN_EXPIRED,
    ON_READ_AND_WRITE,
    AggregatingStateSpec,
    ListStateSpec,
    MapStateSpec,
    ReducingStateSpec,
    StateSpec,
    StateTtl,
    ValueStateSpec,
)

__all__ = (
    "TtlAggregatingState",
    "TtlListState",
    "TtlMapState",
    "TtlReducingState",
    "TtlValueState",
    "make_ttl_handle",
)

_SLOTS = (
    "_cursor",
    "_event",
    "_expiry",
    "_gone",
    "_hide",
    "_queued",
    "_refresh",
    "_seq",
    "_stamps",
    "_ttl",
    "expired",
)


class _Ttl:
    """The expiry behaviour shared by the TTL handles (mixed into a cached handle; no
    ``__slots__`` of its own: two bases with slots cannot be combined)."""

    # Provided by the cached handle this is mixed into.
    _cache: dict[Any, Any]
    _dirty: set[Any]
    _used: set[Any]
    _store: Any
    _engine: Engine
    _maybe_filled: bool
    _hits: int
    _misses: int
    name: str
    # Its own (in the concrete classes' slots).
    _cursor: bytes
    _event: bool
    _expiry: list[tuple[Any, int, Any]]
    _gone: list[Any]
    _hide: bool
    _queued: set[Any]
    _refresh: bool
    _seq: int
    _stamps: dict[Any, Any]
    _ttl: float
    expired: int

    def _init_ttl(self, ttl: StateTtl) -> None:
        self._ttl = ttl.ttl
        self._refresh = ttl.update == ON_READ_AND_WRITE
        self._hide = ttl.visibility == NEVER_RETURN_EXPIRED
        self._event = ttl.time == EVENT_TIME_TTL
        self._stamps = {}
        self._expiry = []
        self._queued = set()
        self._seq = 0
        self._cursor = b""
        self._gone = []  # keys removed since the last flush: dropped from the cache by it
        #: Entries removed because they expired (on access, by a pass, at a flush).
        self.expired = 0

    def _now(self) -> Any:
        store = self._store
        return store.event_time() if self._event else store.processing_time()

    def _stamp(self, key: Any, stamp: Any) -> None:
        self._stamps[key] = stamp
        if key not in self._queued:
            self._queued.add(key)
            self._seq += 1
            heapq.heappush(self._expiry, (stamp, self._seq, key))

    def _drop(self, key: Any) -> None:
        """Remove ``key``'s value because it expired (deleted by the next flush)."""
        self._cache[key] = ABSENT
        self._dirty.add(key)
        self._stamps.pop(key, None)
        self._gone.append(key)
        self.expired += 1

    def _flushed(self) -> None:
        super()._flushed()  # type: ignore[misc]
        cache = self._cache
        used = self._used
        for key in self._gone:  # the deletions are written: keep no marker of them
            if cache.get(key, None) is ABSENT:
                del cache[key]
                used.discard(key)
        self._gone.clear()

    def _load_all(self, keys: list[Any]) -> list[Any]:
        return [self._load(key) for key in keys]  # each value carries its stamp

    def _load(self, key: Any) -> Any:
        encoded = encode_key(key)  # also checks the key
        self._misses += 1
        raw = self._engine.get(self.name, encoded) if self._maybe_filled else None
        if raw is None:
            value = ABSENT
        else:
            value, stamp = decode_value(raw)
            self._stamp(key, stamp)
        self._cache[key] = value
        return value

    def _current(self) -> Any:
        key = self._store.key
        try:
            value = self._cache[key]
            self._hits += 1
        except KeyError:
            value = self._load(key)
        except TypeError:
            check_key(key)
            raise
        if value is ABSENT:
            return ABSENT
        now = self._now()
        if now - self._stamps[key] >= self._ttl:
            if self._hide:
                self._drop(key)
                return ABSENT
            return value
        if self._refresh and self._stamps[key] != now:
            self._stamp(key, now)
            self._dirty.add(key)
        return value

    def _set(self, value: Any) -> None:
        super()._set(value)  # type: ignore[misc]
        key = self._store.key
        if value is ABSENT:
            self._stamps.pop(key, None)
        else:
            self._stamp(key, self._now())

    def _touch(self) -> None:
        self._stamp(self._store.key, self._now())

    def _visible(self, stored: Any, stamp: Any) -> bool:
        return stored is not ABSENT and not (self._hide and self._now() - stamp >= self._ttl)

    def _read(self, key: Any) -> Any:
        try:
            stored = self._cache[key]
            stamp = self._stamps.get(key)
        except KeyError:
            raw = self._engine.get(self.name, encode_key(key))
            stored, stamp = (ABSENT, None) if raw is None else decode_value(raw)
        if not self._visible(stored, stamp):
            return ABSENT
        return self._present(stored)  # type: ignore[attr-defined]

    def _iter_items(self) -> Iterator[tuple[Any, Any]]:
        cache = self._cache
        stamps = self._stamps
        overlay = sorted(
            (
                encode_key(key),
                key,
                ABSENT if cache[key] is ABSENT else [cache[key], stamps[key]],
            )
            for key in self._dirty
        )
        committed = self._engine.scan(self.name, b"", None, b"")
        for _encoded, key, (stored, stamp) in _merge(committed, 0, overlay):
            if self._visible(stored, stamp):
                yield key, self._present(stored)  # type: ignore[attr-defined]

    def _collect(self, ops: list[Op], puts: list[Puts]) -> None:
        dirty = self._dirty
        if not dirty:
            return
        name = self.name
        cache = self._cache
        stamps = self._stamps
        now = self._now()
        ttl = self._ttl
        keys: list[bytes] = []
        values: list[bytes] = []
        for key in dirty:
            encoded = encode_key(key)
            value = cache[key]
            if value is not ABSENT and now - stamps[key] >= ttl:
                self._drop(key)  # expired: a flush (a checkpoint) never writes it
                value = ABSENT
            if value is ABSENT:
                ops.append((DELETE, name, encoded, None))
                continue
            try:
                values.append(encode_value([value, stamps[key]]))
            except EncodeError as exc:
                raise self._encode_error(key, value) from exc  # type: ignore[attr-defined]
            keys.append(encoded)
        if keys:
            puts.append((name, keys, values))

    def _evict(self, count: int) -> None:
        cache = self._cache
        stamps = self._stamps
        dirty = self._dirty
        for key in list(islice((key for key in cache if key not in dirty), count)):
            del cache[key]
            stamps.pop(key, None)

    def _reset(self) -> None:
        super()._reset()  # type: ignore[misc]
        self._stamps.clear()
        self._expiry.clear()
        self._queued.clear()
        self._gone.clear()
        self._cursor = b""

    def _cleanup(self, budget: int | None) -> int:
        """Remove expired entries: the cached ones due in the expiry queue, then up to
        ``budget`` committed ones from where the last pass stopped (None: all)."""
        before = self.expired
        now = self._now()
        ttl = self._ttl
        cache = self._cache
        stamps = self._stamps
        expiry = self._expiry
        queued = self._queued
        while expiry and now - expiry[0][0] >= ttl:
            _stamp, _seq, key = heapq.heappop(expiry)
            queued.discard(key)
            stamp = stamps.get(key)
            if stamp is None or cache.get(key, ABSENT) is ABSENT:
                continue  # removed or evicted meanwhile
            if now - stamp >= ttl:
                self._drop(key)
            else:  # refreshed since it was queued
                self._stamp(key, stamp)
        if self._maybe_filled:
            scan = self._engine.scan(self.name, self._cursor, None, b"")
            entries = list(scan if budget is None else islice(scan, budget))
            if budget is None or len(entries) < budget:
                self._cursor = b""  # wrapped around
            else:
                self._cursor = entries[-1][0] + b"\x00"  # just after the last one seen
            for raw_key, raw_value in entries:
                key = decode_key(raw_key)
                if key in cache:
                    continue  # the cached entry is newer: the queue above covers it
                _value, stamp = decode_value(raw_value)
                if now - stamp >= ttl:
                    self._drop(key)
        return self.expired - before


class TtlValueState(_Ttl, ValueState):
    """A :class:`ValueState` whose values expire (see the module docstring)."""

    __slots__ = _SLOTS

    def __init__(self, store: _KeyHolder, engine: Engine, spec: ValueStateSpec) -> None:
        ValueState.__init__(self, store, engine, spec)
        assert spec.ttl is not None
        self._init_ttl(spec.ttl)

    def value(self) -> Any:
        value = self._current()
        if value is ABSENT:  # the default (a copy of it when mutable)
            return deepcopy(self._default) if self._copy_default else self._default
        return value

    def update(self, value: Any) -> None:
        super().update(value)
        self._touch()

    # The bulk methods go key by key here, through the expiry checks and stamps above.
    def values_of(self, keys: Iterable[Any]) -> dict[Any, Any]:
        store = self._store
        current = store.key
        out = {}
        try:
            for key in keys:
                store.key = key
                out[key] = self.value()
        finally:
            store.key = current
        return out

    def update_all(self, values: Mapping[Any, Any]) -> None:
        self._each(values.items())

    def clear_all(self, keys: Iterable[Any]) -> None:
        self._each((key, ABSENT) for key in keys)

    def _each(self, items: Iterable[tuple[Any, Any]]) -> None:
        store = self._store
        current = store.key
        try:
            for key, value in items:
                store.key = key
                if value is ABSENT:
                    self.clear()
                else:
                    self.update(value)
        finally:
            store.key = current


class TtlListState(_Ttl, ListState):
    """A :class:`ListState` whose lists expire as a whole (see the module docstring)."""

    __slots__ = _SLOTS

    def __init__(self, store: _KeyHolder, engine: Engine, spec: ListStateSpec) -> None:
        ListState.__init__(self, store, engine, spec)
        assert spec.ttl is not None
        self._init_ttl(spec.ttl)

    def add(self, value: Any) -> None:
        super().add(value)
        self._touch()

    def add_all(self, values: Any) -> None:
        new = list(values)
        super().add_all(new)
        if new:
            self._touch()


class TtlReducingState(_Ttl, ReducingState):
    """A :class:`ReducingState` whose accumulators expire (see the module docstring)."""

    __slots__ = _SLOTS

    def __init__(self, store: _KeyHolder, engine: Engine, spec: ReducingStateSpec) -> None:
        ReducingState.__init__(self, store, engine, spec)
        assert spec.ttl is not None
        self._init_ttl(spec.ttl)


class TtlAggregatingState(_Ttl, AggregatingState):
    """An :class:`AggregatingState` whose accumulators expire (see the module docstring)."""

    __slots__ = _SLOTS

    def __init__(self, store: _KeyHolder, engine: Engine, spec: AggregatingStateSpec) -> None:
        AggregatingState.__init__(self, store, engine, spec)
        assert spec.ttl is not None
        self._init_ttl(spec.ttl)


class TtlMapState(MapState):
    """A :class:`MapState` whose entries expire one by one (see the module docstring).

    Each entry is stored as ``[value, timestamp]``; the methods hand out the value alone. A
    ``put`` stamps its entry; with ``update="on_read_and_write"`` every entry read (``get``,
    ``contains``, and each entry ``items`` / ``keys`` / ``values`` return) is stamped again.
    An expired entry is removed on access (``never_return_expired``), by
    :meth:`KeyGroupStore.cleanup_expired` (the cached entries due in an expiry queue, then a
    budget of committed entries from where the last pass stopped) and when flushed.
    """

    __slots__ = (
        "_cursor",
        "_event",
        "_expiry",
        "_gone",
        "_hide",
        "_queued",
        "_refresh",
        "_seq",
        "_ttl",
        "expired",
    )

    def __init__(self, store: _KeyHolder, engine: Engine, spec: MapStateSpec) -> None:
        super().__init__(store, engine, spec)
        ttl = spec.ttl
        assert ttl is not None
        self._ttl = ttl.ttl
        self._refresh = ttl.update == ON_READ_AND_WRITE
        self._hide = ttl.visibility == NEVER_RETURN_EXPIRED
        self._event = ttl.time == EVENT_TIME_TTL
        # (timestamp, sequence, key, map key) of the cached entries written, each once (in
        # _queued): an entry stamped again since it was queued is queued again when it comes up.
        self._expiry: list[tuple[Any, int, Any, Any]] = []
        self._queued: set[tuple[Any, Any]] = set()
        self._seq = 0
        self._cursor = b""
        # (key, map key) of entries removed since the last flush: dropped from the cache by it.
        self._gone: list[tuple[Any, Any]] = []
        #: Entries removed because they expired (on access, by a pass, at a flush).
        self.expired = 0

    def _now(self) -> Any:
        store: Any = self._store
        return store.event_time() if self._event else store.processing_time()

    def _expired(self, stored: Any, now: Any) -> bool:
        return bool(now - stored[1] >= self._ttl)

    def _stamped(self, user_key: Any, value: Any, now: Any) -> None:
        """Write ``value`` stamped ``now`` under ``user_key`` in the current key's map."""
        self._write(user_key, [value, now])
        key = self._store.key
        self._queue(key, user_key, now)

    def _queue(self, key: Any, user_key: Any, stamp: Any) -> None:
        item = (key, user_key)
        if item not in self._queued:
            self._queued.add(item)
            self._seq += 1
            heapq.heappush(self._expiry, (stamp, self._seq, key, user_key))

    def _live(self, user_key: Any, stored: Any, now: Any) -> Any:
        """What a read of ``stored`` (the current key's entry) sees: ABSENT if expired and
        hidden (the entry is removed then), else the value (stamped again if reads count)."""
        if stored is ABSENT:
            return ABSENT
        if self._expired(stored, now):
            if self._hide:
                self._expire(user_key)
                return ABSENT
            return stored[0]
        if self._refresh and stored[1] != now:
            self._stamped(user_key, stored[0], now)
        return stored[0]

    def get(self, user_key: Any, default: Any = None) -> Any:
        stored = self._lookup(self._entry(), user_key)
        value = self._live(user_key, stored, self._now())
        return default if value is ABSENT else value

    def contains(self, user_key: Any) -> bool:
        stored = self._lookup(self._entry(), user_key)
        return self._live(user_key, stored, self._now()) is not ABSENT

    def put(self, user_key: Any, value: Any) -> None:
        if type(value) not in _PLAIN_TYPES:
            try:
                encode_value(value)
            except EncodeError as exc:
                raise self._encode_error(_MapKey((self._store.key, user_key)), value) from exc
        self._stamped(user_key, value, self._now())

    def put_all(self, entries: Any) -> None:
        for user_key, value in entries.items():
            self.put(user_key, value)

    def items(self, start: Any = None, stop: Any = None) -> list[tuple[Any, Any]]:
        now = self._now()
        out = []
        for user_key, stored in super().items(start, stop):
            value = self._live(user_key, stored, now)
            if value is not ABSENT:
                out.append((user_key, value))
        return out

    def is_empty(self) -> bool:
        """Whether no entry is visible (expired ones found are removed, if hidden; reading
        no value, this stamps none)."""
        now = self._now()
        empty = True
        for user_key, stored in super().items():
            if not self._expired(stored, now):
                empty = False
            elif self._hide:
                self._expire(user_key)
            else:
                empty = False
        return empty

    def _read(self, key: Any) -> Any:
        now = self._now()
        hide = self._hide
        merged = self._sorted(key, self._maps.get(key), None, None, populate=False)
        visible = {
            user_key: stored[0]
            for user_key, stored in merged
            if not (hide and self._expired(stored, now))
        }
        return visible or ABSENT

    def _expire(self, user_key: Any) -> None:
        """Remove the current key's expired entry ``user_key``."""
        self._write(user_key, ABSENT)
        self._gone.append((self._store.key, user_key))
        self.expired += 1

    def _remove(self, key: Any, user_key: Any) -> None:
        """Remove an expired entry of ``key`` (any key, not only the current one)."""
        entry = self._maps.get(key)
        if entry is None:
            entry = self._maps[key] = _MapEntry(complete=False)
        if user_key not in entry.known:
            self._known_total += 1
        entry.known[user_key] = ABSENT
        if user_key not in entry.dirty:
            entry.dirty.add(user_key)
            self._dirty_total += 1
        self._dirty_keys.add(key)
        self._gone.append((key, user_key))
        self.expired += 1

    def _cached(self, key: Any, user_key: Any) -> Any:
        """The cached stored entry (ABSENT: removed), or None when it is not cached."""
        entry = self._maps.get(key)
        return None if entry is None else entry.known.get(user_key)

    def _cleanup(self, budget: int | None) -> int:
        """Remove expired entries: the cached ones due in the expiry queue, then up to
        ``budget`` committed ones from where the last pass stopped (None: all)."""
        before = self.expired
        now = self._now()
        ttl = self._ttl
        expiry = self._expiry
        queued = self._queued
        while expiry and now - expiry[0][0] >= ttl:
            _stamp, _seq, key, user_key = heapq.heappop(expiry)
            queued.discard((key, user_key))
            stored = self._cached(key, user_key)
            if stored is None or stored is ABSENT:
                continue  # evicted (the committed pass finds it) or removed
            if self._expired(stored, now):
                self._remove(key, user_key)
            else:  # stamped again since it was queued
                self._queue(key, user_key, stored[1])
        if self._maybe_filled:
            scan = self._engine.scan(self.name, self._cursor, None, b"")
            entries = list(scan if budget is None else islice(scan, budget))
            if budget is None or len(entries) < budget:
                self._cursor = b""  # wrapped around
            else:
                self._cursor = entries[-1][0] + b"\x00"  # just after the last one seen
            for raw_key, raw_value in entries:
                head, tail = split_composite(raw_key)
                key, user_key = decode_key(head), decode_key(tail)
                stored = self._cached(key, user_key)
                if stored is ABSENT:
                    continue  # removed meanwhile
                if stored is None:
                    stored = decode_value(raw_value)
                if self._expired(stored, now):
                    self._remove(key, user_key)
        return self.expired - before

    def _collect(self, ops: list[Op], puts: list[Puts]) -> None:
        now = self._now()
        maps = self._maps
        for key in self._dirty_keys:  # a flush (a checkpoint) never writes an expired entry
            known = maps[key].known
            for user_key in maps[key].dirty:
                stored = known[user_key]
                if stored is not ABSENT and self._expired(stored, now):
                    known[user_key] = ABSENT
                    self._gone.append((key, user_key))
                    self.expired += 1
        super()._collect(ops, puts)

    def _flushed(self) -> None:
        super()._flushed()
        maps = self._maps
        for key, user_key in self._gone:  # the deletions are written: keep no marker of them
            entry = maps.get(key)
            if entry is not None and entry.known.get(user_key, None) is ABSENT:
                del entry.known[user_key]
                self._known_total -= 1
                if not entry.known:
                    del maps[key]  # read again from the engine if the key comes back
        self._gone.clear()

    def _reset(self) -> None:
        super()._reset()
        self._expiry.clear()
        self._queued.clear()
        self._gone.clear()
        self._cursor = b""


TtlHandle = TtlValueState | TtlListState | TtlReducingState | TtlAggregatingState | TtlMapState


def make_ttl_handle(store: _KeyHolder, engine: Engine, spec: StateSpec) -> TtlHandle:
    """The TTL handle for ``spec`` (whose ``ttl`` is set)."""
    if isinstance(spec, MapStateSpec):
        return TtlMapState(store, engine, spec)
    if isinstance(spec, ValueStateSpec):
        return TtlValueState(store, engine, spec)
    if isinstance(spec, ListStateSpec):
        return TtlListState(store, engine, spec)
    if isinstance(spec, ReducingStateSpec):
        return TtlReducingState(store, engine, spec)
    assert isinstance(spec, AggregatingStateSpec)
    return TtlAggregatingState(store, engine, spec)
