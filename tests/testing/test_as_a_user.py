"""Testing a windowed, timer-using function the way a shoal user would: the public API
(``shoal``, ``shoal.testing``) and the plugin's fixtures only. Each test takes well under a
second, whatever the time spans it covers (hours of event and processing time)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio

from shoal import (
    AsyncIterableSource,
    CollectingSink,
    Fault,
    Flow,
    ProcessContext,
    ValueStateSpec,
    run_job,
)
from shoal.testing import (
    Emitted,
    KeyedHarness,
    Timer,
    VirtualClock,
    assert_matches_reference,
    run_virtual,
)

MINUTE = 60
IDLE_AFTER = 300.0  # seconds of processing time without a click


class ClicksPerMinute:
    """Counts each user's clicks per event-time minute (a timer at each minute's end) and
    says ("idle", user) when a user has not clicked for five minutes of processing time."""

    states = (ValueStateSpec("counts", default={}), ValueStateSpec("idle_at"))

    def process(self, user: str, click: dict[str, Any], ctx: ProcessContext) -> None:
        assert ctx.timers is not None
        start = click["ts"] - click["ts"] % MINUTE
        counts = dict(ctx.state.counts.value())
        counts[str(start)] = counts.get(str(start), 0) + 1
        ctx.state.counts.update(counts)
        ctx.timers.register_event_time(start + MINUTE)
        previous = ctx.state.idle_at.value()
        if previous is not None:
            ctx.timers.delete_processing_time(previous)
        idle_at = ctx.timers.processing_time() + IDLE_AFTER
        ctx.timers.register_processing_time(idle_at)
        ctx.state.idle_at.update(idle_at)

    def on_timer(self, user: str, ts: float, ctx: ProcessContext) -> None:
        if ts == ctx.state.idle_at.value():
            ctx.state.idle_at.update(None)
            ctx.emit(("idle", user))
            return
        counts = dict(ctx.state.counts.value())
        start = ts - MINUTE
        ctx.emit(("minute", user, start, counts.pop(str(start))))
        ctx.state.counts.update(counts)


def clicks_flow(source: Any) -> Flow:
    flow = Flow("clicks", num_key_groups=8)
    (
        flow.source(source, timestamps=lambda click: click["ts"])
        .key_by(lambda click: click["user"])
        .process(ClicksPerMinute(), name="per_minute")
        .sink(CollectingSink())
    )
    return flow


CLICKS = [
    {"user": "ann", "ts": 5},
    {"user": "bob", "ts": 20},
    {"user": "ann", "ts": 59},
    {"user": "ann", "ts": 61},
    {"user": "bob", "ts": 130},
    {"user": "ann", "ts": 179},
]


def per_minute(user: str, clicks: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    """The reference: the same counts in plain Python."""
    counts: dict[int, int] = {}
    for click in clicks:
        start = click["ts"] - click["ts"] % MINUTE
        counts[start] = counts.get(start, 0) + 1
    return [("minute", user, start, n) for start, n in sorted(counts.items())]


def minutes_by_user(values: list[Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for value in values:
        if value[0] == "minute":
            found.setdefault(value[1], []).append(value)
    return {user: sorted(rows) for user, rows in found.items()}


def test_a_minute_is_counted_when_the_watermark_passes_its_end(
    keyed_harness: Callable[..., KeyedHarness],
) -> None:
    harness = keyed_harness(clicks_flow(AsyncIterableSource(lambda: _none())))
    for click in CLICKS[:3]:
        harness.push(click["user"], click, timestamp=click["ts"])
    assert harness.timers("ann") == [Timer("event", 60), Timer("processing", IDLE_AFTER)]
    assert harness.advance_watermark(59) == []
    assert sorted(harness.advance_watermark(60)) == [  # no order across keys
        Emitted(("minute", "ann", 0, 2), 60),
        Emitted(("minute", "bob", 0, 1), 60),
    ]
    assert harness.state("ann", "counts") == {}


def test_a_user_is_idle_after_five_minutes_without_a_click(
    keyed_harness: Callable[..., KeyedHarness],
) -> None:
    harness = keyed_harness(clicks_flow(AsyncIterableSource(lambda: _none())))
    harness.push("ann", {"user": "ann", "ts": 1}, timestamp=1)
    harness.advance_processing_time(200)
    harness.push("ann", {"user": "ann", "ts": 2}, timestamp=2)  # pushes the deadline back
    assert harness.advance_processing_time(299) == []
    assert [e.value for e in harness.advance_processing_time(1)] == [("idle", "ann")]
    assert harness.clock.now() == 500.0


def test_crash_and_recover_from_a_snapshot_gives_what_an_uninterrupted_run_gives(
    keyed_harness: Callable[..., KeyedHarness],
) -> None:
    flow = clicks_flow(AsyncIterableSource(lambda: _none()))

    def run(harness: KeyedHarness, clicks: list[dict[str, Any]]) -> None:
        for click in clicks:
            harness.push(click["user"], click, timestamp=click["ts"])
            harness.advance_watermark(click["ts"] - 1)

    whole = keyed_harness(flow)
    run(whole, CLICKS)
    whole.advance_watermark(1_000)

    first = keyed_harness(flow)
    run(first, CLICKS[:3])
    saved = first.snapshot()
    before = first.take_output()
    del first  # the crash: everything but the snapshot is gone
    second = KeyedHarness.restore(saved, flow)
    run(second, CLICKS[3:])
    second.advance_watermark(1_000)
    assert sorted(before + second.output) == sorted(whole.output)
    assert_matches_reference(
        minutes_by_user([e.value for e in whole.output]),
        per_minute,
        CLICKS,
        key=lambda click: click["user"],
    )


def test_a_job_on_virtual_time_recovers_from_a_crash_with_the_reference_counts(
    shoal_state_dir: Path,
) -> None:
    # One click per virtual second; a checkpoint every 10 virtual seconds; the key group
    # fails once on its 20th batch and the job recovers from its last checkpoint.
    clicks = [{"user": f"u{i % 3}", "ts": i * 7} for i in range(60)]

    def feed() -> AsyncIterator[dict[str, Any]]:
        async def gen() -> AsyncIterator[dict[str, Any]]:
            for click in clicks:
                await anyio.sleep(1)
                yield click

        return gen()

    clock = VirtualClock(autojump=True)  # the job's processing time and the loop's time

    async def main() -> Any:
        return await run_job(
            clicks_flow(AsyncIterableSource(feed)),
            clock=clock,
            state_dir=shoal_state_dir,
            batch_size=1,
            checkpoint_interval=10.0,
            restart_backoff=0.0,
            faults=[Fault("keygroup.batch", hit=20, action="fail")],
        )

    result = run_virtual(main, clock=clock)
    assert clock.now() >= len(clicks)  # a minute of virtual time went by
    assert len(result.recoveries) == 1
    minutes = minutes_by_user(list(dict.fromkeys(result.sink.items)))  # replays: at least once
    assert_matches_reference(minutes, per_minute, clicks, key=lambda click: click["user"])


async def _none() -> AsyncIterator[Any]:
    return
    yield  # an async generator with nothing in it
