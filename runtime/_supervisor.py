"""The job supervisor: the driver-side actor that watches a running job.

It owns the placement table (key group -> worker), learns when every key group of the last
operator has drained, and writes what workers gather to the driver (sink items of a gathering
sink, dead letters). Rescaling and recovery (later releases) extend this actor: the placement
table is already its state.
"""

from __future__ import annotations

from typing import Any

import anyio
from shoal.actors import Actor

from ._messages import Drained, Gathered
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
    ) -> None:
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
        elif kind is Drained:
            self.done.add(message.actor)
            if self.done >= self.expected:
                self.finished.set()
        elif message == "placement":
            return list(self.placement)
        else:
            raise TypeError(f"job supervisor got an unexpected message {message!r}")
        return None
