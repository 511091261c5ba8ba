"""Ctrl-C from a terminal: SIGINT to the whole process group, as a terminal sends it.

The command runs in a session of its own, its stderr on a pseudo-terminal so the live progress
display runs: the test waits for a progress line with records out (an event, not a sleep),
then signals the process group.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.processes


class Terminal:
    """``shoal run`` with stderr on a pty, started in its own session (its own group)."""

    def __init__(self, *args: str) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shoal.runtime._cli", "run", *args],
            stdout=subprocess.PIPE,
            stderr=slave,
            start_new_session=True,
            cwd=REPO,
        )
        os.close(slave)
        self.screen = b""

    def wait_for(self, pattern: bytes, timeout: float = 60.0) -> None:
        while not re.search(pattern, self.screen):
            ready, _, _ = select.select([self.master], [], [], timeout)
            assert ready, f"no {pattern!r} on the terminal within {timeout} s"
            self.screen += os.read(self.master, 65536)

    def interrupt(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # what Ctrl-C does

    def finish(self, timeout: float) -> tuple[int, str, str]:
        """Wait for the exit (reading the terminal meanwhile, so it never blocks)."""

        def drain() -> None:
            try:
                while chunk := os.read(self.master, 65536):
                    self.screen += chunk
            except OSError:
                pass

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            stdout, _ = self.proc.communicate(timeout=timeout)
        finally:
            os.close(self.master)
        reader.join(5)
        text = re.sub(rb"\x1b\[[0-9;?]*[a-zA-Z]", b"", self.screen).decode(errors="replace")
        return self.proc.returncode, stdout.decode(), text


@pytest.mark.parametrize("mode", [["--workers", "2"], ["--workers", "1"], ["--in-process"]])
def test_ctrl_c_drains_and_prints_the_summary(mode: list[str]) -> None:
    term = Terminal("scenarios/clickstream.py", *mode, "--param", "events=3000000")
    try:
        term.wait_for(rb"[1-9][\d,]* out")
        term.interrupt()
        code, stdout, screen = term.finish(timeout=120)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert "stopping: draining what was read" in screen
    assert "Traceback" not in screen
    assert "while the job was running" not in screen
    assert stdout.startswith("\nscenario clickstream: FAILED\n")  # stopped early: not every event
    summary = re.search(r"  ([\d,]+) records in, ([\d,]+) out, 0 dead letters", stdout)
    assert summary is not None, stdout
    records_in, records_out = (int(n.replace(",", "")) for n in summary.groups())
    assert 0 < records_in == records_out < 3_000_000  # what was read was processed
    # The summary says why checks that need the whole input fail.
    assert (
        f"  WARNING: stopped by a signal (Ctrl-C) after reading {records_in:,} records: what "
        "was read was processed, and the checks ran on it" in stdout
    )
    assert code == 1  # exit 1: a check failed (not every event was read)


def test_ctrl_c_with_a_state_dir_says_how_to_go_on_and_that_command_finishes_the_job(
    tmp_path: Path,
) -> None:
    state = str(tmp_path / "state")
    args = ["scenarios/clickstream.py", "--in-process", "--state-dir", state]
    args += ["--param", "events=1000000"]
    term = Terminal(*args)
    try:
        term.wait_for(rb"[1-9][\d,]* out")
        term.interrupt()
        code, stdout, _screen = term.finish(timeout=120)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert code == 1
    hint = re.search(r"; go on with: shoal (.*)\n", stdout)
    assert hint is not None, stdout
    assert shlex.split(hint.group(1)) == ["run", *args, "--resume"]
    done = subprocess.run(
        [sys.executable, "-m", "shoal.runtime._cli", *shlex.split(hint.group(1))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "scenario clickstream: PASSED" in done.stdout  # every user's count equals the oracle
    # Its clock restarted at the resume: the summary says whose throughput it prints.
    assert re.search(r"key groups, [\d.]+ s, [\d,]+ events/s \(its last attempt\)", done.stdout)


def test_ctrl_c_while_the_workers_start_drains_and_prints_the_summary() -> None:
    """A Ctrl-C while worker processes start (the deterministic part, that they are out of the
    terminal's process group, is tests/actors/test_processes.py's)."""
    term = Terminal("scenarios/clickstream.py", "--workers", "2", "--param", "events=300000")
    try:
        term.wait_for(rb"starting workers")
        term.interrupt()
        code, stdout, screen = term.finish(timeout=120)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert "Traceback" not in screen
    assert "before it was ready" not in screen
    summary = re.search(r"  ([\d,]+) records in, ([\d,]+) out, 0 dead letters", stdout)
    assert summary is not None, (stdout, screen)
    records_in, records_out = (int(n.replace(",", "")) for n in summary.groups())
    assert records_in == records_out < 300_000
    assert code == 1  # stopped before every event was read: a check fails


def test_a_second_ctrl_c_aborts_quickly_with_one_line() -> None:
    term = Terminal("scenarios/clickstream.py", "--workers", "2", "--param", "events=3000000")
    try:
        term.wait_for(rb"[1-9][\d,]* out")
        workers = {int(p) for p in _children(term.proc.pid)}
        term.interrupt()
        term.wait_for(rb"stopping: draining")
        term.interrupt()
        code, stdout, screen = term.finish(timeout=5)  # SIGTERM, SIGKILL after 1 s: well within
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert code == 130
    assert stdout == ""
    assert screen.rstrip().endswith("shoal: aborted")
    after = screen.split("stopping: draining", 1)[1].splitlines()[1:]
    # The teardown's consequences (lost peers, dead letters, actors cancelled) are not shown.
    noise = [line for line in after if "[warning" in line or "[error" in line]
    print("\n".join(noise))
    assert noise == []
    assert "Traceback" not in screen
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def _children(pid: int) -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(entry.name)
    return out
