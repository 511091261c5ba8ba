"""``Actor.hand_off``: an actor hands its work to a successor of the same name on another
worker; its queue and later messages follow. ``Worker.admit``: dynamic mesh membership."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from shoal.actors import Actor, PeerLostError, SupervisionPolicy, open_worker


class Counter(Actor):
    """Counts; on ``("go", worker)`` tells its successor the count and hands off."""

    def __init__(self, start: int = 0, log: list[Any] | None = None) -> None:
        self.count = start
        self.log = log if log is not None else []

    async def receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "go":
            self.hand_off(message[1])
            return self.count
        if message == "count":
            return (self.worker.worker_id, self.count)
        self.count += 1
        self.log.append((self.worker.worker_id, message))
        return None


@pytest.mark.asyncio
async def test_hand_off_forwards_the_queue_and_later_messages_in_order() -> None:
    log: list[Any] = []
    async with open_worker(0, peers=[0, 1]) as w0, open_worker(1, peers=[0, 1]) as w1:
        ref = await w0.spawn(lambda: Counter(log=log), name="c", mailbox_size=64)
        await ref.tell(1)
        handed = await ref.ask(("go", 1))
        # The successor starts where the first left off (the state travels in the answer here).
        await w1.spawn(lambda: Counter(start=handed, log=log), name="c", mailbox_size=64)
        for i in range(2, 6):  # through worker 0's ref: forwarded to worker 1
            await ref.tell(i)
        assert await w0.ref("c").ask("count") == (1, 5)
        assert w0.directory.lookup("c") == 1
        assert not w0.ref("c").is_local
    assert log == [(0, 1), *[(1, i) for i in range(2, 6)]]


@pytest.mark.asyncio
async def test_messages_queued_behind_the_hand_off_are_forwarded() -> None:
    log: list[Any] = []
    gate = anyio.Event()

    class Slow(Counter):
        async def receive(self, message: Any) -> Any:
            if message == "wait":
                await gate.wait()
                return None
            return await super().receive(message)

    async with open_worker(0, peers=[0, 1]) as w0, open_worker(1, peers=[0, 1]) as w1:
        await w1.spawn(lambda: Counter(log=log), name="c", mailbox_size=64)
        ref = await w0.spawn(lambda: Slow(log=log), name="c", mailbox_size=64)
        await ref.tell("wait")
        await ref.tell(("go", 1))
        for i in range(3):
            await ref.tell(i)  # queued behind the hand-off: handled by worker 1's actor
        gate.set()
        assert await w0.ref("c").ask("count") == (1, 3)
    assert log == [(1, 0), (1, 1), (1, 2)]


@pytest.mark.asyncio
async def test_hand_off_to_its_own_worker_is_refused() -> None:
    async with open_worker(0) as w0:
        ref = await w0.spawn(Counter, name="c", policy=SupervisionPolicy("stop"))
        with pytest.raises(ValueError, match=r"^actor 'c' cannot hand off to its own worker 0$"):
            await ref.ask(("go", 0))


@pytest.mark.asyncio
async def test_admit_adds_a_peer_to_a_running_mesh() -> None:
    async with (
        open_worker(0, peers=[0], namespace="admit") as w0,
        open_worker(5, peers=[0, 5], namespace="admit") as w5,
    ):
        await w5.spawn(Counter, name="c")
        w0.directory.place("c", 5)
        with pytest.raises(PeerLostError, match=r"^worker 5 is not a peer of worker 0"):
            await w0.ref("c").tell(1)
        w0.admit(5)
        await w0.ref("c").tell(1)
        assert await w0.ref("c").ask("count") == (5, 1)
