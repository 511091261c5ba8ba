"""Supervision: restart, stop, escalate, restart limits."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from shoal.actors import (
    Actor,
    ActorFailedError,
    ActorStoppedError,
    SupervisionPolicy,
    open_worker,
)


class Fragile(Actor):
    """Counts instances; fails on "boom"; remembers what this instance saw."""

    instances = 0

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.seen: list[Any] = []

    async def on_start(self) -> None:
        Fragile.instances += 1
        self.number = Fragile.instances
        self.events.append(f"start{self.number}")

    async def on_stop(self) -> None:
        self.events.append(f"stop{self.number}")

    async def on_failure(self, exc: BaseException) -> None:
        self.events.append(f"failure{self.number}:{exc}")

    async def receive(self, message: Any) -> Any:
        if message == "boom":
            raise ValueError("boom")
        if message == "seen":
            return (self.number, list(self.seen))
        self.seen.append(message)
        return None


@pytest.fixture(autouse=True)
def _reset_instances() -> None:
    Fragile.instances = 0


@pytest.mark.asyncio
async def test_restart_makes_a_fresh_instance_and_keeps_the_mailbox() -> None:
    events: list[str] = []
    async with open_worker(0) as worker:
        ref = await worker.spawn(
            lambda: Fragile(events), name="f", policy=SupervisionPolicy("restart")
        )
        await ref.tell(1)
        await ref.tell("boom")
        await ref.tell(2)  # queued behind the failure: handled by the new instance
        assert await ref.ask("seen") == (2, [2])
    assert events == ["start1", "failure1:boom", "stop1", "start2", "stop2"]


@pytest.mark.asyncio
async def test_too_many_restarts_escalate() -> None:
    events: list[str] = []

    async def scenario() -> None:
        async with open_worker(0) as worker:
            ref = await worker.spawn(
                lambda: Fragile(events),
                name="f",
                policy=SupervisionPolicy("restart", max_restarts=2),
            )
            for _ in range(3):
                await ref.tell("boom")
            await anyio.sleep_forever()  # cancelled by the escalation

    with pytest.raises(
        ActorFailedError,
        match=r"^actor 'f' failed more than 2 times within 60.0 s: ValueError: boom$",
    ) as info:
        await scenario()
    assert isinstance(info.value.__cause__, ValueError)
    assert events[-1] == "stop3"
    assert Fragile.instances == 3


@pytest.mark.asyncio
async def test_escalate_fails_the_worker_and_the_asker_gets_the_error() -> None:
    events: list[str] = []
    asker_saw: list[BaseException] = []

    async def scenario() -> None:
        async with open_worker(0) as worker:
            ref = await worker.spawn(lambda: Fragile(events), name="f")
            try:
                await ref.ask("boom")
            except ValueError as exc:
                asker_saw.append(exc)
            await anyio.sleep_forever()

    with pytest.raises(ActorFailedError, match=r"^actor 'f' failed: ValueError: boom$") as info:
        await scenario()
    assert isinstance(info.value.__cause__, ValueError)
    assert [str(e) for e in asker_saw] == ["boom"]
    assert events == ["start1", "failure1:boom", "stop1"]


@pytest.mark.asyncio
async def test_stop_policy_stops_the_actor_only() -> None:
    events: list[str] = []
    async with open_worker(0) as worker:
        ref = await worker.spawn(
            lambda: Fragile(events), name="f", policy=SupervisionPolicy("stop")
        )
        other = await worker.spawn(lambda: Fragile(events), name="g")
        with pytest.raises(ValueError, match=r"^boom$"):
            await ref.ask("boom")
        with pytest.raises(ActorStoppedError, match=r"^actor 'f' has stopped$"):
            await ref.ask("seen")
        assert await other.ask("seen") == (2, [])
        assert worker.statistics().actors == 1


@pytest.mark.asyncio
async def test_an_error_in_the_body_propagates_unwrapped() -> None:
    async def scenario() -> None:
        async with open_worker(0) as worker:
            await worker.spawn(lambda: Fragile([]), name="f")
            raise KeyError("mine")

    with pytest.raises(KeyError):
        await scenario()
