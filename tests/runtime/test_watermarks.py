"""Watermarks: per-split generation, idle splits, the minimum over a key group's channels, and
+inf at the end of a bounded input."""

from __future__ import annotations

import math
import re
from typing import Any

import anyio
import pytest
from shoal.runtime._operators import DeadLetters
from shoal.runtime._watermarks import SplitTime, WatermarkCombiner

from shoal import (
    BoundedOutOfOrderness,
    CollectingSink,
    Flow,
    IterableSource,
    ManualClock,
    Monotonous,
    ProcessContext,
    SourceBatch,
    Tumbling,
    run_job,
)


def test_bounded_out_of_orderness_trails_the_newest_timestamp_by_its_delay() -> None:
    generator = BoundedOutOfOrderness(5).create_generator()
    assert generator.current_watermark() == -math.inf
    generator.on_batch([10, 3, 12])
    assert generator.current_watermark() == 7
    generator.on_batch([4])  # older records never move it back
    assert generator.current_watermark() == 7
    monotonous = Monotonous().create_generator()
    monotonous.on_batch([1.5, 2.5])
    assert monotonous.current_watermark() == 2.5


def test_the_combined_watermark_is_the_minimum_over_active_channels() -> None:
    combiner = WatermarkCombiner(["a", "b", "c"])
    assert combiner.update("a", 10) is None  # b and c still at -inf
    assert combiner.update("b", 5) is None
    assert combiner.update("c", 7) == 5
    assert combiner.update("b", 20) == 7
    assert combiner.update("c", 3) is None  # a channel's watermark never moves back
    assert combiner.update("c", 6, idle=True) == 10  # idle: c no longer holds time back
    assert combiner.update("c", 8) is None  # c is back, behind: the combined stays at 10
    assert combiner.current == 10
    assert combiner.end("c") is None
    assert combiner.end("a") == 20
    assert combiner.end("b") == math.inf  # every channel ended: everything is complete


def test_all_channels_idle_holds_the_watermark_where_it_is() -> None:
    combiner = WatermarkCombiner(["a", "b"])
    combiner.update("a", 4)
    assert combiner.update("b", 9) == 4
    assert combiner.update("a", 4, idle=True) == 9
    assert combiner.update("b", 9, idle=True) is None
    assert combiner.current == 9


def test_a_split_goes_idle_after_its_timeout_and_comes_back_with_records() -> None:
    clock = ManualClock(100.0)
    dead = DeadLetters(0)
    split = SplitTime("s0", lambda r: r, BoundedOutOfOrderness(2), 30.0, clock)
    _values, _offsets, stamps = split.stamp([5, 9, 7], [0, 1, 2], dead)
    assert stamps == [5, 9, 7]
    assert split.after_batch(3) == (7, False)
    assert split.after_batch(3) is None  # nothing moved
    clock.advance(29.0)
    assert split.after_batch(0) is None
    clock.advance(1.0)
    assert split.after_batch(0) == (7, True)
    assert split.after_batch(0) is None  # said once
    split.stamp([8], [3], dead)
    assert split.after_batch(1) == (7, False)  # active again, even though nothing moved


def test_a_bad_timestamp_is_a_dead_letter_and_the_rest_of_the_batch_goes_on() -> None:
    dead = DeadLetters(0)
    split = SplitTime("s0", lambda r: r["t"], Monotonous(), None, ManualClock())
    values, offsets, stamps = split.stamp(
        [{"t": 1}, {"t": "2"}, {}, {"t": float("nan")}, {"t": 5}], [10, 11, 12, 13, 14], dead
    )
    assert (values, offsets, stamps) == ([{"t": 1}, {"t": 5}], [10, 14], [1, 5])
    letters = dead.take()
    assert [(letter.offset, letter.operator, letter.error_type) for letter in letters] == [
        (11, "timestamps", "TypeError"),
        (12, "timestamps", "KeyError"),
        (13, "timestamps", "TypeError"),
    ]
    assert letters[0].error == (
        "the timestamp assigner must return an int or a finite float (not NaN or ±inf); got '2'"
    )


class _Wrong:
    def on_batch(self, timestamps: Any) -> None:
        pass

    def current_watermark(self) -> Any:
        return "soon"


class _WrongStrategy:
    def create_generator(self) -> Any:
        return _Wrong()

    def __repr__(self) -> str:
        return "WrongStrategy()"


def test_a_watermark_that_is_not_a_number_names_the_strategy_and_the_value() -> None:
    split = SplitTime("s0", lambda r: r, _WrongStrategy(), None, ManualClock())
    split.stamp([1], [0], DeadLetters(0))
    with pytest.raises(
        TypeError,
        match=r"^watermark strategy WrongStrategy\(\): current_watermark\(\) must return an "
        r"int or a float \(not NaN\); got 'soon'$",
    ):
        split.after_batch(1)


def test_an_infinite_timestamp_is_a_dead_letter_naming_the_value() -> None:
    # +inf would move the split's watermark to +inf (every later record late) and -inf would
    # put a record in no window: both are refused where NaN is.
    dead = DeadLetters(0)
    split = SplitTime("s0", lambda r: r, Monotonous(), None, ManualClock())
    values, offsets, stamps = split.stamp([1.5, float("inf"), -math.inf, 2], [0, 1, 2, 3], dead)
    assert (values, offsets, stamps) == ([1.5, 2], [0, 3], [1.5, 2])
    assert split.after_batch(2) == (2, False)
    letters = dead.take()
    assert [(letter.offset, letter.operator, letter.error) for letter in letters] == [
        (
            1,
            "timestamps",
            "the timestamp assigner must return an int or a finite float "
            "(not NaN or ±inf); got inf",
        ),
        (
            2,
            "timestamps",
            "the timestamp assigner must return an int or a finite float "
            "(not NaN or ±inf); got -inf",
        ),
    ]


def _watch(key: int, value: Any, ctx: ProcessContext) -> None:
    ctx.emit((value, ctx.timestamp, ctx.watermark))


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", [1, 2, 5])
async def test_records_carry_their_timestamps_and_are_never_behind_the_watermark(
    batch_size: int,
) -> None:
    # One split, timestamps out of order by at most 3, watermark delay 3: a record's timestamp
    # is never below its key group's watermark, and map / filter / flat_map keep timestamps.
    data = [10, 8, 12, 11, 15, 13, 14, 20, 18, 17]
    flow = Flow("stamps", num_key_groups=2)
    sink = CollectingSink()
    (
        flow.source(
            IterableSource(data), timestamps=lambda v: v, watermarks=BoundedOutOfOrderness(3)
        )
        .filter(lambda v: v != 14)
        .flat_map(lambda v: [v, v + 1000])
        .map(lambda v: v % 1000)
        .key_by(lambda v: v % 2)
        .process(_watch, name="watch")
        .sink(sink)
    )
    await run_job(flow, backend="memory", batch_size=batch_size, mailbox_size=1)
    items = sink.items
    assert sorted(value for value, _ts, _wm in items) == sorted([v for v in data if v != 14] * 2)
    assert all(ts == value for value, ts, _wm in items)
    assert all(ts >= wm for _value, ts, wm in items)
    assert any(wm > -math.inf for _value, _ts, wm in items)  # watermarks did arrive


@pytest.mark.asyncio
async def test_the_end_of_a_bounded_input_fires_every_event_timer() -> None:
    # A watermark delay far beyond the input's time span: only the end of input (+inf) can
    # fire the timers.
    def register(key: int, value: int, ctx: ProcessContext) -> None:
        assert ctx.timers is not None
        ctx.timers.register_event_time(value)

    def on_timer(key: int, ts: Any, ctx: ProcessContext) -> None:
        ctx.emit(ts)

    flow = Flow("to_the_end", num_key_groups=2)
    (
        flow.source(
            IterableSource([3, 1, 2], splits=2),
            timestamps=lambda v: v,
            watermarks=BoundedOutOfOrderness(10**9),
        )
        .key_by(lambda v: v % 2)
        .process(register, on_timer=on_timer, name="p")
        .sink(CollectingSink())
    )
    result = await run_job(flow, backend="memory", batch_size=1)
    assert sorted(result.sink.items) == [1, 2, 3]  # type: ignore[attr-defined]


def test_source_time_arguments_are_checked() -> None:
    source = IterableSource([1])
    with pytest.raises(
        ValueError,
        match=r"^watermarks and idle_timeout need event time: pass timestamps=<function "
        r"record -> timestamp> too$",
    ):
        Flow("a").source(source, watermarks=Monotonous())
    with pytest.raises(
        TypeError,
        match=r"^watermarks must be a watermark strategy \(BoundedOutOfOrderness\(delay\), "
        r"Monotonous\(\), or an object with create_generator\(\)\); got 5$",
    ):
        Flow("b").source(source, timestamps=lambda v: v, watermarks=5)  # type: ignore[arg-type]
    for strategy, fix in (
        (BoundedOutOfOrderness, "BoundedOutOfOrderness(delay)"),
        (Monotonous, "Monotonous()"),
    ):
        with pytest.raises(
            TypeError,
            match=rf"^watermarks takes a strategy, not the class {strategy.__name__}: "
            rf"watermarks={re.escape(fix)}$",
        ):
            Flow("b").source(source, timestamps=lambda v: v, watermarks=strategy)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^idle_timeout must be seconds > 0 or None; got 0$"):
        Flow("c").source(source, timestamps=lambda v: v, idle_timeout=0)
    with pytest.raises(
        ValueError,
        match=r"^BoundedOutOfOrderness delay must be a number >= 0 \(timestamp units\); got -1$",
    ):
        BoundedOutOfOrderness(-1)
    with pytest.raises(TypeError, match=r"^timestamps must be callable; got int$"):
        Flow("d").source(source, timestamps=5)  # type: ignore[arg-type]


class _Reader:
    """Hands out its batches one read at a time; then waits for ``release`` (and ends)."""

    def __init__(self, batches: list[tuple[anyio.Event | None, list[int]]], release: Any) -> None:
        self.batches = batches
        self.release = release
        self.offset = 0

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        if self.batches:
            gate, values = self.batches[0]
            if gate is not None:
                await gate.wait()  # nothing is taken before the gate opens: cancel-safe
            self.batches.pop(0)
            offsets = list(range(self.offset, self.offset + len(values)))
            self.offset += len(values)
            return SourceBatch(values, offsets, self.offset)
        await self.release.wait()
        return None

    async def aclose(self) -> None:
        pass


class _BusyAndQuiet:
    """Split ``busy`` reads timestamps 1..25, then (once ``more`` is set) 40; split ``quiet``
    reads nothing at all until the job stops."""

    bounded = False

    def __init__(self, more: anyio.Event, release: anyio.Event) -> None:
        self.more = more
        self.release = release

    def splits(self) -> tuple[str, ...]:
        return ("busy", "quiet")

    def open_split(self, split: str, position: Any = None) -> _Reader:
        if split == "quiet":
            return _Reader([], self.release)
        return _Reader([(None, [1, 5, 12, 25]), (self.more, [40])], self.release)


@pytest.mark.asyncio
async def test_a_quiet_split_goes_idle_on_the_clock_while_its_read_waits() -> None:
    # The quiet split's read never returns: only the clock can make it idle. Once it is, the
    # watermark is the busy split's and the windows before 40 fire while the job runs.
    clock = ManualClock(0.0)
    more, release, stop = anyio.Event(), anyio.Event(), anyio.Event()
    seen: dict[int, anyio.Event] = {25: anyio.Event(), 40: anyio.Event()}
    three_fired = anyio.Event()
    fired: list[Any] = []

    def saw(ts: int) -> int:
        if ts in seen:
            seen[ts].set()
        return ts

    def note(window: Any) -> Any:
        fired.append(window)
        if len(fired) == 3:
            three_fired.set()
        return window

    flow = Flow("idle", num_key_groups=2)
    (
        flow.source(_BusyAndQuiet(more, release), timestamps=lambda ts: ts, idle_timeout=5.0)
        .map(saw)
        .key_by(lambda ts: "k")
        .window(Tumbling(10))
        .count()
        .map(note)
        .sink(CollectingSink())
    )
    result: list[Any] = []

    async def run() -> None:
        result.append(await run_job(flow, backend="memory", clock=clock, stop=stop))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(10):  # a bound on a failure, not an ordering
            await seen[25].wait()
            clock.advance(4.0)  # both splits still active (they last read at 0)
            more.set()
            await seen[40].wait()  # busy read again at 4: its timeout is now 9
            clock.advance(2.0)  # 6: quiet (last read at 0) is idle, busy is not
            await three_fired.wait()
        early = list(fired)
        stop.set()
        release.set()
    assert early == [("k", 0, 10, 2), ("k", 10, 20, 1), ("k", 20, 30, 1)]
    # Stopped, not at the end of its input: the window at 40 stays open for a resumed run
    # (event time does not jump to +inf at a stop; see test_stop_windows.py).
    assert sorted(result[0].sink.items) == early
