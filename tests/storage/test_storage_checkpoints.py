"""The checkpoint store: fulls, deltas and chains, manifests, corruption, ENOSPC, retention."""

from __future__ import annotations

import errno
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec  # type: ignore[import-untyped]
import pytest
from _checkpoint_helpers import (
    FullMemoryFileSystem,
    checkpoint,
    committed,
    write_group,
)
from _storage_helpers import SPECS
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.storage import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointStore,
    CheckpointWriteError,
    KeyGroupStore,
    MemoryBackend,
    StateBackend,
    describe_specs,
)


@pytest.fixture(params=["path", "file-url", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A checkpoint root: a plain directory, a file:// URL, or fsspec's memory filesystem."""
    if request.param == "path":
        yield str(tmp_path / "ckpt")
    elif request.param == "file-url":
        yield f"file://{tmp_path}/ckpt"
    else:
        root = f"memory://ckpt-{uuid.uuid4().hex}"
        yield root
        fs = fsspec.filesystem("memory")
        if fs.exists(root):
            fs.rm(root, recursive=True)


@pytest.fixture
def stores(backend: StateBackend) -> Iterator[list[KeyGroupStore]]:
    """Three key groups of operator "op" on each backend."""
    opened = [backend.open_store("op", key_group, SPECS) for key_group in range(3)]
    yield opened
    for store in opened:
        store.close()


def change(stores: list[KeyGroupStore], epoch: int) -> None:
    """Some puts, a delete and a map update per key group, different at every epoch."""
    for store in stores:
        for i in range(5):
            store.key = f"k{i}"
            store.states.count.update(epoch * 10 + i)
        store.key = f"k{epoch % 5}"
        store.states.count.clear()
        store.states.by_page.put(f"p{epoch}", epoch)
        store.key = f"new-{epoch}"
        store.states.seen.add(epoch)


def kinds(manifest: Any, key_group: int = 0) -> list[str]:
    return [record.kind for record in manifest.group("op", key_group).chain]


def test_fulls_then_deltas_rebuild_every_key_group(url: str, stores: list[KeyGroupStore]) -> None:
    checkpoints = CheckpointStore(url, full_every=10, max_delta_ratio=100.0)
    for epoch in (1, 2, 3):
        change(stores, epoch)
        manifest = checkpoint(checkpoints, stores, epoch, SPECS)
        for store in stores:
            loaded = checkpoints.load_group(manifest, "op", store.key_group)
            assert dict(((s, k), v) for s, k, v in loaded) == committed(store)
    assert kinds(manifest) == ["full", "delta", "delta"]
    assert manifest.positions == {"split-0": 30}
    assert manifest.layout == {"workers": 1}
    assert manifest.num_key_groups == 3
    assert manifest.operators == {"op": describe_specs(SPECS)}
    assert manifest.kind == "checkpoint"
    assert checkpoints.epochs() == [1, 2, 3]


def test_a_periodic_full_bounds_the_delta_chain(url: str, stores: list[KeyGroupStore]) -> None:
    checkpoints = CheckpointStore(url, full_every=3, max_delta_ratio=100.0)
    chains = []
    for epoch in range(1, 8):
        change(stores, epoch)
        chains.append(kinds(checkpoint(checkpoints, stores, epoch, SPECS)))
    assert chains == [
        ["full"],
        ["full", "delta"],
        ["full", "delta", "delta"],
        ["full"],
        ["full", "delta"],
        ["full", "delta", "delta"],
        ["full"],
    ]


def test_deltas_larger_than_the_full_trigger_a_full(url: str, stores: list[KeyGroupStore]) -> None:
    checkpoints = CheckpointStore(url, full_every=100, max_delta_ratio=0.5)
    change(stores, 1)
    checkpoint(checkpoints, stores, 1, SPECS)
    for store in stores:
        for i in range(50):
            store.key = f"bulk-{i}"
            store.states.count.update(i)
    assert kinds(checkpoint(checkpoints, stores, 2, SPECS)) == ["full", "delta"]
    change(stores, 3)
    # The chain's deltas now outweigh half its full: the next checkpoint writes a full.
    assert kinds(checkpoint(checkpoints, stores, 3, SPECS)) == ["full"]


def test_an_unchanged_key_group_writes_no_file(url: str, stores: list[KeyGroupStore]) -> None:
    checkpoints = CheckpointStore(url)
    change(stores, 1)
    first = checkpoint(checkpoints, stores, 1, SPECS)
    second = checkpoint(checkpoints, stores, 2, SPECS)
    assert second.group("op", 0).chain == first.group("op", 0).chain
    assert not [
        name for name in checkpoints.location.files("data") if "/00000000000000000002" in name
    ]


def test_a_restore_from_the_store_gives_the_state_at_the_checkpoint(
    url: str, stores: list[KeyGroupStore]
) -> None:
    checkpoints = CheckpointStore(url)
    for epoch in (1, 2):
        change(stores, epoch)
        checkpoint(checkpoints, stores, epoch, SPECS)
    expected = [committed(store) for store in stores]
    manifest = checkpoints.latest_complete()
    assert manifest is not None
    fresh = MemoryBackend()
    for key_group in range(3):
        with fresh.open_store("op", key_group, SPECS) as store:
            store.restore(checkpoints.load_group(manifest, "op", key_group), epoch=2, check=False)
            assert committed(store) == expected[key_group]
            assert store.epoch == 2


def _newest_delta(checkpoints: CheckpointStore) -> str:
    return checkpoints.read_manifest(checkpoints.epochs()[-1]).group("op", 1).chain[-1].path


def _flip_a_byte(checkpoints: CheckpointStore, name: str) -> None:
    data = bytearray(checkpoints.location.read(name))
    data[len(data) // 2] ^= 0x01
    checkpoints.location.write(name, bytes(data))


def _truncate(checkpoints: CheckpointStore, name: str) -> None:
    checkpoints.location.write(name, checkpoints.location.read(name)[:-7])


def _delete(checkpoints: CheckpointStore, name: str) -> None:
    checkpoints.location.delete(name)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_flip_a_byte, "checksum mismatch"),
        (_truncate, r"\d+ bytes, the manifest says \d+ \(truncated\?\)"),
        (_delete, "missing"),
    ],
)
def test_a_damaged_file_is_named_and_the_previous_checkpoint_is_used(
    url: str, stores: list[KeyGroupStore], damage: Any, problem: str
) -> None:
    checkpoints = CheckpointStore(url)
    for epoch in (1, 2):
        change(stores, epoch)
        checkpoint(checkpoints, stores, epoch, SPECS)
    name = _newest_delta(checkpoints)
    assert name == "data/00000000000000000002/op/kg-00001.delta"
    damage(checkpoints, name)
    skipped: list[tuple[int, CheckpointCorruptError]] = []
    latest = checkpoints.latest_complete(on_skip=lambda epoch, exc: skipped.append((epoch, exc)))
    assert latest is not None
    assert latest.epoch == 1
    assert [(epoch, exc.path) for epoch, exc in skipped] == [(2, name)]
    with pytest.raises(CheckpointCorruptError, match=rf"^{name}: {problem}$"):
        checkpoints.load_group(checkpoints.read_manifest(2), "op", 1)
    # The fallback is whole: checkpoint 1's key groups all load.
    for key_group in range(3):
        checkpoints.load_group(latest, "op", key_group)


def test_a_damaged_manifest_is_skipped(url: str, stores: list[KeyGroupStore]) -> None:
    checkpoints = CheckpointStore(url)
    for epoch in (1, 2):
        change(stores, epoch)
        checkpoint(checkpoints, stores, epoch, SPECS)
    name = CheckpointStore.manifest_name(2)
    fresh = CheckpointStore(url)  # no cached manifests, as after a restart
    _flip_a_byte(fresh, name)
    skipped: list[str] = []
    latest = fresh.latest_complete(on_skip=lambda epoch, exc: skipped.append(str(exc)))
    assert latest is not None
    assert latest.epoch == 1
    assert len(skipped) == 1
    assert skipped[0].startswith(f"{name}: ")


def test_no_space_while_writing_a_file_fails_that_checkpoint_only(
    stores: list[KeyGroupStore],
) -> None:
    root = f"/ckpt-{uuid.uuid4().hex}"
    fs = FullMemoryFileSystem(budget=1 << 30)
    checkpoints = CheckpointStore(root, fs=fs)
    change(stores, 1)
    checkpoint(checkpoints, stores, 1, SPECS)
    before = sorted(checkpoints.location.files())
    change(stores, 2)
    fs.budget = 10  # the device fills up during checkpoint 2
    name = "data/00000000000000000002/op/kg-00000.delta"
    with pytest.raises(
        CheckpointWriteError, match=rf"^cannot write {name} under {root}: No space left on device$"
    ) as caught:
        write_group(checkpoints, stores[0], 2, 1)
    assert caught.value.path == name
    checkpoints.abort(2)  # what the coordinator does with a failed checkpoint
    assert sorted(checkpoints.location.files()) == before
    latest = checkpoints.latest_complete()
    assert latest is not None
    assert latest.epoch == 1
    # The job goes on: space comes back and the next checkpoint completes from base 1.
    fs.budget = 1 << 30
    assert checkpoint(checkpoints, stores, 3, SPECS).epoch == 3
    fs.rm(root, recursive=True)


def test_no_space_while_writing_the_manifest_leaves_no_manifest_and_no_files(
    stores: list[KeyGroupStore],
) -> None:
    root = f"/ckpt-{uuid.uuid4().hex}"
    fs = FullMemoryFileSystem(budget=1 << 30)
    checkpoints = CheckpointStore(root, fs=fs)
    change(stores, 1)
    checkpoint(checkpoints, stores, 1, SPECS)
    before = sorted(checkpoints.location.files())
    change(stores, 2)
    records = [write_group(checkpoints, store, 2, 1) for store in stores]
    fs.budget = 5
    name = CheckpointStore.manifest_name(2)
    with pytest.raises(CheckpointWriteError, match=rf"^cannot write {name} under {root}: "):
        checkpoints.commit(2, records, num_key_groups=3, operators={"op": SPECS})
    assert sorted(checkpoints.location.files()) == before
    assert checkpoints.epochs() == [1]
    fs.rm(root, recursive=True)


class _FullLocalFileSystem(LocalFileSystem):  # type: ignore[misc]
    """A local filesystem whose files take ``budget`` bytes and then raise ENOSPC."""

    cachable = False

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        opened = super()._open(path, mode=mode, **kwargs)
        if "w" not in mode:
            return opened
        filesystem = self
        write = opened.write

        def limited(data: bytes) -> int:
            if len(data) > filesystem.budget:
                write(data[: filesystem.budget])
                filesystem.budget = 0
                raise OSError(errno.ENOSPC, "No space left on device")
            filesystem.budget -= len(data)
            return int(write(data))

        opened.write = limited
        return opened


def test_no_space_on_a_local_disk_leaves_no_partial_file(
    tmp_path: Path, stores: list[KeyGroupStore]
) -> None:
    fs = _FullLocalFileSystem(budget=1 << 30)
    checkpoints = CheckpointStore(str(tmp_path / "ckpt"), fs=fs)
    change(stores, 1)
    checkpoint(checkpoints, stores, 1, SPECS)
    before = sorted(checkpoints.location.files())
    change(stores, 2)
    fs.budget = 10
    with pytest.raises(CheckpointWriteError, match=r"No space left on device$"):
        write_group(checkpoints, stores[0], 2, 1)
    assert sorted(checkpoints.location.files()) == before  # the torn file was removed


def test_retention_keeps_every_referenced_file_and_deletes_the_rest(
    url: str, stores: list[KeyGroupStore]
) -> None:
    checkpoints = CheckpointStore(url, retain=2, full_every=3, max_delta_ratio=100.0)
    for epoch in range(1, 9):
        change(stores, epoch)
        checkpoint(checkpoints, stores, epoch, SPECS)
        kept = [checkpoints.read_manifest(e) for e in checkpoints.epochs()]
        assert [m.epoch for m in kept] == list(range(max(1, epoch - 1), epoch + 1))
        referenced = {record.path for manifest in kept for record in manifest.files()}
        present = set(checkpoints.location.files("data"))
        assert referenced == present
        for manifest in kept:
            checkpoints.verify(manifest)
        if epoch == 4:
            # An aborted checkpoint's leftovers (its coordinator died before abort()): the
            # next commit's retention removes them.
            checkpoints.location.write("data/00000000000000000004/op/kg-00009.delta", b"x")
    # Epoch 8's chains start at the full of 7 (full_every=3: 7 full, 8 delta): files of
    # 6 are referenced only while 6 is retained.
    assert kinds(checkpoints.read_manifest(8)) == ["full", "delta"]


def test_commit_refuses_a_missing_key_group(url: str, stores: list[KeyGroupStore]) -> None:
    checkpoints = CheckpointStore(url)
    change(stores, 1)
    records = [write_group(checkpoints, store, 1, None) for store in stores[:2]]
    with pytest.raises(
        CheckpointError,
        match=r"^checkpoint 1 lacks 1 key group\(s\), first op/kg-00002; every key group of "
        r"every operator must be written before the commit$",
    ):
        checkpoints.commit(1, records, num_key_groups=3, operators={"op": SPECS})
    assert checkpoints.epochs() == []


def test_a_delta_on_another_base_is_refused(url: str, stores: list[KeyGroupStore]) -> None:
    checkpoints = CheckpointStore(url)
    change(stores, 1)
    checkpoint(checkpoints, stores, 1, SPECS)
    change(stores, 2)
    stores[0].flush_epoch(2)  # checkpoint 2 failed; 3 is based on 1
    change(stores, 3)
    delta = stores[0].flush_epoch(3)
    with pytest.raises(
        CheckpointError,
        match=r"^delta of op/kg-00000 is since epoch 2, but the base checkpoint is 1; "
        r"write store.delta_since\(1\) or a full instead$",
    ):
        checkpoints.write_delta(3, delta, 1)


# Random histories with failing checkpoints, on the memory backend and filesystem.
_STEP = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 2), st.integers(0, 6), st.integers(0, 9)),
    st.tuples(st.just("clear"), st.integers(0, 2), st.integers(0, 6), st.just(0)),
    st.tuples(st.just("map"), st.integers(0, 2), st.integers(0, 6), st.integers(0, 3)),
    st.tuples(st.just("flush"), st.integers(0, 2), st.just(0), st.just(0)),
    st.tuples(st.just("checkpoint"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("failed"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("crashed"), st.just(0), st.just(0), st.just(0)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_STEP, max_size=40), full_every=st.integers(1, 4))
def test_random_histories_load_as_the_model_at_every_complete_checkpoint(
    steps: list[tuple[str, int, int, int]], full_every: int
) -> None:
    root = f"memory://prop-{uuid.uuid4().hex}"
    checkpoints = CheckpointStore(root, full_every=full_every, retain=2)
    backend = MemoryBackend()
    stores = [backend.open_store("op", key_group, SPECS) for key_group in range(3)]
    at: dict[int, list[dict[tuple[str, bytes], bytes]]] = {}
    epoch = 0
    for kind, key_group, key, value in steps:
        store = stores[key_group]
        store.key = key
        if kind == "put":
            store.states.count.update(value)
        elif kind == "clear":
            store.states.count.clear()
        elif kind == "map":
            store.states.by_page.put(value, epoch)
        elif kind == "flush":
            store.flush()
        elif kind == "checkpoint":
            epoch += 1
            checkpoint(checkpoints, stores, epoch, SPECS)
            at[epoch] = [committed(s) for s in stores]
        else:  # every key group commits locally, then the checkpoint fails
            epoch += 1
            latest = checkpoints.latest_complete(verify=False)
            base = None if latest is None else latest.epoch
            for s in stores:
                write_group(checkpoints, s, epoch, base)
            checkpoints.abort(epoch)
            if kind == "crashed":
                # Recovery's local fast path: back to the completed checkpoint.
                for s in stores:
                    if base is None:  # nothing completed yet: back to empty
                        s.restore([], epoch=0)
                    else:
                        s.rollback_to(base)
                    assert committed(s) == (at[base][s.key_group] if base else {})
                    assert s.epoch == (base or 0)
            # else the job goes on: the next checkpoint carries this epoch's changes too.
    latest = checkpoints.latest_complete()
    if latest is not None:
        for key_group in range(3):
            loaded = checkpoints.load_group(latest, "op", key_group)
            assert dict(((s, k), v) for s, k, v in loaded) == at[latest.epoch][key_group]
    for store in stores:
        store.close()
    memory = fsspec.filesystem("memory")
    if memory.exists(root):
        memory.rm(root, recursive=True)


def test_positions_that_are_not_cbor_are_refused_before_anything_is_written(
    url: str, stores: list[KeyGroupStore]
) -> None:
    checkpoints = CheckpointStore(url)
    records = [write_group(checkpoints, store, 1, None) for store in stores]
    with pytest.raises(
        CheckpointError, match=r"^checkpoint 1: positions and layout must be CBOR-encodable \("
    ):
        checkpoints.commit(
            1, records, num_key_groups=3, operators={"op": SPECS}, positions={"s": object()}
        )
    assert checkpoints.epochs() == []


def test_restore_store_takes_the_local_path_when_it_can(
    url: str, stores: list[KeyGroupStore]
) -> None:
    checkpoints = CheckpointStore(url)
    change(stores, 1)
    manifest = checkpoint(checkpoints, stores, 1, SPECS)
    at_one = [committed(store) for store in stores]
    change(stores, 2)
    write_group(checkpoints, stores[1], 2, 1)  # kg 1 committed epoch 2; checkpoint 2 failed
    stores[2].flush_epoch(2)
    stores[2].prune_undo(2)  # kg 2 cannot roll back: its log starts at 2
    paths = [checkpoints.restore_store(store, manifest) for store in stores]
    assert paths == ["local", "rolled back", "restored"]
    assert [committed(store) for store in stores] == at_one
    assert [store.epoch for store in stores] == [1, 1, 1]
    assert checkpoints.restore_store(stores[0], manifest, local=False) == "restored"
    assert committed(stores[0]) == at_one[0]
    assert checkpoints.restore_store(stores[0], None) == "empty"
    assert committed(stores[0]) == {}


def test_a_corrupt_file_leaves_the_store_as_it_was(url: str, stores: list[KeyGroupStore]) -> None:
    checkpoints = CheckpointStore(url)
    change(stores, 1)
    manifest = checkpoint(checkpoints, stores, 1, SPECS)
    change(stores, 2)
    stores[0].flush_epoch(2)
    stores[0].prune_undo(2)
    before = committed(stores[0])
    name = manifest.group("op", 0).chain[0].path
    _flip_a_byte(checkpoints, name)
    with pytest.raises(CheckpointCorruptError, match=rf"^{name}: checksum mismatch$"):
        checkpoints.restore_store(stores[0], manifest)
    assert committed(stores[0]) == before
    assert stores[0].epoch == 2


def test_key_groups_write_one_checkpoint_from_many_threads(
    url: str, stores: list[KeyGroupStore]
) -> None:
    checkpoints = CheckpointStore(url)
    change(stores, 1)
    checkpoint(checkpoints, stores, 1, SPECS)
    change(stores, 2)
    deltas = [store.flush_epoch(2) for store in stores]
    with ThreadPoolExecutor(max_workers=3) as pool:
        records = list(pool.map(lambda delta: checkpoints.write_delta(2, delta, 1), deltas))
    manifest = checkpoints.commit(2, records, num_key_groups=3, operators={"op": SPECS})
    for store in stores:
        loaded = checkpoints.load_group(manifest, "op", store.key_group)
        assert dict(((s, k), v) for s, k, v in loaded) == committed(store)
