"""Two inputs in one keyed operator: co-process functions and the interval join.

``a.connect(b)`` tags every record with its input's index where that input's own chain ends:
``(0, record)`` for ``a``, ``(1, record)`` for ``b`` (a list after a trip between processes;
both index alike). The connected keyed operator is an ordinary keyed process operator whose key
function and process function dispatch on the tag (:class:`TaggedKey`, :class:`CoProcess`), so
keyed state, timers, checkpoints, restores and rescaling need nothing new. A record whose key
function or process function raises is a dead letter carrying the tagged pair.

**Interval join** (:class:`IntervalJoin`): for every pair ``x`` of ``a`` and ``y`` of ``b`` with
the same key and ``x.ts + lower <= y.ts <= x.ts + upper`` (event time, bounds inclusive), emit
``fn(x, y)`` once, when the later of the two arrives (the output carries that record's
timestamp). Each side's records of a key wait in one keyed ValueState (``_shoal_ijoin_a`` /
``_shoal_ijoin_b``): a list of ``[ts, record]`` kept sorted by timestamp (ties in arrival
order), so a record finds its matches by bisection (``O(log n + matches)``), not a scan:

* a record ``x`` of ``a`` can match ``b`` records up to ``x.ts + upper``, so it is removed
  once the watermark is *past* ``x.ts + upper``; a record ``y`` of ``b`` once the watermark is
  past ``y.ts - lower``. Since each list is sorted, what can go is a prefix: the key keeps one
  event-time timer at the earliest expiry of its lists (registered when a record becomes the
  head of its list, and again after each cleanup), not one per record. State does not grow
  without bound: what remains is what a record that is not late can still match.
* A record with a timestamp below the key group's watermark is **late** (as for windows): the
  records it should pair with may already be gone, so it goes to the dead-letter sink with
  ``error_type == "LateRecordError"`` (operator, key, split, position) and is not joined; it is
  never silently dropped. Every other record is joined with everything of the other side that
  is in its interval and not late.

A checkpoint writes a key's list whole when it changed since the last one; the lists hold what
arrived within the interval plus how far the watermark trails (the minimum over both inputs'
splits).

**Window join** (:class:`WindowJoin`): for every pair ``x`` of ``a`` and ``y`` of ``b`` with the
same key in the same event-time window (``Tumbling`` or ``Sliding``, assigned by the window
assigners' public ``assign``), emit ``fn(x, y)`` once per window they share, when the watermark
reaches the window's end, stamped with the window's last instant (as a window's result is).
The open windows of a key keep their two sides' records in one keyed ValueState
(``_shoal_wjoin``: a dict window end -> ``[start, a's records, b's records]``; a dict, not a
MapState, because a map state's keys cannot be floats and a timestamp may be) until an
event-time timer at a window's end fires it and removes it: state holds only windows that can
still fire, and a key with none has no entry. A record one of whose windows has already fired
(its end is at or below the watermark) is **late**: it goes whole to the dead-letter sink
(``LateRecordError``) and joins nothing, as for windows. A pair whose ``fn`` raises is a dead
letter of its own, carrying ``{"x": x, "y": y, "window": (start, end)}``; the window's other
pairs are still emitted.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from shoal.storage import StateSpec, ValueStateSpec

from ._exceptions import LateRecordError
from ._windows import Sliding, Tumbling, last_instant

__all__ = (
    "CoProcess",
    "IntervalJoin",
    "Tag",
    "TaggedKey",
    "WindowJoin",
    "join_specs",
    "window_join_specs",
)

_LEFT = "_shoal_ijoin_a"
_RIGHT = "_shoal_ijoin_b"
_TS = itemgetter(0)
_WINDOWS = "_shoal_wjoin"


class Tag:
    """``record -> (index, record)``: marks which input of a connect a record came from."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, value: Any) -> tuple[int, Any]:
        return (self.index, value)

    def __repr__(self) -> str:
        return f"Tag({self.index})"


class TaggedKey:
    """The connected stream's key function: input ``i``'s key function on its records."""

    __slots__ = ("key_fns",)

    def __init__(self, key_fns: tuple[Callable[[Any], Any], ...]) -> None:
        self.key_fns = key_fns

    def __call__(self, tagged: Any) -> Any:
        return self.key_fns[tagged[0]](tagged[1])


class CoProcess:
    """The connected stream's process function: ``fns[i](key, record, ctx)`` for input ``i``."""

    __slots__ = ("fns",)

    def __init__(self, fns: tuple[Callable[[Any, Any, Any], Any], ...]) -> None:
        self.fns = fns

    def __call__(self, key: Any, tagged: Any, ctx: Any) -> Any:
        return self.fns[tagged[0]](key, tagged[1], ctx)


class AsyncCoProcess(CoProcess):
    """:class:`CoProcess` for ``async def`` functions."""

    __slots__ = ()

    async def __call__(self, key: Any, tagged: Any, ctx: Any) -> Any:
        return await self.fns[tagged[0]](key, tagged[1], ctx)


def join_specs() -> tuple[StateSpec, ...]:
    """The internal states of an interval join (besides its timers)."""
    return (ValueStateSpec(_LEFT), ValueStateSpec(_RIGHT))


def _just_after(ts: float) -> float:
    """The smallest timestamp greater than ``ts``: a timer there fires once the watermark is
    past ``ts`` (a watermark equal to ``ts`` still lets records at ``ts`` in)."""
    if isinstance(ts, int):
        return ts + 1
    return math.nextafter(ts, math.inf)


class IntervalJoin:
    """The process function and timer callback of an interval join (see the module docstring).

    Args:
        lower, upper: the interval, ``lower <= upper``, relative to ``a``'s timestamps.
        fn: ``fn(x, y)`` makes the output of a pair (``x`` from ``a``, ``y`` from ``b``).
    """

    __slots__ = ("fn", "lower", "upper")

    def __init__(self, lower: float, upper: float, fn: Callable[[Any, Any], Any]) -> None:
        self.lower = lower
        self.upper = upper
        self.fn = fn

    def process(self, key: Any, tagged: Any, ctx: Any) -> None:
        side, value = tagged[0], tagged[1]
        ts = ctx.timestamp
        watermark = ctx.watermark
        if ts < watermark:
            raise LateRecordError(
                f"record at timestamp {ts!r} is late for the interval join: the watermark is "
                f"{watermark!r}, so the records it would pair with may be gone"
            )
        state = ctx.state
        if side == 0:
            mine, theirs = state._shoal_ijoin_a, state._shoal_ijoin_b
            expiry, low, high = ts + self.upper, ts + self.lower, ts + self.upper
        else:
            mine, theirs = state._shoal_ijoin_b, state._shoal_ijoin_a
            expiry, low, high = ts - self.lower, ts - self.upper, ts - self.lower
        buffer = mine.value()
        if buffer is None:
            buffer = []
        at = bisect_right(buffer, ts, key=_TS)  # after its equals: ties keep arrival order
        buffer.insert(at, [ts, value])
        mine.update(buffer)
        if at == 0:
            # The new head of its list: the earliest expiry may have moved earlier.
            ctx.timers.register_event_time(_just_after(expiry))
        others = theirs.value()
        if not others:
            return
        fn = self.fn
        emit = ctx.emit
        for index in range(bisect_left(others, low, key=_TS), bisect_right(others, high, key=_TS)):
            other = others[index][1]
            emit(fn(value, other) if side == 0 else fn(other, value))

    def on_timer(self, key: Any, ts: float, ctx: Any) -> None:
        """Drop what can no longer match once the watermark is past it (a prefix of each
        sorted list), then keep a timer at the earliest expiry of what remains."""
        state = ctx.state
        watermark = max(ts, ctx.watermark)
        for handle, bound in (
            (state._shoal_ijoin_a, self.upper),
            (state._shoal_ijoin_b, -self.lower),
        ):
            buffer = handle.value()
            if not buffer:
                continue
            gone = 0
            # Gone once the watermark is past ts + bound (a timer just after it fired).
            while gone < len(buffer) and _just_after(buffer[gone][0] + bound) <= watermark:
                gone += 1
            if gone == len(buffer):
                handle.clear()
                continue
            if gone:
                del buffer[:gone]
                handle.update(buffer)
            ctx.timers.register_event_time(_just_after(buffer[0][0] + bound))


def window_join_specs() -> tuple[StateSpec, ...]:
    """The internal state of a window join (besides its timers)."""
    return (ValueStateSpec(_WINDOWS),)


class WindowJoin:
    """The process function and timer callback of a window join (see the module docstring).

    Args:
        assigner: ``Tumbling(size)`` or ``Sliding(size, slide)``.
        fn: ``fn(x, y)`` makes the output of a pair (``x`` from ``a``, ``y`` from ``b``).
    """

    __slots__ = ("assigner", "fn")

    def __init__(self, assigner: Tumbling | Sliding, fn: Callable[[Any, Any], Any]) -> None:
        self.assigner = assigner
        self.fn = fn

    def process(self, key: Any, tagged: Any, ctx: Any) -> None:
        side, value = tagged[0], tagged[1]
        ts = ctx.timestamp
        windows = self.assigner.assign(ts)  # never empty: a Sliding's slide is <= its size
        watermark = ctx.watermark
        if windows[0][1] <= watermark:
            raise LateRecordError(
                f"record at timestamp {ts!r} is late for the window join: the watermark is "
                f"{watermark!r}, at or past the end of a window it belongs to"
            )
        state = ctx.state._shoal_wjoin
        opened = state.value()
        if opened is None:
            opened = {}
        for start, end in windows:
            entry = opened.get(end)
            if entry is None:
                entry = opened[end] = [start, [], []]
                ctx.timers.register_event_time(end)
            entry[1 + side].append(value)
        state.update(opened)

    def on_timer(self, key: Any, ts: Any, ctx: Any) -> None:
        """The watermark reached ``ts``: the window ending there emits its pairs and goes.

        Windows are kept by their end, the time of their timer: firing one is one lookup,
        never a scan of the key's windows. A pair whose ``fn`` raises is a dead letter of its
        own (``{"x": x, "y": y, "window": (start, end)}``); the other pairs are emitted."""
        state = ctx.state._shoal_wjoin
        opened = state.value()
        entry = None if opened is None else opened.pop(ts, None)
        if entry is None:
            return
        if opened:
            state.update(opened)
        else:
            state.clear()
        start, xs, ys = entry
        fn = self.fn
        emit = ctx.emit
        # Stamped with the window's last instant, as a window's result (see _windows.py).
        ctx.timestamp = last_instant(ts)
        for x in xs:
            for y in ys:
                try:
                    joined = fn(x, y)
                except Exception as exc:
                    ctx._dead_letter(exc, {"x": x, "y": y, "window": (start, ts)})
                    continue
                emit(joined)
