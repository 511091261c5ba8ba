"""The job supervisor: the driver-side actor that watches a running job.

It owns the placement table (key group -> worker), learns when every key group of the last
operator has drained, and writes what workers gather to the driver (sink items of a gathering
sink, dead letters). Rescaling and recovery (later releases) extend this actor: the placement
table is already its state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
from shoal.actors import Actor, Ref

from ._checkpoints import CheckpointCoordinator, CompletedCheckpoint
from ._messages import BarrierAck, Drained, Gathered, InjectBarrier, TriggerCheckpoint
from ._sinks import DeadLetter, SinkPartition

__all__ = ("JobSupervisor",)


class JobSupervisor(Actor):
    """Tracks completion and writes gathered output. One per job, on the driver."""

    def __init__(
        self,
        *,
        expected: set[str],
        group_owner: list[int],
        sink: SinkPartition | None,
        dead_sink: SinkPartition,
        coordinator: CheckpointCoordinator | None = None,
        controllers: Sequence[Ref] = (),
    ) -> None:
        self.coordinator = coordinator
        self.controllers = list(controllers)
        #: Set (and replaced) each time a checkpoint completes.
        self.checkpointed = anyio.Event()
        self.expected = set(expected)
        self.placement = list(group_owner)
        self.sink = sink
        self.dead_sink = dead_sink
        self.done: set[str] = set()
        self.finished = anyio.Event()

    async def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Gathered:
            if message.kind == "sink":
                assert self.sink is not None, (
                    "a worker gathered sink items for a non-gathering sink"
                )
                await self.sink.write_batch(message.items)
            else:
                letters = [DeadLetter.from_json(item) for item in message.items]
                await self.dead_sink.write_batch(letters)
        elif kind is BarrierAck:
            if self.coordinator is not None:
                self._completed(self.coordinator.ack(message))
        elif kind is Drained:
            self.done.add(message.actor)
            if self.coordinator is not None:
                self._completed(self.coordinator.drain(message.actor))
            if self.done >= self.expected:
                self.finished.set()
        elif kind is TriggerCheckpoint:
            return await self._trigger()
        elif message == "placement":
            return list(self.placement)
        else:
            raise TypeError(f"job supervisor got an unexpected message {message!r}")
        return None

    async def _trigger(self) -> int | None:
        coordinator = self.coordinator
        if coordinator is None:
            raise RuntimeError("checkpoints are off for this job (checkpoint_interval=None)")
        coordinator.expire()
        if self.finished.is_set():
            return None
        epoch = coordinator.begin()
        if epoch is not None:
            for controller in self.controllers:
                base = coordinator.last_completed
                await controller.tell(InjectBarrier(epoch, 0 if base is None else base.epoch))
        return epoch

    def _completed(self, done: CompletedCheckpoint | None) -> None:
        if done is not None:
            event, self.checkpointed = self.checkpointed, anyio.Event()
            event.set()
