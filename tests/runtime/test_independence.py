"""Jobs are independent of each other and of the host: no process-wide state changes."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import structlog

from shoal import CollectingSink, Flow, IterableSource, JobResult, run_job


def words(name: str, items: list[str]) -> Flow:
    flow = Flow(name, num_key_groups=4)
    flow.source(IterableSource(items, splits=2)).key_by(str).count(name="n").sink(CollectingSink())
    return flow


@pytest.mark.asyncio
async def test_two_jobs_run_at_once_in_one_loop(tmp_path: Path) -> None:
    results: dict[str, JobResult] = {}

    async def job(name: str, items: list[str]) -> None:
        results[name] = await run_job(words(name, items), state_dir=tmp_path / name, batch_size=7)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(job, "left", ["a", "b"] * 500)
            tg.start_soon(job, "right", ["x"] * 300)
    assert results["left"].read_state("n", "value") == {"a": 500, "b": 500}
    assert results["right"].read_state("n", "value") == {"x": 300}


@pytest.mark.asyncio
async def test_run_job_leaves_the_hosts_logging_alone(tmp_path: Path) -> None:
    structlog.reset_defaults()
    assert not structlog.is_configured()
    await run_job(words("quiet", ["a"]), state_dir=tmp_path)
    assert not structlog.is_configured()
