"""Backpressure on one moving key group: what its senders hold while its successor waits.

A successor queues what reaches it before the handoff, outside its mailbox, so the worker's
exchange never waits on it (see ``_moves.py``). That queue grows with the rate times the
move's wait. When it passes :attr:`Holds.limit` records, the successor asks every worker
(:class:`Throttle`, an urgent tell) to hold what their senders route to that key group, and
when it has taken the key group over it releases them (``Throttle(held=False)``). A worker
that has not applied the move's placement version yet routes that key group's records to its
old owner, so it starts holding only when it applies it.

On a worker, a held key group's records wait in a queue of the worker's, in the order they
were routed, while the senders go on with every other key group. A sender blocks only when
the queue of a held key group passes the limit too (it waits for the release, after sending
the rest of its batch): backpressure on that key group's senders alone, and only on those
with records for it. On release a task delivers the queue in order; records routed to the
key group meanwhile join the queue's end, so the order holds.

Anything that must follow a sender's records to a key group waits until the held queues of
its stage are delivered (:meth:`Holds.drain`): a barrier, a watermark or an end of stream
(``WorkerEnv.broadcast``), a moving sender's ``FlushChannel`` (``flush_downstream``) and the
next placement version (its markers must follow what the key group's new owner got). Each of
those waits for a key group of the *next* stage to be taken over, never for anything upstream
or on its own stage, so the waits cannot form a cycle.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ._messages import Throttle

__all__ = ("Holds",)

Deliver = Callable[[int, str, str, int, tuple[list[Any], ...]], Awaitable[None]]


class Holds:
    """One worker's held queues, by (keyed stage, key group)."""

    def __init__(self, limit: int, deliver: Deliver) -> None:
        #: Records a successor queues, and a worker holds for one key group, before it asks
        #: for (or applies) backpressure.
        self.limit = limit
        self._deliver = deliver
        self._queues: dict[tuple[int, int], deque[tuple[str, str, tuple[list[Any], ...]]]] = {}
        self._counts: dict[tuple[int, int], int] = {}
        self._released: dict[tuple[int, int], anyio.Event] = {}
        # Throttles of a placement version this worker has not applied yet, by version.
        self._pending: dict[int, set[tuple[int, int]]] = {}
        self._changed = anyio.Event()
        #: The most records held for one key group at once (for the tests and the metrics).
        self.max_held = 0

    def __bool__(self) -> bool:
        return bool(self._queues)

    def holding(self, stage: int, group: int) -> bool:
        return (stage, group) in self._queues

    def hold(
        self, stage: int, group: int, channel: str, split: str, columns: tuple[list[Any], ...]
    ) -> anyio.Event | None:
        """Queue one routed group of records; the event to wait for if the queue is over the
        limit and not released yet (None: go on)."""
        key = (stage, group)
        self._queues[key].append((channel, split, columns))
        count = self._counts[key] = self._counts[key] + len(columns[0])
        self.max_held = max(self.max_held, count)
        release = self._released.get(key)
        if count > self.limit and release is not None and not release.is_set():
            return release
        return None

    def throttle(self, message: Throttle, applied: int) -> None:
        """Hold what is routed to ``message``'s key group from now on (synchronous: the
        urgent handler applies it where it arrives), or, if this worker has not applied the
        move's placement version yet (``applied`` is older), from when it does
        (:meth:`applied`): until then its senders route that key group's records to the old
        owner, not to the successor, and holding them would only stall this worker's
        placement update behind a move that waits for it (a deadlock)."""
        key = (message.stage, message.group)
        if message.version > applied:
            self._pending.setdefault(message.version, set()).add(key)
            return
        self._start(key)

    def applied(self, version: int) -> None:
        """This worker routes by placement ``version`` now: start its moves' pending holds."""
        for pending in [v for v in self._pending if v <= version]:
            keys = self._pending.pop(pending)
            if pending == version:
                for key in sorted(keys):
                    self._start(key)

    def _start(self, key: tuple[int, int]) -> None:
        if key not in self._queues:
            self._queues[key] = deque()
            self._counts[key] = 0
            self._released[key] = anyio.Event()

    async def release(self, message: Throttle) -> None:
        """The key group has been taken over: wake its blocked senders and deliver what was
        held, in order (records routed to it meanwhile join the queue's end)."""
        key = (message.stage, message.group)
        pending = self._pending.get(message.version)
        if pending is not None:
            pending.discard(key)
        release = self._released.pop(key, None)
        if release is None:
            return
        release.set()
        queue = self._queues[key]
        stage, group = key
        while queue:
            channel, split, columns = queue.popleft()
            self._counts[key] -= len(columns[0])
            await self._deliver(stage, channel, split, group, columns)
        del self._queues[key], self._counts[key]
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def drain(self, stage: int | None = None) -> None:
        """Wait until nothing is held for ``stage`` (None: for any stage)."""
        while any(stage is None or key[0] == stage for key in self._queues):
            await self._changed.wait()
