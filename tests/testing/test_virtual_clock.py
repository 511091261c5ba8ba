"""The virtual clock: manual moves, installation into asyncio's loop, autojump, restore.

Every test runs on asyncio and on uvloop (tests/conftest.py); installing into uvloop is refused
with a documented error, which the uvloop run of each installing test pins.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import pytest

from shoal import AsyncIterableSource, CollectingSink, Flow, ProcessContext, run_job
from shoal.testing import VirtualClock, VirtualClockError

UVLOOP_REFUSED = (
    r"^a VirtualClock can only be installed into asyncio's own selector event loop; got "
    r"uvloop\.Loop \(uvloop has no Python selector to wrap\): run this test on asyncio, or "
    r"use the clock without installing it \(advance\(\) by hand; loop sleeps then take real "
    r"time\)$"
)


def on_uvloop() -> bool:
    return not isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop)


def test_advance_runs_the_calls_it_passes_in_deadline_order_at_their_deadline() -> None:
    clock = VirtualClock(100.0)
    seen: list[tuple[str, float]] = []
    clock.call_at(130.0, lambda: seen.append(("b", clock.now())))
    clock.call_at(110.0, lambda: seen.append(("a", clock.now())))
    cancelled = clock.call_at(120.0, lambda: seen.append(("x", clock.now())))
    cancelled.cancel()
    clock.advance(20.0)
    assert seen == [("a", 110.0)]
    assert clock.now() == 120.0
    clock.advance_to(200.0)
    assert seen == [("a", 110.0), ("b", 130.0)]
    clock.call_at(150.0, lambda: seen.append(("past", clock.now())))  # already passed: at once
    assert seen[-1] == ("past", 200.0)


def test_a_clock_moves_only_forward() -> None:
    clock = VirtualClock(5.0)
    with pytest.raises(ValueError, match=r"^a clock only moves forward; got advance\(-1\)$"):
        clock.advance(-1)
    with pytest.raises(
        ValueError, match=r"^a clock only moves forward; got advance_to\(4\.0\) at now=5\.0$"
    ):
        clock.advance_to(4.0)


@pytest.mark.asyncio
async def test_installing_into_uvloop_is_refused_and_asyncio_accepts_it() -> None:
    clock = VirtualClock(autojump=True)
    if on_uvloop():
        with pytest.raises(VirtualClockError, match=UVLOOP_REFUSED):
            clock.install()
        assert not clock.installed
        return
    with clock:
        assert clock.installed
        with pytest.raises(
            VirtualClockError,
            match=r"^this VirtualClock is already installed; uninstall it first$",
        ):
            clock.install()
        with pytest.raises(
            VirtualClockError, match=r"^another VirtualClock is installed in this loop$"
        ):
            VirtualClock().install()
    assert not clock.installed


@pytest.mark.asyncio
async def test_anyio_sleep_of_an_hour_returns_at_once_under_autojump() -> None:
    if on_uvloop():
        with pytest.raises(VirtualClockError, match=UVLOOP_REFUSED):
            VirtualClock(autojump=True).install()
        return
    started = time.perf_counter()
    with VirtualClock(autojump=True) as clock:
        await anyio.sleep(3600)
        assert clock.now() == pytest.approx(3600.0)
        await asyncio.sleep(60)
        assert clock.now() == pytest.approx(3660.0)
    assert time.perf_counter() - started < 0.5


@pytest.mark.asyncio
async def test_nothing_jumps_while_a_task_is_runnable() -> None:
    if on_uvloop():
        with pytest.raises(VirtualClockError, match=UVLOOP_REFUSED):
            VirtualClock(autojump=True).install()
        return
    with VirtualClock(autojump=True) as clock:
        seen: list[float] = []

        async def busy() -> None:
            for _ in range(200):
                seen.append(clock.now())
                await asyncio.sleep(0)  # runnable again at once: the loop is never idle

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 10)
            tg.start_soon(busy)
        assert set(seen) == {0.0}
        assert clock.now() == pytest.approx(10.0)  # then it jumped, once all were blocked


@pytest.mark.asyncio
async def test_run_until_idle_returns_when_every_task_blocks_without_moving_time() -> None:
    if on_uvloop():
        clock = VirtualClock()
        with pytest.raises(
            VirtualClockError,
            match=r"^run_until_idle needs the clock installed in the running loop: use "
            r"`with clock:` inside the test$",
        ):
            await clock.run_until_idle()
        return
    with VirtualClock(autojump=False) as clock:
        steps: list[str] = []
        event = anyio.Event()

        async def worker() -> None:
            for i in range(3):
                steps.append(f"step {i}")
                await asyncio.sleep(0)
            await event.wait()
            steps.append("woken")
            await anyio.sleep(5)
            steps.append("slept")

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await clock.run_until_idle()
            assert steps == ["step 0", "step 1", "step 2"]
            event.set()
            await clock.run_until_idle()
            assert steps == ["step 0", "step 1", "step 2", "woken"]  # asleep: no autojump
            assert clock.now() == 0.0
            clock.advance(5)
            await clock.run_until_idle()
            assert steps[-1] == "slept"


@pytest.mark.asyncio
async def test_uninstalling_restores_the_loop_and_shifts_pending_timers_to_real_time() -> None:
    if on_uvloop():
        with pytest.raises(VirtualClockError, match=UVLOOP_REFUSED):
            VirtualClock().install()
        return
    loop = asyncio.get_running_loop()
    selector: Any = loop._selector  # type: ignore[attr-defined]
    assert "time" not in vars(loop)
    assert "select" not in vars(selector)
    fired = asyncio.Event()
    with VirtualClock(autojump=False) as clock:
        clock.advance(1000.0)
        loop.call_later(0.05, fired.set)  # 50 ms of virtual time left when uninstalled
        assert "time" in vars(loop)
    assert "time" not in vars(loop)
    assert "select" not in vars(selector)
    assert not hasattr(loop, "_shoal_virtual_clock")
    real = loop.time()
    started = time.perf_counter()
    await asyncio.wait_for(fired.wait(), 5)
    assert 0.03 < time.perf_counter() - started < 2.0
    assert abs(loop.time() - real) < 2.0  # the loop's time is real again


@pytest.mark.asyncio
async def test_a_one_hour_processing_time_timer_fires_in_well_under_a_second() -> None:
    # The source waits 3601 virtual seconds after its record (a loop sleep); the key group's
    # timer waits on the clock's call_at. Autojump moves through both.
    hour = 3600.0

    async def feed() -> Any:
        yield "k"
        await anyio.sleep(hour + 1)

    def schedule(key: str, value: str, ctx: ProcessContext) -> None:
        assert ctx.timers is not None
        ctx.timers.register_processing_time(ctx.timers.processing_time() + hour)

    def fire(key: str, ts: float, ctx: ProcessContext) -> None:
        assert ctx.timers is not None
        ctx.emit((key, ts, ctx.timers.processing_time()))

    flow = Flow("hour", num_key_groups=2)
    (
        flow.source(AsyncIterableSource(feed))
        .key_by(lambda v: v)
        .process(schedule, on_timer=fire, name="p")
        .sink(CollectingSink())
    )
    if on_uvloop():
        with pytest.raises(VirtualClockError, match=UVLOOP_REFUSED):
            VirtualClock(autojump=True).install()
        return
    started = time.perf_counter()
    with VirtualClock(1_000.0, autojump=True) as clock:
        result = await run_job(flow, backend="memory", batch_size=1, clock=clock)
    assert time.perf_counter() - started < 1.0
    assert result.sink.items == [("k", 1_000.0 + hour, 1_000.0 + hour)]
