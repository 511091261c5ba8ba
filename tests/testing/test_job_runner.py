"""Whole jobs under test, written as a user would (``shoal``, ``shoal.testing`` and the
plugin's fixtures): ``open_test_job``, ``ScriptedSource`` and its markers, and each fault a
running test job takes. Tests that need time to pass run on virtual time (``run_virtual``:
asyncio's loop); the others run on asyncio and uvloop. Each takes well under a second."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import fsspec  # type: ignore[import-untyped]
import pytest

from shoal import (
    CallbackSink,
    CollectingSink,
    Flow,
    JobError,
    JobStoppedError,
    ProcessContext,
    Tumbling,
    UnknownOperatorError,
    ValueStateSpec,
)
from shoal.testing import (
    CrashHere,
    EndOfStream,
    Pause,
    ScriptedSource,
    TestJob,
    VirtualClock,
    assert_matches_reference,
    open_test_job,
    run_virtual,
)

HOUR = 3600.0


def counting(source: ScriptedSource, num_key_groups: int = 8) -> Flow:
    """Counts records per key (``("key", anything)`` records) in operator "n"."""
    flow = Flow("counts", num_key_groups=num_key_groups)
    flow.source(source).key_by(lambda r: r[0]).count(name="n").sink(CollectingSink())
    return flow


async def counts(job: TestJob, keys: list[str]) -> dict[str, int]:
    await job.checkpoint()  # its barrier follows what was read through every key group
    return {key: await job.query("n", "value", key, default=0) for key in keys}


def reference_counts(records: list[tuple[str, int]]) -> dict[str, int]:
    found: dict[str, int] = {}
    for key, _ in records:
        found[key] = found.get(key, 0) + 1
    return found


RECORDS = [("ann", 1), ("bob", 2), ("ann", 3), ("cid", 4), ("bob", 5), ("ann", 6)]


# -- a windowed, timer-using job that crashes once ------------------------------------------------


class TotalWhenQuiet:
    """Adds up a user's window counts; an hour of processing time after the last window it
    emits ``("total", user, n)``."""

    states = (ValueStateSpec("total", default=0), ValueStateSpec("alarm"))

    def process(self, user: str, window: tuple[Any, ...], ctx: ProcessContext) -> None:
        assert ctx.timers is not None
        ctx.state.total.update(ctx.state.total.value() + window[3])
        previous = ctx.state.alarm.value()
        if previous is not None:
            ctx.timers.delete_processing_time(previous)
        alarm = ctx.timers.processing_time() + HOUR
        ctx.timers.register_processing_time(alarm)
        ctx.state.alarm.update(alarm)
        ctx.emit(("minute", user, window[1], window[3]))

    def on_timer(self, user: str, ts: float, ctx: ProcessContext) -> None:
        ctx.emit(("total", user, ctx.state.total.value()))


def clicks_flow(source: ScriptedSource) -> Flow:
    flow = Flow("clicks", num_key_groups=8)
    (
        flow.source(source, timestamps=lambda click: click["ts"])
        .key_by(lambda click: click["user"])
        .window(Tumbling(60))
        .count(name="per_minute")
        .key_by(lambda window: window[0])
        .process(TotalWhenQuiet(), name="totals")
        .sink(CollectingSink())
    )
    return flow


def per_user(user: str, clicks: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The reference: each minute's clicks, then the total, in plain Python."""
    minutes: dict[int, int] = {}
    for click in clicks:
        start = click["ts"] - click["ts"] % 60
        minutes[start] = minutes.get(start, 0) + 1
    rows: list[tuple[Any, ...]] = [("minute", user, s, n) for s, n in sorted(minutes.items())]
    return [*rows, ("total", user, len(clicks))]


def test_a_windowed_timer_job_crashing_once_gives_the_reference_results() -> None:
    clicks = [{"user": f"u{i % 3}", "ts": i * 13} for i in range(30)]
    script: list[Any] = []
    for i, click in enumerate(clicks):
        script += [click, Pause(7.0)]  # a click every 7 virtual seconds
        if i == 20:
            script.append(CrashHere())
    # A click far ahead moves the watermark past every minute above (their windows close),
    # then the totals' alarms go off during the two hours' pause.
    script += [{"user": "late", "ts": 10_000}, Pause(2 * HOUR), EndOfStream()]
    clock = VirtualClock(autojump=True)

    async def main() -> tuple[list[Any], list[Any]]:
        async with open_test_job(
            clicks_flow(ScriptedSource(script)), workers=2, clock=clock, checkpoint_interval=20.0
        ) as job:
            await job.wait()
            return job.output, job.recoveries

    output, recoveries = run_virtual(main, clock=clock)
    assert clock.now() > 2 * HOUR  # two hours of virtual time went by
    assert len(recoveries) == 1
    assert recoveries[0].restored_epoch >= 1  # from a checkpoint, not from the beginning
    rows: dict[str, list[Any]] = {}
    for row in dict.fromkeys(output):  # replayed rows come again (the sink is at least once)
        if row[1] != "late":
            rows.setdefault(row[1], []).append(row)
    actual = {
        user: sorted(found, key=lambda row: (row[0] != "minute", row))
        for user, found in rows.items()
    }
    assert_matches_reference(actual, per_user, clicks, key=lambda click: click["user"])


# -- ScriptedSource -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_crash_here_fails_the_job_once_and_the_recovery_goes_past_it() -> None:
    source = ScriptedSource([*RECORDS[:3], CrashHere(), *RECORDS[3:], EndOfStream()])
    async with open_test_job(counting(source)) as job:
        result = await job.wait()
        assert len(job.recoveries) == 1
        assert result.read_state("n", "value") == reference_counts(RECORDS)
    async with open_test_job(counting(source)) as job:  # a new job: it crashes again
        await job.wait()
        assert len(job.recoveries) == 1


@pytest.mark.asyncio
async def test_an_open_script_keeps_the_job_running_until_it_is_stopped() -> None:
    source = ScriptedSource(RECORDS, [("dan", 7)])
    async with open_test_job(counting(source), workers=2) as job:
        await source.wait_read(len(RECORDS), split=0)
        await source.wait_read(1, split=1)
        assert await counts(job, ["ann", "dan"]) == {"ann": 3, "dan": 1}
        assert job.running
        await job.stop()
        emitted = [("ann", 1), ("bob", 1), ("ann", 2), ("cid", 1), ("bob", 2), ("ann", 3)]
        assert sorted(job.output) == sorted([*emitted, ("dan", 1)])  # no crash: each once


@pytest.mark.asyncio
async def test_a_test_job_runs_on_virtual_time_where_the_loop_takes_it_and_cleans_up() -> None:
    on_uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    source = ScriptedSource([("ann", 1), Pause(0.01 if on_uvloop else HOUR), EndOfStream()])
    async with open_test_job(counting(source)) as job:
        await job.wait()
        if on_uvloop:  # uvloop cannot take a virtual clock: real time
            assert job.clock is None
        else:
            assert isinstance(job.clock, VirtualClock)
            assert job.clock.installed
            assert job.clock.now() >= HOUR
        assert job.state_dir.is_dir()
    assert not job.state_dir.exists()
    assert not (isinstance(job.clock, VirtualClock) and job.clock.installed)
    # Its checkpoints (in fsspec's memory filesystem, under the state directory's name) too.
    assert not fsspec.filesystem("memory").exists(f"/{job.state_dir.name}")


def test_a_pause_waits_virtual_seconds_between_records() -> None:
    source = ScriptedSource([("ann", 1), Pause(HOUR), ("ann", 2), EndOfStream()])
    clock = VirtualClock(autojump=True)
    seen: list[tuple[float, Any]] = []
    flow = Flow("paced")
    flow.source(source).sink(CallbackSink(lambda item: seen.append((clock.now(), item))))

    async def main() -> None:
        async with open_test_job(flow, clock=clock) as job:
            await job.wait()

    run_virtual(main, clock=clock)
    assert [item for _, item in seen] == [("ann", 1), ("ann", 2)]
    assert seen[1][0] - seen[0][0] >= HOUR


def test_a_script_with_records_after_its_end_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"^ScriptedSource: script 0 has items after its EndOfStream\(\) at index 1: "
        r"nothing is read after the end of a stream$",
    ):
        ScriptedSource([("ann", 1), EndOfStream(), ("ann", 2)])
    with pytest.raises(ValueError, match=r"^Pause takes seconds >= 0 \(and finite\); got -1$"):
        Pause(-1)


# -- faults on a running job ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_crash_key_group_restarts_from_the_last_checkpoint_with_exactly_once_state() -> None:
    source = ScriptedSource(RECORDS)
    async with open_test_job(counting(source), workers=2, checkpoint_interval=None) as job:
        await source.wait_read(len(RECORDS))
        epoch = await job.checkpoint()
        recovery = await job.crash_key_group("n", "ann")
        assert (recovery.attempt, recovery.restored_epoch, recovery.fell_back) == (1, epoch, False)
        assert (await job.statistics()).restarts == 1
        assert await counts(job, ["ann", "bob", "cid"]) == reference_counts(RECORDS)


@pytest.mark.asyncio
async def test_kill_worker_fails_that_worker_and_the_job_recovers() -> None:
    source = ScriptedSource(RECORDS[:3], RECORDS[3:])
    async with open_test_job(counting(source), workers=2, checkpoint_interval=None) as job:
        await source.wait_read(3, split=0)
        await job.checkpoint()
        recovery = await job.kill_worker(1)
        assert recovery.attempt == 1
        await source.wait_read(3, split=1)
        assert await counts(job, ["ann", "bob", "cid"]) == reference_counts(RECORDS)


@pytest.mark.asyncio
async def test_fail_next_checkpoint_aborts_one_checkpoint_and_the_job_goes_on() -> None:
    source = ScriptedSource(RECORDS)
    async with open_test_job(counting(source), checkpoint_interval=None) as job:
        first = await job.checkpoint()
        job.fail_next_checkpoint()
        second = await job.checkpoint()  # the failed one, then the next, which completes
        stats = await job.statistics()
        assert (second, stats.checkpoints_failed, stats.last_checkpoint) == (first + 2, 1, second)
        assert await counts(job, ["ann"]) == {"ann": 3}


def test_a_corrupted_checkpoint_makes_the_recovery_fall_back_to_the_one_before() -> None:
    # ann, a pause, ann, a pause, ann: a checkpoint in each pause, the second one damaged.
    script = [("ann", 1), Pause(10), ("ann", 2), Pause(10), ("ann", 3)]
    source = ScriptedSource(script)
    clock = VirtualClock(autojump=True)

    async def main() -> None:
        async with open_test_job(counting(source), clock=clock, checkpoint_interval=None) as job:
            await source.wait_read(1)
            first = await job.checkpoint()
            await source.wait_read(3)
            job.corrupt_next_checkpoint()
            second = await job.checkpoint()
            assert [damaged.epoch for damaged in job.corrupted] == [second]
            recovery = await job.crash_key_group("n", "ann")
            assert (recovery.restored_epoch, recovery.newest_epoch) == (first, second)
            assert recovery.fell_back
            await source.wait_read(len(script))
            assert await counts(job, ["ann"]) == {"ann": 3}  # replayed from the older one

    run_virtual(main, clock=clock)


@pytest.mark.asyncio
async def test_migrate_moves_one_key_group_now_and_queries_follow_it() -> None:
    source = ScriptedSource(RECORDS)
    async with open_test_job(counting(source), workers=2, checkpoint_interval=None) as job:
        await source.wait_read(len(RECORDS))
        group = job.key_group_of("ann")
        before = await job.owner(group)
        record = await job.migrate(group, 1 - before)
        assert [(m.item, m.source, m.target) for m in record.moves] == [(group, before, 1 - before)]
        assert await job.owner(group) == 1 - before
        assert (await job.migrate(group, 1 - before)).moves == ()  # there already
        assert await counts(job, ["ann", "bob"]) == {"ann": 3, "bob": 2}


@pytest.mark.asyncio
async def test_the_fixture_opens_a_test_job(
    shoal_test_job: Callable[..., AbstractAsyncContextManager[TestJob]],
) -> None:
    async with shoal_test_job(counting(ScriptedSource([*RECORDS, EndOfStream()]))) as job:
        result = await job.wait()
        assert result.read_state("n", "value") == reference_counts(RECORDS)


# -- mistakes --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_faults_name_an_unknown_operator_key_group_or_worker() -> None:
    async with open_test_job(counting(ScriptedSource(RECORDS)), workers=2) as job:
        with pytest.raises(
            UnknownOperatorError,
            match=r"^flow 'counts' has no keyed operator 'count'; its keyed operators are 'n' "
            r"\(the name= given to count/reduce/process/window\)$",
        ):
            await job.crash_key_group("count", "ann")
        with pytest.raises(
            ValueError,
            match=r"^the job has key groups 0\.\.7; got 8 \(job\.key_group_of\(key\) gives a "
            r"key's\)$",
        ):
            await job.migrate(8, 0)
        with pytest.raises(ValueError, match=r"^no worker 2: the job's workers are \[0, 1\]$"):
            await job.kill_worker(2)
        with pytest.raises(ValueError, match=r"^no worker 5: the job's workers are \[0, 1\]$"):
            await job.migrate(0, 5)


@pytest.mark.asyncio
async def test_a_job_that_has_ended_refuses_every_fault() -> None:
    async with open_test_job(counting(ScriptedSource([*RECORDS, EndOfStream()]))) as job:
        await job.wait()
        with pytest.raises(JobStoppedError, match=r"^the job has ended$"):
            await job.crash_key_group("n", "ann")
        with pytest.raises(JobStoppedError, match=r"^the job has ended$"):
            await job.kill_worker(0)
        with pytest.raises(JobStoppedError, match=r"^the job has ended$"):
            job.fail_next_checkpoint()
        with pytest.raises(JobStoppedError, match=r"^the job has ended$"):
            job.corrupt_next_checkpoint()
        with pytest.raises(JobStoppedError, match=r"^the job has ended$"):
            await job.migrate(0, 0)


@pytest.mark.asyncio
async def test_a_job_that_fails_raises_its_error_when_the_block_is_left() -> None:
    # Three CrashHere in a row with no checkpoint between them: past max_restarts=1.
    source = ScriptedSource([("ann", 1), CrashHere(), CrashHere(), CrashHere(), EndOfStream()])
    failed = (
        r"^the job failed: job 'counts' failed 2 times in a row with no checkpoint completed in "
        r"between \(max_restarts=1\); last failure: job 'counts' failed: actor 'src:script:0' "
        r"failed: InjectedFault: CrashHere\(\) at script:0 position 2$"
    )

    async def run() -> None:
        async with open_test_job(counting(source), max_restarts=1, checkpoint_interval=None) as job:
            with pytest.raises(JobError, match=failed):  # wait() raises it
                await job.wait()

    with pytest.raises(JobError, match=failed):  # and so does leaving the block
        await run()


def test_open_test_job_refuses_worker_processes_and_a_state_dir() -> None:
    async def main() -> None:
        async with open_test_job(counting(ScriptedSource(RECORDS)), processes=True):
            pass

    with pytest.raises(
        TypeError,
        match=r"^open_test_job runs every worker in this loop on a temporary state directory: "
        r"processes= is not taken \(use run_job or open_job for that\)$",
    ):
        run_virtual(main)


@pytest.mark.asyncio
async def test_output_needs_a_collecting_sink() -> None:
    flow = Flow("printed")
    flow.source(ScriptedSource([("ann", 1), EndOfStream()])).sink(CallbackSink(lambda _: None))
    async with open_test_job(flow) as job:
        with pytest.raises(
            TypeError,
            match=r"^job\.output reads a CollectingSink; flow 'printed' writes to "
            r"a CallbackSink \(end the flow in \.sink\(CollectingSink\(\)\)\)$",
        ):
            job.output  # noqa: B018 - the property raises
