"""Checkpoints of running jobs are durable in the checkpoint store: every completed manifest
holds, for every key group, exactly the effect of the input before its recorded positions."""

from __future__ import annotations

import errno
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import e2e_flows as flows
import pytest
from shoal.storage import CheckpointStore, Manifest, decode_key, decode_value
from shoal.storage._files import Location
from test_randomized import FLOWS, check_against_oracle

from shoal import run_job

PARAMS: dict[str, Any] = {
    "seed": 11,
    "n": 30_000,
    "vocabulary": 700,
    "splits": 3,
    "key_groups": 8,
    "op": "count",
    "stages": 1,
}


def prefix(params: dict[str, Any], positions: dict[str, Any]) -> list[dict[str, Any]]:
    """The input records before the manifest's positions (an IterableSource position is the
    absolute index of the split's next item; None: nothing read yet)."""
    records = flows.random_words(params["seed"], params["n"], params["vocabulary"])
    n, splits = params["n"], params["splits"]
    assert set(positions) == {f"items:{i}" for i in range(splits)}
    out: list[dict[str, Any]] = []
    for i in range(splits):
        start = i * n // splits
        position = positions[f"items:{i}"]
        end = start if position is None else position
        assert start <= end <= (i + 1) * n // splits
        out += records[start:end]
    return out


def materialized(store: CheckpointStore, manifest: Manifest, operator: str) -> dict[Any, Any]:
    """Every key's "value" in ``operator``'s key groups, rebuilt from the checkpoint's files."""
    state: dict[Any, Any] = {}
    for group in range(manifest.num_key_groups):
        for name, key, value in store.load_group(manifest, operator, group):
            assert name == "value"
            state[decode_key(key)] = decode_value(value)
    return state


def check_every_manifest(params: dict[str, Any], url: str) -> list[int]:
    """Each retained completed checkpoint equals the oracle of its input prefix."""
    store = CheckpointStore(url)
    assert store.latest_complete() is not None
    epochs = store.epochs()
    assert epochs
    for epoch in epochs:
        manifest = store.read_manifest(epoch)
        store.verify(manifest)
        records = prefix(params, manifest.positions)
        words = Counter(record["word"] for record in records)
        assert materialized(store, manifest, "per_word") == dict(words), epoch
        if params.get("stages", 1) == 2:
            letters = Counter(record["word"][-1] for record in records)
            assert materialized(store, manifest, "per_letter") == dict(letters), epoch
        assert manifest.layout["workers"] >= 1
    return epochs


@pytest.mark.asyncio
@pytest.mark.parametrize("stages", [1, 2])
async def test_every_completed_manifest_holds_exactly_the_input_before_its_positions(
    tmp_path: Path, stages: int
) -> None:
    params = {**PARAMS, "stages": stages}
    result = await run_job(
        flows.randomized(**params),
        workers=3,
        processes=False,
        state_dir=tmp_path / "state",
        batch_size=8,
        mailbox_size=2,
        checkpoint_interval=0.05,
    )
    check_against_oracle(params, result)
    assert result.checkpoints is not None
    assert result.checkpoints.completed >= 1
    assert result.checkpoint_dir == str(tmp_path / "state" / "checkpoints")
    epochs = check_every_manifest(params, result.checkpoint_dir)
    assert epochs[-1] == result.checkpoints.last_completed


@pytest.mark.asyncio
async def test_checkpoints_go_to_an_fsspec_memory_url(tmp_path: Path) -> None:
    url = f"memory://shoal-test-{uuid.uuid4().hex}"
    result = await run_job(
        flows.randomized(**PARAMS),
        workers=2,
        processes=False,
        state_dir=tmp_path,
        batch_size=8,
        mailbox_size=2,
        checkpoint_interval=0.05,
        checkpoint_dir=url,
    )
    check_against_oracle(PARAMS, result)
    assert not (tmp_path / "checkpoints").exists()
    check_every_manifest(PARAMS, url)


@pytest.mark.asyncio
async def test_no_space_left_fails_that_checkpoint_only_and_the_job_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = Location.write
    failed: list[str] = []

    def full_disk(self: Location, name: str, data: bytes, *, atomic: bool = False) -> None:
        # The first checkpoint file written, whatever its epoch (how many checkpoints a job
        # of a few seconds fits depends on the machine's load).
        if name.startswith("data/") and not failed:
            failed.append(name)
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, name, data, atomic=atomic)

    monkeypatch.setattr(Location, "write", full_disk)
    result = await run_job(
        flows.randomized(**PARAMS),
        workers=3,
        processes=False,
        state_dir=tmp_path,
        batch_size=8,
        mailbox_size=2,
        checkpoint_interval=0.05,
    )
    check_against_oracle(PARAMS, result)
    stats = result.checkpoints
    assert stats is not None
    assert failed
    assert stats.failed >= 1
    assert stats.completed >= 1  # the job went on, and a later checkpoint completed
    assert result.checkpoint_dir is not None
    store = CheckpointStore(result.checkpoint_dir)
    failed_dir = "/".join(failed[0].split("/")[:2])
    failed_epoch = int(failed_dir.split("/")[1])
    assert failed_epoch not in store.epochs()
    assert not store.location.files(failed_dir)
    check_every_manifest(PARAMS, result.checkpoint_dir)


@pytest.mark.processes
@pytest.mark.asyncio
async def test_every_completed_manifest_holds_the_oracle_across_processes(tmp_path: Path) -> None:
    params = {**PARAMS, "stages": 2}
    result = await run_job(
        f"{FLOWS}:randomized",
        params=params,
        workers=2,
        state_dir=tmp_path / "state",
        batch_size=8,
        mailbox_size=2,
        link_buffer=8192,
        checkpoint_interval=0.05,
        checkpoint_dir=tmp_path / "ckpt",
    )
    check_against_oracle(params, result)
    assert result.checkpoints is not None
    assert result.checkpoints.completed >= 1
    check_every_manifest(params, str(tmp_path / "ckpt"))
