"""A job with a timeline step still to come does not end first: a split that read all its
input holds its end of stream back (barriers still pass) until the steps are done; a step
whose record count the input can never reach ends the job with an error naming it."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest
from shoal.runtime.timeline import at, checkpoint, rescale

from shoal import CollectingSink, Flow, IterableSource, JobError, run_job

WORDS = [f"w{i % 37}" for i in range(3_000)]


def counting() -> Flow:
    flow = Flow("holds", num_key_groups=8)
    flow.source(IterableSource(WORDS, splits=3)).key_by(str).count().sink(CollectingSink())
    return flow


@pytest.mark.asyncio
async def test_a_step_at_the_last_record_still_runs_before_the_job_ends() -> None:
    # Unpaced, the input is read long before a rescale could finish: without the hold the
    # job drained first and failed ("ended while its timeline step ... was still running").
    result = await run_job(
        counting(),
        workers=2,
        processes=False,
        backend="lmdb",
        checkpoint_interval=0.05,
        timeline=[at(rescale(3), records=len(WORDS)), at(checkpoint(), records=len(WORDS))],
    )
    assert [(r.workers_before, r.workers_after) for r in result.rescales] == [(2, 3)]
    assert result.records_in == len(WORDS)
    assert result.read_state("count", "value") == dict(Counter(WORDS))


@pytest.mark.asyncio
async def test_a_step_the_input_never_reaches_ends_the_job_naming_it() -> None:
    with (
        anyio.fail_after(60),
        pytest.raises(
            JobError,
            match=r"^job 'holds' ended before its timeline step At\(action=Rescale\(workers=3, "
            r"kill_worker=None\), records=10000, seconds=None\) ran \(0 of 1 steps ran\): a step "
            r"at more records than the job's input holds never runs; give it more input, or "
            r"move the step earlier$",
        ),
    ):
        await run_job(
            counting(),
            workers=2,
            processes=False,
            checkpoint_interval=0.05,
            timeline=[at(rescale(3), records=10_000)],
        )


@pytest.mark.asyncio
async def test_a_job_stopped_from_outside_ends_without_failing_its_unfinished_timeline() -> None:
    """Ctrl-C (the stop event) while steps are still to come: the job drains and returns
    what it did; the timeline it did not reach is not an error (before: "ended before its
    timeline step ... ran", and no summary for the user)."""
    stop = anyio.Event()
    words = WORDS * 20
    flow = Flow("stopped", num_key_groups=8)
    flow.source(IterableSource(words, splits=3, rate=20_000)).key_by(str).count().sink(
        CollectingSink()
    )

    def progress(p: object) -> None:
        if getattr(p, "records_in", 0) > 0:
            stop.set()

    result = await run_job(
        flow,
        workers=2,
        processes=False,
        checkpoint_interval=0.05,
        stop=stop,
        on_progress=progress,
        timeline=[at(rescale(3), records=len(words) * 10)],  # never reached
    )
    assert 0 < result.records_in < len(words)
    assert result.rescales == ()
    counts = result.read_state("count", "value")
    assert sum(counts.values()) == result.records_in  # what was read was processed
