"""Embedded jobs in one event loop: two side by side leave nothing behind, cancellation
aborts cleanly, a worker crash loses no pushed record, a resumed run says where to resend
from, and queries follow a key group while it moves."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import anyio
import pytest
from embed_flows import counting_flow, events, oracle

from shoal import Fault, JobStoppedError, open_job


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _temp_dirs() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


@pytest.fixture(autouse=True)
def _own_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporary folders of this test's jobs go to a folder of its own (other programs on
    the machine make and remove theirs in /tmp meanwhile)."""
    own = tmp_path / "tmp"
    own.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own))


def _children() -> set[int]:
    """This process's child processes (from /proc: psutil is not a dependency)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it ended meanwhile
            if int(fields[1]) == os.getpid():
                found.add(int(entry))
    return found


def _lmdb_maps() -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if line.rstrip().endswith(".mdb"))


@pytest.mark.asyncio
async def test_two_jobs_side_by_side_are_queried_stopped_and_leave_nothing() -> None:
    tasks_before = asyncio.all_tasks()
    fds_before, temps_before, maps_before = _open_fds(), _temp_dirs(), _lmdb_maps()
    children_before = _children()
    flow_a, _ = counting_flow("a")
    flow_b, _ = counting_flow("b", key_groups=4)
    sent_a, sent_b = events(300, users=5), events(200, users=3, start=1000)
    async with (
        open_job(flow_a, checkpoint_interval=60.0) as a,
        open_job(flow_b, workers=2, processes=False, checkpoint_interval=60.0) as b,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.send_many, sent_a)
            tg.start_soon(b.send_many, sent_b)
        await a.wait_processed()
        await b.wait_processed()
        for user, count in oracle(sent_a).items():
            assert await a.query("per_user", "value", user) == count
        for user, count in oracle(sent_b).items():
            assert await b.query("per_user", "value", user) == count
        assert (await b.statistics()).workers == 2
        await a.stop()
        await b.stop()
    ra, rb = a.result, b.result
    assert ra.read_state("per_user", "value") == oracle(sent_a)
    assert rb.read_state("per_user", "value") == oracle(sent_b)
    ra.close()
    rb.close()
    assert asyncio.all_tasks() - tasks_before == {asyncio.current_task()} - tasks_before
    assert _open_fds() <= fds_before
    assert _temp_dirs() <= temps_before
    assert _lmdb_maps() == maps_before
    assert _children() <= children_before  # no worker process left


@pytest.mark.asyncio
async def test_cancelling_the_host_scope_aborts_the_job_and_cleans_up() -> None:
    tasks_before = asyncio.all_tasks()
    fds_before, temps_before = _open_fds(), _temp_dirs()
    flow, _ = counting_flow(capacity=4)
    with anyio.CancelScope() as scope:
        async with open_job(flow, checkpoint_interval=60.0) as job:
            await job.send_many(events(10))
            scope.cancel()
            await job.send_many(events(100))  # cancelled while it waits for room
    assert scope.cancelled_caught
    assert not job.running
    with pytest.raises(
        JobStoppedError,
        match=r"^the job was aborted \(its block was left by an error or cancelled\): it has "
        r"no result$",
    ):
        _ = job.result
    with pytest.raises(JobStoppedError, match=r"^the job has ended$"):
        await job.send({"user": "late"})
    assert asyncio.all_tasks() - tasks_before == {asyncio.current_task()} - tasks_before
    assert _open_fds() <= fds_before
    assert _temp_dirs() <= temps_before


@pytest.mark.asyncio
async def test_a_worker_crash_loses_no_record_a_send_returned_for(tmp_path: Path) -> None:
    flow, _ = counting_flow(capacity=50)
    sent = events(2000)
    crash = [Fault("keygroup.batch", worker=0, attempt=0, hit=30, action="fail")]
    async with open_job(
        flow, state_dir=tmp_path / "s", checkpoint_interval=0.05, faults=crash
    ) as job:
        for i in range(0, len(sent), 100):
            await job.send_many(sent[i : i + 100])
        await job.wait_processed()
        for user, count in oracle(sent).items():
            assert await job.query("per_user", "value", user) == count
    result = job.result
    assert len(result.recoveries) == 1  # the fault fired: the job restarted once
    assert result.read_state("per_user", "value") == oracle(sent)


@pytest.mark.asyncio
async def test_a_resumed_run_says_which_offset_to_resend_from(tmp_path: Path) -> None:
    state = tmp_path / "s"
    log = events(600)  # the caller's own log of what it sent
    flow, source = counting_flow()
    with anyio.CancelScope() as scope:
        async with open_job(flow, state_dir=state, checkpoint_interval=60.0) as job:
            await job.send_many(log[:400])
            await job.wait_processed()  # a checkpoint covers offsets 0..399
            await job.send_many(log[400:500])  # not covered: lost with the "crash"
            scope.cancel()
            await anyio.sleep_forever()
    flow, source = counting_flow()
    async with open_job(flow, state_dir=state, checkpoint_interval=60.0, resume=True) as job:
        assert source.next_offset == 400  # the block starts with the split open there
        await job.send_many(log[source.next_offset :])  # resend from there
    assert job.result.read_state("per_user", "value") == oracle(log)


@pytest.mark.asyncio
async def test_queries_during_a_rescale_follow_the_moving_key_groups(tmp_path: Path) -> None:
    flow, _ = counting_flow(capacity=100, key_groups=16)
    sent = events(3000, users=40)
    answers: dict[str, list[int]] = {}
    async with open_job(
        flow, workers=2, processes=False, state_dir=tmp_path / "s", checkpoint_interval=60.0
    ) as job:
        await job.send_many(sent[:1000])

        async def keep_asking() -> None:
            users = sorted(oracle(sent))
            while True:
                for user in users:
                    answers.setdefault(user, []).append(
                        await job.query("per_user", "value", user, default=0)
                    )

        async def keep_sending() -> None:
            for i in range(1000, 3000, 50):
                await job.send_many(sent[i : i + 50])

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_asking)
            async with anyio.create_task_group() as moving:
                moving.start_soon(keep_sending)
                record = await job.rescale(3)
                assert record.workers_after == 3
            await job.wait_processed()
            final = {user: await job.query("per_user", "value", user) for user in oracle(sent)}
            tg.cancel_scope.cancel()
        assert final == oracle(sent)
    assert all(a == sorted(a) for a in answers.values())  # never an older state than seen
    assert sum(len(a) for a in answers.values()) > 40
