"""A worker's exchanges (one per keyed stage) and its flow-control actor: records and
control from other workers in, credits back to their senders (see ``_credits.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shoal.actors import Actor

from ._messages import (
    Broadcast,
    Credit,
    Data,
    FlushChannel,
    ReturnCredits,
    Shipment,
)
from ._names import (
    flow_control_name,
)

if TYPE_CHECKING:
    from ._worker import WorkerEnv

__all__ = (
    "ExchangeActor",
    "FlowControlActor",
)


class ExchangeActor(Actor):
    """A worker's door for one keyed stage's records and control from other workers.

    Slices each :class:`Shipment` into one :class:`Data` per key group and fans
    :class:`Broadcast` control messages out, in arrival order: per sending worker, data and
    control reach each key-group actor in the order they were sent. Each message delivered
    earns its sender a credit back (``_credits.py``); credits are returned in bulk when the
    mailbox runs empty, or every half window, whichever comes first.
    """

    def __init__(self, env: WorkerEnv, stage: int) -> None:
        self.env = env
        self.stage = stage
        self.owed: dict[int, int] = {}
        self.return_at = max(1, env.credit_window // 2)

    async def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Shipment:
            targets = self.env.targets(message.stage)
            keys, values, offsets = message.keys, message.values, message.offsets
            stamps = message.timestamps
            channel, split = message.channel, message.split
            start = 0
            for group, count in zip(message.groups, message.counts, strict=True):
                end = start + count
                await targets[group].tell(
                    Data(
                        channel,
                        split,
                        keys[start:end],
                        values[start:end],
                        offsets[start:end],
                        None if stamps is None else stamps[start:end],
                    )
                )
                start = end
            await self._owe(message.sender)
        elif kind is Broadcast:
            targets = self.env.targets(message.stage)
            for group in message.groups:
                await targets[group].tell(message.message)
            await self._owe(message.sender)
        elif kind is ReturnCredits:
            await self._return_credits()
        elif kind is FlushChannel:
            # Everything its worker sent before is in the key groups' mailboxes (answered).
            await self._owe(message.sender)
        else:
            raise TypeError(f"exchange actor got an unexpected message {message!r}")
        return None

    async def _owe(self, sender: int) -> None:
        owed = self.owed.get(sender, 0) + 1
        self.owed[sender] = owed
        if owed >= self.return_at:
            await self._return_credits()
        else:
            self.continue_with(ReturnCredits())

    async def _return_credits(self) -> None:
        owed, self.owed = self.owed, {}
        env = self.env
        for sender, count in owed.items():
            await env.kernel.ref(flow_control_name(sender)).tell(
                Credit(self.stage, env.index, count)
            )


class FlowControlActor(Actor):
    """Takes the credits other workers' exchanges hand back to this worker's senders."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env

    async def receive(self, message: Any) -> Any:
        if type(message) is not Credit:
            raise TypeError(f"flow-control actor got an unexpected message {message!r}")
        self.env.credits.grant(message.stage, message.worker, message.count)
        return None
