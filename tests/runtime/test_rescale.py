"""Live rescaling: key groups and splits move between workers while the job runs; the state
and output equal an oracle recomputed from the input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from recovery_flows import check_output, final_state, oracle
from rescale_flows import paced_stats
from shoal.runtime.timeline import at, rescale

from shoal import run_job

FLOWS = Path(__file__).parent / "rescale_flows.py"


def params(**overrides: Any) -> dict[str, Any]:
    base = {"seed": 11, "n": 20_000, "vocabulary": 300, "splits": 4, "key_groups": 16}
    base.update(overrides)
    return base


@pytest.mark.asyncio
async def test_a_job_in_one_loop_rescales_2_4_1_3_with_exact_state(tmp_path: Path) -> None:
    p = params(rate=10_000.0)
    result = await run_job(
        paced_stats(**p),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        timeline=[
            at(rescale(4), records=4_000),
            at(rescale(1), records=9_000),
            at(rescale(3), records=14_000),
        ],
    )
    assert [(r.workers_before, r.workers_after) for r in result.rescales] == [
        (2, 4),
        (4, 1),
        (1, 3),
    ]
    assert result.workers == 3
    assert result.records_in == p["n"]
    groups = {m.name for m in result.migrations if m.kind == "group"}
    assert len(groups) > 8  # most key groups moved at least once
    assert any(m.kind == "split" for m in result.migrations)
    assert final_state(result, p) == oracle(p)


@pytest.mark.asyncio
async def test_two_keyed_stages_rescale_with_checkpoints_and_exactly_once_output(
    tmp_path: Path,
) -> None:
    p = params(rate=10_000.0, stages=2, output=str(tmp_path / "out"))
    result = await run_job(
        paced_stats(**p),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        checkpoint_interval=0.05,
        timeline=[at(rescale(3), records=5_000), at(rescale(1), records=12_000)],
    )
    assert [(r.workers_before, r.workers_after) for r in result.rescales] == [(2, 3), (3, 1)]
    assert result.checkpoints is not None
    assert result.checkpoints.completed > 0
    assert final_state(result, p) == oracle(p)
    check_output(p)


@pytest.mark.asyncio
async def test_worker_processes_rescale_2_4_1_3_with_exact_state_and_output(
    tmp_path: Path,
) -> None:
    p = params(rate=3_000.0, stages=2, output=str(tmp_path / "out"))
    result = await run_job(
        f"{FLOWS}:paced_stats",
        params=p,
        workers=2,
        state_dir=tmp_path / "state",
        checkpoint_interval=0.1,
        timeline=[
            at(rescale(4), records=2_000),
            at(rescale(1), records=7_000),
            at(rescale(3), records=12_000),
        ],
    )
    assert result.processes
    assert [(r.workers_before, r.workers_after) for r in result.rescales] == [
        (2, 4),
        (4, 1),
        (1, 3),
    ]
    assert result.workers == 3
    assert result.records_in == p["n"]
    assert final_state(result, p) == oracle(p)
    check_output(p)
