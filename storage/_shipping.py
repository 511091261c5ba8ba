"""Shipping a key group's environment to a worker that does not share the state directory.

Two steps, so the owner keeps running while most of the state travels:

1. **Pre-copy.** ``begin_shipping(store)`` starts a :class:`~._engine.Journal` on the store's
   environment, then ``copy_environment(store, directory)`` (another thread may run it) writes
   a compacted copy of it, consistent as of one read transaction taken after the journal
   started. The copy travels in chunks (the runtime's business) and lands in the receiving
   backend's *incoming* directory for that key group.
2. **Cutover.** The owner flushes, then ``take_tail(store)`` reads the current value of every
   entry the journal noted since (state entries, meta entries, undo records): a
   :class:`ShippedTail`, small when the copy was recent. The receiver's
   ``LmdbBackend.install`` applies the tail to the copy in one transaction and moves it into
   place; the result is the owner's environment, byte for byte in content: the same entries,
   the same committed epoch, the same undo log (so recovery rolls it back to the last
   completed checkpoint as it would have rolled back the original).

Why a journal rather than a second copy: the tail costs what changed since the copy (the
pause of a move), not what the key group holds. Why the *current* value of each noted key
rather than a log of writes: applying it is idempotent and its size is bounded by the keys
touched, however often each was written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._engine import Journal, LmdbEngine
from ._exceptions import StorageError
from ._store import KeyGroupStore

__all__ = (
    "ShippedTail",
    "begin_shipping",
    "copy_environment",
    "end_shipping",
    "shipping",
    "take_tail",
)


@dataclass(frozen=True, slots=True)
class ShippedTail:
    """What changed in a shipped environment since its copy was taken.

    Attributes:
        cleared: The environment was emptied meanwhile: ``entries`` is all of it.
        prefixes: ``(database, prefix)`` deleted meanwhile, applied before the entries.
        entries: ``(database, key, value)``, value None for an entry deleted since.
    """

    cleared: bool
    prefixes: tuple[tuple[str, bytes], ...]
    entries: tuple[tuple[str, bytes, bytes | None], ...]

    @property
    def size(self) -> int:
        """Bytes of keys and values it carries."""
        return sum(len(p) for _db, p in self.prefixes) + sum(
            len(key) + (0 if value is None else len(value)) for _db, key, value in self.entries
        )

    def to_data(self) -> list[Any]:
        """Plain CBOR-able data (between processes)."""
        return [
            self.cleared,
            [list(p) for p in self.prefixes],
            [list(entry) for entry in self.entries],
        ]

    @classmethod
    def from_data(cls, data: Any) -> ShippedTail:
        cleared, prefixes, entries = data
        return cls(
            bool(cleared),
            tuple((str(db), bytes(prefix)) for db, prefix in prefixes),
            tuple(
                (str(db), bytes(key), None if value is None else bytes(value))
                for db, key, value in entries
            ),
        )


def _engine_of(store: KeyGroupStore) -> LmdbEngine:
    engine = store._engine
    if not isinstance(engine, LmdbEngine):
        raise StorageError(
            f"store {store.operator}/kg-{store.key_group:05d} is not in LMDB: only an LMDB "
            "environment can be shipped to another state directory"
        )
    return engine


def begin_shipping(store: KeyGroupStore) -> None:
    """Start noting every change to ``store``'s environment (before its copy is taken).

    Raises:
        StorageError: The store is not in LMDB, or it is being shipped already.
    """
    store._check_open()
    engine = _engine_of(store)
    if engine.journal is not None:
        raise StorageError(
            f"store {store.operator}/kg-{store.key_group:05d} is being shipped already"
        )
    engine.journal = Journal()


def shipping(store: KeyGroupStore) -> bool:
    """Whether ``store`` is being shipped (``begin_shipping`` without ``take_tail`` yet)."""
    engine = store._engine
    return isinstance(engine, LmdbEngine) and engine.journal is not None


def copy_environment(store: KeyGroupStore, directory: str | os.PathLike[str]) -> int:
    """Write a compacted copy of ``store``'s committed environment into ``directory``
    (created; it must not hold an environment yet); return the copy's size in bytes.

    Runs in any thread while the owner goes on (one LMDB read transaction). Unflushed changes
    are not in the copy: the journal notes them when they are flushed.
    """
    engine = _engine_of(store)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    if (target / "data.mdb").exists():
        raise StorageError(f"{target} holds an environment already: copy into an empty directory")
    engine.copy_to(target)
    return (target / "data.mdb").stat().st_size


def take_tail(store: KeyGroupStore) -> ShippedTail:
    """End the journal and return what changed since it began (call after a flush).

    Raises:
        StorageError: ``store`` is not being shipped, or it has unflushed changes (they
            would be missing from both the copy and the tail).
    """
    store._check_open()
    engine = _engine_of(store)
    journal = engine.journal
    if journal is None:
        raise StorageError(
            f"store {store.operator}/kg-{store.key_group:05d} is not being shipped: "
            "begin_shipping first"
        )
    if store.dirty_bytes():  # (statistics() would also count entries and size the map)
        raise StorageError(
            f"store {store.operator}/kg-{store.key_group:05d} has unflushed changes: "
            "flush before taking the tail"
        )
    cleared, prefixes, entries = engine.read_tail(journal)
    engine.journal = None
    return ShippedTail(cleared, tuple(prefixes), tuple(entries))


def end_shipping(store: KeyGroupStore) -> None:
    """Stop noting changes without taking a tail (a move that was called off)."""
    engine = store._engine
    if isinstance(engine, LmdbEngine):
        engine.journal = None
