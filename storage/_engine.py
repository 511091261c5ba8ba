"""Byte-level engines under a KeyGroupStore: one LMDB environment, or plain dicts.

An engine knows named databases of sorted ``bytes -> bytes`` entries and nothing about states,
keys or caches. The store above it does all encoding; the engine guarantees that ``write``
applies a batch of operations atomically (all or nothing) and that reads never hold a
transaction open across a ``yield`` (so a caller that pauses an iteration cannot block a map
resize or pin old pages).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol, TypeVar, cast

import cbor2
import lmdb

from ._exceptions import DecodeError, EncodeError, StorageError, StoreBusyError

__all__ = (
    "DELETE",
    "DELETE_PREFIX",
    "PUT",
    "Change",
    "Engine",
    "EngineSnapshot",
    "Journal",
    "LmdbEngine",
    "MemoryEngine",
    "Op",
    "Puts",
    "UndoLog",
)

PUT: Final = 0
DELETE: Final = 1
DELETE_PREFIX: Final = 2

#: (kind, database name, key or prefix, value for PUT else None)
Op = tuple[int, str, bytes, bytes | None]

#: (database name, keys, values): a PUT of ``keys[i] -> values[i]`` for each i, into one
#: database; the keys are all different.
Puts = tuple[str, list[bytes], list[bytes]]


class Change(NamedTuple):
    """What one write did to some keys of one database.

    ``values[i]`` is the value ``keys[i]`` now has (None: deleted) and ``previous[i]`` the
    value it had before the write (None: absent). The keys of one Change are all different,
    and the Changes of one write never share a (database, key).
    """

    db: str
    keys: list[bytes]
    values: list[bytes | None]
    previous: list[bytes | None]


class UndoLog(NamedTuple):
    """Where and how a logged write records its undo record (see ``write_logged``).

    Records live in ``db`` under ``tag (8 bytes, big-endian) + sequence (4 bytes)``, so they
    sort by tag, then in write order. ``floor`` (if not None) is put under ``FLOOR_KEY`` in
    the same transaction.
    """

    db: str
    tag: int
    floor: int | None


#: The undo database's key holding the lowest tag the log can roll back to (8 bytes). It
#: sorts after every record key: tags are < 2**63, so a record key starts below 0x80.
FLOOR_KEY: Final = b"\xff"
_TAGS_END: Final = b"\x80"


def tag_bytes(tag: int) -> bytes:
    """Return the 8-byte big-endian prefix of the undo records tagged ``tag``."""
    return tag.to_bytes(8, "big")


def encode_undo(changes: Sequence[Change]) -> bytes:
    """Encode the previous values of ``changes`` as one undo record (column-wise CBOR)."""
    return cbor2.dumps([[change.db, change.keys, change.previous] for change in changes])


def decode_undo(data: bytes) -> list[tuple[str, list[bytes], list[bytes | None]]]:
    """Decode an undo record made by ``encode_undo``."""
    try:
        return [(db, keys, previous) for db, keys, previous in cbor2.loads(data)]
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise DecodeError(f"not an undo record: {bytes(data)[:32].hex()} ({exc})") from exc


class _OpLog:
    """Collects the changes of a write's ``ops``: last new value and first previous value."""

    __slots__ = ("_dbs",)

    def __init__(self) -> None:
        self._dbs: dict[str, dict[bytes, tuple[bytes | None, bytes | None]]] = {}

    def note(self, db: str, key: bytes, value: bytes | None, previous: bytes | None) -> None:
        entries = self._dbs.setdefault(db, {})
        known = entries.get(key)
        entries[key] = (value, previous if known is None else known[1])

    def changes(self) -> list[Change]:
        result = []
        for db, entries in self._dbs.items():
            # A key deleted that never existed, or put back to what it was, changed nothing.
            kept = [(k, v, p) for k, (v, p) in entries.items() if v != p]
            if kept:
                keys, values, previous = (list(column) for column in zip(*kept, strict=True))
                result.append(Change(db, keys, values, previous))
        return result


class Journal:
    """Which entries of an environment changed since it started: what a shipped copy misses.

    While an engine has a journal (``LmdbEngine.journal``), every write notes the keys it
    touched (state entries, meta entries, undo records and the undo log's floor), the prefixes
    it deleted and whether it emptied the environment. A copy taken after the journal started,
    plus the *current* value of every noted key (after the noted prefixes are deleted), equals
    the environment: see ``storage/_shipping.py``. Noting costs a set update per write while a
    journal runs, nothing otherwise.
    """

    __slots__ = ("cleared", "keys", "prefixes")

    def __init__(self) -> None:
        self.keys: dict[str, set[bytes]] = {}
        self.prefixes: list[tuple[str, bytes]] = []
        self.cleared = False

    def note(self, db: str, keys: Iterable[bytes]) -> None:
        noted = self.keys.get(db)
        if noted is None:
            noted = self.keys[db] = set()
        noted.update(keys)

    def note_prefix(self, db: str, prefix: bytes) -> None:
        self.prefixes.append((db, prefix))

    def note_clear(self) -> None:
        """Everything was emptied: the copy is worth nothing, the whole environment ships."""
        self.cleared = True
        self.keys.clear()
        self.prefixes.clear()

    def note_ops(self, ops: Sequence[Op]) -> None:
        for kind, db, key, _value in ops:
            if kind == DELETE_PREFIX:
                self.note_prefix(db, key)
            else:
                self.note(db, (key,))


class EngineSnapshot(Protocol):
    """A consistent read-only view of every database at one instant, usable from any thread.

    One thread at a time may use it; close it before closing its engine.
    """

    def scan(self, db: str) -> Iterator[tuple[bytes, bytes]]: ...

    def get(self, db: str, key: bytes) -> bytes | None: ...

    def close(self) -> None: ...


_T = TypeVar("_T")

# Entries read per short read transaction while scanning: large enough that the cost of
# opening a transaction (~1 µs) vanishes, small enough that a chunk stays a few hundred KiB.
_SCAN_CHUNK = 1024


class Engine(Protocol):
    """What a KeyGroupStore needs from the bytes underneath it."""

    @property
    def path(self) -> Path | None: ...

    def get(self, db: str, key: bytes) -> bytes | None: ...

    def get_many(self, db: str, keys: list[bytes]) -> list[bytes | None]: ...

    def hold_reads(self) -> None: ...

    def release_reads(self) -> None: ...

    def scan(
        self, db: str, start: bytes, stop: bytes | None, prefix: bytes
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def any_in(self, db: str, start: bytes, stop: bytes) -> bool:
        """Whether ``db`` has a key in ``[start, stop)`` (one cursor seek)."""
        ...

    def write(self, ops: Sequence[Op], puts: Sequence[Puts] = ()) -> int: ...

    def write_logged(
        self,
        ops: Sequence[Op],
        puts: Sequence[Puts],
        undo: UndoLog | None,
        *,
        clear: bool = False,
    ) -> tuple[int, list[Change]]: ...

    def rollback(self, undo_db: str, above: int, ops: Sequence[Op]) -> int: ...

    def prune(self, undo_db: str, upto: int, floor: int) -> int: ...

    def snapshot(self) -> EngineSnapshot: ...

    def count(self, db: str) -> int: ...

    def size_bytes(self) -> int: ...

    def drop_all(self) -> None: ...

    def close(self) -> None: ...


def _in_range(key: bytes, stop: bytes | None, prefix: bytes) -> bool:
    return key.startswith(prefix) and (stop is None or key < stop)


def _lookup_all(cursor: lmdb.Cursor, keys: list[bytes]) -> list[bytes | None]:
    # getmulti returns the found (key, value) pairs in order: all of them on a full hit.
    pairs = cast("list[tuple[bytes, bytes]]", cursor.getmulti(keys))  # buffers=False: bytes
    if len(pairs) == len(keys):
        return [value for _key, value in pairs]
    found = dict(pairs)
    return list(map(found.get, keys))


class LmdbSnapshot:
    """One LMDB read transaction; py-lmdb opens environments without thread-local readers
    (MDB_NOTLS), so it may be used from another thread than the one that opened it."""

    __slots__ = ("_dbs", "_on_close", "_txn")

    def __init__(
        self, txn: lmdb.Transaction, dbs: dict[str, Any], on_close: Callable[[], None]
    ) -> None:
        self._txn: lmdb.Transaction | None = txn
        self._dbs = dbs
        self._on_close = on_close

    def _open_txn(self) -> lmdb.Transaction:
        if self._txn is None:
            raise StorageError("snapshot is closed; take a new one")
        return self._txn

    def scan(self, db: str) -> Iterator[tuple[bytes, bytes]]:
        cursor = self._open_txn().cursor(db=self._dbs[db])
        found = cursor.first()
        while found:
            yield cast(bytes, cursor.key()), cast(bytes, cursor.value())
            found = cursor.next()

    def get(self, db: str, key: bytes) -> bytes | None:
        return cast("bytes | None", self._open_txn().get(key, db=self._dbs[db]))

    def close(self) -> None:
        if self._txn is not None:
            txn, self._txn = self._txn, None
            txn.abort()
            self._on_close()


#: The ownership fence of an environment: the process that has it open holds an exclusive
#: ``flock`` on this file (released by the kernel when the process dies, even by kill -9).
OWNER_LOCK = "shoal-owner.lock"


def take_fence(path: Path) -> int:
    """Lock ``path``'s owner file, or raise StoreBusyError naming the holder's pid."""
    fd = os.open(path / OWNER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        where = (
            "in this process"
            if holder == str(os.getpid())
            else f"by another process (pid {holder or 'unknown'})"
        )
        raise StoreBusyError(f"the environment {path} is already open {where}") from None
    except BaseException:
        os.close(fd)
        raise
    # Fixed width, so no truncate is needed (it costs ~1 ms: on every handoff's open).
    os.pwrite(fd, f"{os.getpid():>12}".encode("ascii"), 0)
    return fd


class LmdbEngine:
    """One LMDB environment with a named database per name given.

    Fenced: while it is open, no other engine (in this process or another) can open the same
    environment (``StoreBusyError``): a key group that moves between workers is closed by its
    old owner before its new owner opens it, and a bug that broke that order fails loudly
    instead of two writers sharing one environment.
    """

    __slots__ = (
        "_dbs",
        "_env",
        "_fence",
        "_holding",
        "_lock",
        "_path",
        "_reader",
        "_snapshots",
        "journal",
    )

    def __init__(self, path: Path, names: Sequence[str], *, map_size: int, sync: bool) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._fence = take_fence(path)
        self._path = path
        self._lock = threading.Lock()
        self._snapshots = 0  # open read snapshots: the map cannot be resized under them
        # The read transaction of the batch in progress (see ``hold_reads``), or None.
        self._reader: lmdb.Transaction | None = None
        self._holding = False
        #: Notes every change while set (a key group being shipped: see ``Journal``).
        self.journal: Journal | None = None
        try:
            self._env = lmdb.open(
                str(path),
                map_size=map_size,
                subdir=True,
                max_dbs=len(names),
                sync=sync,
                metasync=sync,
                # Pages a write dirties are written in the (shared, file-backed) map, not in
                # pages malloc'd per transaction that LMDB then keeps on a free list per
                # environment for good: that list grew with every environment's largest
                # commit and made most of a worker's anonymous memory at millions of keys
                # (see docs/architecture.md, "State memory"). The file is sparse at map_size.
                writemap=True,
                readahead=False,
                lock=True,
            )
        except BaseException:
            os.close(self._fence)
            raise
        try:
            self._dbs = {name: self._env.open_db(name.encode("ascii")) for name in names}
        except BaseException:
            self._env.close()
            os.close(self._fence)
            raise

    @property
    def path(self) -> Path:
        return self._path

    @property
    def map_size(self) -> int:
        """The current map size in bytes (it doubles when a flush fills the map)."""
        return self._env.info()["map_size"]

    def get(self, db: str, key: bytes) -> bytes | None:
        if self._holding:
            return cast("bytes | None", self._held().get(key, db=self._dbs[db]))
        with self._env.begin(db=self._dbs[db], buffers=False) as txn:
            return txn.get(key)

    def get_many(self, db: str, keys: list[bytes]) -> list[bytes | None]:
        """``[get(db, key) for key in keys]`` in one read transaction and one C-level loop."""
        if self._holding:
            return _lookup_all(self._held().cursor(db=self._dbs[db]), keys)
        with self._env.begin(db=self._dbs[db], buffers=False) as txn:
            return _lookup_all(txn.cursor(), keys)

    def hold_reads(self) -> None:
        """Serve every ``get`` from one read transaction until ``release_reads`` (a batch's
        misses: a transaction per key costs ~1 µs more). Opened at the first read; a write
        ends it (the next read opens a new one, which sees the write)."""
        self._holding = True

    def release_reads(self) -> None:
        """Stop holding a read transaction (and end the one open, if any)."""
        self._holding = False
        self._drop_reader()

    def _held(self) -> lmdb.Transaction:
        reader = self._reader
        if reader is None:
            reader = self._reader = self._env.begin(buffers=False)
        return reader

    def _drop_reader(self) -> None:
        reader = self._reader
        if reader is not None:
            self._reader = None
            reader.abort()

    def any_in(self, db: str, start: bytes, stop: bytes) -> bool:
        with self._env.begin(db=self._dbs[db], buffers=True) as txn:
            cursor = txn.cursor()
            return bool(cursor.set_range(start)) and bytes(cursor.key()) < stop

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
        return self._retrying(ops, puts, lambda: self._write_once(ops, puts))

    def write_logged(
        self,
        ops: Sequence[Op],
        puts: Sequence[Puts],
        undo: UndoLog | None,
        *,
        clear: bool = False,
    ) -> tuple[int, list[Change]]:
        """Do what ``write`` does and also return what changed, in one write transaction.

        With ``undo``, the previous values of every changed key are written as one undo record
        in the same transaction (none when nothing changed). With ``clear``, every database
        is emptied first (in the same transaction), so nothing has a previous value.
        """
        return self._retrying(ops, puts, lambda: self._write_logged_once(ops, puts, undo, clear))

    def _retrying(self, ops: Sequence[Op], puts: Sequence[Puts], attempt: Callable[[], _T]) -> _T:
        while True:
            try:
                return attempt()
            except lmdb.MapFullError:
                if self._snapshots:
                    raise StorageError(
                        f"LMDB map of {self._path} is full while a snapshot is open, so it "
                        "cannot grow now; open the backend with a larger map_size "
                        "(unused map space costs nothing)"
                    ) from None
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

    def _write_logged_once(
        self, ops: Sequence[Op], puts: Sequence[Puts], undo: UndoLog | None, clear: bool
    ) -> tuple[int, list[Change]]:
        self._drop_reader()
        written = 0
        dbs = self._dbs
        log = _OpLog()
        with self._env.begin(write=True) as txn:
            if clear:
                for handle in dbs.values():
                    txn.drop(handle, delete=False)
            for kind, db, key, value in ops:
                handle = dbs[db]
                if kind == PUT:
                    assert value is not None
                    log.note(db, key, value, txn.replace(key, value, db=handle))
                    written += 1
                elif kind == DELETE:
                    previous = txn.pop(key, db=handle)
                    if previous is not None:
                        log.note(db, key, None, previous)
                        written += 1
                else:
                    cursor = txn.cursor(db=handle)
                    found = cursor.set_range(key)
                    while found and cursor.key().startswith(key):
                        log.note(db, cursor.key(), None, cursor.value())
                        found = cursor.delete()
                        written += 1
            changes = log.changes()
            for db, keys, values in puts:
                cursor = txn.cursor(db=dbs[db])
                if clear:
                    previous_values: list[bytes | None] = [None] * len(keys)
                else:
                    # One C-level loop of lookups for the whole column; it returns the
                    # found pairs in order, so when every key exists (an overwrite) the
                    # previous values are its second column.
                    pairs: list[tuple[bytes, bytes]] = cursor.getmulti(keys)
                    if len(pairs) == len(keys):
                        previous_values = list(map(itemgetter(1), pairs))
                    else:
                        found_values = dict(pairs)
                        previous_values = list(map(found_values.get, keys))
                written += cursor.putmulti(
                    zip(keys, values, strict=True), dupdata=False, overwrite=True
                )[1]
                changes.append(
                    Change(db, keys, cast("list[bytes | None]", values), previous_values)
                )
            undo_keys: list[bytes] = []
            if undo is not None:
                handle = dbs[undo.db]
                if changes:
                    prefix = tag_bytes(undo.tag)
                    cursor = txn.cursor(db=handle)
                    sequence = 0
                    found = cursor.set_range(prefix)
                    while found and cursor.key().startswith(prefix):
                        sequence = int.from_bytes(cursor.key()[8:], "big") + 1
                        found = cursor.next()
                    record_key = prefix + sequence.to_bytes(4, "big")
                    txn.put(record_key, encode_undo(changes), db=handle)
                    undo_keys.append(record_key)
                if undo.floor is not None:
                    txn.put(FLOOR_KEY, tag_bytes(undo.floor), db=handle)
                    undo_keys.append(FLOOR_KEY)
            journal = self.journal
            if journal is not None:
                if clear:
                    journal.note_clear()
                journal.note_ops(ops)
                for db, keys, _values in puts:
                    journal.note(db, keys)
                if undo is not None:
                    # The undo log (its new record, its floor) ships too: recovery rolls
                    # the copy back as it would have rolled back the original.
                    journal.note(undo.db, undo_keys)
        return written, changes

    def rollback(self, undo_db: str, above: int, ops: Sequence[Op]) -> int:
        """Undo every record tagged above ``above``, newest first, then apply ``ops``.

        One write transaction; returns how many undo records were applied (and removed).
        """
        return self._retrying(ops, (), lambda: self._rollback_once(undo_db, above, ops))

    def _rollback_once(self, undo_db: str, above: int, ops: Sequence[Op]) -> int:
        self._drop_reader()
        dbs = self._dbs
        handle = dbs[undo_db]
        with self._env.begin(write=True) as txn:
            cursor = txn.cursor(db=handle)
            records: list[tuple[bytes, bytes]] = []
            found = cursor.set_range(tag_bytes(above + 1))
            while found and cursor.key() < _TAGS_END:
                records.append((cursor.key(), cursor.value()))
                found = cursor.next()
            for record_key, record in reversed(records):
                for db, keys, previous in decode_undo(record):
                    target = dbs[db]
                    for key, value in zip(keys, previous, strict=True):
                        if value is None:
                            txn.delete(key, db=target)
                        else:
                            txn.put(key, value, db=target)
                txn.delete(record_key, db=handle)
            for kind, db, key, value in ops:
                assert kind == PUT
                assert value is not None
                txn.put(key, value, db=dbs[db])
            journal = self.journal
            if journal is not None:
                for record_key, record in records:
                    journal.note(undo_db, (record_key,))
                    for db, keys, _previous in decode_undo(record):
                        journal.note(db, keys)
                journal.note_ops(ops)
        return len(records)

    def prune(self, undo_db: str, upto: int, floor: int) -> int:
        """Delete the undo records tagged ``upto`` or lower and set the floor; one transaction."""
        self._drop_reader()
        handle = self._dbs[undo_db]
        stop = tag_bytes(upto + 1)
        removed = 0
        with self._env.begin(write=True) as txn:
            cursor = txn.cursor(db=handle)
            found = cursor.first()
            journal = self.journal
            while found and cursor.key() < stop:
                if journal is not None:
                    journal.note(undo_db, (cursor.key(),))
                found = cursor.delete()
                removed += 1
            txn.put(FLOOR_KEY, tag_bytes(floor), db=handle)
            if journal is not None:
                journal.note(undo_db, (FLOOR_KEY,))
        return removed

    def snapshot(self) -> LmdbSnapshot:
        """Open a read transaction over every database; close the snapshot to release it."""
        with self._lock:
            self._snapshots += 1
        try:
            return LmdbSnapshot(self._env.begin(buffers=False), self._dbs, self._snapshot_closed)
        except BaseException:
            self._snapshot_closed()
            raise

    def _snapshot_closed(self) -> None:
        with self._lock:
            self._snapshots -= 1

    def copy_to(self, directory: Path) -> None:
        """Write a compacted, consistent copy of the environment (one read transaction) as
        ``directory/data.mdb``; ``directory`` must exist and be empty. Safe from another
        thread while the owner goes on writing (the map cannot grow meanwhile, as under a
        snapshot)."""
        with self._lock:
            self._snapshots += 1
        try:
            self._env.copy(str(directory), compact=True)
        finally:
            self._snapshot_closed()

    def read_tail(
        self, journal: Journal
    ) -> tuple[bool, list[tuple[str, bytes]], list[tuple[str, bytes, bytes | None]]]:
        """What ``journal`` noted, as of now: (emptied?, prefixes deleted, every noted key's
        current value or None), read in one transaction. Emptied: every entry, as a PUT."""
        entries: list[tuple[str, bytes, bytes | None]] = []
        with self._env.begin(buffers=False) as txn:
            if journal.cleared:
                for db, handle in self._dbs.items():
                    for key, value in txn.cursor(db=handle):
                        entries.append((db, key, value))
                return True, [], entries
            for db in sorted(journal.keys):
                handle = self._dbs[db]
                for key in sorted(journal.keys[db]):
                    entries.append((db, key, txn.get(key, db=handle)))
        return False, list(journal.prefixes), entries

    def apply_tail(
        self,
        cleared: bool,
        prefixes: Sequence[tuple[str, bytes]],
        entries: Sequence[tuple[str, bytes, bytes | None]],
    ) -> int:
        """Bring a copy up to date with ``read_tail``'s answer, in one write transaction:
        empty it (``cleared``), delete the prefixes, then set or delete every entry."""
        ops: list[Op] = [(DELETE_PREFIX, db, prefix, None) for db, prefix in prefixes]
        ops += [
            (DELETE, db, key, None) if value is None else (PUT, db, key, value)
            for db, key, value in entries
        ]
        written, _changes = self.write_logged(ops, (), None, clear=cleared)
        return written

    def _write_once(self, ops: Sequence[Op], puts: Sequence[Puts]) -> int:
        self._drop_reader()
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
            journal = self.journal
            if journal is not None:
                journal.note_ops(ops)
                for db, keys, _values in puts:
                    journal.note(db, keys)
        return written

    def count(self, db: str) -> int:
        with self._env.begin() as txn:
            return txn.stat(self._dbs[db])["entries"]

    def size_bytes(self) -> int:
        return (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]

    def drop_all(self) -> None:
        self._drop_reader()
        with self._env.begin(write=True) as txn:
            for handle in self._dbs.values():
                txn.drop(handle, delete=False)
        if self.journal is not None:
            self.journal.note_clear()

    def close(self) -> None:
        self.release_reads()
        try:
            self._env.close()
        finally:
            if self._fence >= 0:
                fence, self._fence = self._fence, -1
                os.close(fence)  # releases the flock


class MemorySnapshot:
    """Copies of the engine's dicts taken at one instant."""

    __slots__ = ("_dbs",)

    def __init__(self, dbs: dict[str, dict[bytes, bytes]]) -> None:
        self._dbs: dict[str, dict[bytes, bytes]] | None = dbs

    def _open_dbs(self) -> dict[str, dict[bytes, bytes]]:
        if self._dbs is None:
            raise StorageError("snapshot is closed; take a new one")
        return self._dbs

    def scan(self, db: str) -> Iterator[tuple[bytes, bytes]]:
        yield from sorted(self._open_dbs()[db].items())

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._open_dbs()[db].get(key)

    def close(self) -> None:
        self._dbs = None


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

    def get_many(self, db: str, keys: list[bytes]) -> list[bytes | None]:
        return list(map(self._dbs[db].get, keys))

    def hold_reads(self) -> None:
        pass

    def release_reads(self) -> None:
        pass

    def scan(
        self, db: str, start: bytes, stop: bytes | None, prefix: bytes
    ) -> Iterator[tuple[bytes, bytes]]:
        entries = self._dbs[db]
        # Snapshot first, as LMDB's short read transactions do.
        selected = sorted(
            (k, v) for k, v in entries.items() if k >= start and _in_range(k, stop, prefix)
        )
        yield from selected

    def any_in(self, db: str, start: bytes, stop: bytes) -> bool:
        return any(start <= key < stop for key in self._dbs[db])

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

    def write_logged(
        self,
        ops: Sequence[Op],
        puts: Sequence[Puts],
        undo: UndoLog | None,
        *,
        clear: bool = False,
    ) -> tuple[int, list[Change]]:
        # Check before touching anything, so a failure leaves the dicts as they were.
        if undo is not None:
            records = self._dbs[undo.db]
        if clear:
            self.drop_all()
        written = 0
        log = _OpLog()
        for kind, db, key, value in ops:
            entries = self._dbs[db]
            if kind == PUT:
                assert value is not None
                log.note(db, key, value, entries.get(key))
                entries[key] = value
                written += 1
            elif kind == DELETE:
                previous = entries.pop(key, None)
                if previous is not None:
                    log.note(db, key, None, previous)
                    written += 1
            else:
                for doomed in sorted(k for k in entries if k.startswith(key)):
                    log.note(db, doomed, None, entries.pop(doomed))
                    written += 1
        changes = log.changes()
        for db, keys, values in puts:
            entries = self._dbs[db]
            previous_values = list(map(entries.get, keys))
            entries.update(zip(keys, values, strict=True))
            written += len(keys)
            changes.append(Change(db, keys, cast("list[bytes | None]", values), previous_values))
        if undo is not None:
            if changes:
                prefix = tag_bytes(undo.tag)
                sequence = sum(1 for k in records if k.startswith(prefix))
                records[prefix + sequence.to_bytes(4, "big")] = encode_undo(changes)
            if undo.floor is not None:
                records[FLOOR_KEY] = tag_bytes(undo.floor)
        return written, changes

    def rollback(self, undo_db: str, above: int, ops: Sequence[Op]) -> int:
        records = self._dbs[undo_db]
        start = tag_bytes(above + 1)
        doomed = sorted(k for k in records if start <= k < _TAGS_END)
        decoded = [decode_undo(records[k]) for k in reversed(doomed)]  # all, before any change
        for record in decoded:
            for db, keys, previous in record:
                entries = self._dbs[db]
                for key, value in zip(keys, previous, strict=True):
                    if value is None:
                        entries.pop(key, None)
                    else:
                        entries[key] = value
        for key in doomed:
            del records[key]
        for kind, db, key, value in ops:
            assert kind == PUT
            assert value is not None
            self._dbs[db][key] = value
        return len(doomed)

    def prune(self, undo_db: str, upto: int, floor: int) -> int:
        records = self._dbs[undo_db]
        stop = tag_bytes(upto + 1)
        doomed = [k for k in records if k < stop]
        for key in doomed:
            del records[key]
        records[FLOOR_KEY] = tag_bytes(floor)
        return len(doomed)

    def snapshot(self) -> MemorySnapshot:
        return MemorySnapshot({db: dict(entries) for db, entries in self._dbs.items()})

    def count(self, db: str) -> int:
        return len(self._dbs[db])

    def size_bytes(self) -> int:
        return sum(len(k) + len(v) for entries in self._dbs.values() for k, v in entries.items())

    def drop_all(self) -> None:
        for entries in self._dbs.values():
            entries.clear()

    def close(self) -> None:
        pass
