"""The actor mailbox: FIFO, backpressure, fairness, cancellation safety, closing."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio import (
    CancelScope,
    ClosedResourceError,
    EndOfStream,
    WouldBlock,
    wait_all_tasks_blocked,
)
from anyio.lowlevel import checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.actors._mailbox import EMPTY, Mailbox, MailboxStatistics


def run(func: Any, *args: Any, uvloop: bool = False) -> Any:
    options = {"use_uvloop": True} if uvloop else {}
    return anyio.run(func, *args, backend="asyncio", backend_options=options)


@pytest.mark.asyncio
async def test_fifo_and_empty_without_exceptions() -> None:
    box = Mailbox(3)
    assert box.get_nowait() is EMPTY
    for i in range(3):
        box.put_nowait(i)
    assert len(box) == 3
    assert box.statistics() == MailboxStatistics(
        depth=3, size=3, senders_waiting=0, receiver_waiting=False
    )
    assert [box.get_nowait() for _ in range(4)] == [0, 1, 2, EMPTY]
    await box.put("a")  # room: returns at once
    assert await box.get() == "a"


def test_size_is_validated() -> None:
    with pytest.raises(ValueError, match=r"^mailbox size must be >= 1; got 0$"):
        Mailbox(0)


@pytest.mark.asyncio
async def test_full_mailbox_makes_put_wait_and_put_nowait_raise() -> None:
    box = Mailbox(1)
    box.put_nowait(0)
    with pytest.raises(WouldBlock):
        box.put_nowait(1)
    done: list[int] = []

    async def put(i: int) -> None:
        await box.put(i)
        done.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(put, 1)
        await wait_all_tasks_blocked()
        tg.start_soon(put, 2)
        await wait_all_tasks_blocked()
        assert done == []
        assert box.statistics().senders_waiting == 2
        assert box.get_nowait() == 0
        # The freed slot is reserved for the first waiting sender: newcomers wait too.
        with pytest.raises(WouldBlock):
            box.put_nowait(9)
        await wait_all_tasks_blocked()
        assert done == [1]
        assert len(box) == 1
        assert box.get_nowait() == 1
        await wait_all_tasks_blocked()
    assert done == [1, 2]
    assert box.get_nowait() == 2
    assert box.get_nowait() is EMPTY


@pytest.mark.asyncio
async def test_get_waits_and_a_cancelled_get_loses_nothing() -> None:
    box = Mailbox(2)
    got: list[Any] = []

    async def get() -> None:
        got.append(await box.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(get)
        await wait_all_tasks_blocked()
        assert box.statistics().receiver_waiting
        box.put_nowait("x")
    assert got == ["x"]
    assert not box.statistics().receiver_waiting

    # The harshest case: a plain task.cancel() after the put woke the getter, before it ran
    # (anyio's cancel scopes wait for such a task to run instead).
    task = asyncio.get_running_loop().create_task(get())
    await wait_all_tasks_blocked()
    box.put_nowait("y")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got == ["x"]
    assert box.get_nowait() == "y"  # not lost
    assert not box.statistics().receiver_waiting


@pytest.mark.asyncio
async def test_only_one_receiver_may_wait() -> None:
    box = Mailbox(1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(box.get)
        await wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="already waiting"):
            await box.get()
        box.put_nowait(1)


@pytest.mark.asyncio
async def test_a_cancelled_put_inserts_nothing_and_passes_its_slot_on() -> None:
    box = Mailbox(1)
    box.put_nowait(0)
    done: list[int] = []
    loop = asyncio.get_running_loop()

    async def put(i: int) -> None:
        await box.put(i)
        done.append(i)

    tasks = {}
    for i in (1, 2, 3):
        tasks[i] = loop.create_task(put(i))
        await wait_all_tasks_blocked()
    tasks[1].cancel()  # still waiting: withdrawn
    await wait_all_tasks_blocked()
    assert box.statistics().senders_waiting == 2
    assert box.get_nowait() == 0  # wakes sender 2 with a reserved slot
    tasks[2].cancel()  # cancelled after being woken, before it ran: the slot goes to 3
    await wait_all_tasks_blocked()
    for i in (1, 2):
        with pytest.raises(asyncio.CancelledError):
            await tasks[i]
    await tasks[3]
    assert done == [3]
    assert box.get_nowait() == 3
    assert box.get_nowait() is EMPTY


@pytest.mark.asyncio
async def test_close_hands_over_queued_and_waiting_items() -> None:
    box = Mailbox(2)
    box.put_nowait(0)
    box.put_nowait(1)
    outcome: list[Any] = []
    scopes: dict[int, CancelScope] = {}

    async def put(i: int) -> None:
        with CancelScope() as scopes[i]:
            try:
                await box.put(i)
            except ClosedResourceError:
                outcome.append(("closed", i))
            else:
                outcome.append(("returned", i))
            return
        outcome.append(("cancelled", i))

    async with anyio.create_task_group() as tg:
        for i in (2, 3, 4):
            tg.start_soon(put, i)
            await wait_all_tasks_blocked()
        assert box.get_nowait() == 0  # sender 2 woken, not yet run
        scopes[4].cancel()  # a cancellation pending at close: skipped
        assert box.close() == [1, 2, 3]
        assert box.close() == []
    assert sorted(outcome) == [("cancelled", 4), ("returned", 2), ("returned", 3)]
    assert box.closed
    with pytest.raises(ClosedResourceError):
        box.put_nowait(5)
    with pytest.raises(ClosedResourceError):
        await box.put(5)
    assert box.get_nowait() is EMPTY
    with pytest.raises(EndOfStream):
        await box.get()


@pytest.mark.asyncio
async def test_close_skips_a_woken_sender_whose_cancellation_is_pending() -> None:
    box = Mailbox(1)
    box.put_nowait(0)
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(box.put(i)) for i in (1, 2)]
    await wait_all_tasks_blocked()
    assert box.get_nowait() == 0  # sender 1 woken with a reserved slot, not yet run
    tasks[0].cancel()  # pending: it will raise CancelledError when it runs
    assert box.close() == [2]
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    await tasks[1]  # handed over: returns normally


@pytest.mark.asyncio
async def test_close_ends_a_waiting_get() -> None:
    box = Mailbox(1)
    ended = []

    async def get() -> None:
        with pytest.raises(EndOfStream):
            await box.get()
        ended.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(get)
        await wait_all_tasks_blocked()
        assert box.close() == []
    assert ended == [True]


@pytest.mark.asyncio
async def test_take_nowait_drains_waiting_senders_too() -> None:
    box = Mailbox(1)
    box.put_nowait(0)
    done: list[int] = []

    async def put(i: int) -> None:
        await box.put(i)
        done.append(i)

    async with anyio.create_task_group() as tg:
        for i in (1, 2):
            tg.start_soon(put, i)
            await wait_all_tasks_blocked()
        assert [box.take_nowait() for _ in range(4)] == [0, 1, 2, EMPTY]
    assert done == [1, 2]
    assert box.close() == []


# -- random interleavings --------------------------------------------------------------------

SENDERS = 3

step = st.one_of(
    st.tuples(st.just("put"), st.integers(0, SENDERS - 1)),
    st.tuples(st.just("put_nowait"), st.integers(0, SENDERS - 1)),
    st.tuples(st.just("cancel_put"), st.integers(0, SENDERS - 1)),
    st.tuples(st.just("get"), st.just(0)),
    st.tuples(st.just("get_nowait"), st.just(0)),
    st.tuples(st.just("cancel_get"), st.just(0)),
    st.tuples(st.just("yield"), st.integers(1, 3)),
)


@dataclass
class Sender:
    seq: int = 0
    task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()


@dataclass
class Record:
    inserted: list[tuple[int, int]] = field(default_factory=list)  # in insertion order
    returned: set[tuple[int, int]] = field(default_factory=set)  # put/put_nowait returned
    cancelled: set[tuple[int, int]] = field(default_factory=set)
    refused: set[tuple[int, int]] = field(default_factory=set)  # WouldBlock / closed
    received: list[tuple[int, int]] = field(default_factory=list)  # get / get_nowait


async def interleave(size: int, steps: list[tuple[str, int]], close: bool) -> None:
    # Plain asyncio tasks and task.cancel(): a cancellation can land on a task that was woken
    # but has not run yet (anyio's cancel scopes would let such a task run first).
    loop = asyncio.get_running_loop()
    box = Mailbox(size)
    senders = [Sender() for _ in range(SENDERS)]
    record = Record()
    getter: asyncio.Task[None] | None = None

    async def put(item: tuple[int, int]) -> None:
        try:
            await box.put(item)
        except ClosedResourceError:
            record.refused.add(item)
        except asyncio.CancelledError:
            record.cancelled.add(item)
        else:
            record.inserted.append(item)  # nothing awaited since the insertion
            record.returned.add(item)

    async def get() -> None:
        with suppress(EndOfStream, asyncio.CancelledError):
            record.received.append(await box.get())

    for kind, arg in steps:
        if kind in ("put", "put_nowait"):
            sender = senders[arg]
            if sender.busy:
                continue  # a sender awaits its own put before the next one
            item = (arg, sender.seq)
            sender.seq += 1
            if kind == "put":
                sender.task = loop.create_task(put(item))
            else:
                try:
                    box.put_nowait(item)
                except WouldBlock:
                    record.refused.add(item)
                else:
                    record.inserted.append(item)
                    record.returned.add(item)
        elif kind == "cancel_put":
            task = senders[arg].task
            if task is not None:
                task.cancel()
        elif kind == "get":
            if getter is None or getter.done():
                getter = loop.create_task(get())
        elif kind == "get_nowait":
            item = box.get_nowait()
            if item is not EMPTY:
                record.received.append(item)
        elif kind == "cancel_get":
            if getter is not None:
                getter.cancel()
        else:
            for _ in range(arg):
                await checkpoint()
        assert len(box) <= size

    left: list[tuple[int, int]] = []
    if getter is not None and not close:
        getter.cancel()  # a cancelled get takes nothing: get_nowait drains below
    if close:
        queued_at_close = list(record.inserted[len(record.received) :])
        left = box.close()
        assert left[: len(queued_at_close)] == queued_at_close
    with anyio.fail_after(1):  # every waiting sender gets in once there is room
        while any(s.busy for s in senders) or (getter is not None and not getter.done()):
            while (item := box.get_nowait()) is not EMPTY:
                record.received.append(item)
            await checkpoint()
    while (item := box.get_nowait()) is not EMPTY:
        record.received.append(item)
    # Whatever was received by get came out in insertion order (one FIFO).
    assert record.received == record.inserted[: len(record.received)]
    delivered = record.received + left
    # Nothing lost, nothing duplicated: delivered exactly the puts that returned.
    assert len(delivered) == len(set(delivered))
    assert set(delivered) == record.returned
    assert not record.cancelled & set(delivered)
    assert not record.refused & set(delivered)
    # Per-sender FIFO.
    for s in range(SENDERS):
        seqs = [seq for sender, seq in delivered if sender == s]
        assert seqs == sorted(seqs)
    assert box.statistics() == MailboxStatistics(
        depth=0, size=size, senders_waiting=0, receiver_waiting=False
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(1, 4),
    steps=st.lists(step, max_size=60),
    close=st.booleans(),
    uvloop=st.booleans(),
)
def test_random_interleavings_keep_fifo_and_lose_nothing(
    size: int, steps: list[tuple[str, int]], close: bool, uvloop: bool
) -> None:
    run(interleave, size, steps, close, uvloop=uvloop)
