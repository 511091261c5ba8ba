"""Fair turns: an actor with a full mailbox lets the other actors of its loop run every
``TURN_S`` instead of keeping the loop for its whole backlog."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from shoal.actors import Actor, open_worker
from shoal.actors._cell import TURN_S


def _work(seconds: float) -> None:
    """Keep the CPU (the event loop) busy for ``seconds``: what a heavy batch does."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


class Busy(Actor):
    """Each message costs a millisecond of CPU."""

    def __init__(self, handled: list[int]) -> None:
        self.handled = handled

    async def receive(self, message: Any) -> Any:
        _work(0.001)
        self.handled.append(message)


class Probe(Actor):
    def __init__(self, seen: list[int], busy: list[int], done: anyio.Event) -> None:
        self.seen, self.busy, self.done = seen, busy, done

    async def receive(self, message: Any) -> Any:
        self.seen.append(len(self.busy))  # how many of Busy's messages ran before this one
        self.done.set()


@pytest.mark.asyncio
async def test_a_busy_actor_yields_the_loop_every_turn() -> None:
    handled: list[int] = []
    seen: list[int] = []
    done = anyio.Event()
    async with open_worker(0, namespace="fair") as worker:
        busy = await worker.spawn(lambda: Busy(handled), name="busy", mailbox_size=200)
        probe = await worker.spawn(lambda: Probe(seen, handled, done), name="probe")
        for i in range(200):
            busy.tell_nowait(i)  # a 200 ms backlog, queued before the probe's message
        probe.tell_nowait("ping")
        await done.wait()
    # Busy ran about TURN_S worth of messages (2 at 1 ms each), then the probe got its turn;
    # without fair turns it would have seen all 200.
    assert TURN_S < 0.01
    assert seen[0] <= 20, seen
