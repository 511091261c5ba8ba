"""Event-time windows on a keyed stream: tumbling, sliding and session windows.

Windows are half-open ``[start, end)`` and aligned to the epoch (timestamp 0): a tumbling
window of size 10 holds timestamps 0..9.999, then 10..19.999, and so on. A window keeps its
accumulator, never its records (``reduce`` / ``aggregate`` / ``count`` are incremental), in the
key group's store (internal state :data:`WINDOWS_STATE`, per key: for tumbling and sliding
windows a dict from window start to accumulator, see :class:`WindowRunner`; for sessions a
list of ``[start, end, acc]``), so checkpoints, migrations and savepoint rewrites carry open
windows with their key. ``process`` is the exception: its accumulator is the list of the
window's records, handed whole to the user function when the window fires.

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

For **sessions** "its window" is the session the record ends up in: a record behind the
watermark joins and merges the sessions it touches (fired ones kept for allowed lateness
too) unless the resulting session's end plus ``L`` is at or below the watermark. The merged
or extended session fires at once if its end is at or below the watermark, else when the
watermark reaches it; the results its parts emitted before are not retracted (the merged
session's range covers theirs: it supersedes them).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import compress, islice, repeat
from operator import add, is_, itemgetter, not_
from typing import TYPE_CHECKING, Any

from shoal.storage import KeyGroupStore, ValueStateSpec

from ._exceptions import LateRecordError
from ._outputs import SideValue
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
#: The key, in a key's dict of windows, of its fired windows kept for allowed lateness (window
#: starts are numbers: never None).
FIRED = None


def windows_spec() -> ValueStateSpec:
    return ValueStateSpec(WINDOWS_STATE)


def _check_size(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{owner}: {name} must be a number > 0 (timestamp units); got {value!r}")
    if math.isinf(value):
        raise ValueError(f"{owner}: {name} must be finite; got {value!r}")
    return value


def _period(ts: Any, size: Any) -> Any:
    """The ``k`` with ``k * size <= ts < (k + 1) * size``: an int if ``ts`` and ``size`` are,
    else a float holding an integer, so the window's bounds are computed in one arithmetic
    (ints, or floats) whatever the record (``ts - ts % size`` is not: ``1.0 - 1.0 % 0.1`` is
    0.9, whose window ``[0.9, 1.0)`` does not hold 1.0)."""
    if type(ts) is int and type(size) is int:
        return ts // size
    k = float(math.floor(ts / size))
    if not abs(k) < 2.0**52:  # k + 1 would be k: no window holds ts
        raise ValueError(f"timestamp {ts!r} is too far from 0 for windows of {size!r}")
    # ts / size is rounded: k can be one off either way.
    while k * size > ts:
        k -= 1.0
    while (k + 1.0) * size <= ts:
        k += 1.0
    return k


def last_instant(end: Any) -> Any:
    """The last timestamp inside ``[start, end)``: ``end - 1`` for ints, else the float below."""
    if type(end) is int:
        return end - 1
    return math.nextafter(end, -math.inf)


class Tumbling:
    """Back-to-back windows of ``size``: ``[k * size, (k + 1) * size)`` for every integer
    ``k`` (in floats unless ``size`` and the timestamp are ints): each timestamp is in exactly
    one."""

    __slots__ = ("size",)

    def __init__(self, size: float) -> None:
        self.size = _check_size("Tumbling", "size", size)

    def assign(self, ts: Any) -> list[tuple[Any, Any]]:
        size = self.size
        k = _period(ts, size)
        return [(k * size, (k + 1) * size)]

    def end(self, start: Any) -> Any:
        """The end of the window starting at ``start`` (one :meth:`assign` returned)."""
        size = self.size
        if type(start) is int and type(size) is int:
            return start + size
        return (round(start / size) + 1.0) * size

    def __repr__(self) -> str:
        return f"Tumbling({self.size!r})"


class Sliding:
    """Windows of ``size`` starting every ``slide`` (``slide <= size``): ``[j * slide,
    j * slide + size)`` for every integer ``j`` (in floats unless everything is an int); a
    record is in ``ceil(size / slide)`` of them (fewer when ``slide`` does not divide
    ``size``). ``Sliding(size, size)`` is ``Tumbling(size)``."""

    __slots__ = ("_tumbling", "size", "slide")

    def __init__(self, size: float, slide: float) -> None:
        self.size = _check_size("Sliding", "size", size)
        self.slide = _check_size("Sliding", "slide", slide)
        if slide > size:
            raise ValueError(
                f"Sliding: slide {slide!r} is greater than size {size!r}: a record between two "
                f"windows would belong to none; did you mean Sliding({slide!r}, {size!r})? "
                f"(Tumbling({size!r}) for back-to-back windows, a slide <= {size!r} for "
                "overlapping ones)"
            )
        # Back-to-back windows end where the next starts ((j + 1) * slide): j * slide + size
        # could be one float below it, and a timestamp in between in no window.
        self._tumbling = Tumbling(size) if slide == size else None

    def assign(self, ts: Any) -> list[tuple[Any, Any]]:
        if self._tumbling is not None:
            return self._tumbling.assign(ts)
        size, slide = self.size, self.slide
        j = _period(ts, slide)  # the latest window starting at or before ts
        windows = []
        start = j * slide
        while start + size > ts:
            windows.append((start, start + size))
            j -= 1
            start = j * slide
        windows.reverse()
        return windows

    def end(self, start: Any) -> Any:
        """The end of the window starting at ``start`` (one :meth:`assign` returned)."""
        if self._tumbling is not None:
            return self._tumbling.end(start)
        return start + self.size

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
    ``process``, ``process(key, (start, end), records)`` instead of ``result``. ``count``
    marks the count fold (``acc + 1`` per record, the accumulator is the result): the runner
    then adds a whole batch's counts at once. ``columnar=False`` runs every batch record by
    record (the same results; what the batch path is compared with)."""

    assigner: WindowAssigner
    allowed_lateness: float
    create: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    result: Callable[[Any], Any]
    merge: Callable[[Any, Any], Any] | None
    process: Callable[[Any, tuple[Any, Any], list[Any]], Any] | None = None
    count: bool = False
    columnar: bool = True
    #: The side output late records go to (its name), or None: the dead letters.
    late: str | None = None


Out = tuple[list[Any], list[int], list[Any]]


class _Missing:
    """No accumulator yet (a window without records): never stored."""


_MISSING: Any = _Missing()


class WindowRunner:
    """Runs one windowed operator for one key group (records in, fired windows out).

    Tumbling and sliding windows keep, per key, one dict from window start to accumulator
    for the windows still to fire, holding under the key :data:`FIRED` (None) a dict of the
    same kind for the windows that fired and may still take late records (allowed lateness).
    With int or float accumulators (a count, a sum) that dict holds no container, so Python's
    garbage collector does not track it (a ``[open, fired]`` list per key, tracked, cost as
    much collector time as everything else the window did). The firing times are an index in
    memory, rebuilt from the store when the runner starts (a restore, a migration): per window
    end the keys with a window ending there (one heap entry per end, not a timer per key and
    window), and per ``end + allowed_lateness`` the fired windows to drop then. Session
    windows keep the key's sessions as ``[start, end, acc]`` entries and a timer per session
    end (sessions of different keys end anywhere).
    """

    __slots__ = (
        "_drop_at",
        "_due",
        "_end",
        "_fire_at",
        "_fired_until",
        "_lateness",
        "_name",
        "_session",
        "_size",
        "_spec",
        "_state",
        "_step",
        "_store",
        "_timers",
        "sides",
    )

    def __init__(
        self, name: str, spec: WindowSpec, store: KeyGroupStore, timers: TimerService
    ) -> None:
        self._name = name
        self._spec = spec
        self._store = store
        self._state: Any = store.state(WINDOWS_STATE)
        self._timers = timers
        self._lateness = spec.allowed_lateness
        assigner = spec.assigner
        self._session = assigner if type(assigner) is Session else None
        self._size: Any = None
        self._step: Any = None
        #: A window's end from its start, as the assigner computes it.
        self._end: Callable[[Any], Any] = _no_end
        #: Window end -> (window start, the keys with an open window ending there).
        self._fire_at: dict[Any, tuple[Any, list[Any]]] = {}
        #: ``end + allowed_lateness`` -> the (key, start) of fired windows to drop then.
        self._drop_at: dict[Any, list[tuple[Any, Any]]] = {}
        #: The times in either, as a heap (a time may be in it twice: popping is idempotent).
        self._due: list[Any] = []
        #: The latest end of a window kept after firing (-inf: none so far).
        self._fired_until: Any = -math.inf
        #: Late records sent to the late side output since the runner last asked.
        self.sides = 0
        if type(assigner) is Tumbling:
            self._size = self._step = assigner.size
            self._end = assigner.end
        elif type(assigner) is Sliding:
            self._size, self._step = assigner.size, assigner.slide
            self._end = assigner.end
        if self._session is None:
            self._rebuild()

    def _rebuild(self) -> None:
        """The firing index from the windows in the store (the runner starts)."""
        end = self._end
        for key, windows in self._store.items(WINDOWS_STATE):
            for start in windows:
                if start is not None:
                    self._schedule(end(start), start, [key])
            for start in windows.get(FIRED, ()):
                self._schedule_drop(end(start), [(key, start)])

    def _schedule(self, end: Any, start: Any, keys: list[Any]) -> None:
        entry = self._fire_at.get(end)
        if entry is None:
            self._fire_at[end] = (start, keys)
            heapq.heappush(self._due, end)
        else:
            entry[1].extend(keys)

    def _schedule_drop(self, end: Any, windows: list[tuple[Any, Any]]) -> None:
        """Drop the fired windows ``windows`` (``(key, start)``, ending at ``end``) once the
        watermark reaches ``end + allowed_lateness``."""
        if end > self._fired_until:
            self._fired_until = end
        at = end + self._lateness
        entry = self._drop_at.get(at)
        if entry is None:
            self._drop_at[at] = windows
            heapq.heappush(self._due, at)
        else:
            entry.extend(windows)

    # -- records in ---------------------------------------------------------------------------

    def run(
        self,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        timestamps: list[Any],
        split: str,
        dead: DeadLetters,
        watermark: float,
    ) -> Out:
        """Add one batch to its windows; return what fires at once (late firings)."""
        out: Out = ([], [], [])
        if not keys:
            return out
        if self._session is not None:
            self._run_sessions(keys, values, offsets, timestamps, split, dead, watermark, out)
            return out
        spec = self._spec
        # The earliest window of the earliest record: if it has not fired, no window of the
        # batch has (a window's end grows with its records' timestamps): no record is late
        # and nothing fires at once, so the batch is added as a whole.
        # A window kept after firing (allowed lateness) fired even if the watermark is below
        # its end (it restarts from -inf after a restore): _fired_until covers those.
        try:
            first_end = spec.assigner.assign(min(timestamps))[0][1]  # type: ignore[union-attr]
        except ValueError:  # a timestamp no window can hold: record by record, a dead letter
            first_end = -math.inf
        if spec.columnar and first_end > watermark and first_end > self._fired_until:
            if spec.count and self._columns_apply(timestamps):
                self._count_batch(keys, timestamps)
            else:
                self._fold_batch(keys, values, offsets, timestamps, split, dead)
            return out
        self._run_records(keys, values, offsets, timestamps, split, dead, watermark, out)
        return out

    def _columns_apply(self, timestamps: list[Any]) -> bool:
        """Whether :meth:`_columns` computes exactly what ``assign`` does for this batch:
        when the slide divides the size and everything is an int (in floats, ``ts - ts %
        step`` is not always the window's start, and rounding could change how many windows
        a record is in)."""
        size, step = self._size, self._step
        return (
            type(size) is int
            and type(step) is int
            and size % step == 0
            and set(map(type, timestamps)) == {int}
        )

    def _columns(self, timestamps: list[Any]) -> list[list[Any]]:
        """The batch's window starts, one column per window a record is in (the step divides
        the size, so every record is in ``size / step`` windows): column ``j`` holds each
        record's ``j``-th latest window start, computed as ``assign`` computes it."""
        step = self._step
        column = [ts - ts % step for ts in timestamps]
        columns = [column]
        for _ in range(round(self._size / step) - 1):
            column = [start - step for start in column]
            columns.append(column)
        return columns

    def _count_batch(self, keys: list[Any], timestamps: list[Any]) -> None:
        """The count fold over a whole batch: its (window, key) pairs tallied in C, one read
        and one write of each distinct key's windows, and no Python code per pair but for
        the pairs that open a window."""
        for starts in self._columns(timestamps):
            first = starts[0]
            if starts.count(first) == len(starts):  # the whole batch in one window
                tally = Counter(keys)
                self._add_counts(list(tally), repeat(first), tally)
            else:
                tally = Counter(zip(starts, keys, strict=True))
                pairs = list(tally)
                starts = list(map(itemgetter(0), pairs))
                self._add_counts(list(map(itemgetter(1), pairs)), starts, tally)

    def _add_counts(self, keys: list[Any], starts: Iterable[Any], tally: Counter[Any]) -> None:
        """Add ``tally``'s counts (in its order) to the windows ``starts`` of ``keys``."""
        state = self._state
        accs = state.values_of(keys)
        if any(map(is_, accs.values(), repeat(None))):
            for key, opened in accs.items():
                if opened is None:
                    accs[key] = {}
        dicts = list(map(accs.__getitem__, keys))
        starts = list(starts) if type(starts) is list else list(islice(starts, len(keys)))
        olds = list(map(dict.get, dicts, starts, repeat(0)))  # 0: a window opened now
        deque(map(dict.__setitem__, dicts, starts, map(add, olds, tally.values())), 0)
        state.update_all(accs)
        if all(olds):
            return
        new: dict[Any, list[Any]] = {}
        for start, key in compress(zip(starts, keys, strict=True), map(not_, olds)):
            started = new.get(start)
            if started is None:
                new[start] = [key]
            else:
                started.append(key)
        end = self._end
        for start, started in new.items():
            self._schedule(end(start), start, started)

    def _fold_batch(
        self,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        timestamps: list[Any],
        split: str,
        dead: DeadLetters,
    ) -> None:
        """A batch none of whose windows has fired: every record folded into its open
        windows (all of them or, if ``add`` raises, none), one read and one write per key."""
        spec = self._spec
        create, add = spec.create, spec.add
        assign = spec.assigner.assign  # type: ignore[union-attr]
        tumbling = self._size == self._step
        size = self._size
        int_size = type(size) is int
        state = self._state
        accs = state.values_of(keys)
        new: dict[Any, list[Any]] = {}
        for key, value, offset, ts in zip(keys, values, offsets, timestamps, strict=True):
            opened = accs[key]
            if opened is None:
                opened = accs[key] = {}
            try:
                if tumbling:
                    start = ts - ts % size if int_size and type(ts) is int else assign(ts)[0][0]
                    acc = opened.get(start, _MISSING)
                    opened[start] = add(create() if acc is _MISSING else acc, value)
                    if acc is _MISSING:
                        new.setdefault(start, []).append(key)
                    continue
                added = []
                for start, _end in assign(ts):
                    acc = opened.get(start, _MISSING)
                    added.append((start, add(create() if acc is _MISSING else acc, value), acc))
            except Exception as exc:
                dead.add(self._name, exc, split, offset, value, key)
                continue
            for start, acc, old in added:
                opened[start] = acc
                if old is _MISSING:
                    new.setdefault(start, []).append(key)
        state.update_all({key: opened for key, opened in accs.items() if opened})
        end = self._end
        for start, started in new.items():
            self._schedule(end(start), start, started)

    def _run_records(
        self,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        timestamps: list[Any],
        split: str,
        dead: DeadLetters,
        watermark: float,
        out: Out,
    ) -> None:
        """Record by record: for a batch with late records or records for windows that
        fired already (each such record fires its window again at once)."""
        spec = self._spec
        create, add = spec.create, spec.add
        assign = spec.assigner.assign  # type: ignore[union-attr]
        lateness = self._lateness
        store = self._store
        state = self._state
        for key, value, offset, ts in zip(keys, values, offsets, timestamps, strict=True):
            try:
                windows = assign(ts)
            except ValueError as exc:  # too far from 0 for the window size (see _period)
                dead.add(self._name, exc, split, offset, value, key)
                continue
            if windows[0][1] + lateness <= watermark:  # the earliest window can no longer fire
                self._late(ts, watermark, split, offset, value, key, dead, out)
                continue
            store.key = key
            opened = state.value() or {}
            done = opened.get(FIRED) or {}
            try:
                added = []
                for start, end in windows:
                    fired = end <= watermark or start in done
                    accs = done if fired else opened
                    acc = accs.get(start, _MISSING)
                    added.append(
                        (fired, start, end, add(create() if acc is _MISSING else acc, value), acc)
                    )
            except Exception as exc:
                dead.add(self._name, exc, split, offset, value, key)
                continue
            for fired, start, end, acc, old in added:
                if fired:
                    done[start] = acc
                    opened[FIRED] = done
                else:
                    opened[start] = acc
                if old is _MISSING:
                    if fired:
                        self._schedule_drop(end, [(key, start)])
                    else:
                        self._schedule(end, start, [key])
                if fired:
                    self._emit(out, key, start, end, acc, offset, split, dead)
            state.update(opened)

    def _late(
        self,
        ts: Any,
        watermark: float,
        split: str,
        offset: int,
        value: Any,
        key: Any,
        dead: DeadLetters,
        out: Out,
    ) -> None:
        late = self._spec.late
        if late is not None:  # the late side output (window(..., late=OutputTag(...)))
            out[0].append(SideValue(late, value))
            out[1].append(offset)
            out[2].append(ts)
            self.sides += 1
            return
        dead.add(
            self._name,
            LateRecordError(
                f"record at timestamp {ts!r} is late: the watermark is {watermark!r}, "
                f"at or past the end (+ allowed lateness {self._lateness!r}) of every "
                "window it belongs to"
            ),
            split,
            offset,
            value,
            key,
        )

    # -- the watermark moves ------------------------------------------------------------------

    def fire(self, watermark: float, out: Out, split: str, dead: DeadLetters) -> None:
        """The watermark reached ``watermark``: fire every window ending at or before it (in
        end order), and remove the windows that can no longer fire."""
        if self._session is not None:
            for ts, key in self._timers.due(EVENT_TIME, watermark):
                self._on_session_timer(key, ts, out, split, dead)
            return
        due = self._due
        fire_at = self._fire_at
        drop_at = self._drop_at
        while due and due[0] <= watermark:
            at = heapq.heappop(due)
            firing = fire_at.pop(at, None)
            if firing is not None:
                self._fire(at, firing[0], firing[1], out, split, dead)
            dropping = drop_at.pop(at, None)
            if dropping is not None:
                self._drop(dropping)

    def _fire(
        self, end: Any, start: Any, keys: list[Any], out: Out, split: str, dead: DeadLetters
    ) -> None:
        """Fire the windows ``[start, end)`` of ``keys``."""
        state = self._state
        lateness = self._lateness
        accs = state.values_of(keys)
        if self._spec.count and not lateness and self._fire_counts(end, start, accs, out):
            return
        kept: dict[Any, Any] = {}
        gone: list[Any] = []
        fired: list[tuple[Any, Any]] = []
        emitted: list[Any] = out[0]
        before = len(emitted)
        count = self._spec.count
        for key in keys:
            opened = accs[key]
            acc = _MISSING if opened is None else opened.pop(start, _MISSING)
            if acc is _MISSING:
                continue  # not open (a key listed twice)
            if count:
                emitted.append((key, start, end, acc))
            else:
                self._emit_value(emitted, key, start, end, acc, split, dead)
            if lateness:
                done = opened.get(FIRED)
                if done is None:
                    opened[FIRED] = {start: acc}
                else:
                    done[start] = acc
                fired.append((key, start))
            if opened:
                kept[key] = opened
            else:
                gone.append(key)
        emitted_now = len(emitted) - before
        out[1].extend([-1] * emitted_now)
        out[2].extend([last_instant(end)] * emitted_now)
        state.update_all(kept)
        state.clear_all(gone)
        if fired:
            self._schedule_drop(end, fired)

    def _fire_counts(self, end: Any, start: Any, accs: dict[Any, Any], out: Out) -> bool:
        """Fire counts that need no lateness bookkeeping with no Python code per key (``map``
        over the keys' dicts); False (nothing done) unless every key has the window open."""
        dicts = list(accs.values())
        if any(map(is_, dicts, repeat(None))) or not all(
            map(dict.__contains__, dicts, repeat(start))
        ):
            return False
        keys = list(accs)
        counts = list(map(dict.pop, dicts, repeat(start)))
        out[0].extend(zip(keys, repeat(start), repeat(end), counts))
        out[1].extend([-1] * len(keys))
        out[2].extend([last_instant(end)] * len(keys))
        state = self._state
        if all(dicts):  # every key has other windows open
            state.update_all(accs)
        else:
            left = list(map(bool, dicts))
            state.update_all(dict(compress(accs.items(), left)))
            state.clear_all(compress(keys, map(not_, left)))
        return True

    def _drop(self, windows: list[tuple[Any, Any]]) -> None:
        """Remove fired windows whose allowed lateness is over."""
        state = self._state
        accs = state.values_of([key for key, _start in windows])
        kept: dict[Any, Any] = {}
        gone: list[Any] = []
        for key, start in windows:
            opened = accs[key]
            done = None if opened is None else opened.get(FIRED)
            if done is None or done.pop(start, _MISSING) is _MISSING:
                continue
            if not done:
                del opened[FIRED]
            if opened:
                kept[key] = opened
            else:
                gone.append(key)
                kept.pop(key, None)
        state.update_all(kept)
        state.clear_all(gone)

    # -- output -------------------------------------------------------------------------------

    def _emit_value(
        self,
        emitted: list[Any],
        key: Any,
        start: Any,
        end: Any,
        acc: Any,
        split: str,
        dead: DeadLetters,
        offset: int = -1,
    ) -> bool:
        """Append ``(key, start, end, value)``; False if the user function raised (the
        window's accumulator, or its records, went to the dead letters)."""
        process = self._spec.process
        try:
            if process is None:
                value = self._spec.result(acc)
            else:
                value = process(key, (start, end), list(acc))
        except Exception as exc:
            where = self._name if process is None else f"{self._name}.process"
            dead.add(where, exc, split, offset, list(acc) if process else acc, key)
            return False
        emitted.append((key, start, end, value))
        return True

    def _emit(
        self,
        out: Out,
        key: Any,
        start: Any,
        end: Any,
        acc: Any,
        offset: int,
        split: str,
        dead: DeadLetters,
    ) -> None:
        if self._emit_value(out[0], key, start, end, acc, split, dead, offset):
            out[1].append(offset)
            out[2].append(last_instant(end))

    # -- session windows ----------------------------------------------------------------------

    def _run_sessions(
        self,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        timestamps: list[Any],
        split: str,
        dead: DeadLetters,
        watermark: float,
        out: Out,
    ) -> None:
        session = self._session
        assert session is not None
        store = self._store
        state = self._state
        lateness = self._lateness
        for key, value, offset, ts in zip(keys, values, offsets, timestamps, strict=True):
            store.key = key
            windows = state.value() or []
            try:
                updated = self._add_session(windows, session.gap, value, ts, watermark)
            except _Late:
                self._late(ts, watermark, split, offset, value, key, dead, out)
                continue
            except Exception as exc:
                dead.add(self._name, exc, split, offset, value, key)
                continue
            state.update(updated)
            for start, end, acc in updated:
                if end <= watermark <= end + lateness and start <= ts < end:
                    self._emit(out, key, start, end, acc, offset, split, dead)

    def _register(self, end: Any, watermark: float) -> None:
        if end > watermark:  # else: fired at once by run (a late firing), cleaned up below
            self._timers.register(EVENT_TIME, end)
        if self._lateness:
            self._timers.register(EVENT_TIME, end + self._lateness)

    def _add_session(
        self, windows: list[Any], gap: Any, value: Any, ts: Any, watermark: float
    ) -> list[list[Any]]:
        spec = self._spec
        merge = spec.merge
        assert merge is not None
        start, end = ts, ts + gap
        if not end > ts:  # ts + gap rounded back to ts: [ts, ts) holds nothing
            raise ValueError(f"timestamp {ts!r} is too far from 0 for sessions of gap {gap!r}")
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

    def _on_session_timer(self, key: Any, ts: Any, out: Out, split: str, dead: DeadLetters) -> None:
        """The watermark reached ``ts``: fire the key's sessions ending at ``ts``, and remove
        those that can no longer fire (the store's current key is ``key``)."""
        state = self._state
        windows = state.value()
        if not windows:
            return
        lateness = self._lateness
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


def _no_end(start: Any) -> Any:
    raise AssertionError("session windows have no fixed size")


class _Late(Exception):
    """Internal: the record belongs to no window that can still fire."""
