"""Embedding a job: ``async with open_job(...)``, pushing records, querying live state,
statistics, and the errors of bad usage."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from embed_flows import counting_flow, events, oracle

from shoal import (
    InputClosedError,
    Job,
    JobStatistics,
    JobStoppedError,
    UnknownOperatorError,
    UnknownStateError,
    open_job,
    start_job,
)


@pytest.mark.asyncio
async def test_records_sent_to_a_running_job_are_counted_and_queried(tmp_path: Path) -> None:
    flow, source = counting_flow()
    sent = events(500)
    async with open_job(flow, state_dir=tmp_path / "s", checkpoint_interval=60.0) as job:
        assert isinstance(job, Job)
        offsets = [await job.send(e) for e in sent[:100]]
        assert offsets == list(range(100))
        assert await job.send_many(sent[100:]) == range(100, 500)
        with pytest.raises(TypeError, match=r"not a str \(each character would be a record\)"):
            await job.send_many("abc")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"an iterable of records; got int"):
            await job.send_many(3)  # type: ignore[arg-type]
        await job.wait_processed()
        expected = oracle(sent)
        for user, count in expected.items():
            assert await job.query("per_user", "value", user) == count
        assert await job.query("per_user", "value", "nobody", default=0) == 0
        stats = await job.statistics()
        assert isinstance(stats, JobStatistics)
        assert stats.records_in == 500
        assert stats.workers == 1
        assert [w.records_in for w in stats.per_worker] == [500]
        assert stats.checkpoints_completed >= 1
        assert stats.uptime_s > 0
    result = job.result
    assert result.records_in == 500
    assert result.read_state("per_user", "value") == expected
    assert source.next_offset == 500


@pytest.mark.asyncio
async def test_stop_processes_every_record_a_send_returned_for(tmp_path: Path) -> None:
    flow, _ = counting_flow(capacity=1000)
    sent = events(1000)
    async with open_job(flow, state_dir=tmp_path / "s", checkpoint_interval=60.0) as job:
        await job.send_many(sent)  # accepted, most not read yet
        await job.stop()
        with pytest.raises(JobStoppedError, match=r"^the job has ended$"):
            await job.send(sent[0])
    assert job.result.records_in == 1000
    assert job.result.read_state("per_user", "value") == oracle(sent)
    assert job.result.checkpoints is not None
    assert job.result.checkpoints.completed >= 1  # the final one


@pytest.mark.asyncio
async def test_close_input_drains_and_ends_the_job() -> None:
    flow, _ = counting_flow()
    sent = events(50)
    async with open_job(flow) as job:
        await job.send_many(sent)
        await job.close_input()
        with pytest.raises(InputClosedError, match=r"^the input of PushSource 'events' is closed$"):
            await job.send(sent[0])
        result = await job.wait()
    assert result.read_state("per_user", "value") == oracle(sent)
    assert start_job is open_job


@pytest.mark.asyncio
async def test_a_send_waits_while_the_buffer_is_full() -> None:
    _, source = counting_flow(capacity=2)
    reader = source.open_split("push:events")
    source._start_at(None)  # as the first read does
    done: list[int] = []

    async def send(i: int) -> None:
        done.append(await source.send(i))

    async with anyio.create_task_group() as tg:
        await source.send(0)
        await source.send(1)
        tg.start_soon(send, 2)
        await anyio.wait_all_tasks_blocked()
        assert done == []  # the buffer holds 2: the third send waits
        batch = await reader.read_batch(10)
        assert batch is not None
        assert (batch.values, batch.offsets, batch.position) == ([0, 1], [0, 1], 2)
        await anyio.wait_all_tasks_blocked()
        assert done == [2]


@pytest.mark.asyncio
async def test_queries_name_their_mistakes_and_a_stopped_job_refuses_everything() -> None:
    flow, _ = counting_flow()
    async with open_job(flow) as job:
        with pytest.raises(
            UnknownOperatorError,
            match=r"^flow 'clicks' has no keyed operator 'per_page'; its keyed operators are "
            r"'per_user' \(the name= given to count/reduce/process/window\)$",
        ):
            await job.query("per_page", "value", "u1")
        with pytest.raises(
            UnknownStateError,
            match=r"^operator 'per_user' has no state 'total'; its states are 'value'$",
        ):
            await job.query("per_user", "total", "u1")
        with pytest.raises(TypeError, match=r"key"):
            await job.query("per_user", "value", ["a", "list"])
    with pytest.raises(JobStoppedError, match=r"^the job has ended$"):
        await job.query("per_user", "value", "u1")
    with pytest.raises(JobStoppedError, match=r"^the job has ended$"):
        await job.send({"user": "u1"})
    with pytest.raises(JobStoppedError, match=r"^the job has ended$"):
        await job.statistics()


@pytest.mark.asyncio
async def test_a_callback_that_is_not_async_is_refused_at_the_start() -> None:
    flow, _ = counting_flow()

    def on_checkpoint(done: object) -> None:
        pass

    with pytest.raises(
        TypeError,
        match=r"^on_checkpoint must be an async function \(async def \.\.\.\); got "
        r"test_a_callback_that_is_not_async_is_refused_at_the_start\.<locals>\.on_checkpoint, "
        r"which is not: define it with async def, or wrap it in one$",
    ):
        async with open_job(flow, on_checkpoint=on_checkpoint):  # type: ignore[arg-type]
            pass


@pytest.mark.asyncio
async def test_a_push_source_is_refused_with_worker_processes() -> None:
    flow, _ = counting_flow()
    # The first message names the fix that works (a flow reference would not: each worker
    # process would build a PushSource of its own).
    with pytest.raises(
        TypeError,
        match=r"^flow 'clicks' reads a PushSource, which lives in this process: run it with "
        r"workers in this event loop \(processes=False\)",
    ):
        async with open_job(flow, workers=2):
            pass


@pytest.mark.asyncio
async def test_send_needs_a_push_source() -> None:
    from shoal import CollectingSink, Flow, IterableSource

    flow = Flow("plain")
    flow.source(IterableSource([1, 2])).key_by(str).count(name="n").sink(CollectingSink())
    async with open_job(flow) as job:
        with pytest.raises(TypeError, match=r"^job\.send needs a flow that reads a PushSource; "):
            await job.send(3)


@pytest.mark.asyncio
async def test_open_job_names_itself_for_an_unknown_argument() -> None:
    flow, _ = counting_flow()
    with pytest.raises(
        TypeError,
        match=r"^open_job\(\) got an unexpected keyword argument 'bogus' \(it takes "
        r"on_checkpoint and run_job's keyword arguments\)$",
    ):
        async with open_job(flow, bogus=1):
            pass
