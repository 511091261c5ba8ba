"""State handles: the per-state objects user code calls once or twice per record.

Every handle works on the store's *current* key (``store.key``, set by the runtime before it
calls user code). Hot state lives in a per-handle dict keyed by the Python key object, with a
set of dirty keys; nothing is encoded or written until ``KeyGroupStore.flush()``. A cache hit
costs a dict lookup: no LMDB transaction and no CBOR encoding.

Keys are checked (``check_key``) the first time a handle meets them. Python treats ``1``,
``1.0`` and ``True`` as the same dict key, so once ``1`` is cached, ``True`` would reach its
entry without a check: the runtime validates keys when it routes them, so the store does not pay
for a second check per record.

Values are kept by reference: ``ValueState.value()`` returns the object given to ``update()``.
Mutating a value in place is not a write; call ``update()`` again after mutating. Values
round-trip through CBOR when they are evicted or reloaded, so a tuple comes back as a list.

Values are encoded at flush, not per write (encoding an int costs about as much as the rest of
a keyed count's record; a growing list would cost its whole length at every append). A write
checks only the value's own type, in a frozenset (~25 ns): a value that is not a plain CBOR
scalar or container (a dataclass, a datetime, ...) is encoded once right there, and if that
fails the write raises :class:`StateEncodeError`, so the record that made it goes to the dead
letters with its position. Something unencodable *inside* a list, tuple or dict is found by
the next flush, which raises :class:`StateEncodeError` naming the operator, key group, state,
key and the type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from copy import deepcopy
from itertools import chain, compress, islice, repeat
from operator import is_, is_not
from typing import Any, NoReturn, Protocol

from ._codec import (
    check_key,
    check_keys,
    decode_key,
    decode_value,
    encode_key,
    encode_keys,
    encode_value,
    encode_values,
    split_composite,
)
from ._engine import DELETE, DELETE_PREFIX, PUT, Engine, Op, Puts
from ._exceptions import EncodeError, StateEncodeError, StoreClosedError
from ._specs import (
    AggregatingStateSpec,
    ListStateSpec,
    MapStateSpec,
    ReducingStateSpec,
    StateSpec,
    ValueStateSpec,
)

__all__ = (
    "AggregatingState",
    "ListState",
    "MapState",
    "ReducingState",
    "StateHandle",
    "ValueState",
    "make_handle",
)


class _Absent:
    """The cached marker for "no value": a key that was loaded and is absent, or cleared."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()
#: What ``dict.get`` returns for a key that is not cached (``values_of``).
_NOT_CACHED: Any = object()

#: Key types whose objects ``encode_keys`` may encode unchecked (see ``_CachedHandle._collect``).
_SCALAR_KEY_TYPES = frozenset((str, int, bytes))


class _KeyHolder(Protocol):
    key: Any
    operator: str
    key_group: int


#: Values of these types need no check when written (whatever is inside a container is checked
#: at flush); any other value is encoded once when it is written.
_PLAIN_TYPES = frozenset((type(None), bool, int, float, str, bytes, list, tuple, dict))


def _unencodable(value: Any, depth: int = 0) -> str | None:
    """Describe what cannot be encoded in ``value`` ("Thing", "list holding a Thing")."""
    kind = type(value)
    if kind in (list, tuple) and depth < 64:
        for item in value:
            inner = _unencodable(item, depth + 1)
            if inner is not None:
                return inner if depth else f"{kind.__name__} holding {_article(inner)} {inner}"
        return None
    if kind is dict and depth < 64:
        for item in chain.from_iterable(value.items()):
            inner = _unencodable(item, depth + 1)
            if inner is not None:
                return inner if depth else f"dict holding {_article(inner)} {inner}"
        return None
    if kind in _PLAIN_TYPES:
        return None
    try:
        encode_value(value)
    except EncodeError:
        return kind.__qualname__
    return None


def _state_encode_error(store: _KeyHolder, state: str, key: Any, value: Any) -> StateEncodeError:
    what = _unencodable(value) or type(value).__qualname__
    where = f"key {key[0]!r}, map key {key[1]!r}" if isinstance(key, _MapKey) else f"key {key!r}"
    culprit = what.rsplit(" ", 1)[-1]
    return StateEncodeError(
        f"state {state!r} of operator {store.operator!r} (key group {store.key_group}), {where}:"
        f" cannot encode {_article(what)} {what} as CBOR; state values must be None, bool, int,"
        " float, str, bytes, or lists, tuples and dicts of those: convert the"
        f" {culprit} (to a dict, a str, ...) before storing it",
        operator=store.operator,
        key_group=store.key_group,
        state=state,
        key=tuple(key) if isinstance(key, _MapKey) else key,
        value_type=culprit,
    )


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


_INT = frozenset((int,))


class _MapKey(tuple[Any, Any]):
    """(key, map key) of a MapState entry, for error messages."""

    __slots__ = ()


def _closed(*_args: object, **_kwargs: object) -> NoReturn:
    raise StoreClosedError("the store is closed; open it again to use its state")


class _ClosedDict(dict[Any, Any]):
    """Stands in for a closed handle's cache so the hot path needs no "is closed" check."""

    __getitem__ = __setitem__ = __contains__ = get = _closed


class _ClosedSet(set[Any]):
    """Stands in for a closed handle's dirty set."""

    add = __contains__ = _closed


def _merge(
    committed: Iterator[tuple[bytes, bytes]],
    skip: int,
    overlay: list[tuple[bytes, Any, Any]],
) -> Iterator[tuple[bytes, Any, Any]]:
    """Merge committed ``(key_bytes, value_bytes)`` with a sorted ``(bytes, key, value)`` overlay.

    ``skip`` leading bytes of each committed key are a prefix to strip before comparing. The
    overlay wins on equal keys and its ABSENT values hide committed entries. Yields
    ``(encoded, key, value)`` in byte order, without ABSENT values.
    """
    position = 0
    count = len(overlay)
    for raw_key, raw_value in committed:
        encoded = raw_key[skip:]
        while position < count and overlay[position][0] < encoded:
            if overlay[position][2] is not ABSENT:
                yield overlay[position]
            position += 1
        if position < count and overlay[position][0] == encoded:
            if overlay[position][2] is not ABSENT:
                yield overlay[position]
            position += 1
            continue
        yield encoded, decode_key(encoded), decode_value(raw_value)
    for item in islice(overlay, position, None):
        if item[2] is not ABSENT:
            yield item


class _Handle(ABC):
    """What every handle shares: the store's key, the engine, the state's database name."""

    __slots__ = ("_engine", "_hits", "_maybe_filled", "_misses", "_store", "name")

    def __init__(self, store: _KeyHolder, engine: Engine, name: str) -> None:
        self._store = store
        self._engine = engine
        self.name = name
        # Reads answered from memory and reads that went to the engine, since the store
        # last collected them (``KeyGroupStore.report_usage``).
        self._hits = 0
        self._misses = 0
        # False while the database is known to be empty: misses then skip the read txn.
        self._maybe_filled = engine.count(name) > 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def _encode_error(self, key: Any, value: Any) -> StateEncodeError:
        return _state_encode_error(self._store, self.name, key, value)

    def _check_value(self, value: Any) -> None:
        """Raise StateEncodeError now if ``value`` (not a plain CBOR type) cannot be encoded."""
        try:
            encode_value(value)
        except EncodeError as exc:
            raise self._encode_error(self._store.key, value) from exc

    # The store drives these; every state type implements them.
    @abstractmethod
    def _collect(self, ops: list[Op], puts: list[Puts]) -> None:
        """Append this state's unflushed changes as write ops (deletes, map ops) and batch puts."""

    @abstractmethod
    def _flushed(self) -> None:
        """Forget the unflushed changes: the flush that collected them committed."""

    @abstractmethod
    def _dirty_count(self) -> int:
        """How many keys have unflushed changes."""

    @abstractmethod
    def _cached_count(self) -> int:
        """How many keys the cache holds."""

    @abstractmethod
    def _evict(self, count: int) -> None:
        """Drop about ``count`` clean cache entries, oldest-loaded first (never an entry
        with unflushed changes: it may be called between flushes)."""

    @abstractmethod
    def _reset(self) -> None:
        """Forget cached and unflushed entries (the store dropped all state)."""

    @abstractmethod
    def _close(self) -> None:
        """Release the cache; the store is closing."""

    @abstractmethod
    def _read(self, key: Any) -> Any:
        """Return the user-visible value of ``key`` (ABSENT if none) without caching it."""

    @abstractmethod
    def _iter_items(self) -> Iterator[tuple[Any, Any]]:
        """Every (key, user-visible value), committed merged with unflushed, in key order."""


class _CachedHandle(_Handle):
    """A handle holding one value per key in ``_cache`` (ABSENT when there is none)."""

    __slots__ = ("_cache", "_dirty", "_used")

    def __init__(self, store: _KeyHolder, engine: Engine, name: str) -> None:
        super().__init__(store, engine, name)
        self._cache: dict[Any, Any] = {}
        self._dirty: set[Any] = set()
        # The keys read from the cache (hits) since an eviction last passed over them: in
        # use, so an eviction moves them to the back instead (CLOCK's reference bits). A key
        # loaded from the engine starts without one: it has to be asked for again first.
        self._used: set[Any] = set()

    def _current(self) -> Any:
        """Return the cached entry of the current key, loading it on a miss."""
        key = self._store.key
        try:
            value = self._cache[key]
        except KeyError:
            return self._load(key)
        except TypeError:
            check_key(key)  # an unhashable key: say which type and why
            raise
        self._hits += 1
        self._used.add(key)
        return value

    def _load(self, key: Any) -> Any:
        encoded = encode_key(key)  # also checks the key
        self._misses += 1
        raw = self._engine.get(self.name, encoded) if self._maybe_filled else None
        value = ABSENT if raw is None else decode_value(raw)
        self._cache[key] = value
        return value

    def _load_all(self, keys: list[Any]) -> list[Any]:
        """``[self._load(key) for key in keys]``: one engine call for all of them."""
        if set(map(type, keys)) <= _SCALAR_KEY_TYPES:
            check_keys(keys)
            encoded = encode_keys(keys)
        else:
            encoded = list(map(encode_key, keys))  # checks each key
        self._misses += len(keys)
        if self._maybe_filled:
            values = [
                ABSENT if raw is None else decode_value(raw)
                for raw in self._engine.get_many(self.name, encoded)
            ]
        else:
            values = [ABSENT] * len(keys)
        self._cache.update(zip(keys, values, strict=True))
        return values

    def _set(self, value: Any) -> None:
        key = self._store.key
        cache = self._cache
        try:
            if key not in cache:
                check_key(key)
        except TypeError:
            check_key(key)
            raise
        cache[key] = value
        self._dirty.add(key)

    def clear(self) -> None:
        """Remove the current key's value; the removal is persisted by the next flush."""
        self._set(ABSENT)

    def _present(self, stored: Any) -> Any:
        """Turn a stored value into what readers see."""
        return stored

    def _collect(self, ops: list[Op], puts: list[Puts]) -> None:
        dirty = self._dirty
        if not dirty:
            return
        name = self.name
        cache = self._cache
        # Whole lists through C-level loops: a flush may carry hundreds of thousands of keys.
        if set(map(type, dirty)) <= _SCALAR_KEY_TYPES:
            # Such keys passed check_key when they entered (an equal key of another type,
            # such as True for 1, would show here as a bool), so they encode unchecked.
            if len(dirty) == len(cache):
                # Every cached key is dirty (dirty keys are always cached): walk the cache
                # in memory order rather than look each key up.
                keys = list(cache)
                values = list(cache.values())
            else:
                keys = list(dirty)
                values = list(map(cache.__getitem__, keys))
            encoded = encode_keys(keys)
        else:
            keys = list(dirty)
            values = list(map(cache.__getitem__, keys))
            encoded = list(map(encode_key, keys))  # tuples: check every one as before
        if any(map(is_, values, repeat(ABSENT))):
            present = list(map(is_not, values, repeat(ABSENT)))
            for key_bytes, value in zip(encoded, values, strict=True):
                if value is ABSENT:
                    ops.append((DELETE, name, key_bytes, None))
            keys = list(compress(keys, present))
            values = list(compress(values, present))
            encoded = list(compress(encoded, present))
            if not values:
                return
        try:
            encoded_values = encode_values(values)
        except EncodeError:
            for key, value in zip(keys, values, strict=True):
                try:
                    encode_value(value)
                except EncodeError as exc:
                    raise self._encode_error(key, value) from exc
            raise
        puts.append((name, encoded, encoded_values))

    def _flushed(self) -> None:
        if self._dirty:
            self._maybe_filled = True
            self._dirty = set()

    def _dirty_count(self) -> int:
        return len(self._dirty)

    def _cached_count(self) -> int:
        return len(self._cache)

    def _evict(self, count: int) -> None:
        """Drop ``count`` clean entries, oldest first, but not those read from the cache since
        an eviction last passed over them unless nothing else is left, and never a dirty one:
        the used and dirty keys it passes over move to the back of the cache (a second
        chance, as in CLOCK: a key in use keeps moving back, a key no longer used reaches the
        front again and goes). A key read once from the engine and not asked for again goes
        first: under a skewed workload the one-off keys of the tail make way, the keys read
        again and again stay. Walks the cache only as far as it needs."""
        cache = self._cache
        used = self._used
        dirty = self._dirty
        if not used and not dirty:
            victims = list(islice(cache, count))
        else:
            victims = []
            spared = []
            for key in cache:
                if key in used or key in dirty:
                    spared.append(key)
                else:
                    victims.append(key)
                    if len(victims) >= count:
                        break
            if len(victims) < count:  # only used keys are left to go
                gone = list(islice((k for k in spared if k not in dirty), count - len(victims)))
                if gone:
                    used.difference_update(gone)  # the set must not keep them alive
                    taken = set(gone)
                    spared = [key for key in spared if key not in taken]
                    victims += gone
            for key in spared:
                cache[key] = cache.pop(key)
            # Their second chance is taken: the next pass takes them unless read again.
            used.difference_update(spared)
        for key in victims:
            del cache[key]

    def _reset(self) -> None:
        self._cache.clear()
        self._dirty.clear()
        self._used = set()
        self._maybe_filled = self._engine.count(self.name) > 0

    def _close(self) -> None:
        self._cache = _ClosedDict()
        self._dirty = _ClosedSet()
        self._used = set()

    def _read(self, key: Any) -> Any:
        try:
            stored = self._cache[key]
        except KeyError:
            raw = self._engine.get(self.name, encode_key(key))
            stored = ABSENT if raw is None else decode_value(raw)
        return ABSENT if stored is ABSENT else self._present(stored)

    def _iter_items(self) -> Iterator[tuple[Any, Any]]:
        cache = self._cache
        overlay = sorted((encode_key(key), key, cache[key]) for key in self._dirty)
        committed = self._engine.scan(self.name, b"", None, b"")
        for _encoded, key, stored in _merge(committed, 0, overlay):
            yield key, self._present(stored)


_IMMUTABLE_SCALARS = frozenset((type(None), bool, int, float, complex, str, bytes))


def _is_immutable(value: Any) -> bool:
    """Whether ``value`` can never change: immutable scalars and tuples/frozensets of those."""
    kind = type(value)
    if kind in _IMMUTABLE_SCALARS:
        return True
    if kind is tuple or kind is frozenset:
        return all(map(_is_immutable, value))
    return False


class ValueState(_CachedHandle):
    """One value per key. ``value()`` of a key never written (or cleared) is the spec default.

    Every key starts from its own copy of the default: ``value()`` of a key with no value
    returns ``copy.deepcopy(default)`` (the default itself when it is immutable, such as
    ``0``, ``None`` or a tuple of str), so ``default=[]`` or ``default={}`` is safe to mutate
    and ``update()``. Once a key has a value, ``value()`` returns the stored object itself (no
    copy): treat it as immutable, or call ``update()`` after mutating it so the change is
    flushed.
    """

    __slots__ = ("_copy_default", "_default")

    def __init__(self, store: _KeyHolder, engine: Engine, spec: ValueStateSpec) -> None:
        super().__init__(store, engine, spec.name)
        self._default = spec.default
        self._copy_default = not _is_immutable(spec.default)

    def value(self) -> Any:
        """Return the current key's value, or the spec's default if it has none."""
        key = self._store.key
        try:
            value = self._cache[key]
            self._hits += 1
            self._used.add(key)
        except KeyError:
            value = self._load(key)
        except TypeError:
            check_key(key)
            raise
        if value is ABSENT:
            return deepcopy(self._default) if self._copy_default else self._default
        return value

    def update(self, value: Any) -> None:
        """Set the current key's value (persisted by the next flush).

        Raises:
            StateEncodeError: ``value`` is not a plain CBOR type and cannot be encoded (what
                is inside a list, tuple or dict is checked by the next flush).
        """
        if type(value) not in _PLAIN_TYPES:
            self._check_value(value)
        key = self._store.key
        cache = self._cache
        try:
            if key not in cache:
                check_key(key)
        except TypeError:
            check_key(key)
            raise
        cache[key] = value
        self._dirty.add(key)

    def values_of(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """Every key's value at once (the default for a key without one): a whole batch's
        distinct keys, without setting ``store.key`` for each (the columnar operators).

        The cache is read in C (``map(cache.get, ...)``); Python runs only for the keys that
        are not cached (read from the engine) or have no value (the default)."""
        cache = self._cache
        keys = list(keys)
        found = list(map(cache.get, keys, repeat(_NOT_CACHED)))
        hits = len(keys)
        if any(map(is_, found, repeat(_NOT_CACHED))):  # in C: all cached is the common case
            self._used.update(compress(keys, map(is_not, found, repeat(_NOT_CACHED))))
            missing = [key for key, value in zip(keys, found, strict=True) if value is _NOT_CACHED]
            self._load_all(missing)  # checks the keys; one read transaction for all
            found = list(map(cache.__getitem__, keys))
            hits -= len(missing)
        else:
            self._used.update(keys)
        self._hits += hits
        if any(map(is_, found, repeat(ABSENT))):
            default, copy = self._default, self._copy_default
            found = [
                (deepcopy(default) if copy else default) if value is ABSENT else value
                for value in found
            ]
        return dict(zip(keys, found, strict=True))

    def update_all(self, values: Mapping[Any, Any]) -> None:
        """Set many keys' values at once (each checked as ``update`` checks one)."""
        cache = self._cache
        if not all(map(cache.__contains__, values)):
            for key in values:
                if key not in cache:
                    check_key(key)
        if not set(map(type, values.values())) <= _PLAIN_TYPES:
            for value in values.values():
                if type(value) not in _PLAIN_TYPES:
                    self._check_value(value)
        cache.update(values)
        self._dirty.update(values)

    def clear_all(self, keys: Iterable[Any]) -> None:
        """Remove many keys' values at once (``clear`` of each, without setting the
        store's current key)."""
        cache = self._cache
        keys = list(keys)
        if not all(map(cache.__contains__, keys)):
            for key in keys:
                if key not in cache:
                    check_key(key)
        cache.update(dict.fromkeys(keys, ABSENT))
        self._dirty.update(keys)


class ListState(_CachedHandle):
    """A list per key. An absent key reads as ``[]``; an empty list is stored as absent.

    ``get()`` returns a fresh list each call: mutating it never changes the state (use
    ``update()``). The items themselves are shared, not copied.
    """

    __slots__ = ()

    def __init__(self, store: _KeyHolder, engine: Engine, spec: ListStateSpec) -> None:
        super().__init__(store, engine, spec.name)

    def get(self) -> list[Any]:
        """Return a copy of the current key's list (``[]`` if it has none)."""
        stored = self._current()
        return [] if stored is ABSENT else list(stored)

    def add(self, value: Any) -> None:
        """Append ``value`` to the current key's list (checked as ``ValueState.update`` does)."""
        if type(value) not in _PLAIN_TYPES:
            self._check_value(value)
        stored = self._current()
        if stored is ABSENT:
            self._set([value])
        else:
            stored.append(value)  # the cached list is never handed out, so this is private
            self._dirty.add(self._store.key)

    def add_all(self, values: Iterable[Any]) -> None:
        """Append every item of ``values`` to the current key's list."""
        new = list(values)
        if not new:
            return
        self._check_items(new)
        stored = self._current()
        if stored is ABSENT:
            self._set(new)
        else:
            stored.extend(new)
            self._dirty.add(self._store.key)

    def update(self, values: Iterable[Any]) -> None:
        """Replace the current key's list with a copy of ``values`` (empty clears it)."""
        new = list(values)
        self._check_items(new)
        self._set(new if new else ABSENT)

    def _check_items(self, items: list[Any]) -> None:
        if not set(map(type, items)) <= _PLAIN_TYPES:
            for item in items:
                if type(item) not in _PLAIN_TYPES:
                    self._check_value(item)

    def _present(self, stored: Any) -> Any:
        return list(stored)


class ReducingState(_CachedHandle):
    """One value per key folded with the spec's ``reduce``; ``get()`` is None when empty."""

    __slots__ = ("_reduce",)

    def __init__(self, store: _KeyHolder, engine: Engine, spec: ReducingStateSpec) -> None:
        super().__init__(store, engine, spec.name)
        self._reduce = spec.reduce

    def get(self) -> Any:
        """Return the accumulated value, or None if nothing was added since the last clear."""
        stored = self._current()
        return None if stored is ABSENT else stored

    def add(self, value: Any) -> None:
        """Fold ``value`` in: the first value is stored as is, then ``reduce(acc, value)``."""
        stored = self._current()
        acc = value if stored is ABSENT else self._reduce(stored, value)
        if type(acc) not in _PLAIN_TYPES:
            self._check_value(acc)
        self._set(acc)


class AggregatingState(_CachedHandle):
    """An accumulator per key built with the spec's ``create``/``add``, read via ``result``."""

    __slots__ = ("_add", "_create", "_result")

    def __init__(self, store: _KeyHolder, engine: Engine, spec: AggregatingStateSpec) -> None:
        super().__init__(store, engine, spec.name)
        self._create: Callable[[], Any] = spec.create
        self._add: Callable[[Any, Any], Any] = spec.add
        self._result: Callable[[Any], Any] = spec.result

    def get(self) -> Any:
        """Return ``result(acc)``, or None if nothing was added since the last clear."""
        stored = self._current()
        return None if stored is ABSENT else self._result(stored)

    def add(self, value: Any) -> None:
        """Set ``acc = add(acc, value)``, starting from ``create()`` for an empty key."""
        stored = self._current()
        acc = self._add(self._create() if stored is ABSENT else stored, value)
        if type(acc) not in _PLAIN_TYPES:
            self._check_value(acc)
        self._set(acc)

    def _present(self, stored: Any) -> Any:
        return self._result(stored)


class _MapEntry:
    """The cached part of one key's map."""

    __slots__ = ("cleared", "complete", "dirty", "known")

    def __init__(self, complete: bool) -> None:
        self.known: dict[Any, Any] = {}  # map key -> value or ABSENT (loaded or written)
        self.dirty: set[Any] = set()  # map keys whose known value differs from committed
        self.cleared = False  # committed entries of this key are to be deleted at flush
        self.complete = complete  # known holds every entry: no need to read committed ones


class MapState(_Handle):
    """A map per key from map keys to values, stored one entry per (key, map key).

    Map keys follow the key rules (``check_key``). Entries are ordered by their encoded map key
    (see ``shoal.storage._codec``): numerically for non-negative ints, shorter-first then
    bytewise for str and bytes. ``keys()``, ``values()`` and ``items()`` return list snapshots
    that merge unflushed writes with committed entries, so the map may be changed while looping
    over them.
    """

    __slots__ = ("_dirty_keys", "_dirty_total", "_known_total", "_maps")

    def __init__(self, store: _KeyHolder, engine: Engine, spec: MapStateSpec) -> None:
        super().__init__(store, engine, spec.name)
        self._maps: dict[Any, _MapEntry] = {}
        self._dirty_keys: set[Any] = set()
        self._known_total = 0
        # Dirty map entries plus cleared maps (what ``_dirty_count`` answers without a walk).
        self._dirty_total = 0

    def _entry(self) -> _MapEntry:
        key = self._store.key
        try:
            return self._maps[key]
        except KeyError:
            check_key(key)
            entry = self._maps[key] = _MapEntry(complete=not self._maybe_filled)
            return entry
        except TypeError:
            check_key(key)
            raise

    def _lookup(self, entry: _MapEntry, user_key: Any) -> Any:
        try:
            value = entry.known[user_key]
        except KeyError:
            pass
        except TypeError:
            check_key(user_key, what="map key")
            raise
        else:
            self._hits += 1
            return value
        check_key(user_key, what="map key")
        if entry.complete:
            self._hits += 1
            value = ABSENT
        else:
            self._misses += 1
            composite = encode_key(self._store.key) + encode_key(user_key)
            raw = self._engine.get(self.name, composite)
            value = ABSENT if raw is None else decode_value(raw)
        entry.known[user_key] = value
        self._known_total += 1
        return value

    def _write(self, user_key: Any, value: Any) -> None:
        if type(value) not in _PLAIN_TYPES and value is not ABSENT:
            try:
                encode_value(value)
            except EncodeError as exc:
                raise self._encode_error(_MapKey((self._store.key, user_key)), value) from exc
        entry = self._entry()
        known = entry.known
        try:
            if user_key not in known:
                check_key(user_key, what="map key")
                self._known_total += 1
        except TypeError:
            check_key(user_key, what="map key")
            raise
        known[user_key] = value
        dirty = entry.dirty
        if user_key not in dirty:
            dirty.add(user_key)
            self._dirty_total += 1
        self._dirty_keys.add(self._store.key)

    def get(self, user_key: Any, default: Any = None) -> Any:
        """Return the value under ``user_key`` in the current key's map, else ``default``."""
        value = self._lookup(self._entry(), user_key)
        return default if value is ABSENT else value

    def contains(self, user_key: Any) -> bool:
        """Return whether the current key's map has an entry for ``user_key``."""
        return self._lookup(self._entry(), user_key) is not ABSENT

    def put(self, user_key: Any, value: Any) -> None:
        """Set ``user_key`` to ``value`` in the current key's map."""
        self._write(user_key, value)

    def put_all(self, entries: Mapping[Any, Any]) -> None:
        """Set every ``user_key -> value`` of ``entries`` in the current key's map."""
        for user_key, value in entries.items():
            self._write(user_key, value)

    def remove(self, user_key: Any) -> None:
        """Delete ``user_key`` from the current key's map (no error if it is absent)."""
        self._write(user_key, ABSENT)

    def clear(self) -> None:
        """Delete every entry of the current key's map."""
        entry = self._entry()
        self._known_total -= len(entry.known)
        self._dirty_total += (not entry.cleared) - len(entry.dirty)
        entry.known = {}
        entry.dirty = set()
        entry.cleared = True
        entry.complete = True
        self._dirty_keys.add(self._store.key)

    def is_empty(self) -> bool:
        """Return whether the current key's map has no entries."""
        entry = self._entry()
        if any(value is not ABSENT for value in entry.known.values()):
            return False
        if entry.complete:
            return True
        prefix = encode_key(self._store.key)
        known = entry.known
        for raw_key, _raw in self._engine.scan(self.name, prefix, None, prefix):
            if known.get(decode_key(raw_key[len(prefix) :]), None) is not ABSENT:
                return False
        return True

    def keys(self) -> list[Any]:
        """Return the map keys of the current key's map, in encoded-map-key order."""
        return [user_key for user_key, _ in self.items()]

    def values(self) -> list[Any]:
        """Return the values of the current key's map, in encoded-map-key order."""
        return [value for _, value in self.items()]

    def items(self, start: Any = None, stop: Any = None) -> list[tuple[Any, Any]]:
        """Return ``(map key, value)`` pairs with ``start <= map key < stop`` in encoded order.

        Args:
            start: First map key included (None: from the beginning).
            stop: First map key excluded (None: to the end). Bounds compare as encoded map
                keys, so for non-negative ints this is the usual numeric half-open range.
        """
        return self._sorted(self._store.key, self._entry(), start, stop, populate=True)

    def _sorted(
        self, key: Any, entry: _MapEntry | None, start: Any, stop: Any, *, populate: bool
    ) -> list[tuple[Any, Any]]:
        if start is not None:
            check_key(start, what="map key")
        if stop is not None:
            check_key(stop, what="map key")
        known = {} if entry is None else entry.known
        if (
            entry is not None
            and entry.complete
            and start is None
            and stop is None
            and set(map(type, known)) <= _INT
            and (not known or min(known) >= 0)
        ):
            # Non-negative int map keys encode in numeric order: no need to encode them.
            return [item for item in sorted(known.items()) if item[1] is not ABSENT]
        low = b"" if start is None else encode_key(start)
        high = None if stop is None else encode_key(stop)
        overlay = sorted(
            (encoded, user_key, value)
            for user_key, value in known.items()
            if (encoded := encode_key(user_key)) >= low and (high is None or encoded < high)
        )
        if entry is not None and entry.complete:
            return [(user_key, value) for _, user_key, value in overlay if value is not ABSENT]
        prefix = encode_key(key)
        committed = self._engine.scan(
            self.name, prefix + low, None if high is None else prefix + high, prefix
        )
        merged = [
            (user_key, value) for _, user_key, value in _merge(committed, len(prefix), overlay)
        ]
        if populate and entry is not None and start is None and stop is None:
            for user_key, value in merged:
                if user_key not in known:
                    known[user_key] = value
                    self._known_total += 1
            entry.complete = True
        return merged

    def _collect(self, ops: list[Op], puts: list[Puts]) -> None:
        name = self.name
        maps = self._maps
        for key in self._dirty_keys:
            entry = maps[key]
            prefix = encode_key(key)
            if entry.cleared:
                ops.append((DELETE_PREFIX, name, prefix, None))
            known = entry.known
            for user_key in entry.dirty:
                value = known[user_key]
                composite = prefix + encode_key(user_key)
                if value is ABSENT:
                    if not entry.cleared:
                        ops.append((DELETE, name, composite, None))
                else:
                    try:
                        ops.append((PUT, name, composite, encode_value(value)))
                    except EncodeError as exc:
                        raise self._encode_error(_MapKey((key, user_key)), value) from exc

    def _flushed(self) -> None:
        if not self._dirty_keys:
            return
        maps = self._maps
        for key in self._dirty_keys:
            entry = maps[key]
            entry.dirty.clear()
            entry.cleared = False
        self._dirty_keys.clear()
        self._dirty_total = 0
        self._maybe_filled = True

    def _dirty_count(self) -> int:
        return self._dirty_total

    def _cached_count(self) -> int:
        return len(self._maps) + self._known_total

    def _evict(self, count: int) -> None:
        maps = self._maps
        dirty = self._dirty_keys
        victims = []
        evicted = 0
        for key, entry in maps.items():
            if evicted >= count:
                break
            if key in dirty:
                continue
            victims.append(key)
            evicted += 1 + len(entry.known)
        for key in victims:
            self._known_total -= len(maps.pop(key).known)

    def _reset(self) -> None:
        self._maps.clear()
        self._dirty_keys.clear()
        self._known_total = 0
        self._dirty_total = 0
        self._maybe_filled = self._engine.count(self.name) > 0

    def _close(self) -> None:
        self._maps = _ClosedDict()
        self._dirty_keys = _ClosedSet()

    def _read(self, key: Any) -> Any:
        entry = self._maps.get(key)
        merged = self._sorted(key, entry, None, None, populate=False)
        return dict(merged) if merged else ABSENT

    def _iter_items(self) -> Iterator[tuple[Any, Any]]:
        # Every key that has committed entries or cached ones, in encoded-key order.
        keys: dict[bytes, Any] = {}
        for raw_key, _raw in self._engine.scan(self.name, b"", None, b""):
            encoded = split_composite(raw_key)[0]
            if encoded not in keys:
                keys[encoded] = decode_key(encoded)
        for key in self._maps:
            keys.setdefault(encode_key(key), key)
        for encoded in sorted(keys):
            value = self._read(keys[encoded])
            if value is not ABSENT:
                yield keys[encoded], value


StateHandle = ValueState | ListState | MapState | ReducingState | AggregatingState


def make_handle(store: _KeyHolder, engine: Engine, spec: StateSpec) -> StateHandle:
    """Build the handle for ``spec`` over ``engine``, reading ``store.key`` as current key."""
    if isinstance(spec, ValueStateSpec):
        return ValueState(store, engine, spec)
    if isinstance(spec, ListStateSpec):
        return ListState(store, engine, spec)
    if isinstance(spec, MapStateSpec):
        return MapState(store, engine, spec)
    if isinstance(spec, ReducingStateSpec):
        return ReducingState(store, engine, spec)
    return AggregatingState(store, engine, spec)
