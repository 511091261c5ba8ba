"""``shoal state`` inspect, verify, rewrite and savepoint, on state made with the storage API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shoal.runtime._cli import main
from shoal.runtime._keys import KeyGroupRouter, key_group_of, key_group_of_bytes
from shoal.storage import (
    CheckpointStore,
    KeyGroupStore,
    MapStateSpec,
    MemoryBackend,
    ValueStateSpec,
    encode_key,
    inspect_savepoint,
    load_savepoint_group,
    read_savepoint,
    verify_savepoint,
    write_savepoint,
)
from test_keys import VECTORS

SHOAL = Path(sys.executable).with_name("shoal")
GROUPS = 4
SPECS = (ValueStateSpec("count", default=0), MapStateSpec("pages"))
# key -> (count, pages): every key kind a key may be
STATE: dict[Any, tuple[int, dict[Any, int]]] = {
    "alice": (1, {"home": 0}),
    "bob": (2, {"cart": 5, "home": 1}),  # map entries in key-byte order
    "carol": (3, {"home": 2}),
    7: (4, {("page", 3): 3}),
    ("dave", 2): (5, {"home": 4}),
    b"raw": (6, {}),
}


def test_key_group_of_bytes_agrees_with_the_pinned_vectors_and_the_router() -> None:
    for key, expected_hash, group_of_128 in VECTORS:
        assert key_group_of_bytes(encode_key(key), 1 << 64) == expected_hash
        assert key_group_of_bytes(encode_key(key), 128) == group_of_128


keys = st.recursive(
    st.one_of(st.text(), st.binary(), st.integers(min_value=-(2**70), max_value=2**70)),
    lambda inner: st.tuples(inner, inner),
    max_leaves=4,
)


@given(key=keys, num_key_groups=st.integers(min_value=1, max_value=1 << 15))
def test_key_group_of_bytes_is_the_routers_group_for_every_key(
    key: Any, num_key_groups: int
) -> None:
    expected = KeyGroupRouter(num_key_groups).group_of(key)
    assert key_group_of_bytes(encode_key(key), num_key_groups) == expected


def _stores(num_key_groups: int = GROUPS) -> list[KeyGroupStore]:
    backend = MemoryBackend()
    stores = [backend.open_store("clicks", kg, SPECS) for kg in range(num_key_groups)]
    for key, (count, pages) in STATE.items():
        store = stores[key_group_of(key, num_key_groups)]
        store.key = key
        store.states.count.update(count)
        for page, n in pages.items():
            store.states.pages.put(page, n)
    return stores


def _savepoint(path: Path) -> Path:
    stores = _stores()
    for store in stores:
        store.flush()
    write_savepoint(
        path,
        ((store.operator, store.key_group, store.export_entries()) for store in stores),
        epoch=3,
        num_key_groups=GROUPS,
        operators={"clicks": SPECS},
        positions={"split-0": 42},
    )
    return path


@pytest.fixture
def savepoint(tmp_path: Path) -> Path:
    return _savepoint(tmp_path / "sp")


def _checkpoints(root: Path, epochs: int) -> Iterator[None]:
    """Checkpoint epochs 1..``epochs`` of the stores (count += 10 per epoch), full then deltas;
    yields after each commit."""
    stores = _stores()
    checkpoints = CheckpointStore(root)
    base = None
    for epoch in range(1, epochs + 1):
        if epoch > 1:
            for store in stores:
                for key in STATE:
                    if key_group_of(key, GROUPS) == store.key_group:
                        store.key = key
                        store.states.count.update(store.states.count.value() + 10)
        records = []
        for store in stores:
            delta = store.flush_epoch(epoch)
            if checkpoints.plan(store.operator, store.key_group, base) == "delta":
                records.append(checkpoints.write_delta(epoch, delta, epoch - 1))
            else:
                with store.snapshot() as snapshot:
                    records.append(
                        checkpoints.write_full(
                            epoch, store.operator, store.key_group, snapshot.entries()
                        )
                    )
        checkpoints.commit(
            epoch,
            records,
            num_key_groups=GROUPS,
            operators={"clicks": SPECS},
            positions={"split-0": epoch},
        )
        base = epoch
        yield


def _make_checkpoints(root: Path, epochs: int) -> Path:
    for _ in _checkpoints(root, epochs):
        pass
    return root


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["state", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# inspect


def test_inspect_lists_operators_states_key_groups_entries_and_sizes(
    savepoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(capsys, "inspect", str(savepoint))
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"savepoint {savepoint}: epoch 3, {GROUPS} key groups"
    assert re.fullmatch(
        r"operator clicks: 12 entries, [\d,]+ bytes in \d of 4 key groups", lines[1]
    )
    assert lines[2] == "  state count (value): 6 entries"
    assert lines[3] == "  state pages (map): 6 entries"
    groups = [
        re.fullmatch(
            r"  key group (\d): (\d+) entr(?:y|ies) \(count (\d+), pages (\d+)\), "
            r"[\d,]+ bytes",
            line,
        )
        for line in lines[4:]
    ]
    assert all(groups)
    expected: dict[int, int] = {}
    for key in STATE:
        expected[key_group_of(key, GROUPS)] = expected.get(key_group_of(key, GROUPS), 0) + 1
    assert {int(m[1]): int(m[3]) for m in groups if m} == expected


def test_inspect_json_sums_match_the_savepoint(
    savepoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "inspect", str(savepoint), "--json")
    report = json.loads(out)
    assert status == 0
    assert (report["kind"], report["epoch"], report["num_key_groups"]) == ("savepoint", 3, 4)
    assert report["positions"] == {"split-0": 42}
    (clicks,) = report["operators"]
    assert clicks["states"] == [
        {"name": "count", "kind": "value", "entries": 6},
        {"name": "pages", "kind": "map", "entries": 6},
    ]
    files = list(read_savepoint(savepoint).files())
    assert clicks["bytes"] == sum(record.size for record in files)
    assert clicks["entries"] == sum(record.entries for record in files)
    assert report["key"] is None


@pytest.mark.parametrize(
    ("argument", "key"),
    [("alice", "alice"), ('"bob"', "bob"), ("7", 7), ('["dave", 2]', ("dave", 2))],
)
def test_inspect_key_prints_the_keys_values_and_key_group(
    savepoint: Path, capsys: pytest.CaptureFixture[str], argument: str, key: Any
) -> None:
    status, out, _ = _run(capsys, "inspect", str(savepoint), "--key", argument)
    count, pages = STATE[key]
    tail = out.splitlines()[-3:]
    assert status == 0
    assert tail == [
        f"key {key!r}: key group {key_group_of(key, GROUPS)}",
        f"  clicks.count = {count!r}",
        f"  clicks.pages = {pages!r}",
    ]


def test_inspect_key_json_gives_map_entries_as_pairs(
    savepoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "inspect", str(savepoint), "--key", "7", "--json")
    assert status == 0
    assert json.loads(out)["key"] == {
        "key": 7,
        "key_group": key_group_of(7, GROUPS),
        "values": [
            {"operator": "clicks", "state": "count", "value": 4},
            {"operator": "clicks", "state": "pages", "value": [[["page", 3], 3]]},
        ],
    }


def test_inspect_a_key_without_state_says_so(
    savepoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "inspect", str(savepoint), "--key", "nobody")
    assert status == 0
    assert out.splitlines()[-2:] == [
        f"key 'nobody': key group {key_group_of('nobody', GROUPS)}",
        "  no state holds a value for it",
    ]


def test_inspect_a_checkpoint_directory_reads_its_latest_complete_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _make_checkpoints(tmp_path / "ckpt", 3)
    status, out, err = _run(capsys, "inspect", str(root), "--key", "bob")
    assert (status, err) == (0, "")
    assert out.splitlines()[0] == (
        f"checkpoint directory {root}: epoch 3, the latest complete checkpoint, 4 key groups"
    )
    assert "  clicks.count = 22" in out.splitlines()  # 2, +10 at epochs 2 and 3


def _damage_newest(root: Path, epochs: int) -> str:
    """Flip a byte in a file that only the newest checkpoint (``epochs``) wrote; its path."""
    newest = CheckpointStore(root).read_manifest(epochs)
    damaged = next(r for r in newest.files() if r.epoch == epochs)
    _flip_a_byte(root / damaged.path)
    return damaged.path


def test_inspect_of_a_damaged_newest_checkpoint_shows_the_older_one_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _make_checkpoints(tmp_path / "ckpt", 3)
    damaged = _damage_newest(root, 3)
    status, out, err = _run(capsys, "inspect", str(root), "--key", "bob")
    assert status == 1
    assert err.splitlines() == [
        f"shoal: damaged: checkpoint 3 skipped: {damaged}: checksum mismatch",
        "shoal: damaged: shown: checkpoint 2, the newest that verifies",
    ]
    assert out.splitlines()[0] == (
        f"checkpoint directory {root}: epoch 2, the newest complete checkpoint that verifies "
        "(newer ones are damaged), 4 key groups"
    )
    assert "  clicks.count = 12" in out.splitlines()
    status, out, _err = _run(capsys, "inspect", str(root), "--json")
    report = json.loads(out)
    assert (status, report["epoch"]) == (1, 2)
    assert report["skipped"] == [f"checkpoint 3 skipped: {damaged}: checksum mismatch"]


def test_inspect_epoch_reads_the_checkpoint_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _make_checkpoints(tmp_path / "ckpt", 3)
    damaged = _damage_newest(root, 3)
    status, out, err = _run(capsys, "inspect", str(root), "--epoch", "2", "--key", "bob")
    assert (status, err) == (0, "")
    assert out.splitlines()[0] == (f"checkpoint directory {root}: epoch 2, as asked, 4 key groups")
    assert "  clicks.count = 12" in out.splitlines()
    status, _out, err = _run(capsys, "inspect", str(root), "--epoch", "3")
    assert status == 1
    assert err == (f"shoal: error: {root}: checkpoint 3 is damaged: {damaged}: checksum mismatch\n")


# verify


def test_verify_a_good_savepoint_exits_0(
    savepoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "verify", str(savepoint))
    report = verify_savepoint(savepoint)
    assert status == 0
    assert out == f"savepoint {savepoint}: ok, {report.files} files, {report.bytes:,} bytes\n"


def test_verify_names_each_damaged_file_and_exits_1(
    savepoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(record.path for record in read_savepoint(savepoint).files())
    _flip_a_byte(savepoint / files[0])
    (savepoint / files[-1]).write_bytes((savepoint / files[-1]).read_bytes()[:-3])
    size = (savepoint / files[-1]).stat().st_size
    status, out, _ = _run(capsys, "verify", str(savepoint))
    assert status == 1
    assert out.splitlines() == [
        f"savepoint {savepoint}: DAMAGED, 2 bad file(s)",
        f"  {savepoint}/{files[0]}: checksum mismatch",
        f"  {savepoint}/{files[-1]}: {size} bytes, the manifest says {size + 3} (truncated?)",
    ]
    status, out, _ = _run(capsys, "verify", str(savepoint), "--json")
    report = json.loads(out)
    assert (status, report["ok"], report["files"]) == (1, False, len(files))
    assert [problem.split(":")[0] for problem in report["problems"]] == [files[0], files[-1]]


def test_verify_a_checkpoint_directory_checks_every_complete_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _make_checkpoints(tmp_path / "ckpt", 3)
    store = CheckpointStore(root)
    files = {epoch: list(store.read_manifest(epoch).files()) for epoch in (1, 2, 3)}
    sizes = {epoch: sum(r.size for r in records) for epoch, records in files.items()}
    status, out, err = _run(capsys, "verify", str(root))
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"checkpoint directory {root}: ok, 3 complete checkpoints",
        f"  checkpoint 1: ok, {len(files[1])} files, {sizes[1]:,} bytes",
        f"  checkpoint 2: ok, {len(files[2])} files, {sizes[2]:,} bytes",
        f"  checkpoint 3: ok, {len(files[3])} files, {sizes[3]:,} bytes",
    ]


def test_verify_a_damaged_checkpoint_directory_names_each_file_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _make_checkpoints(tmp_path / "ckpt", 3)
    damaged = _damage_newest(root, 3)
    status, out, _err = _run(capsys, "verify", str(root))
    assert status == 1
    assert out.splitlines()[0] == (
        f"checkpoint directory {root}: DAMAGED, 1 of 3 complete checkpoints damaged; the "
        "newest that verifies is 2"
    )
    assert out.splitlines()[3:] == [
        "  checkpoint 3: DAMAGED, 1 bad file(s)",
        f"    {root}/{damaged}: checksum mismatch",
    ]
    # A file of the first checkpoint is in every chain built on it: all three are damaged.
    first = next(r for r in CheckpointStore(root).read_manifest(1).files())
    _flip_a_byte(root / first.path)
    status, out, _err = _run(capsys, "verify", str(root), "--json")
    report = json.loads(out)
    assert (status, report["ok"], report["kind"], report["newest_good"]) == (
        1,
        False,
        "checkpoint",
        None,
    )
    assert [(c["epoch"], c["ok"]) for c in report["checkpoints"]] == [
        (1, False),
        (2, False),
        (3, False),
    ]
    assert report["problems"] == [
        f"{first.path}: checksum mismatch",
        f"{damaged}: checksum mismatch",
    ]


def test_verify_a_checkpoint_directory_without_a_manifest_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ckpt" / "manifests").mkdir(parents=True)
    status, out, _err = _run(capsys, "verify", str(tmp_path / "ckpt"))
    assert status == 1
    assert out == (
        f"checkpoint directory {tmp_path / 'ckpt'}: DAMAGED, no complete checkpoint "
        "(no manifest in manifests/)\n"
    )


# rewrite


@pytest.mark.parametrize("num_key_groups", [1, 3, 16])
def test_rewrite_keeps_every_value_and_puts_each_key_where_the_router_does(
    savepoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], num_key_groups: int
) -> None:
    out_dir = tmp_path / "out"
    status, out, _ = _run(
        capsys, "rewrite", str(savepoint), "--key-groups", str(num_key_groups), str(out_dir)
    )
    assert status == 0
    assert out.startswith(
        f"savepoint {out_dir}: epoch 3, {num_key_groups} key groups (from 4 in {savepoint}), "
        "12 entries in "
    )
    manifest = read_savepoint(out_dir)
    router = KeyGroupRouter(num_key_groups)
    placed: dict[Any, set[int]] = {}
    for key_group in range(num_key_groups):
        for _state, raw_key, _value in load_savepoint_group(out_dir, manifest, "clicks", key_group):
            # a MapState entry's key is encode_key(key) + encode_key(map key); CBOR items are
            # self-delimiting, so exactly one key's bytes start it
            (key,) = [key for key in STATE if raw_key.startswith(encode_key(key))]
            placed.setdefault(key, set()).add(key_group)
    assert placed == {key: {router.group_of(key)} for key in STATE}
    for key, (count, pages) in STATE.items():
        values = inspect_savepoint(out_dir, key=key).values  # every group searched
        assert values.get(("clicks", "count")) == count
        assert values.get(("clicks", "pages"), {}) == pages
    assert verify_savepoint(out_dir).ok


def test_rewrite_of_a_damaged_savepoint_names_the_file_and_writes_nothing(
    savepoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = sorted(record.path for record in read_savepoint(savepoint).files())[0]
    _flip_a_byte(savepoint / name)
    status, _, err = _run(
        capsys, "rewrite", str(savepoint), "--key-groups", "2", str(tmp_path / "o")
    )
    assert status == 1
    assert err == f"shoal: error: {savepoint}: damaged: {name}: checksum mismatch\n"
    assert not (tmp_path / "o" / "manifest.cbor").exists()


# savepoint


def test_savepoint_materializes_the_latest_complete_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _make_checkpoints(tmp_path / "ckpt", 3)
    out_dir = tmp_path / "sp"
    status, out, _ = _run(capsys, "savepoint", str(root), str(out_dir))
    assert status == 0
    assert out.startswith(
        f"savepoint {out_dir}: epoch 3 (the latest complete checkpoint of {root}), "
        "4 key groups, 12 entries in "
    )
    status, out, _ = _run(capsys, "inspect", str(out_dir), "--key", "carol")
    assert "  clicks.count = 23" in out.splitlines()
    assert read_savepoint(out_dir).positions == {"split-0": 3}


def test_savepoint_refuses_a_damaged_newest_checkpoint_and_names_the_epoch_to_give(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _make_checkpoints(tmp_path / "ckpt", 3)
    damaged = _damage_newest(root, 3)
    out_dir = tmp_path / "sp"
    status, out, err = _run(capsys, "savepoint", str(root), str(out_dir))
    assert (status, out) == (1, "")
    assert err == (
        f"shoal: error: {root}: the newest checkpoint is damaged (checkpoint 3 skipped: "
        f"{damaged}: checksum mismatch); the newest that verifies is 2: to save it, give "
        "--epoch 2\n"
    )
    assert not out_dir.exists()
    status, out, err = _run(capsys, "savepoint", str(root), str(out_dir), "--epoch", "2")
    assert (status, err) == (0, "")
    assert out.startswith(f"savepoint {out_dir}: epoch 2 (checkpoint of {root}), ")
    assert read_savepoint(out_dir).epoch == 2


def test_savepoint_of_a_directory_without_a_complete_checkpoint_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _make_checkpoints(tmp_path / "ckpt", 1)
    (root / CheckpointStore.manifest_name(1)).write_bytes(b"torn")
    status, _, err = _run(capsys, "savepoint", str(root), str(tmp_path / "sp"))
    assert status == 1
    assert err.startswith(f"shoal: error: {root}: no complete checkpoint; checkpoint 1 skipped: ")


# bad input


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "{tmp}/nope"], "{tmp}/nope: no such file or directory"),
        (
            ["verify", "{tmp}/empty"],
            "{tmp}/empty: not a savepoint (no manifest.cbor) nor a "
            "checkpoint directory (no manifests/)",
        ),
        (["verify", "{tmp}/file"], "{tmp}/file: not a directory; give a savepoint directory"),
        (
            ["inspect", "{sp}", "--key", "1.5"],
            "--key 1.5 parses as JSON to an invalid key: key must be str, bytes, int or a tuple "
            "of those; got float; quote it as a JSON string ('\"...\"') to look up a string",
        ),
        (
            ["inspect", "{sp}", "--key", "null"],
            "--key null parses as JSON to an invalid key: key must be str, bytes, int or a "
            "tuple of those; got NoneType; quote it as a JSON string ('\"...\"') to look up a "
            "string",
        ),
        (
            ["rewrite", "{sp}", "--key-groups", "0", "{tmp}/o"],
            "argument --key-groups: expected an integer from 1 to 32768, got '0'",
        ),
        (
            ["rewrite", "{sp}", "--key-groups", "many", "{tmp}/o"],
            "argument --key-groups: expected an integer from 1 to 32768, got 'many'",
        ),
        (
            ["rewrite", "{sp}", "--key-groups", "40000", "{tmp}/o"],
            "argument --key-groups: expected an integer from 1 to 32768, got '40000'",
        ),
        (
            ["rewrite", "{sp}", "--key-groups", "2", "{tmp}/file"],
            "{tmp}/file exists and is not empty; choose a new OUT or delete it",
        ),
        (
            ["rewrite", "{sp}", "--key-groups", "2", "{sp}"],
            "{sp} exists and is not empty; choose a new OUT or delete it",
        ),
        (
            ["rewrite", "{ckpt}", "--key-groups", "2", "{tmp}/o"],
            "{ckpt} is a checkpoint directory; `shoal state rewrite` takes a savepoint: make one "
            "first with `shoal state savepoint {ckpt} OUT`",
        ),
        (
            ["savepoint", "{ckpt}", "{tmp}/o", "--epoch", "7"],
            "{ckpt} has no complete checkpoint 7; its complete checkpoints: 1",
        ),
        (
            ["savepoint", "{ckpt}", "{tmp}/o", "--epoch", "0"],
            "argument --epoch: expected a checkpoint epoch (1, 2, ...), got '0'",
        ),
        (
            ["inspect", "{sp}", "--epoch", "1"],
            "{sp} is a savepoint (one checkpoint); --epoch picks a checkpoint of a checkpoint "
            "directory",
        ),
        (
            ["savepoint", "{sp}", "{tmp}/o"],
            "{sp} is a savepoint, not a checkpoint directory",
        ),
        (
            ["savepoint", "{ckpt}", "{sp}"],
            "{sp} exists and is not empty; choose a new OUT or delete it",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    places = {"tmp": str(tmp_path), "sp": str(tmp_path / "sp"), "ckpt": str(tmp_path / "ckpt")}
    _savepoint(tmp_path / "sp")
    _make_checkpoints(tmp_path / "ckpt", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    status, _, err = _run(capsys, *(arg.format(**places) for arg in argv))
    assert status == 2
    assert err.splitlines()[-1] == f"shoal: error: {message.format(**places)}"
    assert not (tmp_path / "o").exists()


def test_an_existing_empty_out_directory_is_used(
    savepoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "o").mkdir()
    status, _, _ = _run(capsys, "rewrite", str(savepoint), "--key-groups", "2", str(tmp_path / "o"))
    assert status == 0
    assert read_savepoint(tmp_path / "o").num_key_groups == 2


def test_a_usage_error_with_json_is_one_json_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "verify", str(tmp_path / "nope"), "--json")
    assert status == 2
    assert json.loads(out) == {
        "ok": False,
        "error": {"kind": "usage", "message": f"{tmp_path}/nope: no such file or directory"},
    }


# the console script


def test_the_console_script_runs_the_state_commands(savepoint: Path, tmp_path: Path) -> None:
    def shoal(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SHOAL), "state", *argv], capture_output=True, text=True, timeout=60, check=False
        )

    done = shoal("verify", str(savepoint), "--json")
    assert (done.returncode, json.loads(done.stdout)["ok"]) == (0, True)
    done = shoal("rewrite", str(savepoint), "--key-groups", "2", str(tmp_path / "two"))
    assert done.returncode == 0
    done = shoal("inspect", str(tmp_path / "two"), "--key", "alice")
    assert done.returncode == 0
    assert done.stdout.splitlines()[-2] == f"  clicks.count = {STATE['alice'][0]}"
    _flip_a_byte(next((tmp_path / "two" / "clicks").iterdir()))
    done = shoal("verify", str(tmp_path / "two"))
    assert done.returncode == 1
    assert "checksum mismatch" in done.stdout


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path, as_json: bool) -> None:
    """`shoal state inspect ... | head -1`: stdout's reader is gone before the command writes
    (the pipe's read end is closed first, so every write fails): no traceback, status 141."""
    root = _make_checkpoints(tmp_path / "ckpt", 2)
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [str(SHOAL), "state", "inspect", str(root), *(["--json"] if as_json else [])],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")
