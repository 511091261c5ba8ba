"""One worker, one process: messaging, backpressure, continuations, stopping, spawning."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from shoal.actors import (
    Actor,
    ActorStartError,
    ActorStoppedError,
    MailboxFullError,
    SupervisionPolicy,
    UnknownActorError,
    open_worker,
)

RESTART = SupervisionPolicy("restart")


class Recorder(Actor):
    """Records what it receives; answers "log" with the record; can be held at a gate."""

    def __init__(self, gate: anyio.Event | None = None, entered: anyio.Event | None = None):
        self.log: list[Any] = []
        self.gate = gate
        self.entered = entered
        self.stopped = False

    async def receive(self, message: Any) -> Any:
        if message == "log":
            return list(self.log)
        if message == "boom":
            raise ValueError("boom")
        self.log.append(message)
        if message == "hold" and self.gate is not None:
            if self.entered is not None:
                self.entered.set()
            await self.gate.wait()
        return message

    async def on_stop(self) -> None:
        self.stopped = True


@pytest.mark.asyncio
async def test_tell_then_ask_sees_every_message_in_order() -> None:
    async with open_worker(0) as worker:
        ref = await worker.spawn(Recorder, name="r")
        for i in range(100):
            await ref.tell(i)
        assert await ref.ask("log") == list(range(100))
        assert worker.ref("r") is ref
        assert ref.is_local


@pytest.mark.asyncio
async def test_ask_raises_the_actors_error_and_the_actor_goes_on() -> None:
    async with open_worker(0) as worker:
        ref = await worker.spawn(Recorder, name="r", policy=RESTART)
        with pytest.raises(ValueError, match=r"^boom$"):
            await ref.ask("boom")
        assert await ref.ask(7) == 7


@pytest.mark.asyncio
async def test_ask_times_out() -> None:
    gate, entered = anyio.Event(), anyio.Event()
    async with open_worker(0) as worker:
        ref = await worker.spawn(lambda: Recorder(gate, entered), name="r")
        await ref.tell("hold")
        await entered.wait()
        with pytest.raises(TimeoutError):
            await ref.ask("log", timeout=0.01)
        gate.set()
        assert await ref.ask("log") == ["hold"]


@pytest.mark.asyncio
async def test_full_mailbox_makes_tell_wait_and_tell_nowait_raise() -> None:
    gate, entered = anyio.Event(), anyio.Event()
    async with open_worker(0) as worker:
        ref = await worker.spawn(lambda: Recorder(gate, entered), name="r", mailbox_size=2)
        await ref.tell("hold")
        await entered.wait()
        await ref.tell(1)
        await ref.tell(2)
        with pytest.raises(MailboxFullError, match=r"^mailbox of actor 'r' is full$"):
            ref.tell_nowait(3)
        with pytest.raises(anyio.WouldBlock):
            ref.tell_nowait(3)
        sent = []

        async def send_more() -> None:
            for i in (3, 4, 5):
                await ref.tell(i)
                sent.append(i)

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_more)
            await wait_all_tasks_blocked()
            assert sent == []  # blocked on the full mailbox
            assert worker.statistics().mailbox_depths == (("r", 2),)
            gate.set()
        assert await ref.ask("log") == ["hold", 1, 2, 3, 4, 5]
        assert sent == [3, 4, 5]


class Source(Actor):
    """Pulls through continue_with; control messages must interleave between pulls."""

    def __init__(self, pulled: anyio.Event, done: anyio.Event) -> None:
        self.log: list[Any] = []
        self.pulls = 0
        self.pulled = pulled
        self.done = done

    async def on_start(self) -> None:
        self.continue_with("pull")

    async def receive(self, message: Any) -> Any:
        if message == "log":
            return list(self.log)
        if message != "pull":
            self.log.append(message)
            return None
        self.pulls += 1
        self.log.append(f"pull{self.pulls}")
        if self.pulls == 1:
            self.ref.tell_nowait("ctl-a")
            self.ref.tell_nowait("ctl-b")
        if self.pulls == 3:
            self.pulled.set()
        if self.pulls < 6:
            self.continue_with("pull")
            self.continue_with("pull")  # at most one pending: this replaces the first
        else:
            self.done.set()
        return None


@pytest.mark.asyncio
async def test_continuation_runs_only_when_the_mailbox_is_empty() -> None:
    pulled, done = anyio.Event(), anyio.Event()
    async with open_worker(0) as worker:
        ref = await worker.spawn(lambda: Source(pulled, done), name="src")
        await pulled.wait()
        await ref.tell("barrier")
        await done.wait()
        assert await ref.ask("log") == [
            "pull1",
            "ctl-a",
            "ctl-b",
            "pull2",
            "pull3",
            "barrier",
            "pull4",
            "pull5",
            "pull6",
        ]
        # a continuation is delivered only when nothing else waits: a task that asks in a
        # tight loop would starve it, which is the point (control messages go first)


@pytest.mark.asyncio
async def test_stop_actor_drains_the_mailbox_then_stops() -> None:
    gate, entered = anyio.Event(), anyio.Event()
    instance = Recorder(gate, entered)
    async with open_worker(0) as worker:
        ref = await worker.spawn(lambda: instance, name="r")
        await ref.tell("hold")
        await entered.wait()
        await ref.tell(1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.stop_actor, "r")
            await wait_all_tasks_blocked()
            gate.set()
        assert instance.log == ["hold", 1]
        assert instance.stopped
        with pytest.raises(ActorStoppedError, match=r"^actor 'r' has stopped$"):
            await ref.ask("log")
        with pytest.raises(ActorStoppedError, match=r"^actor 'r' has stopped$"):
            await ref.tell(2)
        assert worker.statistics().actors == 0
        assert "r" not in worker.directory
        with pytest.raises(UnknownActorError, match=r"^no actor named 'r' runs on worker 0$"):
            await worker.stop_actor("r")
        # the name is free again, and the old ref follows the new actor
        await worker.spawn(Recorder, name="r")
        assert await ref.ask("log") == []


@pytest.mark.asyncio
async def test_stopping_answers_queued_asks_with_actor_stopped() -> None:
    gate, entered = anyio.Event(), anyio.Event()
    errors: list[BaseException] = []
    async with open_worker(0) as worker:
        ref = await worker.spawn(
            lambda: Recorder(gate, entered), name="r", policy=SupervisionPolicy("stop")
        )
        await ref.tell("hold")
        await entered.wait()
        await ref.tell("boom")  # fails after the gate: the "stop" policy stops the actor

        async def ask() -> None:
            try:
                await ref.ask("log")
            except ActorStoppedError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            tg.start_soon(ask)
            await wait_all_tasks_blocked()
            gate.set()
        assert [str(e) for e in errors] == ["actor 'r' has stopped"] * 2


@pytest.mark.asyncio
async def test_leaving_the_worker_stops_actors_in_reverse_order_and_answers_asks() -> None:
    stopped: list[str] = []
    gate, entered = anyio.Event(), anyio.Event()  # the gate never opens: "a" is stuck

    class Named(Recorder):
        async def on_stop(self) -> None:
            stopped.append(self.name)

    outcome: list[BaseException] = []
    async with anyio.create_task_group() as outer, open_worker(0, stop_timeout=0.01) as worker:
        for name in ("a", "b", "c"):
            await worker.spawn(lambda: Named(gate, entered), name=name)
        ref = worker.ref("a")
        await ref.tell("hold")
        await entered.wait()

        async def ask() -> None:
            try:
                await ref.ask("log")
            except ActorStoppedError as exc:
                outcome.append(exc)

        outer.start_soon(ask)
        await wait_all_tasks_blocked()
    assert stopped == ["c", "b", "a"]
    assert [str(e) for e in outcome] == ["actor 'a' has stopped"]


class FailsToStart(Actor):
    stops: list[str]

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops

    async def on_start(self) -> None:
        raise RuntimeError("no disk")

    async def on_stop(self) -> None:
        self.stops.append(self.name)


@pytest.mark.asyncio
async def test_failed_on_start_cleans_up_and_frees_the_name() -> None:
    stops: list[str] = []
    async with open_worker(0) as worker:
        with pytest.raises(
            ActorStartError, match=r"^actor 'x' failed to start: RuntimeError: no disk$"
        ) as info:
            await worker.spawn(lambda: FailsToStart(stops), name="x")
        assert isinstance(info.value.__cause__, RuntimeError)
        assert stops == ["x"]  # on_stop ran, so a half-opened resource can be closed
        assert worker.statistics().actors == 0
        with pytest.raises(UnknownActorError):
            await worker.ref("x").tell(1)
        ref = await worker.spawn(Recorder, name="x")
        assert await ref.ask("log") == []


@pytest.mark.asyncio
async def test_factory_must_make_an_actor() -> None:
    async with open_worker(0) as worker:
        with pytest.raises(
            ActorStartError,
            match=r"^actor 'x' failed to start: TypeError: the factory of actor 'x' returned"
            r" dict, not an Actor$",
        ):
            await worker.spawn(dict, name="x")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_bad_spawn_arguments_are_refused() -> None:
    async with open_worker(0) as worker:
        await worker.spawn(Recorder, name="r")
        with pytest.raises(
            ValueError, match=r"^an actor named 'r' is already running on worker 0$"
        ):
            await worker.spawn(Recorder, name="r")
        with pytest.raises(ValueError, match=r"^mailbox_size must be >= 1; got 0$"):
            await worker.spawn(Recorder, name="s", mailbox_size=0)
        with pytest.raises(ValueError, match=r"^actor name must be a non-empty str; got ''$"):
            await worker.spawn(Recorder, name="")


@pytest.mark.asyncio
async def test_unknown_names_fail_when_used() -> None:
    async with open_worker(0) as worker:
        ref = worker.ref("nobody")  # cheap, no error yet
        message = (
            r"^no actor named 'nobody' on worker 0, and the directory does not place it"
            r" on another worker$"
        )
        with pytest.raises(UnknownActorError, match=message):
            await ref.tell(1)
        with pytest.raises(UnknownActorError, match=message):
            ref.tell_nowait(1)
        with pytest.raises(UnknownActorError, match=message):
            await ref.ask(1)


@pytest.mark.asyncio
async def test_statistics() -> None:
    async with open_worker(3) as worker:
        ref = await worker.spawn(Recorder, name="r")
        for i in range(5):
            await ref.tell(i)
        await ref.ask("log")
        stats = worker.statistics()
        assert stats.worker_id == 3
        assert stats.actors == 1
        assert stats.messages_in == 6
        assert stats.mailbox_depths == (("r", 0),)
        assert stats.dead_letters == 0
        assert stats.lost_peers == ()


def test_supervision_policy_is_validated() -> None:
    with pytest.raises(
        ValueError, match=r"^strategy must be 'restart', 'stop' or 'escalate'; got 'retry'$"
    ):
        SupervisionPolicy("retry")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^max_restarts must be >= 0; got -1$"):
        SupervisionPolicy(max_restarts=-1)


@pytest.mark.asyncio
async def test_senders_waiting_on_a_stopping_actor_are_answered() -> None:
    gate, entered = anyio.Event(), anyio.Event()
    outcome: list[str] = []
    async with open_worker(0) as worker:
        ref = await worker.spawn(
            lambda: Recorder(gate, entered),
            name="r",
            mailbox_size=1,
            policy=SupervisionPolicy("stop"),
        )
        await ref.tell("hold")
        await entered.wait()
        await ref.tell("boom")  # fills the mailbox; fails after the gate: the actor stops

        async def tell() -> None:
            await ref.tell("late")
            outcome.append("told")

        async def ask() -> None:
            try:
                await ref.ask("log")
            except ActorStoppedError as exc:
                outcome.append(str(exc))

        async with anyio.create_task_group() as tg:
            tg.start_soon(tell)
            tg.start_soon(ask)
            await wait_all_tasks_blocked()
            assert outcome == []  # both wait for room
            gate.set()
        # Their messages were taken with the queue and rejected: the tell returned (a dead
        # letter), the ask got the error.
        assert sorted(outcome) == ["actor 'r' has stopped", "told"]
        assert worker.statistics().dead_letters == 1


@pytest.mark.asyncio
async def test_an_actor_is_an_async_context_manager() -> None:
    instances: list[Recorder] = []

    def make() -> Recorder:
        instances.append(Recorder())
        return instances[-1]

    async with open_worker(0) as worker:
        async with worker.open_actor(make, name="r", mailbox_size=4) as ref:
            for i in range(10):
                await ref.tell(i)
            (actor,) = instances
            assert not actor.stopped
        # leaving the block handled what was queued, then stopped the actor
        assert actor.log == list(range(10))
        assert actor.stopped
        with pytest.raises(ActorStoppedError):
            await ref.ask("log")
        # the name is free again
        async with worker.open_actor(Recorder, name="r") as again:
            assert await again.ask("log") == []


@pytest.mark.asyncio
async def test_leaving_an_actor_block_by_an_error_still_stops_it() -> None:
    async with open_worker(0) as worker:
        refs: list[Any] = []

        async def use_then_fail() -> None:
            async with worker.open_actor(Recorder, name="r") as ref:
                refs.append(ref)
                await ref.tell("x")
                raise KeyError("oops")

        with pytest.raises(KeyError, match="oops"):
            await use_then_fail()
        (ref,) = refs
        with pytest.raises(ActorStoppedError):
            await ref.ask("log")


@pytest.mark.asyncio
async def test_an_actor_stopped_inside_its_block_is_left_alone() -> None:
    async with open_worker(0) as worker:
        async with worker.open_actor(Recorder, name="r"):
            await worker.stop_actor("r")
        async with worker.open_actor(Recorder, name="r") as ref:
            assert await ref.ask("log") == []
