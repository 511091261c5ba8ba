"""Migration between two workers sharing one event loop."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from shoal.actors import Actor, MigrationError, open_worker


class Ledger(Actor):
    """Keeps every message it saw; its state migrates; can be held at a gate."""

    def __init__(self, gate: anyio.Event | None = None, entered: anyio.Event | None = None):
        self.seen: list[Any] = []
        self.gate = gate
        self.entered = entered
        self.history: list[str] = []

    async def rehydrate(self, state: Any) -> None:
        self.history.append("rehydrate")
        self.seen = list(state["seen"])

    async def on_start(self) -> None:
        self.history.append(f"start@{self.worker.worker_id}")

    async def on_stop(self) -> None:
        self.history.append(f"stop@{self.worker.worker_id}")

    async def dehydrate(self) -> Any:
        if self.gate is not None and "fail-dehydrate" in self.seen:
            raise RuntimeError("cannot")
        return {"seen": self.seen}

    async def receive(self, message: Any) -> Any:
        if message == "seen":
            return (self.worker.worker_id, list(self.seen), list(self.history))
        self.seen.append(message)
        if message == "hold" and self.gate is not None:
            assert self.entered is not None
            self.entered.set()
            await self.gate.wait()
        return None


@pytest.mark.asyncio
async def test_migrate_keeps_state_and_delivers_held_messages_in_order_once() -> None:
    gate, entered = anyio.Event(), anyio.Event()
    async with open_worker(0, peers=[0, 1]) as w0, open_worker(1, peers=[0, 1]) as w1:
        ref = await w0.spawn(lambda: Ledger(gate, entered), name="a", mailbox_size=8)
        await ref.tell("hold")
        await entered.wait()
        for i in range(3):
            await ref.tell(i)  # queued before the migration: handled on worker 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(w0.migrate, "a", 1)
            await wait_all_tasks_blocked()
            for i in range(3, 6):
                await ref.tell(i)  # arrives during the migration: held, then forwarded
            gate.set()
        for i in range(6, 9):
            await ref.tell(i)  # after: the ref follows the actor
        assert not ref.is_local
        assert w0.directory.lookup("a") == 1
        assert w1.directory.lookup("a") == 1
        worker_id, seen, history = await ref.ask("seen")
        assert worker_id == 1
        assert seen == ["hold", *range(9)]
        assert history == ["rehydrate", "start@1"]
        assert await w1.ref("a").ask("seen") == (1, seen, history)
        assert w0.statistics().actors == 0
        assert w1.statistics().actors == 1


@pytest.mark.asyncio
async def test_migration_to_a_worker_that_refuses_rolls_back() -> None:
    async with open_worker(0, peers=[0, 1]) as w0, open_worker(1, peers=[0, 1]) as w1:
        ref = await w0.spawn(Ledger, name="a")
        await w1.spawn(Ledger, name="a")  # the name is taken there
        await ref.tell("x")
        with pytest.raises(
            MigrationError,
            match=r"^worker 1 could not take over actor 'a': ValueError: an actor named 'a'"
            r" is already running on worker 1$",
        ):
            await w0.migrate("a", 1)
        worker_id, seen, history = await ref.ask("seen")
        assert (worker_id, seen) == (0, ["x"])
        # stopped for the move, then brought back here from its own dehydrated state
        assert history == ["rehydrate", "start@0"]
        assert w0.directory.lookup("a") == 0


@pytest.mark.asyncio
async def test_failing_dehydrate_leaves_the_actor_running() -> None:
    gate = anyio.Event()
    gate.set()
    async with open_worker(0, peers=[0, 1]) as w0, open_worker(1, peers=[0, 1]):
        ref = await w0.spawn(lambda: Ledger(gate, anyio.Event()), name="a")
        await ref.tell("fail-dehydrate")
        with pytest.raises(
            MigrationError,
            match=r"^actor 'a' could not migrate: dehydrate\(\) raised RuntimeError: cannot$",
        ):
            await w0.migrate("a", 1)
        assert await ref.ask("seen") == (0, ["fail-dehydrate"], ["start@0"])


@pytest.mark.asyncio
async def test_migrate_refuses_bad_targets() -> None:
    async with open_worker(0, peers=[0, 1]) as w0:
        await w0.spawn(Ledger, name="a")
        with pytest.raises(ValueError, match=r"^actor 'a' already runs on worker 0$"):
            await w0.migrate("a", 0)
        with pytest.raises(
            Exception,
            match=r"^worker 1 is not open in this process and worker 0 has no mesh_dir to"
            r" reach it by socket$",
        ):
            await w0.migrate("a", 1)
        with pytest.raises(Exception, match=r"^worker 7 is not a peer of worker 0"):
            await w0.migrate("a", 7)


@pytest.mark.asyncio
async def test_migrate_forwards_the_messages_of_senders_waiting_for_room() -> None:
    gate, entered = anyio.Event(), anyio.Event()
    async with open_worker(0, peers=[0, 1]) as w0, open_worker(1, peers=[0, 1]):
        ref = await w0.spawn(lambda: Ledger(gate, entered), name="a", mailbox_size=1)
        await ref.tell("hold")
        await entered.wait()
        await ref.tell(0)  # the mailbox is full from here on
        sent: list[int] = []

        async def send(first: int) -> None:
            for i in range(first, first + 3):
                await ref.tell(i)
                sent.append(i)

        async with anyio.create_task_group() as tg:
            tg.start_soon(w0.migrate, "a", 1)
            await wait_all_tasks_blocked()
            tg.start_soon(send, 10)
            tg.start_soon(send, 20)
            await wait_all_tasks_blocked()
            assert sent == []
            gate.set()
        worker_id, seen, _history = await ref.ask("seen")
        assert worker_id == 1
        assert seen[:2] == ["hold", 0]
        assert sorted(seen[2:]) == [10, 11, 12, 20, 21, 22]
        assert [i for i in seen if isinstance(i, int) and i >= 20] == [20, 21, 22]
        assert [i for i in seen if isinstance(i, int) and 10 <= i < 20] == [10, 11, 12]
        assert sorted(sent) == [10, 11, 12, 20, 21, 22]
