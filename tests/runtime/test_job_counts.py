"""A job's records in and out are counted once each across recoveries and resumed runs: every
checkpoint records them (``Manifest.counters``), a restart or a resume goes on from there, and
the result says where a resumed run started (``JobResult.resumed_from``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import recovery_flows as flows
from shoal.runtime._faults import Fault
from shoal.runtime.timeline import at, stop
from shoal.storage import CheckpointStore, Manifest, read_savepoint

from shoal import ResumedFrom, run_job

PARAMS: dict[str, Any] = {
    "seed": 3,
    "n": 12_000,
    "vocabulary": 200,
    "splits": 3,
    "key_groups": 8,
    "stages": 1,
}


def read_before(manifest: Manifest, params: dict[str, Any]) -> int:
    """Records read before the checkpoint, from its positions alone: IterableSource's split i
    covers items [i*n//splits, (i+1)*n//splits) and a position is the next item's index."""
    n, splits = params["n"], params["splits"]
    total = 0
    for i in range(splits):
        start = i * n // splits
        position = manifest.positions.get(f"items:{i}")
        total += (start if position is None else position) - start
    return total


async def run_stats(tmp_path: Path, **kw: Any) -> Any:
    return await run_job(
        flows.stats(**PARAMS),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        batch_size=16,
        mailbox_size=2,
        checkpoint_interval=0.05,
        restart_backoff=0.0,
        **kw,
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("point", ["source.batch", "keygroup.batch"])
async def test_records_are_counted_once_across_recoveries_in_the_result_and_every_checkpoint(
    tmp_path: Path, point: str
) -> None:
    faults = [
        Fault(point, worker=1, attempt=0, hit=150, action="fail"),
        Fault(point, worker=0, attempt=1, hit=100, action="fail"),
    ]
    result = await run_stats(tmp_path, faults=faults)
    assert len(result.recoveries) == 2
    n = PARAMS["n"]
    # One output per record (stages=1, no dead letters): each counted once, though the
    # records after each restart's checkpoint were read, and emitted, twice.
    assert (result.records_in, result.records_out) == (n, n)
    assert result.records_read is not None
    assert 0 < result.records_read <= n
    assert flows.final_state(result, PARAMS) == flows.oracle(PARAMS)
    store = CheckpointStore(result.checkpoint_dir)
    assert store.epochs()
    for epoch in store.epochs():
        manifest = store.read_manifest(epoch)
        read = read_before(manifest, PARAMS)
        assert manifest.counters == {"records_in": read, "records_out": read}, epoch


@pytest.mark.asyncio
async def test_a_resumed_run_counts_the_whole_job_and_says_where_it_started(
    tmp_path: Path,
) -> None:
    before_first = time.time()
    first = await run_stats(tmp_path, timeline=[at(stop(), records=4_000)])
    n = PARAMS["n"]
    assert 4_000 <= first.records_in < n
    assert first.resumed_from is None
    last = CheckpointStore(first.checkpoint_dir).latest_complete()
    assert last is not None
    # The stopped run drained and ended with a final checkpoint of everything it read.
    assert last.counters == {"records_in": first.records_in, "records_out": first.records_out}

    again = await run_stats(tmp_path, resume=True)
    assert again.resumed_from == ResumedFrom(
        kind="checkpoint",
        path=str(first.checkpoint_dir),
        epoch=last.epoch,
        created=last.created,
        records_in=first.records_in,
        records_out=first.records_out,
    )
    assert before_first <= again.resumed_from.created <= time.time()
    assert (again.records_in, again.records_out) == (n, n)
    assert again.records_read == n - first.records_in
    assert flows.final_state(again, PARAMS) == flows.oracle(PARAMS)


@pytest.mark.asyncio
async def test_a_savepoint_carries_the_counters_and_a_run_from_it_goes_on_counting(
    tmp_path: Path,
) -> None:
    first = await run_stats(tmp_path, timeline=[at(stop(savepoint="sp"), records=4_000)])
    saved = read_savepoint(tmp_path / "state" / "sp")
    assert saved.counters == {"records_in": first.records_in, "records_out": first.records_out}
    again = await run_job(
        flows.stats(**PARAMS),
        workers=1,
        processes=False,
        state_dir=tmp_path / "other",
        checkpoint_interval=0.05,
        from_savepoint=tmp_path / "state" / "sp",
    )
    assert again.resumed_from is not None
    assert (again.resumed_from.kind, again.resumed_from.epoch) == ("savepoint", saved.epoch)
    assert again.resumed_from.records_in == first.records_in
    assert (again.records_in, again.records_out) == (PARAMS["n"], PARAMS["n"])


@pytest.mark.asyncio
async def test_a_checkpoint_without_counters_leaves_the_counts_before_it_unknown(
    tmp_path: Path,
) -> None:
    """A checkpoint of a shoal that did not record counters: the resumed run says it cannot
    know what was read before, counts only what it reads, and claims no totals later."""
    first = await run_stats(tmp_path, timeline=[at(stop(), records=4_000)])
    store = CheckpointStore(first.checkpoint_dir)
    last = store.latest_complete()
    assert last is not None
    name = store.manifest_name(last.epoch)
    old = Manifest(
        epoch=last.epoch,
        num_key_groups=last.num_key_groups,
        operators=last.operators,
        groups=last.groups,
        positions=last.positions,
        layout=last.layout,
        created=last.created,
    )
    (Path(first.checkpoint_dir) / name).write_bytes(old.encode())
    again = await run_stats(tmp_path, resume=True)
    assert again.resumed_from is not None
    assert (again.resumed_from.records_in, again.resumed_from.records_out) == (None, None)
    assert again.records_in == again.records_read == PARAMS["n"] - first.records_in
    newest = CheckpointStore(first.checkpoint_dir).latest_complete()
    assert newest is not None
    assert newest.epoch > last.epoch
    assert newest.counters is None


def test_a_manifest_written_before_counters_existed_decodes_with_none() -> None:
    import cbor2
    from shoal.storage._files import checksum

    body = {
        "format": 1,
        "kind": "checkpoint",
        "epoch": 4,
        "created": 1.0,
        "num_key_groups": 2,
        "operators": {},
        "positions": {"items:0": 7},
        "layout": None,
        "groups": [],
    }
    current = Manifest(epoch=4, num_key_groups=2, operators={}, groups={}, counters={"a": 1})
    outer = cbor2.loads(current.encode())
    body["format"] = outer["format"]
    data = cbor2.dumps(body)
    old = cbor2.dumps({"format": outer["format"], "manifest": data, "xxh3_128": checksum(data)})
    decoded = Manifest.decode(old, "old.manifest")
    assert (decoded.epoch, decoded.positions, decoded.counters) == (4, {"items:0": 7}, None)
    assert Manifest.decode(current.encode(), "new.manifest").counters == {"a": 1}


@pytest.mark.asyncio
async def test_a_resume_from_a_damaged_checkpoint_names_the_older_one_it_fell_back_to(
    tmp_path: Path,
) -> None:
    import shutil

    first = await run_stats(tmp_path, timeline=[at(stop(), records=6_000)])
    store = CheckpointStore(first.checkpoint_dir)
    epochs = store.epochs()
    files = {epoch: {r.path for r in store.read_manifest(epoch).files()} for epoch in epochs}
    # A file the newest checkpoint that wrote any wrote (the final one may only reuse files).
    newest = store.read_manifest(epochs[-1])
    wrote = max(record.epoch for record in newest.files())
    damaged = next(record.path for record in newest.files() if record.epoch == wrote)
    path = Path(first.checkpoint_dir) / damaged
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    shutil.rmtree(tmp_path / "state" / "per_word")  # every key group restores from files
    fallback = store.read_manifest(max(e for e in epochs if damaged not in files[e]))
    again = await run_stats(tmp_path, resume=True)
    assert again.resumed_from is not None
    assert again.resumed_from.epoch == fallback.epoch
    assert again.resumed_from.records_in == fallback.counters["records_in"]
    assert again.records_in == PARAMS["n"]
    assert again.records_read == PARAMS["n"] - fallback.counters["records_in"]
    assert flows.final_state(again, PARAMS) == flows.oracle(PARAMS)


@pytest.mark.asyncio
async def test_counts_move_with_key_groups_and_splits_when_the_job_rescales(
    tmp_path: Path,
) -> None:
    """What a key group gave the sink, and what a split read, travel with it to its new
    owner: every checkpoint after a live rescale still counts each record once."""
    from rescale_flows import paced_stats
    from shoal.runtime.timeline import rescale

    p = {"seed": 11, "n": 20_000, "vocabulary": 300, "splits": 4, "key_groups": 16}
    result = await run_job(
        paced_stats(**p, rate=10_000.0),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        checkpoint_interval=0.05,
        timeline=[at(rescale(3), records=5_000), at(rescale(1), records=12_000)],
    )
    assert any(m.kind == "group" for m in result.migrations)
    assert any(m.kind == "split" for m in result.migrations)
    assert (result.records_in, result.records_out) == (p["n"], p["n"])
    store = CheckpointStore(result.checkpoint_dir)
    for epoch in store.epochs():
        manifest = store.read_manifest(epoch)
        read = read_before(manifest, {"n": p["n"], "splits": p["splits"]})
        assert manifest.counters == {"records_in": read, "records_out": read}, epoch
