"""Actors and the bootstrap for the multi-process tests; loaded by file path in every process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
from shoal.actors import Actor, SupervisionPolicy, Worker, register_message


@dataclass(frozen=True, slots=True)
class Add:
    amount: int
    note: str


register_message(Add, "tests.add")


class Counter(Actor):
    """Sums Add messages, keeps their order; relays; fails on demand; migrates its state."""

    def __init__(self) -> None:
        self.total = 0
        self.order: list[int] = []

    async def rehydrate(self, state: Any) -> None:
        self.total, self.order = state["total"], list(state["order"])

    async def dehydrate(self) -> Any:
        return {"total": self.total, "order": self.order}

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Add):
            self.total += message.amount
            self.order.append(message.amount)
            return None
        kind = message[0]
        if kind == "get":
            return {"total": self.total, "order": self.order, "worker": self.worker.worker_id}
        if kind == "order":
            return self.order
        if kind == "urgent-taken":
            return list(urgent_taken)
        if kind == "relay":  # ["relay", name, message]
            await self.worker.ref(message[1]).tell(message[2])
            return None
        if kind == "ask-relay":
            return await self.worker.ref(message[1]).ask(message[2])
        if kind == "boom":
            raise ValueError("boom")
        if kind == "echo":
            return Add(message[1], "echo")
        if kind == "migrate":  # ["migrate", name, to_worker]
            await self.worker.migrate(message[1], message[2])
            return None
        return None


class Slow(Actor):
    """Blocks on a gate (opened by a message to Gatekeeper) and checks the order of arrivals."""

    def __init__(self) -> None:
        self.count = 0
        self.in_order = True

    async def receive(self, message: Any) -> Any:
        if message == "count":
            return [self.count, self.in_order]
        await _gate().wait()
        if message[0] != self.count:
            self.in_order = False
        self.count += 1
        return None


class Gatekeeper(Actor):
    async def receive(self, message: Any) -> Any:
        _gate().set()
        return None


_gates: list[anyio.Event] = []


def _gate() -> anyio.Event:
    if not _gates:
        _gates.append(anyio.Event())
    return _gates[0]


class Sink(Actor):
    """Counts what it gets (for the throughput benchmark)."""

    def __init__(self) -> None:
        self.count = 0

    async def receive(self, message: Any) -> Any:
        if message == "count":
            return self.count
        self.count += 1
        return None


async def bootstrap(worker: Worker, args: Any) -> None:
    """args: {"spawn": [[kind, name, mailbox_size]], "placement": {name: worker_id}}."""
    kinds = {"counter": Counter, "slow": Slow, "gatekeeper": Gatekeeper, "sink": Sink}
    for name, worker_id in args.get("placement", {}).items():
        worker.directory.place(name, worker_id)
    for kind, name, mailbox_size in args.get("spawn", []):
        await worker.spawn(
            kinds[kind], name=name, mailbox_size=mailbox_size, policy=SupervisionPolicy("restart")
        )
    for name in args.get("urgent", []):  # a handler that takes ["urgent", n]: see test_urgent
        worker.on_urgent(name, _urgent_handler)


#: What the urgent handler of this process took, in order.
urgent_taken: list[int] = []


def _urgent_handler(message: Any) -> bool:
    if isinstance(message, list) and message[0] == "urgent":
        urgent_taken.append(int(message[1]))
        return True
    return False
