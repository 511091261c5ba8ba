"""Urgent tells: ahead of the data buffered for a worker, taken by a handler where they arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from shoal.actors import Actor, UnknownActorError, Worker, open_worker, open_worker_process
from shoal.actors._bootstrap import resolve_object

HERE = Path(__file__).parent
BOOT = f"{HERE / '_proc_actors.py'}:bootstrap"
Add = resolve_object(f"{HERE / '_proc_actors.py'}:Add")

DRIVER = -1
PLACEMENT = {"c0": 0, "slow": 0, "gate": 0}


async def until(get: Callable[[], Awaitable[Any]], expected: Any) -> Any:
    """Poll ``get`` until it returns ``expected`` (urgent delivery races the asks), for up to
    5 s; return what it last returned (the caller asserts it)."""
    seen = None
    for _ in range(500):
        seen = await get()
        if seen == expected:
            break
        await anyio.sleep(0.01)
    return seen


class Recorder(Actor):
    def __init__(self) -> None:
        self.log: list[Any] = []

    async def receive(self, message: Any) -> Any:
        if message == "log":
            return list(self.log)
        self.log.append(message)
        return None


@pytest.mark.processes
@pytest.mark.asyncio
async def test_an_urgent_tell_overtakes_a_backed_up_link(mesh_dir: Path) -> None:
    """The driver's link to worker 0 is full of megabytes for a gated actor; the tell that
    opens the gate goes on the urgent lane and gets there anyway."""
    peers = [DRIVER, 0]
    payload = b"x" * 8192
    total = 3000  # ~25 MB: more than the link buffer, both socket buffers and the mailbox
    sent = 0
    async with (
        open_worker(DRIVER, mesh_dir=mesh_dir, peers=peers) as driver,
        open_worker_process(
            0,
            mesh_dir,
            peers,
            bootstrap=BOOT,
            args={
                "spawn": [["slow", "slow", 4], ["gatekeeper", "gate", 4]],
                "placement": PLACEMENT,
            },
        ),
    ):
        for name, worker_id in PLACEMENT.items():
            driver.directory.place(name, worker_id)
        slow = driver.ref("slow")
        done = anyio.Event()

        async def send_all() -> None:
            nonlocal sent
            for i in range(total):
                await slow.tell([i, payload])
                sent += 1
            done.set()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_all)
                with anyio.move_on_after(1.0):  # the gate is shut: the sender gets stuck
                    await done.wait()
                assert 0 < sent < total
                driver.ref("gate").tell_urgent("open")  # behind megabytes on the data lane
        count, in_order = await slow.ask("count")
        while count < total:
            count, in_order = await slow.ask("count")
        assert (count, in_order) == (total, True)


@asynccontextmanager
async def counter_with_an_urgent_handler(mesh_dir: Path) -> AsyncIterator[Worker]:
    """The driver, and a worker process with a counter ``c0`` whose urgent handler takes
    ``["urgent", n]`` (see ``_proc_actors.py``)."""
    peers = [DRIVER, 0]
    async with (
        open_worker(DRIVER, mesh_dir=mesh_dir, peers=peers) as driver,
        open_worker_process(
            0,
            mesh_dir,
            peers,
            bootstrap=BOOT,
            args={"spawn": [["counter", "c0", 8]], "placement": PLACEMENT, "urgent": ["c0"]},
        ),
    ):
        for name, worker_id in PLACEMENT.items():
            driver.directory.place(name, worker_id)
        yield driver


@pytest.mark.processes
@pytest.mark.asyncio
async def test_an_urgent_handler_takes_messages_in_the_receiving_process(
    mesh_dir: Path,
) -> None:
    async with counter_with_an_urgent_handler(mesh_dir) as driver:
        c0 = driver.ref("c0")
        for n in (3, 4):
            c0.tell_urgent(["urgent", n])  # the handler takes these
        c0.tell_urgent(Add(5, "u"))  # the handler declines: the actor's mailbox gets it
        # The handler took the first two in the worker process; the declined one reached the
        # actor's mailbox.
        assert await until(lambda: c0.ask(["urgent-taken"]), [3, 4]) == [3, 4]
        assert await until(lambda: c0.ask(["order"]), [5]) == [5]


@pytest.mark.anyio
async def test_in_one_process_the_handler_runs_in_the_senders_call() -> None:
    taken: list[Any] = []

    def handler(message: Any) -> bool:
        if message == "bad":
            raise ValueError("bad")
        if message == "decline":
            return False
        taken.append(message)
        return True

    async with open_worker(0) as worker:
        ref = await worker.spawn(Recorder, name="r", mailbox_size=1)
        worker.on_urgent("r", handler)
        ref.tell_urgent("now")
        assert taken == ["now"]  # synchronously, before the sender's next step
        ref.tell_urgent("bad")  # a handler that raises: a dead letter, the sender goes on
        assert worker.statistics().dead_letters == 1
        await ref.tell("fill")  # the mailbox (size 1) is full now...
        ref.tell_urgent("decline")  # ...and a declined urgent tell does not wait for room
        assert await until(lambda: ref.ask("log"), ["fill", "decline"]) == ["fill", "decline"]
        worker.on_urgent("r", None)
        ref.tell_urgent("after")  # no handler: the mailbox
        expected = ["fill", "decline", "after"]
        assert await until(lambda: ref.ask("log"), expected) == expected
        assert taken == ["now"]


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_prepared_urgent_lane_writes_the_first_urgent_tell_at_once(
    mesh_dir: Path,
) -> None:
    """``prepare_urgent`` connects the lane ahead of time: the first urgent tell is then
    written to the socket in the sender's call (not queued behind a connect and a hello), and
    the handler in the other process takes it."""
    async with counter_with_an_urgent_handler(mesh_dir) as driver:
        c0 = driver.ref("c0")
        c0.prepare_urgent()
        c0.prepare_urgent()  # already open (or opening): nothing more
        lane = driver._link(0)._urgent_lane  # type: ignore[attr-defined]
        assert lane is not None
        with anyio.fail_after(10):
            while lane._raw is None or lane._buf or lane._sending:  # noqa: ASYNC110
                await anyio.sleep(0.005)  # connected, its hello sent: nothing to wait on
        hello_only = lane.frames_out
        c0.tell_urgent(["urgent", 7])
        assert lane.frames_out == hello_only + 1  # on the wire before this task yields
        assert await until(lambda: c0.ask(["urgent-taken"]), [7]) == [7]
        with pytest.raises(UnknownActorError):
            driver.ref("nobody").prepare_urgent()


@pytest.mark.anyio
async def test_preparing_an_urgent_tell_in_one_process_does_nothing() -> None:
    async with open_worker(0) as worker:
        ref = await worker.spawn(Recorder, name="r")
        ref.prepare_urgent()  # a local actor: no lane to open
        ref.tell_urgent("now")
        assert await until(lambda: ref.ask("log"), ["now"]) == ["now"]
