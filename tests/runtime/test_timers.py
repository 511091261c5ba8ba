"""Timers: per key, deduplicated, fired once in timestamp order, kept in the key group's store."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest
import time_flows as flows
from shoal.runtime._timers import EVENT_TIME, PROCESSING_TIME, TIMERS_STATE, TimerService
from shoal.storage import MemoryBackend

from shoal import (
    AsyncIterableSource,
    CollectingSink,
    Flow,
    IterableSource,
    ManualClock,
    MapStateSpec,
    ProcessContext,
    ValueStateSpec,
    run_job,
)

FLOWS = str(Path(flows.__file__).resolve())


def _remind(key: str, event: Any, ctx: ProcessContext) -> None:
    assert ctx.timers is not None
    slot = event[1] // 10 * 10 + 10
    ctx.timers.register_event_time(slot)  # many records, one timer per (key, slot)
    ctx.state.seen.put(slot, ctx.state.seen.get(slot, 0) + 1)


def _fire(key: str, ts: Any, ctx: ProcessContext) -> None:
    ctx.emit((key, ts, ctx.state.seen.get(ts), ctx.timestamp))
    ctx.state.seen.remove(ts)


def reminder_flow(count: int = 300, seed: int = 2) -> Flow:
    flow = Flow("reminders", num_key_groups=4)
    (
        flow.source(
            IterableSource(flows.events(count, seed=seed, disorder=10), splits=3),
            timestamps=lambda e: e[1],
            watermarks=flows.BoundedOutOfOrderness(10),
        )
        .key_by(lambda e: e[0])
        .process(_remind, on_timer=_fire, states=[MapStateSpec("seen")], name="remind")
        .sink(CollectingSink())
    )
    return flow


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", [1, 3, 64])
async def test_event_timers_fire_once_per_key_and_time_in_order(batch_size: int) -> None:
    result = await run_job(reminder_flow(), backend="memory", batch_size=batch_size, mailbox_size=1)
    data = flows.events(300, seed=2, disorder=10)
    expected: dict[tuple[str, int], int] = defaultdict(int)
    for key, ts, _value in data:
        expected[(key, ts // 10 * 10 + 10)] += 1
    fired = result.sink.items  # type: ignore[attr-defined]
    # once per (key, time), and every record of a slot counted before its timer fired
    assert sorted((key, ts) for key, ts, _n, _stamp in fired) == sorted(expected)
    assert {(key, ts): n for key, ts, n, _stamp in fired} == dict(expected)
    per_key: dict[str, list[int]] = defaultdict(list)
    for key, ts, _n, stamp in fired:
        per_key[key].append(ts)
        assert stamp == ts  # ctx.timestamp in on_timer is the timer's time
    assert all(times == sorted(times) for times in per_key.values())
    assert result.read_state("remind", TIMERS_STATE) == {}  # fired timers are gone


def _schedule(key: int, value: int, ctx: ProcessContext) -> None:
    assert ctx.timers is not None
    if value == 3:
        ctx.timers.delete_processing_time(5.0)
        return
    ctx.timers.register_processing_time(5.0)
    ctx.timers.register_processing_time(1000.0)


def _note(key: int, ts: Any, ctx: ProcessContext) -> None:
    assert ctx.timers is not None
    ctx.emit((key, ts, ctx.timers.processing_time()))


@pytest.mark.asyncio
async def test_processing_timers_fire_when_the_clock_passes_them(tmp_path: Path) -> None:
    clock = ManualClock(0.0)

    def tick(value: int) -> int:
        if value == 100:
            clock.advance(10.0)
        return value

    flow = Flow("ticks", num_key_groups=2)
    values = [1, 2, 3, 100]
    (
        flow.source(IterableSource(values))
        .map(tick)
        .key_by(lambda v: v % 3)
        .process(_schedule, on_timer=_note, name="p")
        .sink(CollectingSink())
    )
    result = await run_job(flow, state_dir=tmp_path, batch_size=1, clock=clock)
    # keys 1 and 2 (values 1 and 2) fire at 5.0 as soon as the clock is at 10 (advanced
    # before value 100 is keyed); value 100 (key 1) then registers 5.0 again, already passed,
    # so it fires at once; key 0 (value 3) deleted its timer at 5.0 (it had none: nothing
    # happens); the timers at 1000 never fire and stay in the store, where a checkpoint would
    # carry them.
    assert sorted(result.sink.items) == [(1, 5.0, 10.0), (1, 5.0, 10.0), (2, 5.0, 10.0)]  # type: ignore[attr-defined]
    assert result.read_state("p", TIMERS_STATE) == {1: [[1, 1000.0]], 2: [[1, 1000.0]]}


def test_a_timer_service_rebuilds_its_queues_from_the_store() -> None:
    backend = MemoryBackend()
    specs = [ValueStateSpec(TIMERS_STATE)]
    with backend.open_store("op", 0, specs) as store:
        timers = TimerService(store)
        for key, ts in [("b", 20), ("a", 10), ("a", 30), ("a", 10)]:
            store.key = key
            timers.register(EVENT_TIME, ts)
        store.key = "a"
        timers.register(PROCESSING_TIME, 7)
        timers.delete(EVENT_TIME, 30)
        assert len(timers) == 3
        store.flush()
        again = TimerService(store)
        assert len(again) == 3
        assert list(again.due(EVENT_TIME, 25)) == [(10, "a"), (20, "b")]
        assert list(again.due(PROCESSING_TIME, 6)) == []
        assert list(again.due(PROCESSING_TIME, 7)) == [(7, "a")]
        assert dict(store.items(TIMERS_STATE)) == {}


def _no_timers(key: int, value: int, ctx: ProcessContext) -> None:
    assert ctx.timers is not None
    ctx.timers.register_event_time(1)


@pytest.mark.asyncio
async def test_timers_without_on_timer_are_a_dead_letter_naming_the_fix() -> None:
    flow = Flow("no_on_timer", num_key_groups=2)
    flow.source(IterableSource([1])).key_by(lambda v: v).process(_no_timers).sink(CollectingSink())
    result = await run_job(flow, backend="memory")
    (letter,) = result.dead_letter_records
    assert letter.error == (
        "ctx.timers.register_event_time: timers need an operator declared with on_timer "
        "(process(fn, on_timer=...)) in a flow with event time or a clock"
    )


def test_timer_timestamps_and_reserved_state_names_are_checked() -> None:
    keyed = Flow("x").source(IterableSource([1])).key_by(lambda v: v)
    with pytest.raises(ValueError, match=r"^state name '_shoal_x' starts with '_shoal', "):
        keyed.process(_remind, states=[ValueStateSpec("_shoal_x")])
    backend = MemoryBackend()
    with backend.open_store("op", 0, [ValueStateSpec(TIMERS_STATE)]) as store:
        from shoal.runtime._timers import KeyedTime, Timers

        timers = Timers(KeyedTime(("s",), ManualClock(), store, with_timers=True))
        with pytest.raises(
            TypeError,
            match=r"^register_event_time takes a timestamp \(an int or a float\); got '5'$",
        ):
            timers.register_event_time("5")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_processing_timers_fire_when_the_clock_passes_them_with_no_record_arriving() -> None:
    # The source yields one record and then waits: no batch, watermark or end of stream
    # reaches the key group. Advancing the clock alone must fire its timer.
    clock = ManualClock(0.0)
    registered, stop, release = anyio.Event(), anyio.Event(), anyio.Event()
    fired = {5.0: anyio.Event(), 8.0: anyio.Event()}

    async def feed() -> Any:
        yield 1
        await release.wait()

    def schedule(key: int, value: int, ctx: ProcessContext) -> None:
        assert ctx.timers is not None
        ctx.timers.register_processing_time(5.0)
        ctx.timers.register_processing_time(8.0)
        registered.set()

    def note(key: int, ts: Any, ctx: ProcessContext) -> None:
        assert ctx.timers is not None
        ctx.emit((key, ts, ctx.timers.processing_time()))
        fired[ts].set()

    flow = Flow("idle_ticks", num_key_groups=2)
    (
        flow.source(AsyncIterableSource(feed, bounded=False))
        .key_by(lambda v: v)
        .process(schedule, on_timer=note, name="p")
        .sink(CollectingSink())
    )
    result: list[Any] = []

    async def run() -> None:
        result.append(await run_job(flow, backend="memory", batch_size=1, clock=clock, stop=stop))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await registered.wait()
        with anyio.fail_after(10):  # a bound on a failure, not an ordering
            clock.advance(6.0)  # passes 5.0 only
            await fired[5.0].wait()
            clock.advance(4.0)  # passes 8.0
            await fired[8.0].wait()
        stop.set()
        release.set()
    assert result[0].sink.items == [(1, 5.0, 6.0), (1, 8.0, 10.0)]


def test_a_wakeup_runs_once_at_the_earliest_deadline_armed() -> None:
    from shoal.runtime._time import Wakeup

    clock = ManualClock(0.0)
    calls: list[float] = []
    wakeup = Wakeup(clock, lambda: calls.append(clock.now()))
    wakeup.arm(10.0)
    wakeup.arm(20.0)  # later: changes nothing
    wakeup.arm(5.0)  # earlier: moves it
    clock.advance(4.0)
    assert calls == []
    clock.advance(3.0)
    assert calls == [7.0]  # once, when the clock passed 5.0
    clock.advance(10.0)
    assert calls == [7.0]
    wakeup.arm(30.0)
    wakeup.cancel()
    clock.advance(20.0)
    assert calls == [7.0]
    wakeup.arm(1.0)  # already passed: at once
    assert calls == [7.0, 37.0]
