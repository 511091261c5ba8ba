"""Savepoints: written from stores or a checkpoint, inspected, verified, rewritten, restored."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec  # type: ignore[import-untyped]
import pytest
import xxhash
from _checkpoint_helpers import FullMemoryFileSystem, checkpoint, committed
from _storage_helpers import SPECS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.storage import (
    CheckpointError,
    CheckpointStore,
    CheckpointWriteError,
    KeyGroupStore,
    MemoryBackend,
    StateBackend,
    ValueStateSpec,
    encode_key,
    encode_value,
    inspect_savepoint,
    load_savepoint_group,
    read_savepoint,
    rewrite_savepoint,
    savepoint_from_checkpoint,
    verify_savepoint,
    write_savepoint,
)

GROUPS = 4


def group_of(key: bytes, num_key_groups: int) -> int:
    """A stand-in for the runtime's key hash (stable bytes -> 64-bit hash -> modulo)."""
    return xxhash.xxh3_64_intdigest(key) % num_key_groups


KEYS = ["alice", "bob", "carol", 7, ("dave", 2), b"raw", "erin", "frank"]


@pytest.fixture
def stores(backend: StateBackend) -> Iterator[list[KeyGroupStore]]:
    """GROUPS key groups of "op", each key in its group_of group, with every state kind."""
    opened = [backend.open_store("op", key_group, SPECS) for key_group in range(GROUPS)]
    for i, key in enumerate(KEYS):
        store = opened[group_of(encode_key(key), GROUPS)]
        store.key = key
        store.states.count.update(i)
        store.states.seen.add(f"x{i}")
        store.states.by_page.put("home", i)
        store.states.by_page.put(("page", i), -i)
        store.states.total.add(i)
    for store in opened:
        store.flush_epoch(1)
    yield opened
    for store in opened:
        store.close()


@pytest.fixture(params=["path", "memory"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A place for savepoints: a local directory or fsspec's memory filesystem."""
    if request.param == "path":
        yield str(tmp_path)
    else:
        root = f"memory://sp-{uuid.uuid4().hex}"
        yield root
        fs = fsspec.filesystem("memory")
        if fs.exists(root):
            fs.rm(root, recursive=True)


def _write(stores: list[KeyGroupStore], url: str) -> Any:
    return write_savepoint(
        url,
        ((store.operator, store.key_group, store.export_entries()) for store in stores),
        epoch=1,
        num_key_groups=GROUPS,
        operators={"op": SPECS},
        positions={"split-0": 42},
    )


def test_inspect_lists_operators_states_groups_and_a_keys_values(
    stores: list[KeyGroupStore], where: str
) -> None:
    _write(stores, f"{where}/sp")
    info = inspect_savepoint(f"{where}/sp", key="alice")
    assert (info.epoch, info.num_key_groups, info.positions) == (1, GROUPS, {"split-0": 42})
    assert [state["name"] for state in info.operators["op"]] == [
        "count",
        "seen",
        "by_page",
        "total",
        "mean",
    ]
    assert [(group.operator, group.key_group) for group in info.groups] == [
        ("op", key_group) for key_group in range(GROUPS)
    ]
    assert sum(group.entries for group in info.groups) == len(KEYS) * 5  # 2 map entries
    for group, store in zip(info.groups, stores, strict=True):
        assert group.entries_by_state == store.statistics().entries_by_state
        assert (group.bytes > 0) == (group.entries > 0)
    assert info.values == {
        ("op", "count"): 0,
        ("op", "seen"): ["x0"],
        ("op", "by_page"): {"home": 0, ("page", 0): 0},
        ("op", "total"): 0,
    }
    hashed = inspect_savepoint(f"{where}/sp", key=("dave", 2), group_of=group_of)
    assert hashed.values[("op", "count")] == 4


def test_a_savepoint_from_a_checkpoint_holds_the_checkpoints_state(
    stores: list[KeyGroupStore], where: str
) -> None:
    checkpoints = CheckpointStore(f"{where}/ckpt")
    for epoch in (2, 3):
        for store in stores:
            store.key = "alice"
            store.states.count.update(epoch)
        checkpoint(checkpoints, stores, epoch, SPECS)
    manifest = checkpoints.latest_complete()
    assert manifest is not None
    savepoint = savepoint_from_checkpoint(checkpoints, manifest, f"{where}/sp")
    assert savepoint.kind == "savepoint"
    assert savepoint.epoch == 3
    for store in stores:
        loaded = load_savepoint_group(f"{where}/sp", savepoint, "op", store.key_group)
        assert dict(((s, k), v) for s, k, v in loaded) == committed(store)
    assert verify_savepoint(f"{where}/sp").ok


def test_verify_names_every_damaged_file(stores: list[KeyGroupStore], where: str) -> None:
    manifest = _write(stores, f"{where}/sp")
    report = verify_savepoint(f"{where}/sp")
    assert report.ok
    assert report.files == sum(1 for group in manifest.groups.values() if group.chain)
    assert report.problems == ()
    fs, root = fsspec.core.url_to_fs(f"{where}/sp")
    name = "op/kg-00001.cbor"
    data = bytearray(fs.cat_file(f"{root}/{name}"))
    data[-1] ^= 0xFF
    fs.pipe_file(f"{root}/{name}", bytes(data))
    fs.rm_file(f"{root}/op/kg-00002.cbor")
    report = verify_savepoint(f"{where}/sp")
    assert not report.ok
    assert report.problems == (f"{name}: checksum mismatch", "op/kg-00002.cbor: missing")


def test_verify_reports_a_missing_manifest(where: str) -> None:
    report = verify_savepoint(f"{where}/nothing")
    assert not report.ok
    assert report.problems[0].startswith("manifest.cbor: missing; is ")


@pytest.mark.parametrize("new_groups", [1, 3, 16])
def test_rewrite_rehashes_every_key_and_keeps_its_values(
    stores: list[KeyGroupStore], where: str, new_groups: int
) -> None:
    _write(stores, f"{where}/sp")
    rewritten = rewrite_savepoint(f"{where}/sp", f"{where}/out", new_groups, group_of)
    assert rewritten.num_key_groups == new_groups
    assert verify_savepoint(f"{where}/out").ok
    before = {(s, k): v for store in stores for s, k, v in store.export_entries()}
    after = {}
    for key_group in range(new_groups):
        for state, key, value in load_savepoint_group(f"{where}/out", rewritten, "op", key_group):
            # Encoded keys are prefix-free: a map entry's key starts with exactly one of them.
            (head,) = [encode_key(k) for k in KEYS if key.startswith(encode_key(k))]
            assert group_of(head, new_groups) == key_group
            after[(state, key)] = value
    assert after == before
    for key in KEYS:
        old = inspect_savepoint(f"{where}/sp", key=key).values
        assert inspect_savepoint(f"{where}/out", key=key, group_of=group_of).values == old


def test_a_rewritten_savepoint_restores_into_stores_of_the_new_layout(
    stores: list[KeyGroupStore], where: str
) -> None:
    _write(stores, f"{where}/sp")
    rewritten = rewrite_savepoint(f"{where}/sp", f"{where}/out", 3, group_of)
    fresh = MemoryBackend()
    for key_group in range(3):
        with fresh.open_store("op", key_group, SPECS) as store:
            entries = load_savepoint_group(f"{where}/out", rewritten, "op", key_group)
            store.restore(entries, epoch=rewritten.epoch)
            for key in KEYS:
                if group_of(encode_key(key), 3) == key_group:
                    assert store.get("count", key) == KEYS.index(key)
                    assert store.get("by_page", key)["home"] == KEYS.index(key)


def test_rewrite_refuses_a_group_outside_the_layout(
    stores: list[KeyGroupStore], where: str
) -> None:
    _write(stores, f"{where}/sp")
    with pytest.raises(
        ValueError, match=r"^group_of returned 5 for a key; it must return an int in 0\.\.1$"
    ):
        rewrite_savepoint(f"{where}/sp", f"{where}/out", 2, lambda key, n: 5)
    assert read_savepoint(f"{where}/sp").num_key_groups == GROUPS


def test_a_savepoint_is_not_written_over_another(stores: list[KeyGroupStore], where: str) -> None:
    _write(stores, f"{where}/sp")
    with pytest.raises(CheckpointError, match=r"already holds a savepoint; choose another path"):
        _write(stores, f"{where}/sp")


def test_no_space_while_writing_a_savepoint_leaves_nothing(stores: list[KeyGroupStore]) -> None:
    root = f"/sp-{uuid.uuid4().hex}"
    fs = FullMemoryFileSystem(budget=300)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device$"):
        write_savepoint(
            root,
            ((store.operator, store.key_group, store.export_entries()) for store in stores),
            epoch=1,
            num_key_groups=GROUPS,
            operators={"op": SPECS},
            fs=fs,
        )
    assert not fs.exists(root) or fs.find(root) == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.dictionaries(
        st.one_of(st.text(max_size=6), st.integers(), st.binary(max_size=4)),
        st.integers(),
        max_size=40,
    ),
    old_groups=st.integers(1, 8),
    new_groups=st.integers(1, 8),
)
def test_rewrite_keeps_every_key_in_its_new_group(
    values: dict[Any, int], old_groups: int, new_groups: int
) -> None:
    root = f"memory://rw-{uuid.uuid4().hex}"
    specs = (ValueStateSpec("v"),)
    by_group: dict[int, list[tuple[str, bytes, bytes]]] = {}
    for key, value in values.items():
        encoded = encode_key(key)
        by_group.setdefault(group_of(encoded, old_groups), []).append(
            ("v", encoded, encode_value(value))
        )
    write_savepoint(
        f"{root}/sp",
        (("op", g, sorted(by_group.get(g, []))) for g in range(old_groups)),
        epoch=9,
        num_key_groups=old_groups,
        operators={"op": specs},
    )
    rewritten = rewrite_savepoint(f"{root}/sp", f"{root}/out", new_groups, group_of)
    seen = {}
    for g in range(new_groups):
        for _state, key, value in load_savepoint_group(f"{root}/out", rewritten, "op", g):
            assert group_of(key, new_groups) == g
            seen[key] = value
    assert seen == {encode_key(k): encode_value(v) for k, v in values.items()}
    fsspec.filesystem("memory").rm(root, recursive=True)
