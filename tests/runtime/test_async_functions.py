"""``async def`` user functions: map, filter and keyed process functions that await.

The claims (runtime/_async_ops.py): results equal a plain function's; a key's records run in
arrival order while different keys overlap, up to the bound; state is the right key's across
every await; a call that raises is a dead letter with its position; timers (also async ones)
fire after the records before them; checkpoints and a crash keep state exactly once.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import time_flows as flows
from shoal.runtime._faults import Fault

from shoal import (
    CollectingSink,
    Flow,
    IterableSource,
    ListStateSpec,
    MapStateSpec,
    ProcessContext,
    ValueStateSpec,
    run_job,
)


class InFlight:
    """How many calls are inside an await at once (the highest seen), per place (a key
    group: the bound is each key-group actor's)."""

    def __init__(self) -> None:
        self.now: Counter[Any] = Counter()
        self.highest: Counter[Any] = Counter()

    @property
    def most(self) -> int:
        return max(self.highest.values(), default=0)

    async def pause(self, seconds: float = 0, where: Any = None) -> None:
        self.now[where] += 1
        self.highest[where] = max(self.highest[where], self.now[where])
        try:
            await anyio.sleep(seconds)
        finally:
            self.now[where] -= 1


@pytest.mark.asyncio
async def test_async_map_and_filter_keep_input_order_and_bound_their_concurrency() -> None:
    flight = InFlight()

    async def slow_square(x: int) -> int:
        await flight.pause(random.Random(x).random() / 1000)  # finish out of order
        return x * x

    async def even(x: int) -> bool:
        await anyio.lowlevel.checkpoint()
        return x % 2 == 0

    flow = Flow("async-map")
    sink = CollectingSink()
    (
        flow.source(IterableSource(range(2_000), splits=1))
        .map(slow_square, concurrency=16)
        .filter(even, concurrency=4)
        .sink(sink)
    )
    result = await run_job(flow, backend="memory", batch_size=500)
    assert result.sink.items == [x * x for x in range(2_000) if x % 2 == 0]  # type: ignore[attr-defined]
    assert flight.most == 16  # the bound is reached and never passed


@pytest.mark.asyncio
async def test_an_async_call_that_raises_is_a_dead_letter_and_the_batch_goes_on() -> None:
    async def picky(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        if x % 7 == 3:
            raise ValueError(f"no {x}")
        return x

    flow = Flow("async-errors")
    flow.source(IterableSource(range(100), splits=1)).map(picky).sink(CollectingSink())
    result = await run_job(flow, backend="memory")
    assert result.sink.items == [x for x in range(100) if x % 7 != 3]  # type: ignore[attr-defined]
    letters = result.dead_letter_records
    assert [(d.operator, d.offset, d.error_type, d.error) for d in letters] == [
        ("map", x, "ValueError", f"no {x}") for x in range(100) if x % 7 == 3
    ]


def keyed_records(n: int, keys: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(f"k{rng.randrange(keys)}", i) for i in range(n)]


def async_order_flow(records: list[tuple[str, int]], flight: InFlight, concurrency: int) -> Flow:
    async def note(key: str, record: tuple[str, int], ctx: ProcessContext) -> None:
        seen = ctx.state.seen.get()
        count = ctx.state.count.value()
        await flight.pause(random.Random(record[1]).random() / 2000, ctx.key_group)
        # After the await: still this key's state (another key ran meanwhile).
        assert ctx.key == key
        ctx.state.seen.add(record[1])
        ctx.state.count.update(count + 1)
        ctx.emit((key, record[1], len(seen)))

    flow = Flow("async-process", num_key_groups=4)
    (
        flow.source(IterableSource(records, splits=2))
        .key_by(lambda r: r[0])
        .process(
            note,
            states=[ListStateSpec("seen"), ValueStateSpec("count", default=0)],
            concurrency=concurrency,
            name="note",
        )
        .sink(CollectingSink())
    )
    return flow


@pytest.mark.asyncio
async def test_an_async_process_function_keeps_each_keys_order_and_state_across_awaits() -> None:
    records = keyed_records(3_000, keys=40, seed=3)
    flight = InFlight()
    result = await run_job(
        async_order_flow(records, flight, concurrency=8), backend="memory", batch_size=256
    )
    # Per key, the records were processed in arrival order (a split is read in order, and
    # a key's records all come from the splits in their order: check per split).
    seen = result.read_state("note", "seen")
    half = len(records) // 2
    for key, values in seen.items():
        for split in ([i for i in values if i < half], [i for i in values if i >= half]):
            assert split == sorted(split), key
    expected = Counter(key for key, _ in records)
    assert result.read_state("note", "count") == dict(expected)
    assert {key: sorted(values) for key, values in seen.items()} == {
        key: sorted(i for k, i in records if k == key) for key in expected
    }
    # Keys overlapped in a key group, up to the bound and never beyond it.
    assert 1 < flight.most <= 8
    emitted = result.sink.items  # type: ignore[attr-defined]
    assert len(emitted) == len(records)


@pytest.mark.asyncio
async def test_async_process_function_state_survives_a_crash_exactly_once(tmp_path: Path) -> None:
    records = keyed_records(6_000, keys=50, seed=8)
    flight = InFlight()
    result = await run_job(
        async_order_flow(records, flight, concurrency=20),
        state_dir=tmp_path / "state",
        batch_size=128,
        checkpoint_interval=0.02,
        faults=[Fault("keygroup.batch", worker=0, attempt=0, hit=20)],
    )
    assert result.recoveries  # the fault fired and the job recovered
    assert result.read_state("note", "count") == dict(Counter(key for key, _ in records))


def _remind(key: str, event: Any, ctx: ProcessContext) -> None:
    assert ctx.timers is not None
    slot = event[1] // 10 * 10 + 10
    ctx.timers.register_event_time(slot)
    ctx.state.seen.put(slot, ctx.state.seen.get(slot, 0) + 1)


async def _remind_later(key: str, event: Any, ctx: ProcessContext) -> None:
    await anyio.lowlevel.checkpoint()
    _remind(key, event, ctx)


async def _fire_later(key: str, ts: Any, ctx: ProcessContext) -> None:
    await anyio.lowlevel.checkpoint()
    ctx.emit((key, ts, ctx.state.seen.get(ts), ctx.timestamp))
    ctx.state.seen.remove(ts)


@pytest.mark.asyncio
async def test_async_timers_fire_once_per_key_and_time_after_the_records_before_them() -> None:
    data = flows.events(300, seed=2, disorder=10)
    flow = Flow("async-reminders", num_key_groups=4)
    (
        flow.source(
            IterableSource(data, splits=3),
            timestamps=lambda e: e[1],
            watermarks=flows.BoundedOutOfOrderness(10),
        )
        .key_by(lambda e: e[0])
        .process(
            _remind_later,
            on_timer=_fire_later,
            states=[MapStateSpec("seen")],
            name="remind",
            concurrency=5,
        )
        .sink(CollectingSink())
    )
    result = await run_job(flow, backend="memory", batch_size=16, mailbox_size=1)
    expected: dict[tuple[str, int], int] = defaultdict(int)
    for key, ts, _value in data:
        expected[(key, ts // 10 * 10 + 10)] += 1
    fired = result.sink.items  # type: ignore[attr-defined]
    # once per (key, time), every record of the slot counted before its timer fired
    assert {(key, ts): n for key, ts, n, _stamp in fired} == dict(expected)
    assert all(stamp == ts for _key, ts, _n, stamp in fired)


def test_async_functions_are_checked_at_the_boundary() -> None:
    async def double(x: int) -> int:
        return 2 * x

    def plain(x: int) -> int:
        return x

    async def on_timer(key: Any, ts: Any, ctx: ProcessContext) -> None:
        return None

    stream = Flow("f").source(IterableSource([1]))
    with pytest.raises(
        TypeError,
        match=r"^map function with concurrency= must be an async function \(async def\); "
        r"got the plain function 'plain'$",
    ):
        stream.map(plain, concurrency=4)
    with pytest.raises(ValueError, match=r"^concurrency must be an int >= 1; got 0$"):
        stream.map(double, concurrency=0)
    with pytest.raises(
        TypeError,
        match=r"^key function must be a plain function: an async one runs only in map, "
        r"filter and process \(got an async def\)$",
    ):
        stream.key_by(double)
    with pytest.raises(
        TypeError, match=r"^an async on_timer needs an async process function \(async def\) too$"
    ):
        stream.key_by(str).process(lambda k, v, c: None, on_timer=on_timer)


@pytest.mark.asyncio
async def test_the_keyed_harness_drives_async_functions_with_its_a_methods() -> None:
    from shoal.testing import HarnessError, KeyedHarness

    async def remind(key: str, value: int, ctx: ProcessContext) -> None:
        await anyio.lowlevel.checkpoint()
        assert ctx.timers is not None
        ctx.state.total.update(ctx.state.total.value() + value)
        ctx.timers.register_event_time(10)

    async def report(key: str, ts: Any, ctx: ProcessContext) -> None:
        await anyio.lowlevel.checkpoint()
        ctx.emit((key, ctx.state.total.value()))

    harness = KeyedHarness.for_function(
        remind, states=[ValueStateSpec("total", default=0)], on_timer=report
    )
    assert await harness.apush("a", 2, timestamp=1) == []
    await harness.apush("a", 3, timestamp=2)
    assert [e.value for e in await harness.aadvance_watermark(10)] == [("a", 5)]
    with pytest.raises(
        HarnessError,
        match=r"^operator 'process' is async def: await harness.apush\(...\) instead of "
        r"harness.push\(...\)$",
    ):
        harness.push("a", 1, timestamp=3)


@pytest.mark.asyncio
async def test_a_plain_function_returning_coroutines_is_a_dead_letter_that_says_why() -> None:
    async def fetch(x: int) -> int:
        return x

    async def key_of(x: int) -> int:
        return x

    flow = Flow("lambdas")
    (
        flow.source(IterableSource(range(5), splits=1))
        .map(lambda x: fetch(x))  # the async function called, not passed
        .sink(CollectingSink())
    )
    result = await run_job(flow, backend="memory")
    assert result.sink.items == []  # type: ignore[attr-defined]
    assert [(d.offset, d.error_type, d.error) for d in result.dead_letter_records] == [
        (
            x,
            "TypeError",
            "map function returned a coroutine: pass the async def function itself "
            "(map/filter await it), not a plain function that calls it",
        )
        for x in range(5)
    ]
    keyed = Flow("keys")
    keyed.source(IterableSource(range(2), splits=1)).key_by(lambda x: key_of(x)).count().sink(
        CollectingSink()
    )
    result = await run_job(keyed, backend="memory")
    assert {d.error for d in result.dead_letter_records} == {
        "key must be str, bytes, int or a tuple of those; got coroutine — the key function is "
        "async (or returns a coroutine): key functions are plain"
    }
