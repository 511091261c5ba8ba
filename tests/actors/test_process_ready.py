"""A worker process whose parent stopped waiting for it (another worker of the same start
failed first) ends quietly instead of printing a BrokenPipeError traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from shoal.actors import default_codec

HERE = Path(__file__).parent
BOOT = f"{HERE / '_proc_actors.py'}:bootstrap"


def _run_worker(tmp_path: Path, bootstrap: str) -> subprocess.CompletedProcess[str]:
    """Run a worker process whose ready pipe has no reader left (closed before it starts, so
    its report fails whatever the timing)."""
    ready_read, ready_write = os.pipe()
    os.close(ready_read)
    control_read, control_write = os.pipe()
    try:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "shoal.actors._process_main",
                "--worker-id",
                "1",
                "--mesh-dir",
                str(tmp_path),
                "--peers",
                "",
                "--bootstrap",
                bootstrap,
                "--args",
                default_codec.encode({}).hex(),
                "--ready-fd",
                str(ready_write),
                "--control-fd",
                str(control_read),
            ],
            pass_fds=(ready_write, control_read),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        for fd in (ready_write, control_read, control_write):
            os.close(fd)


@pytest.mark.processes
def test_a_worker_whose_parent_stopped_waiting_ends_quietly(tmp_path: Path) -> None:
    done = _run_worker(tmp_path, BOOT)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.processes
def test_a_failed_bootstrap_nobody_waits_for_prints_only_its_own_traceback(
    tmp_path: Path,
) -> None:
    done = _run_worker(tmp_path, f"{HERE / '_proc_actors.py'}:no_such_bootstrap")
    assert done.returncode == 1
    assert "AttributeError" in done.stderr
    assert "BrokenPipeError" not in done.stderr
