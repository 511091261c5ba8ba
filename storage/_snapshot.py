"""What a store hands to a checkpoint: an epoch's delta, or a consistent snapshot of its state.

Both are plain data detached from the store's caches, so the runtime can pass them to a worker
thread (``anyio.to_thread``) that writes checkpoint files while the key group goes on
processing records.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from ._engine import EngineSnapshot

__all__ = ("EpochDelta", "StateChanges", "StoreSnapshot")


@dataclass(frozen=True, slots=True)
class StateChanges:
    """The changed entries of one state, column-wise.

    ``values[i]`` is the encoded value ``keys[i]`` has now, or None if it was deleted. Keys are
    encoded as in ``KeyGroupStore.export_entries`` and all different.
    """

    state: str
    keys: Sequence[bytes]
    values: Sequence[bytes | None]


@dataclass(frozen=True, slots=True)
class EpochDelta:
    """Every state entry a store changed after epoch ``since`` up to and including ``epoch``.

    Made by ``KeyGroupStore.flush_epoch`` (the changes of that flush, taken from the write
    transaction itself: nothing is read back from LMDB) or ``KeyGroupStore.delta_since``
    (read from the undo log). Applying it to the state at ``since`` gives the state at
    ``epoch``. Meta entries are not part of it.

    Attributes:
        operator: The operator of the store that made it.
        key_group: Its key group.
        epoch: The epoch the state is at after the changes.
        since: The epoch the changes apply to.
        changes: One ``StateChanges`` per changed state (a state may appear more than once,
            with disjoint keys).
    """

    operator: str
    key_group: int
    epoch: int
    since: int
    changes: tuple[StateChanges, ...]

    def __len__(self) -> int:
        return sum(len(change.keys) for change in self.changes)

    @property
    def empty(self) -> bool:
        """True when nothing changed."""
        return not any(change.keys for change in self.changes)

    def entries(self) -> Iterator[tuple[str, bytes, bytes | None]]:
        """Iterate ``(state, key bytes, value bytes or None for a deletion)``."""
        for change in self.changes:
            for key, value in zip(change.keys, change.values, strict=True):
                yield change.state, key, value


class StoreSnapshot:
    """A consistent read-only view of one store's committed state at one epoch.

    Taken with ``KeyGroupStore.snapshot()``: on LMDB one read transaction (MVCC: later flushes
    do not change what it shows, and it costs no copy), on the memory backend a copy of the
    dicts. It may be read from another thread than the one that took it, by one thread at a
    time, while the store's owner keeps flushing. Close it (or use it as a context manager)
    soon: an open LMDB read transaction keeps the pages of its epoch from being reused, and
    the map cannot grow while one is open. Close it before the store.

    Attributes:
        operator: The store's operator.
        key_group: The store's key group.
        epoch: The committed epoch it shows (``read_meta("epoch")`` at that instant, or None).
    """

    __slots__ = ("_names", "_snapshot", "epoch", "key_group", "operator")

    def __init__(
        self,
        operator: str,
        key_group: int,
        epoch: int | None,
        names: Sequence[str],
        snapshot: EngineSnapshot,
    ) -> None:
        """Wrap an engine snapshot (stores do this; call ``KeyGroupStore.snapshot()``)."""
        self.operator = operator
        self.key_group = key_group
        self.epoch = epoch
        self._names = sorted(names)
        self._snapshot = snapshot

    def __repr__(self) -> str:
        return f"<StoreSnapshot {self.operator}/kg-{self.key_group:05d} epoch {self.epoch}>"

    def __enter__(self) -> StoreSnapshot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def entries(self) -> Iterator[tuple[str, bytes, bytes]]:
        """Iterate ``(state name, key bytes, value bytes)`` by state name, then key bytes.

        The same format and order as ``KeyGroupStore.export_entries``.

        Raises:
            StorageError: The snapshot is closed.
        """
        for name in self._names:
            for key, value in self._snapshot.scan(name):
                yield name, key, value

    def close(self) -> None:
        """Release the snapshot; idempotent."""
        self._snapshot.close()
