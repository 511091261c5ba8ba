"""A worker's state memory budget in a running job: results stay exact while clean entries
are evicted and read back from LMDB, and unflushed changes over the budget are written back
early, with checkpoints on (the epoch commits still carry them: a crash recovers exactly)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from shoal.runtime._faults import Fault

from shoal import CollectingSink, Flow, IterableSource, run_job


def words(n: int) -> list[str]:
    return [f"w{(i * 7919) % 5_000}" for i in range(n)]


def counting(n: int) -> Flow:
    flow = Flow("budget", num_key_groups=8)
    flow.source(IterableSource(words(n), splits=2)).key_by(str).count().sink(CollectingSink())
    return flow


@pytest.mark.asyncio
async def test_a_tiny_budget_evicts_yet_counts_stay_exact_through_a_crash(tmp_path: Path) -> None:
    result = await run_job(
        counting(40_000),
        state_dir=tmp_path / "state",
        batch_size=512,
        checkpoint_interval=0.02,
        state_memory=100_000,  # bytes: a few hundred entries of 5,000 keys
        faults=[Fault("keygroup.batch", worker=0, attempt=0, hit=30)],
    )
    assert result.recoveries  # the crash happened and the job recovered
    assert result.read_state("count", "value") == dict(Counter(words(40_000)))
    (report,) = result.reports
    assert report["state_cache_evicted"] > 0
    assert report["state_cache_limit"] == 100_000
    assert report["state_cache_bytes"] <= 100_000
    # Evicted entries were read back: misses; the rest of the reads hit the cache.
    assert report["state_cache_misses"] > 0
    assert report["state_cache_hits"] > 0


@pytest.mark.asyncio
async def test_state_memory_is_checked_at_the_boundary() -> None:
    with pytest.raises(
        ValueError, match=r"^state_memory must be a number of bytes >= 1 or None; got 0$"
    ):
        await run_job(counting(10), state_memory=0)


def test_shoal_run_state_memory_takes_megabytes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shoal.runtime._cli", "run", "x.py", "--state-memory", "lots"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "argument --state-memory: expected megabytes > 0 (e.g. 256), got 'lots'" in done.stderr
