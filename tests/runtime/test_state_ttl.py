"""State TTL in a job: processing-time TTL on the runtime's clock, event-time TTL on the
records' timestamps and the watermark; expired state is gone from what the job leaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal import (
    CollectingSink,
    Flow,
    IterableSource,
    ManualClock,
    MapStateSpec,
    ProcessContext,
    StateTtl,
    ValueStateSpec,
    run_job,
)


@pytest.mark.asyncio
async def test_processing_time_ttl_expires_a_count_on_the_jobs_clock(tmp_path: Path) -> None:
    clock = ManualClock(0.0)

    def count(key: str, event: tuple[str, float], ctx: ProcessContext) -> None:
        clock.advance(event[1])  # processing time passes while this key group works
        n = ctx.state.n.value() + 1
        ctx.state.n.update(n)
        ctx.emit((key, n))

    flow = Flow("ttl_clock", num_key_groups=2)
    events = [("a", 0.0), ("a", 1.0), ("a", 3.0), ("a", 5.0), ("a", 4.0)]
    (
        flow.source(IterableSource(events))
        .key_by(lambda e: e[0])
        .process(count, states=[ValueStateSpec("n", default=0, ttl=StateTtl(5))], name="p")
        .sink(CollectingSink())
    )
    result = await run_job(flow, state_dir=tmp_path, clock=clock, checkpoint_interval=0.01)
    # at 0, 1, 4 (3 after the last write: alive), 9 (5 after: expired, starts afresh), 13
    assert result.sink.items == [("a", 1), ("a", 2), ("a", 3), ("a", 1), ("a", 2)]  # type: ignore[attr-defined]


def _count(key: str, event: tuple[str, int], ctx: ProcessContext) -> None:
    n = ctx.state.n.value() + 1
    ctx.state.n.update(n)
    ctx.emit((key, event[1], n))


@pytest.mark.asyncio
async def test_event_time_ttl_expires_state_ttl_after_the_record_that_wrote_it() -> None:
    ttl = StateTtl(10, time="event_time")
    flow = Flow("ttl_event", num_key_groups=2)
    events = [("a", 0), ("a", 9), ("b", 10), ("a", 19), ("b", 25), ("a", 29)]
    (
        flow.source(IterableSource(events), timestamps=lambda e: e[1])
        .key_by(lambda e: e[0])
        .process(_count, states=[ValueStateSpec("n", default=0, ttl=ttl)], name="p")
        .sink(CollectingSink())
    )
    result = await run_job(flow, backend="memory", batch_size=1)
    assert sorted(result.sink.items) == [  # type: ignore[attr-defined]
        ("a", 0, 1),
        ("a", 9, 2),
        ("a", 19, 1),  # 19 - 9 >= 10: expired
        ("a", 29, 1),
        ("b", 10, 1),
        ("b", 25, 1),
    ]
    # At the end the watermark is +inf: the final flush writes no expired value.
    assert result.read_state("p", "n") == {}


def _pages(key: str, event: tuple[str, int, str], ctx: ProcessContext) -> None:
    ctx.state.pages.put(event[2], event[1])
    ctx.emit((key, event[1], ctx.state.pages.keys()))


@pytest.mark.asyncio
async def test_event_time_ttl_expires_map_entries_one_by_one() -> None:
    ttl = StateTtl(10, time="event_time")
    flow = Flow("ttl_map", num_key_groups=2)
    events = [("a", 0, "x"), ("a", 5, "y"), ("a", 12, "z"), ("a", 16, "x")]
    (
        flow.source(IterableSource(events), timestamps=lambda e: e[1])
        .key_by(lambda e: e[0])
        .process(_pages, states=[MapStateSpec("pages", ttl=ttl)], name="p")
        .sink(CollectingSink())
    )
    result = await run_job(flow, backend="memory", batch_size=1)
    assert result.sink.items == [  # type: ignore[attr-defined]
        ("a", 0, ["x"]),
        ("a", 5, ["x", "y"]),
        ("a", 12, ["y", "z"]),  # x was put at 0: expired at 10
        ("a", 16, ["x", "z"]),  # y at 5: expired at 15; x put again
    ]
    assert result.read_state("p", "pages") == {}  # the end's watermark is +inf
