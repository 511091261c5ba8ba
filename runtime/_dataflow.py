"""The dataflow API: sources -> map / filter / flat_map -> key_by -> keyed operator -> sinks.

A :class:`Flow` is a description, not a running thing: the engine compiles it into stages and
runs the same description in one event loop or across worker processes. Flows are linear
pipelines; a stream is extended once (branching arrives with a later release).

A flow may read several inputs (``flow.source`` called again): each input has its own
stateless chain, then the inputs merge once, before the first keyed operator, with
``a.union(b, ...)`` or ``a.connect(b)`` (co-process functions and interval joins, see
``_joins.py``); after the merge the flow is linear again. A connect tags every record with its
input's index where the input's chain ends; the keyed operator dispatches on the tag, so the
state, timer and checkpoint machinery sees one ordinary keyed operator.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.storage import StateSpec, ValueStateSpec

from ._joins import AsyncCoProcess, CoProcess, IntervalJoin, TaggedKey, join_specs
from ._keys import DEFAULT_KEY_GROUPS, check_num_key_groups
from ._sinks import Sink
from ._sources import Source, UnionSource
from ._timers import timers_spec
from ._watermarks import (
    Monotonous,
    WatermarkStrategy,
    check_timestamp_assigner,
)
from ._windows import Session, Sliding, Tumbling, WindowSpec, windows_spec

__all__ = (
    "DEFAULT_CONCURRENCY",
    "AggregateOp",
    "AsyncFilterOp",
    "AsyncMapOp",
    "ConnectedKeyedStream",
    "ConnectedStreams",
    "CountOp",
    "EventTime",
    "FilterOp",
    "FlatMapOp",
    "Flow",
    "FlowInput",
    "KeyedStream",
    "MapOp",
    "ProcessOp",
    "ReduceOp",
    "SinkOp",
    "Stream",
    "WindowOp",
    "WindowedStream",
)

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True, slots=True)
class MapOp:
    fn: Callable[[Any], Any]
    name: str = "map"


@dataclass(frozen=True, slots=True)
class FilterOp:
    fn: Callable[[Any], Any]
    name: str = "filter"


@dataclass(frozen=True, slots=True)
class AsyncMapOp:
    """``map`` with an ``async def`` function: up to ``concurrency`` calls of a batch at
    once, results in input order."""

    fn: Callable[[Any], Awaitable[Any]]
    concurrency: int
    name: str = "map"


@dataclass(frozen=True, slots=True)
class AsyncFilterOp:
    """``filter`` with an ``async def`` predicate (as :class:`AsyncMapOp`)."""

    fn: Callable[[Any], Awaitable[Any]]
    concurrency: int
    name: str = "filter"


@dataclass(frozen=True, slots=True)
class FlatMapOp:
    fn: Callable[[Any], Iterable[Any]]
    name: str = "flat_map"


StatelessOp = MapOp | FilterOp | FlatMapOp | AsyncMapOp | AsyncFilterOp


@dataclass(frozen=True, slots=True)
class ProcessOp:
    """A keyed process function ``fn(key, value, ctx)`` with declared states."""

    name: str
    key_fn: Callable[[Any], Any]
    fn: Callable[[Any, Any, Any], Any]
    states: tuple[StateSpec, ...]
    on_timer: Callable[[Any, Any, Any], Any] | None = None
    #: An ``async def`` function: how many keys of a batch run at once (None: a plain one).
    concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class ReduceOp:
    """Keyed running reduce: emits ``(key, accumulator)`` for every record.

    The accumulator is kept in the ValueState ``value``.
    """

    name: str
    key_fn: Callable[[Any], Any]
    fn: Callable[[Any, Any], Any]
    states: tuple[StateSpec, ...]


@dataclass(frozen=True, slots=True)
class AggregateOp:
    """Keyed running aggregate: emits ``(key, result(accumulator))`` for every record.

    The accumulator (not its result) is kept in the ValueState ``value``.
    """

    name: str
    key_fn: Callable[[Any], Any]
    create: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    result: Callable[[Any], Any]
    states: tuple[StateSpec, ...]


@dataclass(frozen=True, slots=True)
class CountOp:
    """Keyed running count: emits ``(key, n)`` for every record; ``n`` is kept in ``value``."""

    name: str
    key_fn: Callable[[Any], Any]
    states: tuple[StateSpec, ...]
    columnar: bool = True  # False: record by record (the same results; for comparison)


@dataclass(frozen=True, slots=True)
class WindowOp:
    """Keyed event-time windows folded incrementally; emits ``(key, start, end, value)`` when a
    window fires (see ``_windows.py``). Its windows and timers are internal states."""

    name: str
    key_fn: Callable[[Any], Any]
    window: WindowSpec
    states: tuple[StateSpec, ...]


KeyedOp = ProcessOp | ReduceOp | AggregateOp | CountOp | WindowOp
_STATELESS = (MapOp, FilterOp, FlatMapOp, AsyncMapOp, AsyncFilterOp)


@dataclass(frozen=True, slots=True)
class EventTime:
    """A flow's event time: how records are stamped and how splits make watermarks."""

    timestamps: Callable[[Any], Any]
    watermarks: WatermarkStrategy
    idle_timeout: float | None


@dataclass(frozen=True, slots=True)
class SinkOp:
    sink: Sink
    name: str = "sink"


Op = StatelessOp | KeyedOp | SinkOp


@dataclass(slots=True)
class _Lane:
    """One linear run of operations: an input's own chain, or the flow after the merge."""

    ops: list[Op] = field(default_factory=list)
    tail: object | None = None  # the stream that may still be extended
    #: The input this lane reads (None: the merged lane).
    input: int | None = None
    #: Merged into the merged lane: it may no longer be extended.
    merged: bool = False


@dataclass(slots=True)
class _Input:
    name: str
    source: Source
    time: EventTime | None
    lane: _Lane
    tag: int | None = None  # set by connect: the index records of this input are tagged with


@dataclass(frozen=True, slots=True)
class FlowInput:
    """One input of a flow, as the plan compiles it.

    Attributes:
        name: the input's name (split ids of a flow with several inputs are
            ``"<name>/<split>"``).
        source: where its records come from.
        time: its event time (None: no timestamps).
        chain: its own stateless operations, before the merge.
        tag: connect's input index, which its records are tagged with (``(tag, record)``)
            where its chain ends; None for a union's inputs or a single input.
    """

    name: str
    source: Source
    time: EventTime | None
    chain: tuple[StatelessOp, ...]
    tag: int | None


@dataclass(slots=True)
class _Graph:
    inputs: list[_Input] = field(default_factory=list)
    merged: _Lane | None = None  # the lane after the merge point (None: not merged)

    @property
    def time(self) -> EventTime | None:
        """The flow's event time (every merged input has one, or none has)."""
        return self.inputs[0].time if self.inputs else None

    def main(self) -> _Lane | None:
        """The lane whose operations the plan's stages are made of."""
        if self.merged is not None:
            return self.merged
        return self.inputs[0].lane if len(self.inputs) == 1 else None


#: How many calls of an ``async def`` user function a batch runs at once by default (as
#: Flink's async I/O capacity).
DEFAULT_CONCURRENCY = 100


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - a callable object's __call__ may be async
    )


def _check_callable(fn: object, what: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what} must be callable; got {type(fn).__name__}")
    if _is_async(fn):
        raise TypeError(
            f"{what} must be a plain function: an async one runs only in map, filter and "
            "process (got an async def)"
        )


def _check_concurrency(fn: object, concurrency: object, what: str) -> int | None:
    """The bound an ``async def`` ``fn`` runs with (None for a plain function)."""
    if not callable(fn):
        raise TypeError(f"{what} must be callable; got {type(fn).__name__}")
    if not _is_async(fn):
        if concurrency is not None:
            raise TypeError(
                f"{what} with concurrency= must be an async function (async def); "
                f"got the plain function {getattr(fn, '__name__', fn)!r}"
            )
        return None
    if concurrency is None:
        return DEFAULT_CONCURRENCY
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1; got {concurrency!r}")
    return concurrency


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{what} must be a non-empty name of letters, digits, '_', '.' or '-'; got {name!r}"
        )
    return name


class Flow:
    """A dataflow description.

    Args:
        name: the job's name (used for logs, metrics and the state directory).
        num_key_groups: how many key groups keyed state is split into (Flink's max
            parallelism). Fixed for the life of the job's state: it is part of the key-group
            contract. Default 128.

    Example::

        flow = Flow("clicks")
        (flow.source(ClickstreamSource(events=10_000))
             .map(lambda click: (click[0], 1))
             .key_by(lambda pair: pair[0])
             .reduce(lambda a, b: (a[0], a[1] + b[1]), name="clicks")
             .sink(CollectingSink()))
    """

    def __init__(self, name: str = "flow", *, num_key_groups: int = DEFAULT_KEY_GROUPS) -> None:
        self.name = _check_name(name, "Flow name")
        self.num_key_groups = check_num_key_groups(num_key_groups)
        self._graph = _Graph()

    def source(
        self,
        source: Source,
        *,
        timestamps: Callable[[Any], Any] | None = None,
        watermarks: WatermarkStrategy | None = None,
        idle_timeout: float | None = None,
        name: str | None = None,
    ) -> Stream:
        """Add an input to the flow: ``source``'s records, as a :class:`Stream`.

        A flow may have several inputs: each may run its own stateless chain (``map``,
        ``filter``, ``flat_map``), then they merge before the first keyed operator, in one
        call: ``a.union(b, ...)`` or ``a.connect(b)`` (see ``docs/guides/inputs.md``). The
        split ids of a flow with several inputs are ``"<name>/<split>"``; a flow with one
        input keeps its source's split ids (its checkpoints and savepoints restore as before).

        Args:
            source: where records come from.
            timestamps: the event-time assigner, ``record -> int | float``, run on every
                record the source reads (before the stateless chain). A record for which it
                raises, or returns anything else, is a dead letter. Without it the flow has no
                event time (no windows, no event-time timers before the end of input).
            watermarks: how each split turns timestamps into watermarks:
                ``BoundedOutOfOrderness(delay)`` (default ``Monotonous()``), or any object
                with ``create_generator()`` (see ``WatermarkStrategy``).
            idle_timeout: seconds of processing time after which a split that reads nothing
                stops holding the watermark back (``None``: never). Checked between reads.
            name: the input's name, unique in the flow (default: its index, ``"0"``, ``"1"``,
                ...); it prefixes its split ids when the flow has several inputs.

        Each input has its own event time (its assigner and watermark strategy, one watermark
        generator per split); a keyed operator's watermark is the minimum over every split of
        every input. Inputs with event time and inputs without cannot be merged.
        """
        graph = self._graph
        label = str(len(graph.inputs)) if name is None else _check_name(name, "input name")
        if any(existing.name == label for existing in graph.inputs):
            raise ValueError(
                f"input name {label!r} is already used in flow {self.name!r}; pick another"
            )
        if graph.merged is not None:
            raise ValueError(
                f"flow {self.name!r} already merged its inputs; add every source before the "
                "union or connect that merges them"
            )
        if len(graph.inputs) == 1 and any(
            not isinstance(op, _STATELESS) for op in graph.inputs[0].lane.ops
        ):
            raise ValueError(
                f"flow {self.name!r} already has a keyed operator or sink after its input; "
                "inputs merge before the first keyed operator: add every source first, then "
                "union or connect them"
            )
        for attribute in ("splits", "open_split"):
            if not callable(getattr(source, attribute, None)):
                raise TypeError(
                    f"source must provide splits() and open_split(); got {type(source).__name__}"
                )
        time: EventTime | None = None
        if timestamps is None:
            if watermarks is not None or idle_timeout is not None:
                raise ValueError(
                    "watermarks and idle_timeout need event time: pass timestamps=<function "
                    "record -> timestamp> too"
                )
        else:
            _check_callable(timestamps, "timestamps")
            check_timestamp_assigner(timestamps)
            strategy = Monotonous() if watermarks is None else watermarks
            if not callable(getattr(strategy, "create_generator", None)):
                raise TypeError(
                    "watermarks must be a watermark strategy (BoundedOutOfOrderness(delay), "
                    f"Monotonous(), or an object with create_generator()); got {strategy!r}"
                )
            if idle_timeout is not None and (
                isinstance(idle_timeout, bool)
                or not isinstance(idle_timeout, int | float)
                or not idle_timeout > 0
            ):
                raise ValueError(f"idle_timeout must be seconds > 0 or None; got {idle_timeout!r}")
            time = EventTime(timestamps, strategy, idle_timeout)
        lane = _Lane(input=len(graph.inputs))
        graph.inputs.append(_Input(label, source, time, lane))
        return Stream(graph, lane)

    @property
    def event_time(self) -> EventTime | None:
        """The flow's event time (None: the source was given no timestamps); with several
        inputs, the first input's (each input's own is in :attr:`inputs`)."""
        return self._graph.time

    @property
    def inputs(self) -> tuple[FlowInput, ...]:
        """The flow's inputs, in the order they were added."""
        return tuple(
            FlowInput(
                item.name,
                item.source,
                item.time,
                tuple(op for op in item.lane.ops if isinstance(op, _STATELESS)),
                item.tag,
            )
            for item in self._graph.inputs
        )

    def get_source(self) -> Source:
        """The flow's source (ValueError if none was set); with several inputs, one
        :class:`~._sources.UnionSource` over all of them (split ids ``"<name>/<split>"``)."""
        inputs = self._graph.inputs
        if not inputs:
            raise ValueError(f"Flow {self.name!r} has no source: call flow.source(...) first")
        if len(inputs) == 1:
            return inputs[0].source
        return UnionSource([(item.name, item.source) for item in inputs])

    @property
    def operations(self) -> tuple[StatelessOp | KeyedOp | SinkOp, ...]:
        """The operations in pipeline order (with several inputs: those after the merge)."""
        main = self._graph.main()
        return () if main is None else tuple(main.ops)

    def keyed_operators(self) -> tuple[KeyedOp, ...]:
        """The keyed operators, in pipeline order."""
        return tuple(op for op in self.operations if not isinstance(op, (*_STATELESS, SinkOp)))

    def validate(self) -> None:
        """Raise ValueError unless the flow has a source, merges all its inputs and ends in a
        sink."""
        self.get_source()
        graph = self._graph
        if len(graph.inputs) > 1:
            if graph.merged is None:
                names = ", ".join(repr(item.name) for item in graph.inputs)
                raise ValueError(
                    f"flow {self.name!r} has several inputs ({names}) that are never merged: "
                    "merge them with a.union(b, ...) or a.connect(b) before the first keyed "
                    "operator"
                )
            loose = [item.name for item in graph.inputs if not item.lane.merged]
            if loose:
                raise ValueError(
                    f"input {loose[0]!r} of flow {self.name!r} is not merged with the others: "
                    "merge every input in the one union or connect (a.union(b, c))"
                )
        ops = self.operations
        if not ops or not isinstance(ops[-1], SinkOp):
            raise ValueError(f"Flow {self.name!r} does not end in a sink: add .sink(...)")


class _Extendable:
    __slots__ = ("_graph", "_lane")

    def __init__(self, graph: _Graph, lane: _Lane) -> None:
        self._graph = graph
        self._lane = lane
        lane.tail = self

    def _check_tail(self) -> None:
        if self._lane.merged:
            raise ValueError(
                "this stream was merged (union or connect): extend the stream the merge returned"
            )
        if self._lane.tail is not self:
            raise ValueError(
                "this stream was already extended; flows are linear pipelines "
                "(extend the stream returned by the last call; fan-out is not supported yet)"
            )

    def _append(self, op: StatelessOp | KeyedOp | SinkOp) -> None:
        self._check_tail()
        lane = self._lane
        if lane.ops and isinstance(lane.ops[-1], SinkOp):
            raise ValueError("a flow ends at its sink; nothing can follow .sink(...)")
        if (
            lane.input is not None
            and len(self._graph.inputs) > 1
            and not isinstance(op, _STATELESS)
        ):
            raise ValueError(
                "a flow with several inputs merges them before its first keyed operator or "
                "sink: merge them first with a.union(b, ...) or a.connect(b)"
            )
        lane.ops.append(op)

    def _unique(self, name: str) -> str:
        _check_name(name, "operator name")
        taken = {op.name for lane in self._graph_lanes() for op in lane.ops}
        if name in taken:
            raise ValueError(f"operator name {name!r} is already used in this flow; pick another")
        return name

    def _graph_lanes(self) -> list[_Lane]:
        graph = self._graph
        lanes = [item.lane for item in graph.inputs]
        return lanes if graph.merged is None else [*lanes, graph.merged]

    def _input_lane(self, what: str) -> _Lane:
        """This stream's lane, checked to be an unmerged input's that ``what`` may merge."""
        self._check_tail()
        if self._lane.input is None:
            raise ValueError(
                f"{what} merges a flow's inputs once, before the first keyed operator: this "
                "stream is already merged (merge every input in one call: a.union(b, c))"
            )
        return self._lane

    def _connect(self, other: _Extendable, what: str) -> _Lane:
        """Merge this input and ``other``'s, tagging their records ``(0, x)`` / ``(1, y)``."""
        merged = self._merge([other], what)
        inputs = self._graph.inputs
        inputs[self._lane.input or 0].tag = 0
        inputs[other._lane.input or 0].tag = 1
        return merged

    def _merge(self, others: Sequence[_Extendable], what: str) -> _Lane:
        """Merge this input's lane with ``others``' into the flow's merged lane."""
        lanes = [self._input_lane(what)]
        for other in others:
            if not isinstance(other, _Extendable) or other._graph is not self._graph:
                raise TypeError(
                    f"{what} takes streams of the same flow (flow.source(...) of the same Flow); "
                    f"got {other!r}"
                )
            lane = other._input_lane(what)
            if any(lane is seen for seen in lanes):
                raise ValueError(
                    f"{what} takes streams of different inputs; input "
                    f"{self._graph.inputs[lane.input or 0].name!r} is given twice"
                )
            lanes.append(lane)
        inputs = [self._graph.inputs[lane.input or 0] for lane in lanes]
        timed = [item.time is not None for item in inputs]
        if any(timed) and not all(timed):
            names = ", ".join(
                repr(item.name) for item, t in zip(inputs, timed, strict=True) if not t
            )
            raise ValueError(
                f"{what} cannot merge inputs with event time and inputs without: give input "
                f"{names} timestamps=<function record -> timestamp> too"
            )
        for lane in lanes:
            lane.merged = True
        merged = self._graph.merged = _Lane()
        return merged


class Stream(_Extendable):
    """An unkeyed stream of records."""

    __slots__ = ()

    def map(self, fn: Callable[[Any], Any], *, concurrency: int | None = None) -> Stream:
        """Transform every record with ``fn``.

        ``fn`` may be an ``async def`` function: then up to ``concurrency`` calls of a batch
        run at once (default 100) and the results keep the input order; the next batch,
        barrier or watermark waits for them all.
        """
        bound = _check_concurrency(fn, concurrency, "map function")
        self._append(MapOp(fn) if bound is None else AsyncMapOp(fn, bound))
        return Stream(self._graph, self._lane)

    def filter(self, fn: Callable[[Any], Any], *, concurrency: int | None = None) -> Stream:
        """Keep the records for which ``fn`` returns a true value (``fn`` may be ``async``,
        as for :meth:`map`)."""
        bound = _check_concurrency(fn, concurrency, "filter predicate")
        self._append(FilterOp(fn) if bound is None else AsyncFilterOp(fn, bound))
        return Stream(self._graph, self._lane)

    def flat_map(self, fn: Callable[[Any], Iterable[Any]]) -> Stream:
        """Replace every record with the records of the iterable ``fn`` returns."""
        _check_callable(fn, "flat_map function")
        self._append(FlatMapOp(fn))
        return Stream(self._graph, self._lane)

    def union(self, *others: Stream) -> Stream:
        """Merge this input with ``others`` (other inputs of the same flow): one stream of
        every input's records, in no particular order between inputs.

        A flow merges its inputs once, before its first keyed operator: pass every other
        input here (``a.union(b, c)``). Their event time must agree: all inputs have
        timestamps or none has; the merged watermark is the minimum over every split of every
        input.
        """
        if not others:
            raise ValueError("union needs at least one other stream: a.union(b, ...)")
        for other in others:
            if not isinstance(other, Stream):
                raise TypeError(
                    f"union takes streams (flow.source(...) and its map/filter/flat_map); got "
                    f"{type(other).__name__}"
                )
        return Stream(self._graph, self._merge(others, "union"))

    def connect(self, other: Stream) -> ConnectedStreams:
        """Connect this input with ``other`` (another input of the same flow), keeping apart
        which record came from which: then ``.key_by(key_a, key_b)`` and a co-process
        function or an interval join (see :class:`ConnectedKeyedStream`)."""
        if not isinstance(other, Stream):
            raise TypeError(
                f"connect takes a stream (flow.source(...) and its map/filter/flat_map); got "
                f"{type(other).__name__}"
            )
        return ConnectedStreams(self._graph, self._connect(other, "connect"))

    def key_by(self, fn: Callable[[Any], Any]) -> KeyedStream:
        """Partition the stream by ``fn(record)``: a str, bytes, int or tuple of those."""
        _check_callable(fn, "key function")
        self._check_tail()
        return KeyedStream(self._graph, self._lane, fn)

    def sink(self, sink: Sink) -> None:
        """End the flow in ``sink``."""
        if not callable(getattr(sink, "open_partition", None)):
            raise TypeError(f"sink must provide open_partition(); got {type(sink).__name__}")
        self._append(SinkOp(sink))


class KeyedStream(_Extendable):
    """A stream partitioned by key: every record of a key reaches the same key-group actor."""

    __slots__ = ("_key_fn",)

    def __init__(self, graph: _Graph, lane: _Lane, key_fn: Callable[[Any], Any]) -> None:
        super().__init__(graph, lane)
        self._key_fn = key_fn

    def process(
        self,
        fn: Callable[[Any, Any, Any], Any],
        *,
        states: Sequence[StateSpec] = (),
        on_timer: Callable[[Any, Any, Any], Any] | None = None,
        name: str = "process",
        concurrency: int | None = None,
    ) -> Stream:
        """Run ``fn(key, value, ctx)`` for every record, with the declared keyed states.

        ``ctx.state.<name>`` is the state handle scoped to the current key, ``ctx.emit(x)``
        sends ``x`` downstream, ``ctx.key`` and ``ctx.key_group`` say where you are,
        ``ctx.timestamp`` is the record's event time (None without event time). With
        ``on_timer``, ``ctx.timers`` registers timers for the current key and
        ``on_timer(key, ts, ctx)`` runs when one fires (see ``_timers.py``). ``fn`` may be an
        object with a ``process`` method (and optionally ``on_timer`` and ``states``) instead.

        ``fn`` (and ``on_timer``) may be ``async def`` functions: a key's records then run one
        after the other in arrival order, and up to ``concurrency`` keys of a batch at once
        (default 100); ``ctx.state`` is the record's key's across every ``await``. The next
        batch, barrier, watermark or timer waits for every record before it (see
        ``_async_ops.py``).
        """
        self._append(
            _process_op(self._unique(name), self._key_fn, fn, states, on_timer, concurrency)
        )
        return Stream(self._graph, self._lane)

    def connect(self, other: KeyedStream) -> ConnectedKeyedStream:
        """Connect this keyed input with ``other`` (another keyed input of the same flow): the
        same as ``a.connect(b).key_by(key_a, key_b)``."""
        if not isinstance(other, KeyedStream):
            raise TypeError(
                f"connect takes a keyed stream (b.key_by(...)); got {type(other).__name__}"
            )
        merged = self._connect(other, "connect")
        return ConnectedKeyedStream(self._graph, merged, (self._key_fn, other._key_fn))

    def interval_join(
        self,
        other: KeyedStream,
        lower: float,
        upper: float,
        fn: Callable[[Any, Any], Any] | None = None,
        *,
        name: str = "interval_join",
    ) -> Stream:
        """Join this keyed input with ``other`` on key and event time: the same as
        ``a.connect(b).key_by(key_a, key_b).interval_join(lower, upper, fn)`` (see
        :meth:`ConnectedKeyedStream.interval_join`)."""
        return self.connect(other).interval_join(lower, upper, fn, name=name)

    def window(
        self,
        assigner: Tumbling | Sliding | Session,
        *,
        allowed_lateness: float = 0,
    ) -> WindowedStream:
        """Group each key's records into event-time windows (then ``reduce`` / ``aggregate``
        / ``count``).

        Args:
            assigner: ``Tumbling(size)``, ``Sliding(size, slide)`` or ``Session(gap)``, in
                timestamp units; windows are half-open ``[start, end)``, aligned to 0.
            allowed_lateness: how long past a window's end (in watermark terms) its state is
                kept; a late record in that time fires it again with the updated value.
                Records later than that are dead letters (``LateRecordError``).
        """
        if self._graph.time is None:
            raise ValueError(
                "windows need event time: give the source a timestamp assigner, "
                "flow.source(source, timestamps=lambda record: ...)"
            )
        if not isinstance(assigner, Tumbling | Sliding | Session):
            raise TypeError(
                "window takes Tumbling(size), Sliding(size, slide) or Session(gap); "
                f"got {assigner!r}"
            )
        if (
            isinstance(allowed_lateness, bool)
            or not isinstance(allowed_lateness, int | float)
            or not 0 <= allowed_lateness < float("inf")
        ):
            raise ValueError(
                f"allowed_lateness must be a finite number >= 0; got {allowed_lateness!r}"
            )
        self._check_tail()
        return WindowedStream(self, assigner, allowed_lateness)

    def reduce(self, fn: Callable[[Any, Any], Any], *, name: str = "reduce") -> Stream:
        """Keep ``acc = fn(acc, value)`` per key and emit ``(key, acc)`` for every record."""
        _check_callable(fn, "reduce function")
        spec = ValueStateSpec("value")
        self._append(ReduceOp(self._unique(name), self._key_fn, fn, (spec,)))
        return Stream(self._graph, self._lane)

    def aggregate(
        self,
        create: Callable[[], Any],
        add: Callable[[Any, Any], Any],
        result: Callable[[Any], Any] | None = None,
        *,
        name: str = "aggregate",
    ) -> Stream:
        """Keep ``acc = add(acc, value)`` per key, starting at ``create()``.

        Emits ``(key, result(acc))`` for every record.
        """
        _check_callable(create, "aggregate create")
        _check_callable(add, "aggregate add")
        finish = result if result is not None else _identity
        _check_callable(finish, "aggregate result")
        spec = ValueStateSpec("value")
        self._append(AggregateOp(self._unique(name), self._key_fn, create, add, finish, (spec,)))
        return Stream(self._graph, self._lane)

    def count(self, *, name: str = "count", columnar: bool = True) -> Stream:
        """Running count per key: emits ``(key, n)`` for every record.

        A batch is counted as columns (no Python code per record; see
        ``KeyedRunner._run_count``); ``columnar=False`` counts record by record instead, with
        the same results (what the benchmark compares it with).
        """
        if not isinstance(columnar, bool):
            raise TypeError(f"columnar must be True or False; got {columnar!r}")
        spec = ValueStateSpec("value", default=0)
        self._append(CountOp(self._unique(name), self._key_fn, (spec,), columnar))
        return Stream(self._graph, self._lane)


def _process_op(
    name: str,
    key_fn: Callable[[Any], Any],
    fn: Any,
    states: Sequence[StateSpec],
    on_timer: Callable[[Any, Any, Any], Any] | None,
    concurrency: int | None,
) -> ProcessOp:
    """A checked :class:`ProcessOp` (see :meth:`KeyedStream.process`)."""
    if not callable(fn) and callable(getattr(fn, "process", None)):
        states = tuple(states) or tuple(getattr(fn, "states", ()))
        if on_timer is None and callable(getattr(fn, "on_timer", None)):
            on_timer = fn.on_timer
        fn = fn.process
    bound = _check_concurrency(fn, concurrency, "process function")
    specs = tuple(states)
    for spec in specs:
        if not hasattr(spec, "name"):
            raise TypeError(f"states must be state specs (ValueStateSpec, ...); got {spec!r}")
        if spec.name.startswith("_shoal"):
            raise ValueError(
                f"state name {spec.name!r} starts with '_shoal', which is reserved for "
                "shoal's internal states (timers, windows); pick another name"
            )
    if on_timer is not None:
        if not callable(on_timer):
            raise TypeError(f"on_timer must be callable; got {type(on_timer).__name__}")
        if _is_async(on_timer) and bound is None:
            raise TypeError("an async on_timer needs an async process function (async def) too")
        specs = (*specs, timers_spec())
    return ProcessOp(name, key_fn, fn, specs, on_timer, concurrency=bound)


def _identity(value: Any) -> Any:
    return value


def _count_add(acc: int, _value: Any) -> int:
    return acc + 1


def _add(a: Any, b: Any) -> Any:
    return a + b


def _append(acc: list[Any], value: Any) -> list[Any]:
    acc.append(value)
    return acc


def _concat(a: list[Any], b: list[Any]) -> list[Any]:
    return [*a, *b]


def _zero() -> int:
    return 0


class _First:
    """The accumulator of a windowed reduce before its first record (never stored)."""


_FIRST = _First()


def _reducer(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def add(acc: Any, value: Any) -> Any:
        return value if acc is _FIRST else fn(acc, value)

    return add


def _first() -> Any:
    return _FIRST


class WindowedStream:
    """A keyed stream cut into windows: fold each window with ``reduce``, ``aggregate`` or
    ``count``, or hand its records to ``process``; each fired window emits
    ``(key, window_start, window_end, value)``."""

    __slots__ = ("_assigner", "_keyed", "_lateness")

    def __init__(
        self, keyed: KeyedStream, assigner: Tumbling | Sliding | Session, lateness: float
    ) -> None:
        self._keyed = keyed
        self._assigner = assigner
        self._lateness = lateness

    def _finish(self, name: str, spec: WindowSpec) -> Stream:
        keyed = self._keyed
        op = WindowOp(keyed._unique(name), keyed._key_fn, spec, (windows_spec(), timers_spec()))
        keyed._append(op)
        return Stream(keyed._graph, keyed._lane)

    def reduce(self, fn: Callable[[Any, Any], Any], *, name: str = "window") -> Stream:
        """Each window's value is its records folded with ``fn(a, b)`` (the first as is)."""
        _check_callable(fn, "reduce function")
        spec = WindowSpec(self._assigner, self._lateness, _first, _reducer(fn), _identity, fn)
        return self._finish(name, spec)

    def aggregate(
        self,
        create: Callable[[], Any],
        add: Callable[[Any, Any], Any],
        result: Callable[[Any], Any] | None = None,
        *,
        merge: Callable[[Any, Any], Any] | None = None,
        name: str = "window",
    ) -> Stream:
        """Each window keeps ``acc = add(acc, value)`` from ``create()``; its value is
        ``result(acc)``. Session windows also need ``merge(acc_a, acc_b)``."""
        _check_callable(create, "aggregate create")
        _check_callable(add, "aggregate add")
        finish = result if result is not None else _identity
        _check_callable(finish, "aggregate result")
        if merge is not None:
            _check_callable(merge, "aggregate merge")
        elif isinstance(self._assigner, Session):
            raise ValueError(
                "session windows merge: aggregate over Session(...) needs "
                "merge=<function (acc, acc) -> acc>"
            )
        spec = WindowSpec(self._assigner, self._lateness, create, add, finish, merge)
        return self._finish(name, spec)

    def process(
        self,
        fn: Callable[[Any, tuple[Any, Any], list[Any]], Any],
        *,
        name: str = "window",
    ) -> Stream:
        """Each window's value is ``fn(key, (start, end), records)``, called when it fires
        with every record of the window (in arrival order; a merged session's parts in the
        order they merged). The window keeps its records, not an accumulator: use ``reduce``
        / ``aggregate`` / ``count`` when a fold will do. A ``fn`` that raises sends the
        window's records to the dead letters (operator ``<name>.process``)."""
        _check_callable(fn, "window process function")
        spec = WindowSpec(
            self._assigner, self._lateness, list, _append, _identity, _concat, process=fn
        )
        return self._finish(name, spec)

    def count(self, *, name: str = "window") -> Stream:
        """Each window's value is how many records it holds."""
        spec = WindowSpec(
            self._assigner, self._lateness, _zero, _count_add, _identity, _add, count=True
        )
        return self._finish(name, spec)


class ConnectedStreams(_Extendable):
    """Two connected inputs whose records stay apart: key them with ``key_by``."""

    __slots__ = ()

    def key_by(
        self, key_a: Callable[[Any], Any], key_b: Callable[[Any], Any]
    ) -> ConnectedKeyedStream:
        """Key the first input's records with ``key_a`` and the second's with ``key_b``; a
        key of one is the same key of the other when the two are equal."""
        _check_callable(key_a, "key function")
        _check_callable(key_b, "key function")
        self._check_tail()
        return ConnectedKeyedStream(self._graph, self._lane, (key_a, key_b))


class ConnectedKeyedStream(_Extendable):
    """Two keyed inputs feeding one keyed operator that shares each key's state and timers."""

    __slots__ = ("_key_fns",)

    def __init__(
        self, graph: _Graph, lane: _Lane, key_fns: tuple[Callable[[Any], Any], ...]
    ) -> None:
        super().__init__(graph, lane)
        self._key_fns = key_fns

    def process(
        self,
        fn_a: Callable[[Any, Any, Any], Any],
        fn_b: Callable[[Any, Any, Any], Any],
        *,
        states: Sequence[StateSpec] = (),
        on_timer: Callable[[Any, Any, Any], Any] | None = None,
        name: str = "co_process",
        concurrency: int | None = None,
    ) -> Stream:
        """A co-process function: ``fn_a(key, value, ctx)`` for the first input's records,
        ``fn_b(key, value, ctx)`` for the second's, over the same keyed ``states`` and timers
        (``on_timer(key, ts, ctx)``), as Flink's KeyedCoProcessFunction. ``ctx`` is
        :meth:`KeyedStream.process`'s. Both functions are plain, or both ``async def``.

        Records of both inputs reach a key in the order they arrive at its key group; across
        inputs there is no other order (use timers or event time to wait for the other side).
        """
        for fn, what in ((fn_a, "fn_a"), (fn_b, "fn_b")):
            if not callable(fn):
                raise TypeError(f"co-process {what} must be callable; got {type(fn).__name__}")
        if _is_async(fn_a) != _is_async(fn_b):
            raise TypeError(
                "co-process fn_a and fn_b must both be plain functions or both async def; got "
                "one of each"
            )
        dispatch: Any = (AsyncCoProcess if _is_async(fn_a) else CoProcess)((fn_a, fn_b))
        op = _process_op(
            self._unique(name), TaggedKey(self._key_fns), dispatch, states, on_timer, concurrency
        )
        self._append(op)
        return Stream(self._graph, self._lane)

    def interval_join(
        self,
        lower: float,
        upper: float,
        fn: Callable[[Any, Any], Any] | None = None,
        *,
        name: str = "interval_join",
    ) -> Stream:
        """Emit ``fn(x, y)`` (default ``(x, y)``) for every ``x`` of the first input and ``y``
        of the second with the same key and ``x.ts + lower <= y.ts <= x.ts + upper``.

        Event time only. Each side's records are kept (in keyed MapState) until the watermark
        passes what they can still match, then removed by event-time timers; a record behind
        the watermark is a dead letter (``LateRecordError``), never silently dropped. See
        ``_joins.py``.
        """
        if self._graph.time is None:
            raise ValueError(
                "interval_join needs event time: give both inputs a timestamp assigner, "
                "flow.source(source, timestamps=lambda record: ...)"
            )
        for bound, what in ((lower, "lower"), (upper, "upper")):
            if (
                isinstance(bound, bool)
                or not isinstance(bound, int | float)
                or not -math.inf < bound < math.inf
            ):
                raise ValueError(f"interval_join {what} must be a finite number; got {bound!r}")
        if lower > upper:
            raise ValueError(
                f"interval_join needs lower <= upper; got lower={lower!r}, upper={upper!r}"
            )
        pair = _pair if fn is None else fn
        _check_callable(pair, "interval_join fn")
        join = IntervalJoin(lower, upper, pair)
        specs = (*join_specs(), timers_spec())
        op = ProcessOp(
            self._unique(name), TaggedKey(self._key_fns), join.process, specs, join.on_timer
        )
        self._append(op)
        return Stream(self._graph, self._lane)


def _pair(x: Any, y: Any) -> tuple[Any, Any]:
    return (x, y)
