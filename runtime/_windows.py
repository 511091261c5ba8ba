"""Event-time windows on a keyed stream: tumbling, sliding and session windows.

Windows are half-open ``[start, end)`` and aligned to the epoch (timestamp 0): a tumbling
window of size 10 holds timestamps 0..9.999, then 10..19.999, and so on. A window keeps its
accumulator, never its records (``reduce`` / ``aggregate`` / ``count`` are incremental), in the
key group's store (internal state :data:`WINDOWS_STATE`: one list of ``[start, end, acc]`` per
key), so checkpoints carry open windows. ``process`` is the exception: its accumulator is the
list of the window's records, handed whole to the user function when the window fires.

A window fires when the key group's watermark reaches its end: it emits
``(key, window_start, window_end, value)``, stamped with the window's last instant
(``end - 1`` for int timestamps, the float just below ``end`` for floats), so a downstream
window of the same size puts it in the same window. With ``allowed_lateness`` ``L > 0`` the
window's accumulator is kept until the watermark reaches ``end + L``: a late record in that
time updates it and the window fires again at once with the updated value (the last result
per window is the final one). Then its state is removed: state never grows without bound.

A record is **late** when one of its windows can no longer fire (that window's end plus the
allowed lateness is at or below the watermark). A late record goes whole to the dead-letter
sink, with ``error_type == "LateRecordError"`` (its operator, key, split and position), and is
counted with the dead letters; it adds to none of its windows (for a sliding window, not even to
those still open). So every record is either in every window it belongs to or in the late
output, never in part and never dropped silently: a job's results can be checked against its
input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shoal.storage import KeyGroupStore, ValueStateSpec

from ._exceptions import LateRecordError
from ._timers import EVENT_TIME, TimerService

if TYPE_CHECKING:
    from ._operators import DeadLetters

__all__ = (
    "WINDOWS_STATE",
    "Session",
    "Sliding",
    "Tumbling",
    "WindowRunner",
    "WindowSpec",
    "last_instant",
    "windows_spec",
)

#: The internal state holding a key group's open windows.
WINDOWS_STATE = "_shoal_windows"


def windows_spec() -> ValueStateSpec:
    return ValueStateSpec(WINDOWS_STATE)


def _check_size(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{owner}: {name} must be a number > 0 (timestamp units); got {value!r}")
    if math.isinf(value):
        raise ValueError(f"{owner}: {name} must be finite; got {value!r}")
    return value


def _align(ts: Any, size: Any) -> Any:
    """The start of the epoch-aligned period of length ``size`` holding ``ts``."""
    return ts - ts % size


def last_instant(end: Any) -> Any:
    """The last timestamp inside ``[start, end)``: ``end - 1`` for ints, else the float below."""
    if type(end) is int:
        return end - 1
    return math.nextafter(end, -math.inf)


class Tumbling:
    """Back-to-back windows of ``size``: ``[k * size, (k + 1) * size)``."""

    __slots__ = ("size",)

    def __init__(self, size: float) -> None:
        self.size = _check_size("Tumbling", "size", size)

    def assign(self, ts: Any) -> list[tuple[Any, Any]]:
        start = _align(ts, self.size)
        return [(start, start + self.size)]

    def __repr__(self) -> str:
        return f"Tumbling({self.size!r})"


class Sliding:
    """Windows of ``size`` starting every ``slide``: a record is in ``ceil(size / slide)`` of
    them (fewer when ``slide`` does not divide ``size``)."""

    __slots__ = ("size", "slide")

    def __init__(self, size: float, slide: float) -> None:
        self.size = _check_size("Sliding", "size", size)
        self.slide = _check_size("Sliding", "slide", slide)

    def assign(self, ts: Any) -> list[tuple[Any, Any]]:
        size, slide = self.size, self.slide
        start = _align(ts, slide)
        windows = []
        while start > ts - size:
            windows.append((start, start + size))
            start -= slide
        windows.reverse()
        return windows

    def __repr__(self) -> str:
        return f"Sliding({self.size!r}, {self.slide!r})"


class Session:
    """A key's records closer than ``gap`` to each other form one window
    ``[first timestamp, last timestamp + gap)``; windows that come to overlap merge."""

    __slots__ = ("gap",)

    def __init__(self, gap: float) -> None:
        self.gap = _check_size("Session", "gap", gap)

    def __repr__(self) -> str:
        return f"Session({self.gap!r})"


WindowAssigner = Tumbling | Sliding | Session


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """How one windowed operator folds records: ``acc = add(acc or create(), value)``,
    ``merge(a, b)`` for merging sessions, ``result(acc)`` when the window fires; with
    ``process``, ``process(key, (start, end), records)`` instead of ``result``."""

    assigner: WindowAssigner
    allowed_lateness: float
    create: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    result: Callable[[Any], Any]
    merge: Callable[[Any, Any], Any] | None
    process: Callable[[Any, tuple[Any, Any], list[Any]], Any] | None = None


class WindowRunner:
    """Runs one windowed operator for one key group (records in, fired windows out)."""

    __slots__ = ("_name", "_spec", "_state", "_store", "_timers")

    def __init__(
        self, name: str, spec: WindowSpec, store: KeyGroupStore, timers: TimerService
    ) -> None:
        self._name = name
        self._spec = spec
        self._store = store
        self._state = store.state(WINDOWS_STATE)
        self._timers = timers

    def run(
        self,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        timestamps: list[Any],
        split: str,
        dead: DeadLetters,
        watermark: float,
    ) -> tuple[list[Any], list[int], list[Any]]:
        """Add one batch to its windows; return what fires at once (late firings)."""
        spec = self._spec
        store = self._store
        state = self._state
        lateness = spec.allowed_lateness
        session = spec.assigner if type(spec.assigner) is Session else None
        out: tuple[list[Any], list[int], list[Any]] = ([], [], [])
        for key, value, offset, ts in zip(keys, values, offsets, timestamps, strict=True):
            store.key = key
            windows = state.value() or []
            try:
                if session is not None:
                    updated = self._add_session(windows, session.gap, value, ts, watermark)
                else:
                    updated = self._add_windows(windows, value, ts, watermark)
            except _Late:
                dead.add(
                    self._name,
                    LateRecordError(
                        f"record at timestamp {ts!r} is late: the watermark is {watermark!r}, "
                        f"at or past the end (+ allowed lateness {lateness!r}) of every "
                        "window it belongs to"
                    ),
                    split,
                    offset,
                    value,
                    key,
                )
                continue
            except Exception as exc:
                dead.add(self._name, exc, split, offset, value, key)
                continue
            state.update(updated)
            for start, end, acc in updated:
                if end <= watermark <= end + lateness and start <= ts < end:
                    self._emit(out, key, start, end, acc, offset, split, dead)
        return out

    def _register(self, end: Any, watermark: float) -> None:
        if end > watermark:  # else: fired at once by run (a late firing), cleaned up below
            self._timers.register(EVENT_TIME, end)
        if self._spec.allowed_lateness:
            self._timers.register(EVENT_TIME, end + self._spec.allowed_lateness)

    def _add_windows(
        self, windows: list[Any], value: Any, ts: Any, watermark: float
    ) -> list[list[Any]]:
        spec = self._spec
        lateness = spec.allowed_lateness
        live = self._spec.assigner.assign(ts)  # type: ignore[union-attr]
        if live[0][1] + lateness <= watermark:  # the earliest window can no longer fire
            raise _Late
        updated = [list(entry) for entry in windows]
        for start, end in live:
            for entry in updated:
                if entry[0] == start and entry[1] == end:
                    entry[2] = spec.add(entry[2], value)
                    break
            else:
                updated.append([start, end, spec.add(spec.create(), value)])
                self._register(end, watermark)
        return updated

    def _add_session(
        self, windows: list[Any], gap: Any, value: Any, ts: Any, watermark: float
    ) -> list[list[Any]]:
        spec = self._spec
        merge = spec.merge
        assert merge is not None
        start, end = ts, ts + gap
        acc = spec.add(spec.create(), value)
        kept: list[list[Any]] = []
        merged: list[list[Any]] = []
        for entry in windows:
            if entry[0] <= end and start <= entry[1]:  # overlapping or touching: one session
                merged.append(entry)
            else:
                kept.append(list(entry))
        for entry in merged:
            start = min(start, entry[0])
            end = max(end, entry[1])
        if end + spec.allowed_lateness <= watermark:
            raise _Late
        for entry in sorted(merged, key=lambda entry: entry[0]):
            acc = merge(entry[2], acc) if entry[0] <= ts else merge(acc, entry[2])
        for entry in merged:
            if entry[1] != end:
                self._timers.delete(EVENT_TIME, entry[1])
                if spec.allowed_lateness:
                    self._timers.delete(EVENT_TIME, entry[1] + spec.allowed_lateness)
        if not any(entry[1] == end for entry in merged):
            self._register(end, watermark)
        kept.append([start, end, acc])
        return kept

    def on_timer(
        self,
        key: Any,
        ts: Any,
        out: tuple[list[Any], list[int], list[Any]],
        split: str,
        dead: DeadLetters,
    ) -> None:
        """The watermark reached ``ts``: fire the key's windows ending at ``ts``, and remove
        those that can no longer fire (the store's current key is ``key``)."""
        state = self._state
        windows = state.value()
        if not windows:
            return
        lateness = self._spec.allowed_lateness
        left = []
        for start, end, acc in windows:
            if end == ts:
                self._emit(out, key, start, end, acc, -1, split, dead)
            if end + lateness > ts:
                left.append([start, end, acc])
        if len(left) != len(windows):
            if left:
                state.update(left)
            else:
                state.clear()

    def _emit(
        self,
        out: tuple[list[Any], list[int], list[Any]],
        key: Any,
        start: Any,
        end: Any,
        acc: Any,
        offset: int,
        split: str,
        dead: DeadLetters,
    ) -> None:
        process = self._spec.process
        if process is None:
            value = self._spec.result(acc)
        else:
            try:
                value = process(key, (start, end), list(acc))
            except Exception as exc:  # the window's records, whole, to the dead letters
                dead.add(f"{self._name}.process", exc, split, offset, list(acc), key)
                return
        out[0].append((key, start, end, value))
        out[1].append(offset)
        out[2].append(last_instant(end))


class _Late(Exception):
    """Internal: the record belongs to no window that can still fire."""
