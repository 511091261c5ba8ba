"""Stopping, cancelling and failing jobs: bounded, leak-free, and naming the first cause."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import proc_flows
import pytest
from shoal.actors import Actor, open_worker

import shoal
from shoal import (
    Flow,
    IterableSource,
    JobError,
    Progress,
    WorkerFailedError,
    run_job,
)

FLOWS = str(Path(proc_flows.__file__).resolve())


def children(pid: int) -> set[int]:
    """Worker processes (python -m shoal.actors._process_main) whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"shoal.actors._process_main" in cmdline:
            found.add(int(entry.name))
    return found


async def wait_gone(pid: int) -> None:
    """Wait until process ``pid`` (not necessarily a child) has exited: a pidfd event."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await anyio.wait_readable(fd)
    finally:
        os.close(fd)


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A short private TMPDIR (mesh socket paths must stay under ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# -- item 9: cancellation and driver-side sink errors ----------------------------------------


@pytest.mark.processes
@pytest.mark.asyncio
async def test_cancelling_a_multi_process_job_stops_it_and_its_processes(tmp_path: Path) -> None:
    running = anyio.Event()

    def on_progress(progress: Progress) -> None:
        if progress.records_in > 0:
            running.set()

    workers: set[int] = set()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:

            async def job() -> None:
                await run_job(
                    f"{FLOWS}:long_clicks",
                    workers=2,
                    state_dir=tmp_path,
                    on_progress=on_progress,
                )

            tg.start_soon(job)
            await running.wait()
            workers = children(os.getpid())
            assert len(workers) == 2
            with anyio.fail_after(5):  # SIGTERM, then SIGKILL a second later: well within 5 s
                tg.cancel_scope.cancel()
                await anyio.lowlevel.checkpoint()
        with anyio.fail_after(5):
            for pid in workers:
                await wait_gone(pid)
    assert children(os.getpid()) == set()


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_driver_side_sink_error_is_a_job_error(tmp_path: Path) -> None:
    with (
        anyio.fail_after(30),
        pytest.raises(
            JobError,
            match=r"^job 'failing_gathered_sink' failed: actor 'job' failed: "
            r"OSError: driver sink on fire$",
        ),
    ):
        await run_job(f"{FLOWS}:failing_gathered_sink", workers=2, state_dir=tmp_path)


# -- item 15: the worker's own exception reaches the driver ----------------------------------


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_failing_sink_on_a_worker_names_its_exception(tmp_path: Path) -> None:
    with (
        anyio.fail_after(30),
        pytest.raises(
            WorkerFailedError,
            match=r"^job 'failing_sink' failed on worker \d \(pid \d+\): ActorFailedError: "
            r"actor 'n#\d' failed: OSError: disk on fire$",
        ) as caught,
    ):
        await run_job(f"{FLOWS}:failing_sink", workers=2, state_dir=tmp_path)
    error = caught.value
    assert error.error_type == "ActorFailedError"
    assert error.operator == "n"
    assert error.key_group is not None
    assert 0 <= error.key_group < 4
    assert error.actor == f"n#{error.key_group}"
    assert "OSError: disk on fire" in error.remote_traceback


@pytest.mark.processes
@pytest.mark.asyncio
async def test_unencodable_state_on_a_worker_names_the_operator(tmp_path: Path) -> None:
    with anyio.fail_after(30), pytest.raises(WorkerFailedError) as caught:
        await run_job(f"{FLOWS}:unencodable_state", workers=2, state_dir=tmp_path)
    error = caught.value
    assert error.operator == "keeper"
    assert error.key_group is not None
    assert error.actor == f"keeper#{error.key_group}"
    assert str(error).startswith(
        f"job 'unencodable' failed on worker {error.worker} (pid {error.pid}): ActorFailedError: "
        f"actor 'keeper#{error.key_group}' failed: StateEncodeError: state 'thing' of operator "
        f"'keeper'"
    )
    assert "Opaque" in str(error)  # the type that could not be encoded


# -- item 11: shutdown is quick and leaves nothing behind ------------------------------------


STOPPED: list[str] = []


class Stuck(Actor):
    """Never finishes the message in hand (until cancelled); records its on_stop."""

    async def receive(self, message: Any) -> Any:
        await anyio.sleep_forever()

    async def on_stop(self) -> None:
        STOPPED.append(self.name)


@pytest.mark.asyncio
async def test_a_worker_stops_its_actors_under_one_deadline() -> None:
    # Five actors each stuck in a message: one 1 s deadline for all of them, not 1 s each
    # (5 s one after the other). The bound leaves 1.5 s of slack for a loaded machine.
    STOPPED.clear()
    with anyio.fail_after(10):
        async with open_worker(0, stop_timeout=1.0) as worker:
            for i in range(5):
                ref = await worker.spawn(Stuck, name=f"stuck{i}")
                await ref.tell("go")
            await anyio.wait_all_tasks_blocked()
            leaving = anyio.current_time()
        took = anyio.current_time() - leaving
    assert 1.0 <= took < 2.5, took
    assert sorted(STOPPED) == [f"stuck{i}" for i in range(5)]  # each was cancelled, on_stop ran


DRIVER_SCRIPT = """
import sys
import anyio
from shoal import run_job

async def main():
    said = False
    def on_progress(progress):
        nonlocal said
        if progress.records_in > 0 and not said:
            said = True
            print("running", flush=True)
    await run_job(sys.argv[1] + ":long_clicks", workers=2, on_progress=on_progress)

anyio.run(main)
"""


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_killed_driver_leaves_no_workers_and_no_folders(private_tmp: Path) -> None:
    env = {**os.environ, "TMPDIR": str(private_tmp)}
    with subprocess.Popen(  # noqa: ASYNC220 - a driver to kill -9, read from a thread
        [sys.executable, "-c", DRIVER_SCRIPT, FLOWS],
        stdout=subprocess.PIPE,
        env=env,
        cwd=Path(__file__).parent,
    ) as driver:
        assert driver.stdout is not None
        with anyio.fail_after(60):
            line = await anyio.to_thread.run_sync(driver.stdout.readline)
        assert line == b"running\n"
        workers = children(driver.pid)
        assert len(workers) == 2
        names = sorted(p.name for p in os.scandir(private_tmp))
        assert [n.split("-")[1] for n in names] == ["mesh", "state"]
        driver.kill()
        driver.wait()
    with anyio.fail_after(3):  # a worker notices its driver is gone within about a second
        for pid in workers:
            await wait_gone(pid)
    assert os.listdir(private_tmp) == []


RUN_TWICE = """
from shoal import CollectingSink, Flow, IterableSource, run

def flow():
    f = Flow("twice", num_key_groups=4)
    f.source(IterableSource(["a", "b", "a"])).key_by(str).count(name="n").sink(CollectingSink())
    return f

first = run(flow())
assert first.read_state("n", "value") == {"a": 2, "b": 1}
second = run(flow())
assert second.read_state("n", "value") == {"a": 2, "b": 1}
assert first.state_dir != second.state_dir
"""


def test_shoal_run_twice_leaves_no_temporary_state_behind(private_tmp: Path) -> None:
    env = {**os.environ, "TMPDIR": str(private_tmp)}
    subprocess.run([sys.executable, "-c", RUN_TWICE], env=env, check=True, timeout=60)
    assert list(private_tmp.iterdir()) == []


def test_closing_a_result_removes_its_temporary_state() -> None:
    flow = Flow("closing", num_key_groups=4)
    flow.source(IterableSource(["a", "b", "a"])).key_by(str).count(name="n").sink(
        shoal.CollectingSink()
    )
    with shoal.run(flow) as result:
        assert result.state_dir is not None
        assert result.state_dir.is_dir()
        assert result.read_state("n", "value") == {"a": 2, "b": 1}
    assert not result.state_dir.exists()
    with pytest.raises(
        RuntimeError,
        match=r"^this result's temporary state directory was removed by close\(\); read state "
        r"before closing the result, or pass state_dir=\.\.\. to keep the state$",
    ):
        result.read_state("n", "value")
