"""``async with start_job(...) as job``: the Python API of a running job (rescale,
checkpoint, savepoint, status, stop), in one loop and with worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from recovery_flows import final_state
from rescale_flows import oracle_of, paced_stats, read_records
from shoal.storage import read_savepoint

from shoal import Job, JobError, start_job

FLOWS = Path(__file__).parent / "rescale_flows.py"


def params(**overrides: Any) -> dict[str, Any]:
    base = {"seed": 3, "n": 20_000, "vocabulary": 300, "splits": 4, "key_groups": 16}
    return {**base, **overrides}


@pytest.mark.asyncio
async def test_a_job_handle_rescales_checkpoints_and_runs_to_its_end(tmp_path: Path) -> None:
    p = params(rate=10_000.0, n=200_000)
    async with start_job(
        paced_stats(**p),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        checkpoint_interval=0.2,
    ) as job:
        assert isinstance(job, Job)
        assert job.running
        status = await job.status()
        assert status["workers"] == 2
        for bad in (2.5, "3", True, None):  # refused at the boundary; the job runs on
            with pytest.raises(TypeError, match=r"^rescale takes an int worker count \(1 to"):
                await job.rescale(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^rescale needs a worker count >= 1; got 0$"):
            await job.rescale(0)
        with pytest.raises(ValueError, match=r"^rescale to 257 workers: at most 256 are"):
            await job.rescale(257)
        with pytest.raises(TypeError, match=r"^rebalance takes a placement policy \(an object"):
            await job.rebalance("x")  # type: ignore[arg-type]
        record = await job.rescale(3)
        assert (record.workers_before, record.workers_after) == (2, 3)
        epoch = await job.checkpoint()
        manifest = await job.savepoint("sp-1")
        assert manifest.epoch >= epoch
        await job.stop()  # every split ends; what was read drains
        result = await job.wait()
    assert not job.running
    assert job.result is result
    assert result.workers == 3
    assert [(r.workers_before, r.workers_after) for r in result.rescales] == [(2, 3)]
    assert read_savepoint(str(tmp_path / "state" / "sp-1")).epoch == manifest.epoch
    assert result.checkpoint_dir is not None
    read = read_records(p, result.checkpoint_dir)
    assert len(read) == result.records_in < p["n"]
    assert final_state(result, p) == oracle_of(read, 1)


@pytest.mark.processes
@pytest.mark.asyncio
async def test_leaving_the_block_stops_the_job_and_keeps_what_it_read(tmp_path: Path) -> None:
    p = params(rate=4_000.0, n=200_000)
    async with start_job(
        f"{FLOWS}:paced_stats",
        params=p,
        workers=2,
        state_dir=tmp_path / "state",
        checkpoint_interval=0.2,
    ) as job:
        await job.rescale(1)
    result = job.result
    assert result.workers == 1
    assert 0 < result.records_in < p["n"]  # stopped early: what was read drained
    counts = result.read_state("per_word", "count")
    assert sum(counts.values()) == result.records_in


@pytest.mark.asyncio
async def test_a_job_handle_refuses_bad_arguments_at_the_boundary(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^open_job stops the job itself: use job\.stop\(\)"):
        async with start_job(paced_stats(**params()), stop=object()):
            pass
    with pytest.raises(ValueError, match=r"^workers must be a positive int; got 0$"):
        async with start_job(paced_stats(**params()), workers=0):
            pass  # bad arguments fail at the boundary, before the block runs
    async with start_job(paced_stats(**params(n=100)), processes=False) as job:
        await job.wait()
        with pytest.raises(JobError, match=r"^the job has ended$"):
            await job.rescale(2)
