"""A harness for one keyed operator: the real runner, store and timers, driven by hand.

Like Flink's ``KeyedOneInputStreamOperatorTestHarness`` and Kafka Streams'
``TopologyTestDriver``: no source, no workers, no event loop. A test pushes records, moves the
watermark and the processing clock, and reads what the operator emitted, its state and its
timers. Everything a record meets in a running job is the same code: the operator's
:class:`~._operators.KeyedRunner` (user functions, windows, late records, dead letters), a
:class:`~shoal.storage.KeyGroupStore` per key group (the memory backend: flushed and exported
exactly as LMDB is, at no disk cost) and the key group's :class:`~._timers.TimerService`.

Decisions (documented in docs/guides/testing.md):

* Keys are routed to key groups with :func:`~._keys.key_group_of`, so ``ctx.key_group`` and
  :meth:`KeyedHarness.repartition` split keys exactly as a job with that many key groups does.
* A record is pushed as one batch of one, as a job with ``batch_size=1`` runs it; after it,
  the processing-time timers the clock has passed fire (as a key-group actor does).
* :meth:`KeyedHarness.advance_processing_time` fires processing-time timers one deadline at a
  time, across key groups in timestamp order, with the clock at each deadline; timers set by a
  firing timer inside the range fire too. :meth:`KeyedHarness.advance_watermark` fires each
  key group's due event-time timers, key groups in ascending order (a job gives no order
  across key groups).
* A harness is on event time or not, for good: pushing a timestamp to one without, or none to
  one with, is a :class:`~._exceptions.HarnessError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, NamedTuple

import cbor2
from shoal.storage import (
    AggregatingState,
    KeyGroupStore,
    ListState,
    MapState,
    MemoryBackend,
    ReducingState,
    StateSpec,
    ValueState,
    encode_key,
    encode_value,
)

from ._dataflow import Flow, KeyedOp, Stream, WindowedStream
from ._exceptions import HarnessError
from ._keys import DEFAULT_KEY_GROUPS, key_group_of
from ._operators import DeadLetters, KeyedRunner
from ._outputs import OutputTag, split_sides
from ._placement import Placement
from ._sinks import DeadLetter
from ._sources import IterableSource
from ._time import MIN_WATERMARK
from ._timers import EVENT_TIME, PROCESSING_TIME, TIMERS_STATE, KeyedTime
from ._virtual_clock import VirtualClock
from ._windows import Session, Sliding, Tumbling

__all__ = ("Emitted", "KeyedHarness", "Timer")

_CHANNEL = "harness"
_SPLIT = "harness"
_FORMAT = "shoal.keyed-harness/1"


class Emitted(NamedTuple):
    """One record the operator emitted, with its event time (None on a harness without)."""

    value: Any
    timestamp: Any


class Timer(NamedTuple):
    """One registered timer of a key."""

    kind: Literal["event", "processing"]
    timestamp: float


class _Group:
    """One key group's store, time and runner."""

    __slots__ = ("runner", "store", "time")

    def __init__(self, op: KeyedOp, store: KeyGroupStore, key_group: int, clock: Any) -> None:
        self.store = store
        self.time = KeyedTime.for_operator((_CHANNEL,), clock, store, op.states)
        self.runner = KeyedRunner(op, store, key_group, self.time)


def _identity(value: Any) -> Any:
    return value


def _no_timestamp(_record: Any) -> float:  # never called: the harness pushes stamped records
    return 0.0


def _scratch_flow(name: str, num_key_groups: int, event_time: bool) -> Any:
    flow = Flow(name, num_key_groups=num_key_groups)
    stream = flow.source(IterableSource([]), timestamps=_no_timestamp if event_time else None)
    return flow, stream.key_by(_identity)


def _stamps(timestamp: float | None) -> list[Any] | None:
    return None if timestamp is None else [timestamp]


def _check_number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise HarnessError(f"{what} takes a number (an int or a float); got {value!r}")
    return value


class KeyedHarness:
    """One keyed operator of a flow on the real runner, store and timers, driven by hand.

    Args:
        flow: the flow holding the operator (its source and sink are not used).
        operator: the keyed operator's name; may be left out when the flow has only one.
        start_time: the processing clock's initial time (see :attr:`clock`).
        snapshot: start from this :meth:`snapshot` instead of empty state.

    Attributes:
        clock: the harness's processing clock (a :class:`VirtualClock`, not installed):
            ``ctx.timers.processing_time()`` and processing-time TTL read it.
        operator: the operator's name.
        num_key_groups: the flow's key-group count.
        event_time: whether records carry timestamps (the flow has a timestamp assigner).

    Raises:
        HarnessError: the flow has no keyed operator, several and no ``operator`` name, or
            none of that name.
    """

    def __init__(
        self,
        flow: Flow,
        operator: str | None = None,
        *,
        start_time: float = 0.0,
        snapshot: bytes | None = None,
    ) -> None:
        if not isinstance(flow, Flow):
            raise HarnessError(
                f"KeyedHarness takes a Flow (or use KeyedHarness.for_function / for_window); "
                f"got {type(flow).__name__}"
            )
        op = _pick(flow, operator)
        self._setup(op, flow.num_key_groups, flow.event_time is not None, start_time)
        if snapshot is not None:
            self._load(snapshot)

    @classmethod
    def for_function(
        cls,
        fn: Callable[[Any, Any, Any], Any],
        *,
        states: Sequence[StateSpec] = (),
        on_timer: Callable[[Any, Any, Any], Any] | None = None,
        event_time: bool = True,
        num_key_groups: int = DEFAULT_KEY_GROUPS,
        name: str = "process",
        start_time: float = 0.0,
        snapshot: bytes | None = None,
    ) -> KeyedHarness:
        """A harness for a keyed process function ``fn(key, value, ctx)``, declared as
        ``KeyedStream.process`` would declare it (``fn`` may be an object with ``process``,
        ``on_timer`` and ``states``). ``event_time=False``: records carry no timestamps."""
        flow, keyed = _scratch_flow("harness", num_key_groups, event_time)
        keyed.process(fn, states=states, on_timer=on_timer, name=name)
        return cls(flow, start_time=start_time, snapshot=snapshot)

    @classmethod
    def for_window(
        cls,
        assigner: Tumbling | Sliding | Session,
        fold: Callable[[WindowedStream], Stream],
        *,
        allowed_lateness: float = 0,
        num_key_groups: int = DEFAULT_KEY_GROUPS,
        start_time: float = 0.0,
        snapshot: bytes | None = None,
    ) -> KeyedHarness:
        """A harness for an event-time window: ``fold`` finishes the windowed stream, e.g.
        ``lambda w: w.count()`` or ``lambda w: w.reduce(max, name="top")``."""
        flow, keyed = _scratch_flow("harness", num_key_groups, True)
        fold(keyed.window(assigner, allowed_lateness=allowed_lateness))
        return cls(flow, start_time=start_time, snapshot=snapshot)

    @classmethod
    def restore(
        cls, snapshot: bytes, flow: Flow, operator: str | None = None, **options: Any
    ) -> KeyedHarness:
        """A new harness for ``flow``'s operator with the state, timers, watermark and clock
        of ``snapshot`` (what :meth:`snapshot` returned); the same as
        ``KeyedHarness(flow, operator, snapshot=snapshot)``.

        Raises:
            HarnessError: the snapshot is not one, or is of another operator or states.
        """
        return cls(flow, operator, snapshot=snapshot, **options)

    def _setup(
        self,
        op: KeyedOp,
        num_key_groups: int,
        event_time: bool,
        start_time: float,
        key_groups: Iterable[int] | None = None,
        worker: int = 0,
    ) -> None:
        self._op = op
        self.operator = op.name
        self.num_key_groups = num_key_groups
        self.event_time = event_time
        self.clock = VirtualClock(_check_number(start_time, "start_time"))
        self._backend = MemoryBackend()
        self._groups: dict[int, _Group] = {}
        self._owned = frozenset(range(num_key_groups) if key_groups is None else key_groups)
        self._worker = worker
        self._dead = DeadLetters(worker)
        #: Whether an error of the operator's function raises at once (``HarnessError``
        #: naming it; default) or only goes to :attr:`dead_letters`, as in a job (False: to
        #: test error handling). Late records are data, never raised.
        self.raise_errors = True
        self._output: list[Emitted] = []
        self._sides: dict[str, list[Emitted]] = {}  # side outputs by tag (ctx.output)
        self._watermark = MIN_WATERMARK
        self._offset = 0
        self._names = tuple(spec.name for spec in op.states)

    # -- driving it ----------------------------------------------------------------------------

    def push(self, key: Any, value: Any, timestamp: float | None = None) -> list[Emitted]:
        """Run the operator on one record of ``key``; return what it emitted (also in
        :attr:`output`), then fire the processing-time timers the clock has passed.

        Raises:
            HarnessError: a timestamp is missing on an event-time harness, or given to one
                without event time; ``key`` is in a key group this harness does not own
                (after :meth:`repartition`); the operator is ``async def`` (use
                :meth:`apush`).
            TypeError: ``key`` is not a valid key (str, bytes, int or a tuple of those).
        """
        dead_before = len(self._dead.pending)
        group, before = self._record(key, timestamp, "push")
        values, _offsets, stamps = group.runner.run(
            [key], [value], [self._offset], _SPLIT, self._dead, _stamps(timestamp)
        )
        self._collect(values, stamps)
        self._fire(group, None)
        self._raise_new(dead_before)
        return self._output[before:]

    async def apush(self, key: Any, value: Any, timestamp: float | None = None) -> list[Emitted]:
        """:meth:`push` for an operator whose functions are ``async def`` (awaits them)."""
        dead_before = len(self._dead.pending)
        group, before = self._record(key, timestamp, "apush")
        values, _offsets, stamps = await group.runner.run_async(
            [key], [value], [self._offset], _SPLIT, self._dead, _stamps(timestamp)
        )
        self._collect(values, stamps)
        await self._afire(group, None)
        self._raise_new(dead_before)
        return self._output[before:]

    def _record(self, key: Any, timestamp: float | None, method: str) -> tuple[_Group, int]:
        """Check one pushed record; return its key group and where its output starts."""
        if self.event_time and timestamp is None:
            raise HarnessError(
                f"{method}({key!r}, ...): operator {self.operator!r} runs on event time; "
                "pass timestamp=<int or float>"
            )
        if not self.event_time and timestamp is not None:
            raise HarnessError(
                f"{method}({key!r}, ..., timestamp={timestamp!r}): operator {self.operator!r} "
                "runs without event time (its flow has no timestamp assigner); drop the "
                "timestamp or use event_time=True"
            )
        if timestamp is not None:
            _check_number(timestamp, f"{method}(timestamp=...)")
        group = self._group(self._owner_of(key))
        self._check_mode(group, method)
        self._offset += 1
        return group, len(self._output)

    def _check_mode(self, group: _Group, method: str) -> None:
        asynchronous = method in ("apush", "aadvance_watermark", "aadvance_processing_time")
        if group.runner.is_async and not asynchronous:
            raise HarnessError(
                f"operator {self.operator!r} is async def: await harness.a{method}(...) "
                f"instead of harness.{method}(...)"
            )
        if asynchronous and not group.runner.is_async:
            raise HarnessError(
                f"operator {self.operator!r} is a plain function: call harness."
                f"{method[1:]}(...) instead of await harness.{method}(...)"
            )

    def advance_watermark(self, watermark: float) -> list[Emitted]:
        """Move the watermark to ``watermark`` and fire every event-time timer (and window)
        due at it; return what fired.

        Raises:
            HarnessError: the harness has no event time, or ``watermark`` is behind the
                current one; the operator is ``async def`` (use :meth:`aadvance_watermark`).
        """
        before = len(self._output)
        dead_before = len(self._dead.pending)
        for group, mark in self._watermark_steps(watermark, "advance_watermark"):
            self._fire(group, mark)
        self._raise_new(dead_before)
        return self._output[before:]

    async def aadvance_watermark(self, watermark: float) -> list[Emitted]:
        """:meth:`advance_watermark` for an ``async def`` operator."""
        before = len(self._output)
        dead_before = len(self._dead.pending)
        for group, mark in self._watermark_steps(watermark, "aadvance_watermark"):
            await self._afire(group, mark)
        self._raise_new(dead_before)
        return self._output[before:]

    def _watermark_steps(self, watermark: float, method: str) -> Iterator[tuple[_Group, float]]:
        if not self.event_time:
            raise HarnessError(
                f"{method}: operator {self.operator!r} runs without event time "
                "(its flow has no timestamp assigner): build the harness with "
                "event_time=True (for_function) or from a flow whose source has timestamps=, "
                "or drive processing time with advance_processing_time"
            )
        _check_number(watermark, method)
        if watermark < self._watermark:
            raise HarnessError(
                f"the watermark only moves forward: it is {self._watermark!r}; "
                f"got {method}({watermark!r})"
            )
        for group in self._groups.values():
            self._check_mode(group, method)
        self._watermark = watermark
        for key_group in sorted(self._groups):
            group = self._groups[key_group]
            mark = group.time.combiner.update(_CHANNEL, watermark)
            if mark is not None:
                yield group, mark

    def advance_processing_time(self, seconds: float) -> list[Emitted]:
        """Move the processing clock forward by ``seconds`` and fire the processing-time
        timers it passes, one deadline at a time in timestamp order (the clock at each
        one's deadline); return what they emitted.

        Raises:
            HarnessError: ``seconds`` is negative or not a number; the operator is
                ``async def`` (use :meth:`aadvance_processing_time`).
        """
        before = len(self._output)
        dead_before = len(self._dead.pending)
        for group in self._processing_steps(seconds, "advance_processing_time"):
            self._fire(group, None)
        self._raise_new(dead_before)
        return self._output[before:]

    async def aadvance_processing_time(self, seconds: float) -> list[Emitted]:
        """:meth:`advance_processing_time` for an ``async def`` operator."""
        before = len(self._output)
        dead_before = len(self._dead.pending)
        for group in self._processing_steps(seconds, "aadvance_processing_time"):
            await self._afire(group, None)
        self._raise_new(dead_before)
        return self._output[before:]

    def _processing_steps(self, seconds: float, method: str) -> Iterator[_Group]:
        _check_number(seconds, method)
        if seconds < 0:
            raise HarnessError(f"processing time only moves forward; got {method}({seconds!r})")
        for group in self._groups.values():
            self._check_mode(group, method)
        target = self.clock.now() + seconds
        while True:
            due = [
                (next_due, key_group)
                for key_group, group in self._groups.items()
                if group.time.timers is not None
                and (next_due := group.time.timers.next_due(PROCESSING_TIME)) is not None
                and next_due <= target
            ]
            if not due:
                break
            deadline, key_group = min(due)
            self.clock.advance_to(max(deadline, self.clock.now()))
            yield self._groups[key_group]
        self.clock.advance_to(target)

    # -- what came out -----------------------------------------------------------------------

    @property
    def watermark(self) -> float:
        """The current watermark (``-inf`` before the first advance)."""
        return self._watermark

    @property
    def output(self) -> list[Emitted]:
        """Everything emitted since the start (or the last :meth:`take_output`), in order."""
        return list(self._output)

    def take_output(self) -> list[Emitted]:
        """Return :attr:`output` and forget it."""
        taken, self._output = self._output, []
        return taken

    def side_output(self, tag: OutputTag) -> list[Emitted]:
        """What the operator sent to ``tag`` with ``ctx.output(tag, value)``, in order (not in
        :attr:`output`)."""
        if not isinstance(tag, OutputTag):
            raise TypeError(f"side_output takes an OutputTag('name'); got {tag!r}")
        return list(self._sides.get(tag.name, ()))

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """Every record whose user function raised, and every late record, in order."""
        return list(self._dead.pending)

    @property
    def late(self) -> list[DeadLetter]:
        """The late records: those a window could no longer take (``LateRecordError``)."""
        return [letter for letter in self._dead.pending if letter.error_type == "LateRecordError"]

    # -- state and timers ----------------------------------------------------------------------

    def state(self, key: Any, name: str) -> Any:
        """``key``'s value of state ``name`` as the operator would read it (a ValueState's
        value or its declared default, a ListState's list, a MapState's dict, an
        AggregatingState's result; None when it has none).
        Internal states (``_shoal_timers``, ``_shoal_windows``) can be read too.

        Raises:
            HarnessError: the operator declares no state ``name``; ``key`` is not owned.
        """
        self._check_state(name)
        store = self._group(self._owner_of(key)).store
        handle = store.state(name)
        if isinstance(handle, ValueState):
            store.key = key  # (set before each record and timer: nothing else reads it)
            return handle.value()  # with the declared default, as the operator sees it
        return store.get(name, key)

    def set_state(self, key: Any, name: str, value: Any) -> None:
        """Set ``key``'s state ``name`` as if the operator had written it: a ValueState's
        value (None clears it), a ListState's list, a MapState's dict, a ReducingState's or
        AggregatingState's accumulator.

        Raises:
            HarnessError: no state ``name``, an internal state, or ``key`` is not owned.
        """
        self._check_state(name)
        if name.startswith("_shoal"):
            raise HarnessError(
                f"state {name!r} is shoal's own (timers, windows): drive it with push and "
                "advance_watermark / advance_processing_time"
            )
        store = self._group(self._owner_of(key)).store
        handle = store.state(name)
        store.key = key
        if isinstance(handle, ValueState):
            if value is None:
                handle.clear()
            else:
                handle.update(value)
        elif isinstance(handle, ListState):
            handle.update(list(value))
        elif isinstance(handle, MapState):
            handle.clear()
            handle.put_all(dict(value))
        elif isinstance(handle, ReducingState):
            handle.clear()
            handle.add(value)
        else:
            assert isinstance(handle, AggregatingState)
            # The accumulator goes in as a stored entry: the handle only folds values in.
            handle.clear()
            store.flush()
            store.import_entries([(name, encode_key(key), encode_value(value))])

    def timers(self, key: Any) -> list[Timer]:
        """``key``'s registered timers, by timestamp (event-time first among equals)."""
        group = self._group(self._owner_of(key))
        if group.time.timers is None:
            return []
        entries = group.store.get(TIMERS_STATE, key) or []
        kinds: dict[int, Literal["event", "processing"]] = {
            EVENT_TIME: "event",
            PROCESSING_TIME: "processing",
        }
        return [Timer(kinds[kind], ts) for kind, ts in sorted(entries, key=lambda e: (e[1], e[0]))]

    def keys(self, name: str) -> list[Any]:
        """Every key with a value in state ``name``, across the owned key groups."""
        self._check_state(name)
        return [key for group in self._sorted_groups() for key, _ in group.store.items(name)]

    # -- snapshots and repartitioning ----------------------------------------------------------

    def snapshot(self) -> bytes:
        """Everything this harness holds, as CBOR bytes: state and timers per key group (as a
        checkpoint exports them), the watermark and the clock. Output and dead letters are
        not part of it (a job's sink has them)."""
        return cbor2.dumps(self._data())

    def repartition(self, workers: int) -> list[KeyedHarness]:
        """Split this harness into ``workers`` harnesses, one per worker of a job rescaled
        from one worker to ``workers`` (the placement a live rescale computes: balanced, with
        the fewest moves), each holding its key groups' state and timers, the watermark and
        the clock. Each refuses keys of the key groups it does not own. This harness is left
        as it was.

        Raises:
            HarnessError: ``workers`` is not an int >= 1, or this harness does not own every
                key group (it came from a repartition itself).
        """
        if type(workers) is not int or workers < 1:
            raise HarnessError(f"repartition takes a worker count >= 1; got {workers!r}")
        if len(self._owned) != self.num_key_groups:
            raise HarnessError(
                "repartition a harness that owns every key group; this one owns "
                f"{len(self._owned)} of {self.num_key_groups} (it is worker {self._worker} of "
                "a repartition)"
            )
        one = Placement(0, (0,), (0,) * self.num_key_groups, ())
        placement = one.rescaled(range(workers))
        data = self._data()
        parts = []
        for worker in range(workers):
            part = KeyedHarness.__new__(KeyedHarness)
            part._setup(
                self._op,
                self.num_key_groups,
                self.event_time,
                self.clock.now(),
                placement.groups_of(worker),
                worker,
            )
            part._restore(data)
            parts.append(part)
        return parts

    @property
    def key_groups(self) -> list[int]:
        """The key groups this harness owns (all of them, unless it came from a
        :meth:`repartition`)."""
        return sorted(self._owned)

    # -- internals -----------------------------------------------------------------------------

    def _data(self) -> dict[str, Any]:
        groups: dict[int, list[list[Any]]] = {}
        for key_group, group in sorted(self._groups.items()):
            group.store.flush()
            entries = [[name, key, value] for name, key, value in group.store.export_entries()]
            if entries:
                groups[key_group] = entries
        return {
            "format": _FORMAT,
            "operator": self.operator,
            "states": list(self._names),
            "num_key_groups": self.num_key_groups,
            "event_time": self.event_time,
            "watermark": self._watermark,
            "now": self.clock.now(),
            "groups": groups,
        }

    def _load(self, snapshot: bytes) -> None:
        try:
            data = cbor2.loads(snapshot)
        except Exception:
            data = None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise HarnessError(
                "not a KeyedHarness snapshot: pass the bytes KeyedHarness.snapshot() returned"
            )
        mine = (self.operator, list(self._names), self.num_key_groups, self.event_time)
        theirs = (data["operator"], data["states"], data["num_key_groups"], data["event_time"])
        if mine != theirs:
            raise HarnessError(
                f"this snapshot is of operator {theirs[0]!r} with states {theirs[1]!r}, "
                f"{theirs[2]} key groups, event_time={theirs[3]}; this harness runs "
                f"{mine[0]!r} with states {mine[1]!r}, {mine[2]} key groups, "
                f"event_time={mine[3]}"
            )
        self.clock = VirtualClock(data["now"])
        self._restore(data)

    def _restore(self, data: dict[str, Any]) -> None:
        for key_group, entries in data["groups"].items():
            if key_group in self._owned:
                store = self._backend.open_store(self.operator, key_group, self._op.states)
                store.import_entries((name, key, value) for name, key, value in entries)
                self._groups[key_group] = _Group(self._op, store, key_group, self.clock)
        watermark = data["watermark"]
        if watermark > MIN_WATERMARK:
            self._watermark = watermark
            for group in self._groups.values():
                group.time.combiner.update(_CHANNEL, watermark)

    def _group(self, key_group: int) -> _Group:
        group = self._groups.get(key_group)
        if group is None:
            store = self._backend.open_store(self.operator, key_group, self._op.states)
            group = self._groups[key_group] = _Group(self._op, store, key_group, self.clock)
            if self._watermark > MIN_WATERMARK:
                group.time.combiner.update(_CHANNEL, self._watermark)
        return group

    def _sorted_groups(self) -> list[_Group]:
        return [self._groups[key_group] for key_group in sorted(self._groups)]

    def _owner_of(self, key: Any) -> int:
        key_group = key_group_of(key, self.num_key_groups)
        if key_group not in self._owned:
            raise HarnessError(
                f"key {key!r} is in key group {key_group}, which this harness (worker "
                f"{self._worker} of a repartition) does not own: use the harness whose "
                "key_groups hold it"
            )
        return key_group

    def _check_state(self, name: str) -> None:
        if name not in self._names:
            declared = ", ".join(n for n in self._names if not n.startswith("_shoal"))
            raise HarnessError(
                f"operator {self.operator!r} declares no state {name!r}; it declares: "
                f"{declared or 'no states'}"
            )

    def _raise_new(self, before: int) -> None:
        """With :attr:`raise_errors`, raise the first error since ``before`` (not a late
        record): a test that forgets to look at the dead letters still fails."""
        if not self.raise_errors:
            return
        for letter in self._dead.pending[before:]:
            if letter.error_type != "LateRecordError":
                raise HarnessError(
                    f"operator {letter.operator!r} raised {letter.error_type}: {letter.error} "
                    f"(key {letter.key!r}, record {letter.record!r}); set "
                    "harness.raise_errors = False to let errors go to harness.dead_letters "
                    "as a job does"
                )

    def _fire(self, group: _Group, watermark: float | None) -> None:
        values, _offsets, stamps = group.runner.fire_timers(watermark, _SPLIT, self._dead)
        self._collect(values, stamps)

    async def _afire(self, group: _Group, watermark: float | None) -> None:
        values, _offsets, stamps = await group.runner.fire_timers_async(
            watermark, _SPLIT, self._dead
        )
        self._collect(values, stamps)

    def _collect(self, values: list[Any], stamps: list[Any] | None) -> None:
        (values, _offsets, stamps), sides = split_sides(values, [0] * len(values), stamps)
        for tag, (side_values, _side_offsets, side_stamps) in sides.items():
            into = self._sides.setdefault(tag, [])
            if not self.event_time or side_stamps is None:
                into.extend(Emitted(value, None) for value in side_values)
            else:
                into.extend(map(Emitted, side_values, side_stamps))
        if not self.event_time or stamps is None:
            self._output.extend(Emitted(value, None) for value in values)
        else:
            self._output.extend(map(Emitted, values, stamps))

    def __repr__(self) -> str:
        return (
            f"<KeyedHarness {self.operator!r} key groups {len(self._owned)}/"
            f"{self.num_key_groups} watermark={self._watermark!r} now={self.clock.now()!r}>"
        )


def _pick(flow: Flow, operator: str | None) -> KeyedOp:
    ops = flow.keyed_operators()
    if not ops:
        raise HarnessError(f"flow {flow.name!r} has no keyed operator to test")
    if operator is None:
        if len(ops) > 1:
            names = ", ".join(op.name for op in ops)
            raise HarnessError(
                f"flow {flow.name!r} has several keyed operators ({names}): pass operator=<name>"
            )
        return ops[0]
    for op in ops:
        if op.name == operator:
            return op
    names = ", ".join(op.name for op in ops)
    raise HarnessError(f"flow {flow.name!r} has no keyed operator {operator!r}; it has: {names}")
