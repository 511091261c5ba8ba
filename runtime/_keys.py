"""Key groups: the frozen contract that maps a key to the unit of placement.

``key -> stable bytes -> 64-bit hash -> hash % num_key_groups``

* stable bytes are :func:`shoal.storage.encode_key` (canonical CBOR of a str, bytes, int or a
  tuple of those), the same bytes the state backend stores;
* the hash is XXH3-64 with seed 0 (``xxhash.xxh3_64_intdigest``);
* the key group is the hash modulo ``num_key_groups``.

Keys are exact ``str``, ``bytes``, ``int`` and tuples of those. ``bool`` and ``float`` are
refused wherever they appear (also inside a tuple), whatever came before: Python makes ``True``,
``1`` and ``1.0`` equal dict keys, so accepting them would merge different keys silently (and
a float key's identity depends on rounding). A router's cache therefore never decides whether a
key is valid: every batch's key types are checked before the cache is consulted.

This mapping is part of the savepoint format: changing any step moves keys between key groups
and orphans their state. ``tests/runtime/test_keys.py`` pins fixed vectors so that an accidental
change fails loudly.
"""

from __future__ import annotations

from typing import Any, Final, cast

import xxhash
from shoal.storage import check_key, check_keys, encode_key, encode_keys

__all__ = (
    "DEFAULT_KEY_GROUPS",
    "KeyGroupRouter",
    "key_group_of",
    "key_group_of_bytes",
    "key_hash",
    "key_partition",
)

DEFAULT_KEY_GROUPS: Final = 128
MAX_KEY_GROUPS: Final = 1 << 15

# A router remembers this many keys' groups (~100 B per entry, its own key objects included:
# ~13 MB); past that it is cleared and refilled (a miss is ~0.4 µs). At 1,000,000 it held
# ~100 MB of a worker's memory once a job had a million keys, outside the state memory budget.
_CACHE_LIMIT: Final = 1 << 17

_xxh3 = xxhash.xxh3_64_intdigest
# Key types ``encode_keys`` encodes as ``encode_key`` does, without a check per key.
_SCALAR_KEYS = frozenset((str, int, bytes))


def check_num_key_groups(num_key_groups: object) -> int:
    """Validate ``num_key_groups`` at the boundary and return it."""
    if type(num_key_groups) is not int or not 1 <= num_key_groups <= MAX_KEY_GROUPS:
        raise ValueError(
            f"num_key_groups must be an int from 1 to {MAX_KEY_GROUPS}; got {num_key_groups!r}"
        )
    return num_key_groups


def key_hash(key: Any) -> int:
    """Return the stable 64-bit hash of ``key``.

    Raises:
        TypeError: the key is not a str, bytes, int or tuple of those.
    """
    check_key(key)
    return _xxh3(encode_key(key))


def key_group_of(key: Any, num_key_groups: int) -> int:
    """Return the key group of ``key`` among ``num_key_groups`` groups."""
    return key_hash(key) % num_key_groups


def key_partition(key: Any, partitions: int, num_key_groups: int = DEFAULT_KEY_GROUPS) -> int:
    """Return the partition (split index) of ``key`` for a *key-partitioned* source.

    Partition ``i`` of ``partitions`` holds the keys of a contiguous range of key groups (those
    ``g`` with ``g * partitions // num_key_groups == i``), the way a job places key groups on
    its workers. A source whose split ``i`` (in the order of its ``splits()``) holds only such
    keys, and says so with ``key_partitioned = True``, has each split read on the worker that
    owns its key groups: its records reach their first keyed operator without crossing to
    another worker (see docs/guides/sources.md, "Key-partitioned sources").

    Raises:
        ValueError: ``partitions`` is not an int >= 1, or ``num_key_groups`` is out of range.
    """
    if type(partitions) is not int or partitions < 1:
        raise ValueError(f"partitions must be an int >= 1; got {partitions!r}")
    check_num_key_groups(num_key_groups)
    return key_group_of(key, num_key_groups) * partitions // num_key_groups


def key_group_of_bytes(key_bytes: bytes, num_key_groups: int) -> int:
    """Return the key group of a key given as its stored bytes (``encode_key(key)``).

    The same contract as :func:`key_group_of` (XXH3-64 of the canonical CBOR, modulo the
    count), for the storage layer's savepoint functions, which take the runtime's hash as
    ``group_of(key bytes, num_key_groups)`` and never decode a key to route it.
    """
    return _xxh3(key_bytes) % num_key_groups


class KeyGroupRouter:
    """Splits a batch of keyed records into one sub-batch per key group.

    The per-record cost is a dict lookup in a bounded cache of key -> key group; only a key
    seen for the first time pays for encoding and hashing. Whether a key is accepted never
    depends on the cache (nor on the order keys arrive in): ``True`` and ``1.0`` equal ``1``
    as dict keys, so the cache is only consulted for keys whose types have been checked (one
    C-level pass over a batch of str/int/bytes keys, ~20 ns per key; tuple keys are checked
    one by one, ~0.3 µs each).
    """

    __slots__ = ("_cache", "num_key_groups")

    def __init__(self, num_key_groups: int) -> None:
        self.num_key_groups = check_num_key_groups(num_key_groups)
        self._cache: dict[Any, int] = {}

    def group_of(self, key: Any) -> int:
        """Return the key group of one key (cached).

        Raises:
            TypeError: ``key`` is not a valid key (``InvalidKeyError``).
        """
        kind = type(key)
        if not (kind is str or kind is int or kind is bytes):
            check_key(key)
        group = self._cache.get(key)
        if group is None:
            group = self._miss(key)
        return group

    def _miss(self, key: Any) -> int:
        group = key_hash(key) % self.num_key_groups
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = group
        return group

    def _groups(self, keys: list[Any]) -> list[int]:
        """Every key's group, for keys already checked: the cache's answers, and the misses
        encoded and hashed together (one CBOR encoder for all of them, not one per key)."""
        cache = self._cache
        found = list(map(cache.get, keys))
        if None not in found:
            return cast("list[int]", found)
        missing = list(
            dict.fromkeys(key for key, group in zip(keys, found, strict=True) if group is None)
        )
        if set(map(type, missing)) <= _SCALAR_KEYS:
            encoded = encode_keys(missing)
        else:
            encoded = list(map(encode_key, missing))
        n = self.num_key_groups
        new = dict(zip(missing, [digest % n for digest in map(_xxh3, encoded)], strict=True))
        if len(cache) + len(new) > _CACHE_LIMIT:
            cache.clear()  # (the hits in ``found`` may go with it: they are answered already)
        cache.update(new)
        return [
            new[key] if group is None else group for key, group in zip(keys, found, strict=True)
        ]

    def route(
        self, keys: list[Any], values: list[Any], offsets: list[int]
    ) -> dict[int, tuple[list[Any], list[Any], list[int]]]:
        """Group parallel columns by key group, keeping each group's records in input order.

        Raises:
            TypeError: a key is not a valid key (the caller decides what to do with it).
        """
        check_keys(keys)  # before the cache: an equal key of another type would hit it
        groups: dict[int, tuple[list[Any], list[Any], list[int]]] = {}
        groups_get = groups.get
        for key, value, offset, group in zip(
            keys, values, offsets, self._groups(keys), strict=True
        ):
            bucket = groups_get(group)
            if bucket is None:
                groups[group] = ([key], [value], [offset])
            else:
                bucket[0].append(key)
                bucket[1].append(value)
                bucket[2].append(offset)
        return groups

    def route_timed(
        self, keys: list[Any], values: list[Any], offsets: list[int], timestamps: list[Any]
    ) -> dict[int, tuple[list[Any], list[Any], list[int], list[Any]]]:
        """:meth:`route` with a fourth parallel column: the records' event timestamps."""
        check_keys(keys)
        groups: dict[int, tuple[list[Any], list[Any], list[int], list[Any]]] = {}
        groups_get = groups.get
        for key, value, offset, stamp, group in zip(
            keys, values, offsets, timestamps, self._groups(keys), strict=True
        ):
            bucket = groups_get(group)
            if bucket is None:
                groups[group] = ([key], [value], [offset], [stamp])
            else:
                bucket[0].append(key)
                bucket[1].append(value)
                bucket[2].append(offset)
                bucket[3].append(stamp)
        return groups
