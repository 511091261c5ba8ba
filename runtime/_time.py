"""Processing time: the clock the runtime is given.

Nothing on a path a test wants to control reads ``time.time()`` directly: processing-time timers
and idle-split detection ask the worker's :class:`Clock`. The default is :class:`SystemClock`
(wall-clock seconds since the epoch, so a processing-time timer can be set from a record's
wall-clock field); a test passes a :class:`ManualClock` to ``run_job(clock=...)`` and moves it
by hand.

A clock can also **wake** the runtime: ``call_at(deadline, callback)`` runs ``callback`` once
the clock reaches ``deadline`` (:class:`SystemClock` through the event loop's timer,
:class:`ManualClock` from inside :meth:`ManualClock.advance`). That is what fires a key group's
processing-time timers and marks a split idle when no record arrives to trigger the check
(:class:`Wakeup`). A custom clock without ``call_at`` still works; its timers and idle checks
then run only when a message reaches the key group or the split's read returns.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = (
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "Cancellable",
    "Clock",
    "ManualClock",
    "SystemClock",
    "Wakeup",
    "call_at",
)

#: The watermark before any record: nothing is known to be complete.
MIN_WATERMARK = -math.inf
#: The watermark after the end of a bounded input: everything is complete, every timer fires.
MAX_WATERMARK = math.inf


@runtime_checkable
class Clock(Protocol):
    """Where processing time comes from."""

    def now(self) -> float:
        """The current processing time, in seconds."""
        ...


class Cancellable(Protocol):
    """What ``call_at`` returns: a pending call that can be called off."""

    def cancel(self) -> None: ...


def call_at(clock: Clock, deadline: float, callback: Callable[[], object]) -> Cancellable | None:
    """Run ``callback`` once ``clock`` reaches ``deadline``; None if the clock cannot wake."""
    schedule = getattr(clock, "call_at", None)
    if schedule is None:
        return None
    handle: Cancellable = schedule(deadline, callback)
    return handle


class SystemClock:
    """Wall-clock processing time: ``time.time()`` (seconds since the epoch)."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Cancellable:
        """Run ``callback`` from the running event loop once ``time.time()`` reaches
        ``deadline`` (a loop timer: no task, nothing to stop but the handle)."""
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, deadline - time.time()), callback)

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to: for tests and scenario timelines.

    Args:
        start: the initial time, in seconds.
    """

    __slots__ = ("_calls", "_now", "_seq")

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._calls: list[tuple[float, int, PendingCall]] = []
        self._seq = 0

    def now(self) -> float:
        return self._now

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Cancellable:
        """Run ``callback`` when :meth:`advance` reaches ``deadline`` (at once if it has)."""
        call = PendingCall(callback)
        if deadline <= self._now:
            callback()
            return call
        self._seq += 1
        heapq.heappush(self._calls, (deadline, self._seq, call))
        return call

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0), then run every call it passed, in
        deadline order (on the caller's thread: advance a clock only from its event loop)."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward; got advance({seconds!r})")
        self._now += seconds
        calls = self._calls
        while calls and calls[0][0] <= self._now:
            call = heapq.heappop(calls)[2]
            if not call.cancelled:
                call.cancelled = True
                call.callback()

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"


class PendingCall:
    """A call a clock makes once it reaches a deadline (``call_at``), until cancelled."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Wakeup:
    """One re-armable wake-up on a clock: ``callback`` runs once the clock reaches the
    earliest deadline armed since the last call (arming a later one changes nothing).

    Args:
        clock: the clock to wake on (without ``call_at``, arming does nothing).
        callback: what to run; it must not block (it runs from the loop's timer or from
            ``ManualClock.advance``).
    """

    __slots__ = ("_callback", "_clock", "_handle", "deadline")

    def __init__(self, clock: Clock, callback: Callable[[], object]) -> None:
        self._clock = clock
        self._callback = callback
        self._handle: Cancellable | None = None
        #: The armed deadline (None: not armed).
        self.deadline: float | None = None

    def arm(self, deadline: float) -> None:
        """Wake at ``deadline`` unless already armed at or before it."""
        if self.deadline is not None and self.deadline <= deadline:
            return
        self.cancel()
        self.deadline = deadline
        self._handle = call_at(self._clock, deadline, self._fire)

    def _fire(self) -> None:
        self.deadline = None
        self._handle = None
        self._callback()

    def cancel(self) -> None:
        """Call off the armed wake-up, if any."""
        handle, self._handle = self._handle, None
        self.deadline = None
        if handle is not None:
            handle.cancel()
