"""Event time: timestamps from the records, watermarks per split, combined per key group.

A **watermark** ``w`` on a channel promises that no later record on it has a timestamp below
``w``: everything before ``w`` is complete. A window ``[start, end)`` can therefore fire once the
watermark reaches ``end``, and an event-time timer at ``t`` fires once the watermark reaches
``t``. A record whose timestamp is below its operator's watermark is *late*.

* Each split stamps its records with the flow's timestamp assigner (a column in the batch, not a
  per-record object) and feeds their timestamps to its own :class:`WatermarkGenerator`
  (:class:`SplitTime`). After a batch that moved the split's watermark, the source sends a
  :class:`~._messages.Watermark` on its channel, in band behind the batch's data, exactly as a
  checkpoint barrier travels.
* A split that read nothing for ``idle_timeout`` seconds of processing time says so (a watermark
  marked idle): it stops holding time back until it reads again. The check does not wait for
  the read to return: while a read waits for data, a :class:`~._time.Wakeup` on the worker's
  clock wakes the split at ``last record + idle_timeout`` (:meth:`SplitTime.read`), and the
  idle watermark goes out while the read goes on.
* Each key-group actor combines its input channels (:class:`WatermarkCombiner`): the minimum
  over the channels that are neither idle nor ended. Its watermark never moves back. When every
  channel has ended (a bounded input is exhausted) it is ``+inf``, so every timer and window
  fires. A key group forwards its watermark downstream after firing its timers, so the next
  keyed stage combines its upstream key groups the same way.

The classes here are bookkeeping only (no sending, no awaiting), testable alone.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from itertools import compress
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio

from ._time import MAX_WATERMARK, MIN_WATERMARK, Clock, Wakeup

if TYPE_CHECKING:
    from ._operators import DeadLetters
    from ._sources import SourceBatch, SplitReader

__all__ = (
    "BoundedOutOfOrderness",
    "Monotonous",
    "SplitTime",
    "WatermarkCombiner",
    "WatermarkGenerator",
    "WatermarkStrategy",
    "check_timestamp_assigner",
)


@runtime_checkable
class WatermarkGenerator(Protocol):
    """One split's watermark, fed the timestamps of every batch the split reads."""

    def on_batch(self, timestamps: Sequence[float]) -> None:
        """The split read records with these timestamps (in split order, never empty)."""
        ...

    def current_watermark(self) -> float:
        """The split's watermark now (``-inf`` before anything is known)."""
        ...


@runtime_checkable
class WatermarkStrategy(Protocol):
    """Makes one :class:`WatermarkGenerator` per split (a custom strategy implements this)."""

    def create_generator(self) -> WatermarkGenerator: ...


class _BoundedGenerator:
    __slots__ = ("_delay", "_max")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._max = MIN_WATERMARK

    def on_batch(self, timestamps: Sequence[float]) -> None:
        high = max(timestamps)
        if high > self._max:
            self._max = high

    def current_watermark(self) -> float:
        return self._max - self._delay


class BoundedOutOfOrderness:
    """Records arrive at most ``delay`` behind the newest timestamp seen on their split.

    The split's watermark is ``max timestamp seen - delay``: a record more than ``delay`` behind
    is late.

    Args:
        delay: how far out of order records may be, in timestamp units (>= 0).
    """

    __slots__ = ("delay",)

    def __init__(self, delay: float) -> None:
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not delay >= 0:
            raise ValueError(
                "BoundedOutOfOrderness delay must be a number >= 0 (timestamp units); "
                f"got {delay!r}"
            )
        self.delay = delay

    def create_generator(self) -> WatermarkGenerator:
        return _BoundedGenerator(self.delay)

    def __repr__(self) -> str:
        return f"BoundedOutOfOrderness({self.delay!r})"


class Monotonous(BoundedOutOfOrderness):
    """Timestamps never decrease within a split: the watermark is the newest timestamp seen."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(0)

    def __repr__(self) -> str:
        return "Monotonous()"


def _bad_timestamp(value: object) -> bool:
    kind = type(value)
    if kind is int:
        return False
    # NaN compares false with everything; +inf would move the split's watermark to +inf (every
    # later record late) and -inf puts a record in no window: none of them is a point in time.
    return kind is not float or not math.isfinite(value)  # type: ignore[arg-type]


def _checked(stamp: Any) -> Any:
    if _bad_timestamp(stamp):
        raise TypeError(
            "the timestamp assigner must return an int or a finite float (not NaN or ±inf); "
            f"got {stamp!r}"
        )
    return stamp


def check_timestamp_assigner(fn: object) -> None:
    """Raise TypeError unless ``fn`` can be a timestamp assigner (a plain callable)."""
    if not callable(fn):
        raise TypeError(
            "timestamps must be a function record -> int or float (the record's event time); "
            f"got {type(fn).__name__}"
        )


class SplitTime:
    """One split's event time: stamps its batches and decides when to send a watermark.

    Args:
        split: the split id (also its channel name downstream).
        assigner: ``record -> timestamp`` (an int or a finite float).
        strategy: the flow's watermark strategy (one generator per split).
        idle_timeout: seconds of processing time without records after which the split is idle
            (``None``: never).
        clock: where processing time comes from.
    """

    __slots__ = (
        "_active_at",
        "_assigner",
        "_clock",
        "_generator",
        "_idle_timeout",
        "_sent",
        "_strategy",
        "idle",
        "split",
    )

    def __init__(
        self,
        split: str,
        assigner: Callable[[Any], Any],
        strategy: WatermarkStrategy,
        idle_timeout: float | None,
        clock: Clock,
    ) -> None:
        self.split = split
        self._assigner = assigner
        self._strategy = strategy
        self._generator = strategy.create_generator()
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._active_at = clock.now()
        self._sent = MIN_WATERMARK
        self.idle = False

    def stamp(
        self, values: list[Any], offsets: list[int], dead: DeadLetters
    ) -> tuple[list[Any], list[int], list[Any]]:
        """The batch's timestamps; a record whose assigner raised or returned something that is
        not a timestamp goes to the dead letters (operator ``timestamps``)."""
        assigner = self._assigner
        stamps: list[Any] = []
        keep: list[bool] | None = None
        for index, value in enumerate(values):
            try:
                stamp = _checked(assigner(value))
            except Exception as exc:
                dead.add("timestamps", exc, self.split, offsets[index], value)
                if keep is None:
                    keep = [True] * len(values)
                keep[index] = False
                continue
            stamps.append(stamp)
        if keep is not None:
            values = list(compress(values, keep))
            offsets = list(compress(offsets, keep))
        if stamps:
            self._generator.on_batch(stamps)
        return values, offsets, stamps

    def after_batch(self, records: int) -> tuple[float, bool] | None:
        """After a batch of ``records`` records (0: a read that found nothing): the
        ``(watermark, idle)`` to send downstream, or None when nothing changed."""
        now = self._clock.now()
        if records:
            self._active_at = now
            mark = self._generator.current_watermark()
            kind = type(mark)
            if (kind is not int and kind is not float) or mark != mark:  # not a number, or NaN
                raise TypeError(
                    f"watermark strategy {self._strategy!r}: current_watermark() must return an "
                    f"int or a float (not NaN); got {mark!r}"
                )
            if self.idle or mark > self._sent:
                self.idle = False
                self._sent = max(self._sent, mark)
                return self._sent, False
            return None
        timeout = self._idle_timeout
        if not self.idle and timeout is not None and now - self._active_at >= timeout:
            self.idle = True
            return self._sent, True
        return None

    async def read(
        self,
        reader: SplitReader,
        max_records: int,
        send_idle: Callable[[tuple[float, bool]], Awaitable[None]],
    ) -> SourceBatch | None:
        """``reader.read_batch(max_records)``, and meanwhile, if the read waits past the idle
        timeout (on the clock, which must be able to wake: ``call_at``), ``send_idle`` the
        split's idle watermark. The read itself is never interrupted (cancelling an async
        generator's ``anext`` would end the generator); sending is shielded, so a read that
        returns meanwhile waits for the watermark to be out (it then comes behind it)."""
        timeout = self._idle_timeout
        if timeout is None or self.idle or getattr(self._clock, "call_at", None) is None:
            return await reader.read_batch(max_records)
        woke = anyio.Event()
        wakeup = Wakeup(self._clock, woke.set)

        async def watch() -> None:
            await woke.wait()
            mark = self.after_batch(0)
            if mark is not None:
                with anyio.CancelScope(shield=True):
                    await send_idle(mark)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                wakeup.arm(self._active_at + timeout)
                batch = await reader.read_batch(max_records)
                tg.cancel_scope.cancel()
        finally:
            wakeup.cancel()
        return batch


class WatermarkCombiner:
    """A key group's watermark: the minimum over its input channels' watermarks.

    Idle channels do not count; ended channels are gone; with no channel left the watermark is
    ``+inf``. With every remaining channel idle it stays where it is. It never moves back. A
    channel ended by a stop from outside stays at its last watermark (see :meth:`end`).
    """

    __slots__ = ("_frozen", "_idle", "_marks", "current")

    def __init__(self, channels: Sequence[str]) -> None:
        self._marks: dict[str, float] = dict.fromkeys(channels, MIN_WATERMARK)
        self._idle: set[str] = set()
        # Channels that ended because the job was stopped: their watermark stays where it was.
        self._frozen: set[str] = set()
        #: The combined watermark.
        self.current = MIN_WATERMARK if self._marks else MAX_WATERMARK

    def update(self, channel: str, watermark: float, idle: bool = False) -> float | None:
        """``channel`` sent ``watermark``; the new combined watermark if it advanced, else None."""
        if channel not in self._marks or channel in self._frozen:
            return None  # an ended channel's stragglers cannot move time
        if watermark > self._marks[channel]:
            self._marks[channel] = watermark
        if idle:
            self._idle.add(channel)
        else:
            self._idle.discard(channel)
        return self._recompute()

    def to_data(self) -> dict[str, Any]:
        """Per channel its watermark, the idle channels and the combined one (for a successor
        on another worker: live migration)."""
        return {
            "marks": dict(self._marks),
            "idle": sorted(self._idle),
            "frozen": sorted(self._frozen),
            "current": self.current,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Take over :meth:`to_data`'s state."""
        self._marks = {str(k): float(v) for k, v in data["marks"].items()}
        self._idle = set(data["idle"])
        self._frozen = set(data.get("frozen", ()))
        self.current = float(data["current"])

    def end(self, channel: str, *, stopped: bool = False) -> float | None:
        """``channel`` ended; the new combined watermark if that advanced it, else None.

        An input that ended no longer holds time back (its end is as good as a watermark of
        +inf). A channel ``stopped`` (the job was stopped from outside, its input not read to
        the end) keeps holding time at its last watermark instead: windows and timers that
        were waiting for it do not fire with part of their records; a resumed run goes on
        from the checkpoint with them still open."""
        self._idle.discard(channel)
        if stopped:
            self._marks.setdefault(channel, MIN_WATERMARK)
            self._frozen.add(channel)
            return None
        self._marks.pop(channel, None)
        return self._recompute()

    def _recompute(self) -> float | None:
        marks = self._marks
        if not marks:
            combined = MAX_WATERMARK
        else:
            idle = self._idle
            active = [mark for channel, mark in marks.items() if channel not in idle]
            if not active:
                return None
            combined = min(active)
        if combined > self.current:
            self.current = combined
            return combined
        return None
