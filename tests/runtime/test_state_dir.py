"""A state directory belongs to one run: reusing it is refused, never applied twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from shoal.runtime._statedir import hold_after_run

from shoal import CollectingSink, Flow, IterableSource, StateDirectoryInUseError, run_job

REPO = Path(__file__).resolve().parents[2]


def counting() -> Flow:
    flow = Flow("counting", num_key_groups=4)
    flow.source(IterableSource(["a", "a"])).key_by(str).count(name="n").sink(CollectingSink())
    return flow


@pytest.mark.asyncio
async def test_a_second_run_into_a_used_state_directory_is_refused(tmp_path: Path) -> None:
    first = await run_job(counting(), state_dir=tmp_path)
    assert first.read_state("n", "value") == {"a": 2}
    manifest = json.loads((tmp_path / "shoal-state.json").read_text())
    assert manifest["format"] == 1
    assert manifest["job"] == "counting"
    with pytest.raises(
        StateDirectoryInUseError,
        match=rf"^state directory '{tmp_path}' already holds the state of job 'counting' "
        rf"\(run {manifest['run_id']}, started [0-9T:+-]+\); running into it again would "
        r"apply the input twice\. Pass a fresh state directory \(or delete this one\), or "
        r"resume the job from its last checkpoint \(resume=True, shoal run --resume\)$",
    ):
        await run_job(counting(), state_dir=tmp_path)
    assert first.read_state("n", "value") == {"a": 2}  # untouched


def test_the_cli_refuses_a_used_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    command = [
        sys.executable,
        "-m",
        "shoal.runtime._cli",
        "run",
        str(REPO / "scenarios" / "clickstream.py"),
        "--param",
        "events=2000",
        "--param",
        "users=100",
        "--state-dir",
        str(state),
        "--no-progress",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode in (0, 1), first.stderr  # the scenario's own checks decide
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert second.stdout == ""
    assert second.stderr.startswith(
        f"shoal: error: state directory '{state}' already holds the state of job 'clickstream' "
    )


@pytest.mark.asyncio
async def test_a_state_directory_held_after_its_run_is_in_use_not_resumable(
    tmp_path: Path,
) -> None:
    """``shoal run``'s checks read the state after the run: it holds the directory again
    meanwhile, so a second run (even ``--resume``) is told it is in use; then it may."""
    await run_job(counting(), state_dir=tmp_path, checkpoint_interval=1.0)
    held = hold_after_run(tmp_path)
    assert held is not None
    assert hold_after_run(tmp_path) is None  # one holder at a time
    with pytest.raises(StateDirectoryInUseError, match=r"is in use by a running job \(pid \d+\)"):
        await run_job(counting(), state_dir=tmp_path, resume=True, checkpoint_interval=1.0)
    held.release()
    again = await run_job(counting(), state_dir=tmp_path, resume=True, checkpoint_interval=1.0)
    assert again.read_state("n", "value") == {"a": 2}  # the first run ended with a final checkpoint
