"""Processing time: the clock the runtime is given.

Nothing on a path a test wants to control reads ``time.time()`` directly: processing-time timers
and idle-split detection ask the worker's :class:`Clock`. The default is :class:`SystemClock`
(wall-clock seconds since the epoch, so a processing-time timer can be set from a record's
wall-clock field); a test passes a :class:`ManualClock` to ``run_job(clock=...)`` and moves it
by hand.
"""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable

__all__ = ("MAX_WATERMARK", "MIN_WATERMARK", "Clock", "ManualClock", "SystemClock")

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


class SystemClock:
    """Wall-clock processing time: ``time.time()`` (seconds since the epoch)."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to: for tests and scenario timelines.

    Args:
        start: the initial time, in seconds.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0)."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward; got advance({seconds!r})")
        self._now += seconds

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"
