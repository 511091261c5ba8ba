"""Credit-based flow control between workers, per (keyed stage, destination worker).

Why: one blocked key group must never stop a worker's other traffic. Records for key groups on
another worker arrive through that worker's exchange for their stage. If the socket reader
waited on a full exchange (or the exchange on a full key-group mailbox, with one exchange for
every stage), two keyed stages on two workers could wait on each other in a cycle: worker A's
stage-1 actor waits for room on the link to B, whose reader waits on B's full stage-1 mailbox,
whose actor waits for room on the link to A. That froze the first release at ~1.7M records.

So, as in Flink's credit-based network stack, a sender may have at most ``window`` messages
(shipments or broadcasts) in flight per (stage, destination worker). The receiving worker's
exchange for that stage has a mailbox with room for every credit it ever granted, so the socket
reader never waits on it; the exchange hands the credit back once it has delivered the message
into the key groups' mailboxes. A stage's exchange therefore waits only on that stage's key
groups, which wait only on later stages: the last stage always drains (it writes to a sink), so
by induction every stage makes progress, for any mailbox, batch or window size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

__all__ = ("MAX_WORKERS", "CreditGate", "Credits", "CreditStatistics", "exchange_mailbox_size")

#: Default credits per (stage, destination worker): messages a sender may have in flight. A
#: message is one source batch's records for that worker, so 8 keeps a link busy across a
#: credit round trip (a few event-loop turns) while holding at most 8 batches per sender.
DEFAULT_WINDOW = 8


#: The most workers one job may have at once (a rescale beyond it is refused): what exchange
#: mailboxes are sized for (a bound, not an allocation).
MAX_WORKERS = 256


def exchange_mailbox_size(window: int, workers: int) -> int:
    """Room an exchange needs so that its senders' credits can never overfill it."""
    return max(1, window * max(1, workers - 1))


@dataclass(frozen=True, slots=True)
class CreditStatistics:
    """How often and how long senders of one worker waited for credit."""

    waits: int
    waited_s: float


class CreditGate:
    """The credits a sender holds for one (stage, destination worker)."""

    __slots__ = ("_room", "available", "lost")

    def __init__(self, window: int) -> None:
        self.available = window
        self.lost: BaseException | None = None
        self._room: anyio.Event | None = None

    def grant(self, count: int) -> None:
        self.available += count
        room = self._room
        if room is not None:
            self._room = None
            room.set()

    def fail(self, error: BaseException) -> None:
        """The destination is gone: every waiter (now and later) gets ``error``."""
        self.lost = error
        self.grant(0)

    async def wait_changed(self) -> None:
        """Wait for the next grant or failure."""
        if self._room is None:
            self._room = anyio.Event()
        await self._room.wait()


class Credits:
    """Every credit gate of one worker, keyed by (stage, destination worker)."""

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        *,
        wait_lost: Callable[[int], Awaitable[BaseException]],
    ) -> None:
        """Args:
        window: credits per (stage, destination worker).
        wait_lost: ``await wait_lost(worker)`` returns (an error to raise) once ``worker`` is
            gone; a sender waiting for that worker's credit then fails instead of hanging.
        """
        if type(window) is not int or window < 1:
            raise ValueError(f"credit window must be a positive int; got {window!r}")
        self.window = window
        self._wait_lost = wait_lost
        self._gates: dict[tuple[int, int], CreditGate] = {}
        self._lost: dict[int, BaseException] = {}
        self._waits = 0
        self._waited = 0.0

    def gate(self, stage: int, worker: int) -> CreditGate:
        key = (stage, worker)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = CreditGate(self.window)
            lost = self._lost.get(worker)
            if lost is not None:
                gate.fail(lost)
        return gate

    async def acquire(self, stage: int, worker: int) -> None:
        """Take one credit for a message to ``worker``'s exchange of ``stage``; wait for one."""
        gate = self.gate(stage, worker)
        if gate.available <= 0 or gate.lost is not None:
            self._waits += 1
            started = anyio.current_time()
            try:
                await self._wait_room_or_loss(gate, worker)
            finally:
                self._waited += anyio.current_time() - started
        gate.available -= 1

    async def _wait_room_or_loss(self, gate: CreditGate, worker: int) -> None:
        wait_lost = self._wait_lost

        async def watch(scope: anyio.CancelScope) -> None:
            self.fail_worker(worker, await wait_lost(worker))
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            while gate.available <= 0 and gate.lost is None:
                await gate.wait_changed()
            tg.cancel_scope.cancel()
        if gate.lost is not None:
            raise gate.lost

    def grant(self, stage: int, worker: int, count: int) -> None:
        """``worker`` has delivered ``count`` of our messages of ``stage``: room for as many."""
        self.gate(stage, worker).grant(count)

    def fail_worker(self, worker: int, error: BaseException) -> None:
        """``worker`` is gone: senders waiting for its credit get ``error`` instead of hanging."""
        self._lost[worker] = error
        for (_stage, dest), gate in self._gates.items():
            if dest == worker:
                gate.fail(error)

    def statistics(self) -> CreditStatistics:
        return CreditStatistics(self._waits, self._waited)
