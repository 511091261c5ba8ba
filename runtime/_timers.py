"""Timers of one key group: event-time and processing-time, per key, kept in the key group's store.

A keyed process function registers a timer for its current key with
``ctx.timers.register_event_time(ts)`` (fires once the key group's watermark reaches ``ts``) or
``ctx.timers.register_processing_time(ts)`` (fires once the worker's clock reaches ``ts``); its
``on_timer(key, ts, ctx)`` then runs with that key's state in scope. A timer is registered at
most once per (key, kind, timestamp); deleting one that is not registered does nothing.

Timers live in the key group's store, in the internal state :data:`TIMERS_STATE` (one list of
``[kind, timestamp]`` per key), so a checkpoint commits them with the epoch's other state, and a
store opened again (a restore, a migration) rebuilds the in-memory queues from it. The queues
(one heap per kind) make finding the due timers cost ``O(log n)`` per timer, not a scan.

Processing-time timers do not wait for a record: the key group arms a :class:`~._time.Wakeup`
on its clock at its earliest processing-time timer, and when the clock reaches it the key group
is sent :class:`~._messages.TimersDue`, handled like any message (in order, on the actor's own
task). A ``ManualClock`` advanced in a test therefore fires them, with no sleep anywhere.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

from anyio import WouldBlock
from shoal.actors import ActorStoppedError
from shoal.storage import KeyGroupStore, ValueStateSpec

from ._time import Clock, Wakeup
from ._watermarks import WatermarkCombiner

__all__ = (
    "EVENT_TIME",
    "PROCESSING_TIME",
    "TIMERS_STATE",
    "KeyedTime",
    "TimerService",
    "Timers",
    "tell_soon",
    "timers_spec",
)

#: The internal state holding a key group's timers (user state names may not start ``_shoal``).
TIMERS_STATE = "_shoal_timers"
EVENT_TIME = 0
PROCESSING_TIME = 1


def timers_spec() -> ValueStateSpec:
    """The state declaration an operator with timers adds to its own."""
    return ValueStateSpec(TIMERS_STATE)


def tell_soon(ref: Any, message: Any) -> Callable[[], None]:
    """A wake-up callback that tells ``ref`` ``message`` without waiting. A full mailbox drops
    the wake-up: the key group has messages to handle, and it checks its processing-time
    timers after every batch and watermark; a stopped actor needs no wake-up."""

    def notify() -> None:
        with suppress(WouldBlock, ActorStoppedError):
            ref.tell_nowait(message)

    return notify


def _check_ts(ts: object, what: str) -> float:
    if isinstance(ts, bool) or not isinstance(ts, int | float) or ts != ts:
        raise TypeError(f"{what} takes a timestamp (an int or a float); got {ts!r}")
    return ts


class TimerService:
    """The registered timers of one key group, in its store and in two in-memory heaps."""

    __slots__ = ("_heaps", "_pending", "_seq", "_state", "_store", "wakeup")

    def __init__(self, store: KeyGroupStore) -> None:
        self._store = store
        #: Armed at the earliest processing-time timer (None: nothing wakes the key group).
        self.wakeup: Wakeup | None = None
        self._state = store.state(TIMERS_STATE)
        self._pending: set[tuple[int, Any, Any]] = set()
        # (timestamp, sequence, key): the sequence keeps keys of different types uncompared.
        self._heaps: tuple[list[tuple[Any, int, Any]], list[tuple[Any, int, Any]]] = ([], [])
        self._seq = 0
        for key, entries in list(store.items(TIMERS_STATE)):
            for kind, ts in entries or ():
                self._push(kind, ts, key)

    def __len__(self) -> int:
        return len(self._pending)

    def _push(self, kind: int, ts: Any, key: Any) -> bool:
        entry = (kind, ts, key)
        if entry in self._pending:
            return False
        self._pending.add(entry)
        self._seq += 1
        heapq.heappush(self._heaps[kind], (ts, self._seq, key))
        if kind == PROCESSING_TIME and self.wakeup is not None:
            self.wakeup.arm(ts)
        return True

    def wake_with(self, clock: Clock, notify: Callable[[], object]) -> None:
        """Call ``notify`` whenever ``clock`` passes the earliest processing-time timer (armed
        now for the timers already registered, e.g. restored from a checkpoint)."""
        self.wakeup = Wakeup(clock, notify)
        self.rearm()

    def rearm(self) -> None:
        """Arm the wake-up at the earliest processing-time timer left (after firing)."""
        if self.wakeup is not None:
            due = self.next_due(PROCESSING_TIME)
            if due is not None:
                self.wakeup.arm(due)

    def close(self) -> None:
        """Call off the wake-up (the key group stops)."""
        if self.wakeup is not None:
            self.wakeup.cancel()

    def register(self, kind: int, ts: Any) -> None:
        """Register a timer for the store's current key (idempotent)."""
        key = self._store.key
        if self._push(kind, ts, key):
            state = self._state
            entries = state.value()
            if entries is None:
                state.update([[kind, ts]])
            else:  # in place: copying the key's list per timer made a busy key quadratic
                entries.append([kind, ts])
                state.update(entries)

    def delete(self, kind: int, ts: Any) -> None:
        """Delete the current key's timer at ``ts`` (nothing if there is none)."""
        key = self._store.key
        entry = (kind, ts, key)
        if entry in self._pending:
            self._pending.discard(entry)  # its heap entry is skipped when it comes up
            self._forget(kind, ts)

    def _forget(self, kind: int, ts: Any) -> None:
        state = self._state
        entries = state.value()
        if not entries:
            return
        try:
            entries.remove([kind, ts])  # in C; the key's entries are unique
        except ValueError:
            return
        if entries:
            state.update(entries)
        else:
            state.clear()

    def next_due(self, kind: int) -> Any:
        """The earliest registered timestamp of ``kind`` (None when there is none)."""
        heap = self._heaps[kind]
        pending = self._pending
        while heap and (kind, heap[0][0], heap[0][2]) not in pending:
            heapq.heappop(heap)  # deleted
        return heap[0][0] if heap else None

    def due(self, kind: int, upto: float) -> Iterator[tuple[Any, Any]]:
        """Yield and remove ``(timestamp, key)`` of every timer of ``kind`` at or before
        ``upto``, in timestamp order (registration order among equals), with the store's
        current key set to the timer's key. Timers registered meanwhile are included."""
        heap = self._heaps[kind]
        pending = self._pending
        store = self._store
        while heap and heap[0][0] <= upto:
            ts, _seq, key = heapq.heappop(heap)
            entry = (kind, ts, key)
            if entry not in pending:
                continue
            pending.discard(entry)
            store.key = key
            self._forget(kind, ts)
            yield ts, key


class Timers:
    """``ctx.timers``: the current key's timers, and the clocks they are set against."""

    __slots__ = ("_service", "_time")

    def __init__(self, time: KeyedTime) -> None:
        self._time = time
        self._service = time.timers

    def _timers(self, what: str) -> TimerService:
        if self._service is None:
            raise RuntimeError(
                f"ctx.timers.{what}: timers need an operator declared with on_timer "
                "(process(fn, on_timer=...)) in a flow with event time or a clock"
            )
        return self._service

    def register_event_time(self, ts: float) -> None:
        """Call ``on_timer(key, ts, ctx)`` once the watermark reaches ``ts``."""
        self._timers("register_event_time").register(
            EVENT_TIME, _check_ts(ts, "register_event_time")
        )

    def register_processing_time(self, ts: float) -> None:
        """Call ``on_timer(key, ts, ctx)`` once the worker's clock reaches ``ts``."""
        self._timers("register_processing_time").register(
            PROCESSING_TIME, _check_ts(ts, "register_processing_time")
        )

    def delete_event_time(self, ts: float) -> None:
        """Delete the current key's event-time timer at ``ts``, if any."""
        self._timers("delete_event_time").delete(EVENT_TIME, _check_ts(ts, "delete_event_time"))

    def delete_processing_time(self, ts: float) -> None:
        """Delete the current key's processing-time timer at ``ts``, if any."""
        self._timers("delete_processing_time").delete(
            PROCESSING_TIME, _check_ts(ts, "delete_processing_time")
        )

    @property
    def watermark(self) -> float:
        """The key group's current watermark (``-inf`` before the first one)."""
        return self._time.watermark

    def processing_time(self) -> float:
        """The worker clock's current time."""
        return self._time.clock.now()


class KeyedTime:
    """A key-group actor's time: its combined watermark, its timers and its clock."""

    __slots__ = ("clock", "combiner", "timers")

    def __init__(
        self, channels: tuple[str, ...], clock: Clock, store: KeyGroupStore, with_timers: bool
    ) -> None:
        self.combiner = WatermarkCombiner(channels)
        self.clock = clock
        self.timers = TimerService(store) if with_timers else None

    @classmethod
    def for_operator(
        cls, channels: tuple[str, ...], clock: Clock, store: KeyGroupStore, states: Any
    ) -> KeyedTime:
        """The time of a key group whose operator declares ``states`` (timers if one of them
        is the internal timers state)."""
        with_timers = any(spec.name == TIMERS_STATE for spec in states)
        return cls(channels, clock, store, with_timers)

    @property
    def watermark(self) -> float:
        return self.combiner.current

    def wake(self, notify: Callable[[], object]) -> None:
        """Have ``notify`` called when a processing-time timer falls due with no message in
        sight (see :meth:`TimerService.wake_with`); nothing without timers."""
        if self.timers is not None:
            self.timers.wake_with(self.clock, notify)

    def close(self) -> None:
        """Call off the wake-ups (the key group stops or migrates)."""
        if self.timers is not None:
            self.timers.close()
