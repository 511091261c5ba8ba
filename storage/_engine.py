"""Byte-level engines under a KeyGroupStore: one LMDB environment, or plain dicts.

An engine knows named databases of sorted ``bytes -> bytes`` entries and nothing about states,
keys or caches. The store above it does all encoding; the engine guarantees that ``write``
applies a batch of operations atomically (all or nothing) and that reads never hold a
transaction open across a ``yield`` (so a caller that pauses an iteration cannot block a map
resize or pin old pages).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Final, Protocol

import lmdb

from ._exceptions import EncodeError

__all__ = (
    "DELETE",
    "DELETE_PREFIX",
    "PUT",
    "Engine",
    "LmdbEngine",
    "MemoryEngine",
    "Op",
    "Puts",
)

PUT: Final = 0
DELETE: Final = 1
DELETE_PREFIX: Final = 2

#: (kind, database name, key or prefix, value for PUT else None)
Op = tuple[int, str, bytes, bytes | None]

#: (database name, keys, values): a PUT of ``keys[i] -> values[i]`` for each i, into one
#: database; the keys are all different.
Puts = tuple[str, list[bytes], list[bytes]]

# Entries read per short read transaction while scanning: large enough that the cost of
# opening a transaction (~1 µs) vanishes, small enough that a chunk stays a few hundred KiB.
_SCAN_CHUNK = 1024


class Engine(Protocol):
    """What a KeyGroupStore needs from the bytes underneath it."""

    @property
    def path(self) -> Path | None: ...

    def get(self, db: str, key: bytes) -> bytes | None: ...

    def scan(
        self, db: str, start: bytes, stop: bytes | None, prefix: bytes
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def write(self, ops: Sequence[Op], puts: Sequence[Puts] = ()) -> int: ...

    def count(self, db: str) -> int: ...

    def size_bytes(self) -> int: ...

    def drop_all(self) -> None: ...

    def close(self) -> None: ...


def _in_range(key: bytes, stop: bytes | None, prefix: bytes) -> bool:
    return key.startswith(prefix) and (stop is None or key < stop)


class LmdbEngine:
    """One LMDB environment with a named database per name given."""

    __slots__ = ("_dbs", "_env", "_path")

    def __init__(self, path: Path, names: Sequence[str], *, map_size: int, sync: bool) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._env = lmdb.open(
            str(path),
            map_size=map_size,
            subdir=True,
            max_dbs=len(names),
            sync=sync,
            metasync=sync,
            writemap=False,
            readahead=False,
            lock=True,
        )
        try:
            self._dbs = {name: self._env.open_db(name.encode("ascii")) for name in names}
        except BaseException:
            self._env.close()
            raise

    @property
    def path(self) -> Path:
        return self._path

    @property
    def map_size(self) -> int:
        """The current map size in bytes (it doubles when a flush fills the map)."""
        return self._env.info()["map_size"]

    def get(self, db: str, key: bytes) -> bytes | None:
        with self._env.begin(db=self._dbs[db], buffers=False) as txn:
            return txn.get(key)

    def scan(
        self, db: str, start: bytes, stop: bytes | None, prefix: bytes
    ) -> Iterator[tuple[bytes, bytes]]:
        handle = self._dbs[db]
        position = start
        resume = False
        while True:
            chunk: list[tuple[bytes, bytes]] = []
            done = True
            with self._env.begin(db=handle, buffers=False) as txn:
                cursor = txn.cursor()
                found = cursor.set_range(position)
                if found and resume and cursor.key() == position:
                    found = cursor.next()
                while found:
                    key = cursor.key()
                    if not _in_range(key, stop, prefix):
                        break
                    chunk.append((key, cursor.value()))
                    if len(chunk) == _SCAN_CHUNK:
                        done = False
                        break
                    found = cursor.next()
            yield from chunk
            if done:
                return
            position = chunk[-1][0]
            resume = True

    def write(self, ops: Sequence[Op], puts: Sequence[Puts] = ()) -> int:
        """Apply ``ops`` in order, then ``puts``, in one write transaction; return the count.

        Every PUT counts one, every DELETE one if the key existed, a DELETE_PREFIX one per
        entry it removed. ``puts`` must not touch a key that ``ops`` touches.
        """
        while True:
            try:
                return self._write_once(ops, puts)
            except lmdb.MapFullError:
                # The aborted transaction left nothing behind; grow and replay it whole.
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
            except lmdb.BadValsizeError as exc:
                limit = self._env.max_key_size()
                too_long = next(
                    (
                        (db, key)
                        for db, key in chain(
                            ((op[1], op[2]) for op in ops),
                            ((db, key) for db, keys, _values in puts for key in keys),
                        )
                        if len(key) > limit
                    ),
                    None,
                )
                if too_long is None:
                    raise
                db, key = too_long
                raise EncodeError(
                    f"state {db!r}: encoded key of {len(key)} bytes exceeds "
                    f"LMDB's limit of {limit} bytes ({key[:16].hex()}...)"
                ) from exc

    def _write_once(self, ops: Sequence[Op], puts: Sequence[Puts]) -> int:
        written = 0
        dbs = self._dbs
        with self._env.begin(write=True) as txn:
            for kind, db, key, value in ops:
                if kind == PUT:
                    assert value is not None
                    txn.put(key, value, db=dbs[db])
                    written += 1
                elif kind == DELETE:
                    written += txn.delete(key, db=dbs[db])
                else:
                    cursor = txn.cursor(db=dbs[db])
                    found = cursor.set_range(key)
                    while found and bytes(cursor.key()).startswith(key):
                        found = cursor.delete()
                        written += 1
            for db, keys, values in puts:
                # One C-level loop of cursor puts. Fed by zip, which reuses its pair tuple
                # once putmulti drops it, so no tuple per entry is allocated (nor counted
                # toward a garbage collection).
                cursor = txn.cursor(db=dbs[db])
                written += cursor.putmulti(
                    zip(keys, values, strict=True), dupdata=False, overwrite=True
                )[1]
        return written

    def count(self, db: str) -> int:
        with self._env.begin() as txn:
            return txn.stat(self._dbs[db])["entries"]

    def size_bytes(self) -> int:
        return (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]

    def drop_all(self) -> None:
        with self._env.begin(write=True) as txn:
            for handle in self._dbs.values():
                txn.drop(handle, delete=False)

    def close(self) -> None:
        self._env.close()


class MemoryEngine:
    """Named dicts of bytes shared with a MemoryBackend, so a reopened store sees commits."""

    __slots__ = ("_dbs",)

    def __init__(self, dbs: dict[str, dict[bytes, bytes]], names: Sequence[str]) -> None:
        for name in names:
            dbs.setdefault(name, {})
        self._dbs = dbs

    @property
    def path(self) -> None:
        return None

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._dbs[db].get(key)

    def scan(
        self, db: str, start: bytes, stop: bytes | None, prefix: bytes
    ) -> Iterator[tuple[bytes, bytes]]:
        entries = self._dbs[db]
        # Snapshot first, as LMDB's short read transactions do.
        selected = sorted(
            (k, v) for k, v in entries.items() if k >= start and _in_range(k, stop, prefix)
        )
        yield from selected

    def write(self, ops: Sequence[Op], puts: Sequence[Puts] = ()) -> int:
        written = 0
        for kind, db, key, value in ops:
            entries = self._dbs[db]
            if kind == PUT:
                assert value is not None
                entries[key] = value
                written += 1
            elif kind == DELETE:
                written += entries.pop(key, None) is not None
            else:
                doomed = [k for k in entries if k.startswith(key)]
                for k in doomed:
                    del entries[k]
                written += len(doomed)
        for db, keys, values in puts:
            self._dbs[db].update(zip(keys, values, strict=True))
            written += len(keys)
        return written

    def count(self, db: str) -> int:
        return len(self._dbs[db])

    def size_bytes(self) -> int:
        return sum(len(k) + len(v) for entries in self._dbs.values() for k, v in entries.items())

    def drop_all(self) -> None:
        for entries in self._dbs.values():
            entries.clear()

    def close(self) -> None:
        pass
