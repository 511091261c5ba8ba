"""Checkpoint barriers in running jobs: they complete, they record every split's position, and
aligning them (holding channels) loses, duplicates or reorders nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import e2e_flows as flows
import pytest
from test_randomized import FLOWS, check_against_oracle

from shoal import run_job

PARAMS: dict[str, Any] = {
    "seed": 5,
    "n": 30_000,
    "vocabulary": 700,
    "splits": 3,
    "key_groups": 16,
    "op": "count",
    "stages": 2,
}


def check_checkpoints(result: Any) -> None:
    stats = result.checkpoints
    assert stats is not None
    # Time-triggered: how many complete depends on the machine (~190 on an idle one; a loaded
    # disk has stretched one checkpoint past a second). At least one always does.
    assert stats.completed >= 1, stats
    assert stats.last_completed >= stats.completed
    assert all(d > 0 for d in stats.durations_s)
    # Every key group committed epochs with an undo log, and forgot the rollbacks older than
    # a completed checkpoint it heard of (the log does not grow with the run).
    op = result.flow.keyed_operators()[0]
    floors = []
    for group in range(result.plan.num_key_groups):
        with result.backend.open_store(op.name, group, op.states) as store:
            assert store.epoch is not None
            assert store.epoch >= 1
            floors.append(store.undo_floor)
    assert all(floor is not None for floor in floors)
    assert max(floors) <= stats.last_completed
    if stats.completed >= 2:  # checkpoint 1's completion reached the key groups as a base
        assert max(floors) >= 1


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 3])
async def test_checkpoints_complete_in_one_loop_and_the_output_equals_the_oracle(
    tmp_path: Path, workers: int
) -> None:
    result = await run_job(
        flows.randomized(**PARAMS),
        workers=workers,
        processes=False,
        state_dir=tmp_path,
        batch_size=8,
        mailbox_size=2,
        checkpoint_interval=0.05,
    )
    check_against_oracle(PARAMS, result)
    check_checkpoints(result)


@pytest.mark.processes
@pytest.mark.asyncio
async def test_checkpoints_complete_across_processes_and_the_output_equals_the_oracle(
    tmp_path: Path,
) -> None:
    result = await run_job(
        f"{FLOWS}:randomized",
        params=PARAMS,
        workers=2,
        state_dir=tmp_path,
        batch_size=8,
        mailbox_size=2,
        link_buffer=8192,
        checkpoint_interval=0.05,
    )
    check_against_oracle(PARAMS, result)
    check_checkpoints(result)


@pytest.mark.asyncio
async def test_checkpoints_are_off_by_default(tmp_path: Path) -> None:
    result = await run_job(flows.randomized(n=100), state_dir=tmp_path)
    assert result.checkpoints is None


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [0, -1.0, "1", True])
async def test_a_bad_checkpoint_interval_is_refused(tmp_path: Path, bad: object) -> None:
    with pytest.raises(
        ValueError,
        match=r"^checkpoint_interval must be a positive number of seconds or None; got ",
    ):
        await run_job(flows.randomized(n=10), state_dir=tmp_path, checkpoint_interval=bad)  # type: ignore[arg-type]
