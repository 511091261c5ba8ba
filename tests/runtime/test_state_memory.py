"""A worker's state memory budget in a running job: results stay exact while clean entries
are evicted and read back from LMDB, and unflushed changes over the budget are written back
early, with checkpoints on (the epoch commits still carry them: a crash recovers exactly)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from shoal.runtime._cli import _state_memory
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
    for wrong in (0, -1, 1.5, True, "256"):
        with pytest.raises(
            ValueError,
            match=r"^state_memory must be an int number of bytes >= 1, or None for no "
            rf"budget; got {re.escape(repr(wrong))}$",
        ):
            await run_job(counting(10), state_memory=wrong)  # type: ignore[arg-type]


def test_shoal_run_state_memory_takes_megabytes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shoal.runtime._cli", "run", "x.py", "--state-memory", "lots"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert (
        "argument --state-memory: expected megabytes (MiB) > 0 (e.g. 256) or 'off', got 'lots'"
        in done.stderr
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("256", 256 * 1024 * 1024), ("0.5", 512 * 1024), ("off", None), ("OFF", None)],
)
def test_shoal_run_state_memory_reads_mib_or_off(text: str, expected: int | None) -> None:
    assert _state_memory(text) == expected


@pytest.mark.parametrize("text", ["0", "-5", "nan", "inf", "1e-12", "lots"])
def test_shoal_run_state_memory_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected megabytes"):
        _state_memory(text)
