"""What the runtime does with the checkpoint store, in a few lines, for the storage tests."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

from fsspec.implementations.memory import MemoryFileSystem  # type: ignore[import-untyped]
from shoal.storage import CheckpointStore, GroupRecord, KeyGroupStore, Manifest, StateSpec

Entries = dict[tuple[str, bytes], bytes]


def committed(store: KeyGroupStore) -> Entries:
    return {(state, key): value for state, key, value in store.export_entries()}


def write_group(
    checkpoints: CheckpointStore, store: KeyGroupStore, epoch: int, base: int | None
) -> GroupRecord:
    """A key group at barrier ``epoch``: commit locally, then write its checkpoint file."""
    delta = store.flush_epoch(epoch)
    if checkpoints.plan(store.operator, store.key_group, base) == "delta":
        assert base is not None
        if delta.since != base:  # an earlier checkpoint failed: carry its changes too
            delta = store.delta_since(base)
        return checkpoints.write_delta(epoch, delta, base)
    with store.snapshot() as snapshot:
        return checkpoints.write_full(epoch, store.operator, store.key_group, snapshot.entries())


def checkpoint(
    checkpoints: CheckpointStore,
    stores: Sequence[KeyGroupStore],
    epoch: int,
    specs: Sequence[StateSpec],
) -> Manifest:
    """One whole checkpoint of ``stores`` (operator "op", key groups 0..len-1)."""
    latest = checkpoints.latest_complete(verify=False)
    base = None if latest is None else latest.epoch
    records = [write_group(checkpoints, store, epoch, base) for store in stores]
    return checkpoints.commit(
        epoch,
        records,
        num_key_groups=len(stores),
        operators={"op": specs},
        positions={"split-0": epoch * 10},
        layout={"workers": 1},
    )


class FullMemoryFileSystem(MemoryFileSystem):  # type: ignore[misc]
    """A memory filesystem with ``budget`` bytes: a write past it stores part of the file
    (as a full device may) and raises ENOSPC."""

    protocol = "fullmemory"
    cachable = False

    def __init__(self, budget: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget = budget

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        if len(value) > self.budget:
            super().pipe_file(path, value[: self.budget], mode=mode, **kwargs)
            self.budget = 0
            raise OSError(errno.ENOSPC, "No space left on device", path)
        self.budget -= len(value)
        super().pipe_file(path, value, mode=mode, **kwargs)
