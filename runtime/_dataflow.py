"""The dataflow API: sources -> map / filter / flat_map -> key_by -> keyed operators -> sinks.

A :class:`Flow` is a description, not a running thing: the engine compiles it into stages
(``_plan.py``) and runs the same description in one event loop or across worker processes.

A flow is a graph of nodes (:class:`_Node`), created in a topological order: inputs
(``flow.source``, any number), operations, merges and side outputs. Any stream may be extended
several times (fan-out: each extension sees every record); streams merge anywhere with
``a.union(b, ...)`` or ``a.connect(b)`` (co-process functions, interval and window joins, see
``_joins.py``); a process function's ``ctx.output(tag, value)`` feeds
``stream.side_output(tag)`` (``_outputs.py``). A connect tags every record with its side on the
edge into it; the keyed operator dispatches on the tag, so the state, timer and checkpoint
machinery sees one ordinary keyed operator. Every branch ends in a sink.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.storage import StateSpec, ValueStateSpec

from ._joins import (
    AsyncCoProcess,
    CoProcess,
    IntervalJoin,
    TaggedKey,
    WindowJoin,
    join_specs,
    window_join_specs,
)
from ._keys import DEFAULT_KEY_GROUPS, check_num_key_groups
from ._outputs import OutputTag
from ._rolling import mean_add
from ._sinks import Sink
from ._sources import Source, UnionSource
from ._timers import timers_spec
from ._watermarks import (
    BoundedOutOfOrderness,
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

    The accumulator is kept in the ValueState ``value``. ``sum``, ``min`` and ``max`` (and a
    ``reduce`` of ``operator.add``, ``min`` or ``max``) and ``mean`` are reduces too, with
    ``rolling`` set: they run a batch as columns where its values allow (see ``_rolling.py``).
    """

    name: str
    key_fn: Callable[[Any], Any]
    fn: Callable[[Any, Any], Any]
    states: tuple[StateSpec, ...]
    #: "sum", "min" or "max" when ``fn`` is ``operator.add``, ``min`` or ``max``; "mean"
    #: (``fn`` is ``_rolling.mean_add``: the state is ``[count, total]`` and the output
    #: ``total / count``); None: a user's function, run record by record.
    rolling: str | None = None
    #: Only int and float values (``sum``/``min``/``max``): any other is a dead letter. False
    #: for a ``reduce``, which folds whatever its function takes.
    numbers: bool = False
    #: What to fold of each record (``sum(value=...)``); None: the record itself.
    value_fn: Callable[[Any], Any] | None = None
    columnar: bool = True  # False: record by record (the same results; for comparison)


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


@dataclass(eq=False, slots=True)
class _Node:
    """One point of a flow's graph: an input, an operation, or where streams merge.

    Nodes are created in a topological order (a node after its parents), which is the order
    the plan numbers keyed operators in.
    """

    #: The operation (None: an input, a merge, or a side output).
    op: Op | None
    parents: tuple[_Node, ...] = ()
    #: Per parent: the index connect tags its records with (None: untagged).
    tags: tuple[int | None, ...] = ()
    #: An input node: its index in the flow.
    input: int | None = None
    #: A side output: the tag name it reads from its parent's process function.
    select: str | None = None
    #: The inputs this stream's records come from (indices), and whether they have event time.
    upstream: frozenset[int] = frozenset()
    timed: bool = False
    children: list[_Node] = field(default_factory=list)

    def describe(self) -> str:
        """What a message calls this stream."""
        if self.op is not None:
            return f"after {self.op.name!r}"
        if self.select is not None:
            return f"the side output {self.select!r}"
        return "a merge" if self.input is None else "an input"


@dataclass(slots=True)
class _Input:
    name: str
    source: Source
    time: EventTime | None
    node: _Node


@dataclass(frozen=True, slots=True)
class FlowInput:
    """One input of a flow, as the plan compiles it.

    Attributes:
        name: the input's name (split ids of a flow with several inputs are
            ``"<name>/<split>"``).
        source: where its records come from.
        time: its event time (None: no timestamps).
    """

    name: str
    source: Source
    time: EventTime | None


@dataclass(slots=True)
class _Graph:
    inputs: list[_Input] = field(default_factory=list)
    #: Every node, in creation order (a topological order).
    nodes: list[_Node] = field(default_factory=list)

    @property
    def time(self) -> EventTime | None:
        """The first input's event time."""
        return self.inputs[0].time if self.inputs else None

    def add(self, node: _Node) -> _Node:
        self.nodes.append(node)
        for parent in node.parents:
            parent.children.append(node)
        return node

    def input_names(self, indices: Iterable[int]) -> str:
        return ", ".join(repr(self.inputs[i].name) for i in sorted(indices))


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

        A flow may have several inputs, and any stream may feed several operators (fan-out):
        inputs merge wherever the flow says, with ``a.union(b, ...)`` or ``a.connect(b)``,
        before or after keyed operators (see ``docs/guides/inputs.md``). The split ids of a
        flow with several inputs are ``"<name>/<split>"``; a flow with one input keeps its
        source's split ids (its checkpoints and savepoints restore as before).

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
        generator per split); a keyed operator's watermark is the minimum over every channel
        feeding it (every split of every input upstream). Streams with event time and streams
        without cannot be merged.
        """
        graph = self._graph
        label = str(len(graph.inputs)) if name is None else _check_name(name, "input name")
        if any(existing.name == label for existing in graph.inputs):
            raise ValueError(
                f"input name {label!r} is already used in flow {self.name!r}; pick another"
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
            if isinstance(strategy, type):  # create_generator would miss its self in the worker
                fix = (
                    "Monotonous()"
                    if issubclass(strategy, Monotonous)
                    else "BoundedOutOfOrderness(delay)"
                    if issubclass(strategy, BoundedOutOfOrderness)
                    else f"{strategy.__name__}(...)"
                )
                raise TypeError(
                    f"watermarks takes a strategy, not the class {strategy.__name__}: "
                    f"watermarks={fix}"
                )
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
        index = len(graph.inputs)
        node = graph.add(
            _Node(None, input=index, upstream=frozenset({index}), timed=time is not None)
        )
        graph.inputs.append(_Input(label, source, time, node))
        return Stream(graph, node)

    @property
    def event_time(self) -> EventTime | None:
        """The flow's event time (None: the source was given no timestamps); with several
        inputs, the first input's (each input's own is in :attr:`inputs`)."""
        return self._graph.time

    @property
    def inputs(self) -> tuple[FlowInput, ...]:
        """The flow's inputs, in the order they were added."""
        return tuple(FlowInput(item.name, item.source, item.time) for item in self._graph.inputs)

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
        """Every operation of the flow, in the order they were added (a topological order)."""
        return tuple(node.op for node in self._graph.nodes if node.op is not None)

    def keyed_operators(self) -> tuple[KeyedOp, ...]:
        """The keyed operators, in the order they were added."""
        return tuple(op for op in self.operations if not isinstance(op, (*_STATELESS, SinkOp)))

    def graph(self) -> tuple[tuple[_Node, ...], tuple[_Node, ...]]:
        """Every node of the flow's graph in creation order (a topological order), and each
        input's node: what ``compile_plan`` walks."""
        graph = self._graph
        return tuple(graph.nodes), tuple(item.node for item in graph.inputs)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """The flow's sinks, in the order they were added."""
        return tuple(op.sink for op in self.operations if isinstance(op, SinkOp))

    def validate(self) -> None:
        """Raise ValueError unless the flow has a source, reads every input, and every stream
        that is not extended ends in a sink."""
        self.get_source()
        graph = self._graph
        for item in graph.inputs:
            if not item.node.children:
                raise ValueError(
                    f"input {item.name!r} of flow {self.name!r} is never used: extend it "
                    "(map, key_by, sink, ...) or merge it with another stream (a.union(b))"
                )
        ends = [node for node in graph.nodes if not node.children]
        if not any(isinstance(node.op, SinkOp) for node in ends):
            raise ValueError(f"Flow {self.name!r} does not end in a sink: add .sink(...)")
        dangling = [node for node in ends if not isinstance(node.op, SinkOp)]
        if dangling:
            raise ValueError(
                f"a stream of flow {self.name!r} ({dangling[0].describe()}) is never sunk: "
                "every branch ends in .sink(...)"
            )


class _Extendable:
    __slots__ = ("_graph", "_node")

    def __init__(self, graph: _Graph, node: _Node) -> None:
        self._graph = graph
        self._node = node

    def _append(self, op: StatelessOp | KeyedOp | SinkOp) -> _Node:
        """A new node running ``op`` on this stream; this stream may be extended again
        (fan-out: every extension sees every record)."""
        parent = self._node
        return self._graph.add(
            _Node(op, (parent,), (None,), upstream=parent.upstream, timed=parent.timed)
        )

    def _unique(self, name: str) -> str:
        _check_name(name, "operator name")
        taken = {node.op.name for node in self._graph.nodes if node.op is not None}
        if name in taken:
            raise ValueError(f"operator name {name!r} is already used in this flow; pick another")
        return name

    def _connect(self, other: _Extendable, what: str) -> _Node:
        """Merge this stream and ``other``, tagging their records ``(0, x)`` / ``(1, y)``."""
        return self._merge([other], what, tagged=True)

    def _merge(self, others: Sequence[_Extendable], what: str, *, tagged: bool = False) -> _Node:
        """A node whose records are this stream's and ``others``'."""
        nodes = [self._node]
        for other in others:
            if not isinstance(other, _Extendable) or other._graph is not self._graph:
                raise TypeError(
                    f"{what} takes streams of the same flow (flow.source(...) of the same Flow); "
                    f"got {other!r}"
                )
            if any(other._node is seen for seen in nodes):
                raise ValueError(
                    f"{what} takes different streams; one stream is given twice (to read a "
                    "stream twice, extend it twice: fan-out)"
                )
            nodes.append(other._node)
        timed = [node.timed for node in nodes]
        if any(timed) and not all(timed):
            untimed: frozenset[int] = frozenset().union(
                *(node.upstream for node in nodes if not node.timed)
            )
            raise ValueError(
                f"{what} cannot merge inputs with event time and inputs without: give input "
                f"{self._graph.input_names(untimed)} timestamps=<function record -> timestamp> "
                "too"
            )
        upstream: frozenset[int] = frozenset().union(*(node.upstream for node in nodes))
        tags = tuple(range(len(nodes))) if tagged else (None,) * len(nodes)
        return self._graph.add(_Node(None, tuple(nodes), tags, upstream=upstream, timed=all(timed)))


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
        node = self._append(MapOp(fn) if bound is None else AsyncMapOp(fn, bound))
        return Stream(self._graph, node)

    def filter(self, fn: Callable[[Any], Any], *, concurrency: int | None = None) -> Stream:
        """Keep the records for which ``fn`` returns a true value (``fn`` may be ``async``,
        as for :meth:`map`)."""
        bound = _check_concurrency(fn, concurrency, "filter predicate")
        node = self._append(FilterOp(fn) if bound is None else AsyncFilterOp(fn, bound))
        return Stream(self._graph, node)

    def flat_map(self, fn: Callable[[Any], Iterable[Any]]) -> Stream:
        """Replace every record with the records of the iterable ``fn`` returns."""
        _check_callable(fn, "flat_map function")
        node = self._append(FlatMapOp(fn))
        return Stream(self._graph, node)

    def union(self, *others: Stream) -> Stream:
        """Merge this stream with ``others`` (other streams of the same flow: inputs, or the
        output of keyed operators): one stream of every record of each, in no particular order
        between them.

        Their event time must agree: all have timestamps or none has; the watermark of the
        keyed operator after the merge is the minimum over every channel feeding it.
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
        """Connect this stream with ``other`` (another stream of the same flow: an input, or a
        keyed operator's output), keeping apart which record came from which: then
        ``.key_by(key_a, key_b)`` and a co-process function or a join (see
        :class:`ConnectedKeyedStream`)."""
        if not isinstance(other, Stream):
            raise TypeError(
                f"connect takes a stream (flow.source(...) and its map/filter/flat_map); got "
                f"{type(other).__name__}"
            )
        return ConnectedStreams(self._graph, self._connect(other, "connect"))

    def side_output(self, tag: OutputTag) -> Stream:
        """The records the process function that made this stream sent to ``tag`` with
        ``ctx.output(tag, value)``: a stream of its own, to sink or process further (each
        keeps the timestamp and source position of the record that made it).

        A value sent to a tag that no ``side_output`` reads is a dead letter
        (``UnreadOutputError``), never dropped silently.
        """
        if not isinstance(tag, OutputTag):
            raise TypeError(f"side_output takes an OutputTag('name'); got {tag!r}")
        parent = self._node
        from_process = isinstance(parent.op, ProcessOp)
        window = parent.op.window if isinstance(parent.op, WindowOp) else None
        if window is not None and window.late != tag.name:
            declared = (
                "declares no late output"
                if window.late is None
                else f"declares its late output as OutputTag({window.late!r})"
            )
            raise ValueError(
                f"side_output: this stream ({parent.describe()}) is a window's output; the "
                f"window {declared}, and OutputTag({tag.name!r}) is not declared (a window's "
                "side output is its late records: .window(..., late=OutputTag(name)))"
            )
        if not from_process and window is None:
            raise ValueError(
                "side_output reads what a process function sends with ctx.output(tag, value), "
                "or a window's late records (.window(..., late=tag)): this stream "
                f"({parent.describe()}) is neither"
            )
        node = _Node(
            None, (parent,), (None,), select=tag.name, upstream=parent.upstream, timed=parent.timed
        )
        return Stream(self._graph, self._graph.add(node))

    def key_by(self, fn: Callable[[Any], Any]) -> KeyedStream:
        """Partition the stream by ``fn(record)``: a str, bytes, int or tuple of those."""
        _check_callable(fn, "key function")
        return KeyedStream(self._graph, self._node, fn)

    def sink(self, sink: Sink) -> None:
        """End this branch of the flow in ``sink`` (a flow may have several sinks: every sink
        of one flow gathers, or none does; see ``_sinks_fan.py``)."""
        if not callable(getattr(sink, "open_partition", None)):
            raise TypeError(f"sink must provide open_partition(); got {type(sink).__name__}")
        self._append(SinkOp(sink))


class KeyedStream(_Extendable):
    """A stream partitioned by key: every record of a key reaches the same key-group actor."""

    __slots__ = ("_key_fn",)

    def __init__(self, graph: _Graph, node: _Node, key_fn: Callable[[Any], Any]) -> None:
        super().__init__(graph, node)
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
        node = self._append(
            _process_op(self._unique(name), self._key_fn, fn, states, on_timer, concurrency)
        )
        return Stream(self._graph, node)

    def connect(self, other: KeyedStream) -> ConnectedKeyedStream:
        """Connect this keyed stream with ``other`` (another keyed stream of the same flow):
        the same as ``a.connect(b).key_by(key_a, key_b)``."""
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
        """Join this keyed stream with ``other`` on key and event time: the same as
        ``a.connect(b).key_by(key_a, key_b).interval_join(lower, upper, fn)`` (see
        :meth:`ConnectedKeyedStream.interval_join`)."""
        return self.connect(other).interval_join(lower, upper, fn, name=name)

    def window_join(
        self,
        other: KeyedStream,
        assigner: Tumbling | Sliding,
        fn: Callable[[Any, Any], Any] | None = None,
        *,
        name: str = "window_join",
    ) -> Stream:
        """Join this keyed stream with ``other`` per key and event-time window: the same as
        ``a.connect(b).key_by(key_a, key_b).window_join(assigner, fn)`` (see
        :meth:`ConnectedKeyedStream.window_join`)."""
        return self.connect(other).window_join(assigner, fn, name=name)

    def window(
        self,
        assigner: Tumbling | Sliding | Session,
        *,
        allowed_lateness: float = 0,
        late: OutputTag | None = None,
    ) -> WindowedStream:
        """Group each key's records into event-time windows (then ``reduce`` / ``aggregate``
        / ``count``).

        Args:
            assigner: ``Tumbling(size)``, ``Sliding(size, slide)`` or ``Session(gap)``, in
                timestamp units; windows are half-open ``[start, end)``, aligned to 0.
            allowed_lateness: how long past a window's end (in watermark terms) its state is
                kept; a late record in that time fires it again with the updated value.
                Records later than that are dead letters (``LateRecordError``), or go to
                ``late``.
            late: the side output for records later than that: read it with
                ``.side_output(late)`` on the windowed operator's output (each record as it
                was, with its timestamp and source position). None: the dead letters.
        """
        if not self._node.timed:
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
        if late is not None and not isinstance(late, OutputTag):
            raise TypeError(f"late takes an OutputTag('name') or None; got {late!r}")
        return WindowedStream(self, assigner, allowed_lateness, None if late is None else late.name)

    def reduce(self, fn: Callable[[Any, Any], Any], *, name: str = "reduce") -> Stream:
        """Keep ``acc = fn(acc, value)`` per key and emit ``(key, acc)`` for every record.

        ``reduce(operator.add)``, ``reduce(min)`` and ``reduce(max)`` run a batch of int or
        float values as columns (see :meth:`sum`), with the same results; any other batch
        (strings, lists, a mix) runs record by record, as any other ``fn`` does.
        """
        _check_callable(fn, "reduce function")
        spec = ValueStateSpec("value")
        rolling = next((kind for kind, builtin in _ROLLING if fn is builtin), None)
        node = self._append(
            ReduceOp(self._unique(name), self._key_fn, fn, (spec,), rolling=rolling)
        )
        return Stream(self._graph, node)

    def sum(
        self,
        value: Callable[[Any], Any] | None = None,
        *,
        name: str = "sum",
        columnar: bool = True,
    ) -> Stream:
        """Running sum per key: emits ``(key, total)`` for every record.

        The same as ``reduce(operator.add)`` over ``value(record)`` (the record itself when
        ``value`` is None), for numbers only: a value that is not an int or a float (a bool
        neither) is a dead letter (``TypeError``), as is a record whose ``value`` raises. A
        key's first value is its total as it is; then ``total + value`` in arrival order, so
        floats add up exactly as a Python loop adds them and ints never overflow.

        A batch of all-int or all-float values runs as columns (one state read and write per
        distinct key, the running totals in one loop; see ``_rolling.py``); any other batch
        record by record, with the same results. ``columnar=False`` runs every batch record by
        record (what the benchmark compares it with). ``operator.itemgetter(1)`` is a cheaper
        ``value`` than ``lambda r: r[1]``.
        """
        return self._rolling("sum", operator.add, value, name, columnar)

    def min(
        self,
        value: Callable[[Any], Any] | None = None,
        *,
        name: str = "min",
        columnar: bool = True,
    ) -> Stream:
        """Running minimum per key: emits ``(key, smallest so far)`` for every record.

        ``reduce(min)`` over ``value(record)`` for int and float values (see :meth:`sum`):
        a value that is not smaller than the minimum so far leaves it as it is (``min`` keeps
        its first argument on a tie, so ``-0.0`` after ``0.0`` stays ``0.0``).
        """
        return self._rolling("min", min, value, name, columnar)

    def max(
        self,
        value: Callable[[Any], Any] | None = None,
        *,
        name: str = "max",
        columnar: bool = True,
    ) -> Stream:
        """Running maximum per key: emits ``(key, largest so far)`` for every record
        (``reduce(max)`` over ``value(record)`` for int and float values; see :meth:`min`)."""
        return self._rolling("max", max, value, name, columnar)

    def mean(
        self,
        value: Callable[[Any], Any] | None = None,
        *,
        name: str = "mean",
        columnar: bool = True,
    ) -> Stream:
        """Running mean per key: emits ``(key, total / count)`` (a float) for every record.

        ``aggregate`` of a ``[count, total]`` over ``value(record)`` (the record itself when
        ``value`` is None), for numbers only, as :meth:`sum` takes them: the total is the one
        ``sum`` keeps (ints stay exact ints, floats add in arrival order) and the state is
        ``[count, total]``. A value that is not an int or a float is a dead letter
        (``TypeError``), as is a record whose mean is an int too large for a float
        (``OverflowError``); its key's mean stays as it was.

        A batch of all-int or all-float values runs as columns (see :meth:`sum`);
        ``columnar=False`` runs every batch record by record, with the same results.
        """
        return self._rolling("mean", mean_add, value, name, columnar)

    def _rolling(
        self,
        kind: str,
        fn: Callable[[Any, Any], Any],
        value: Callable[[Any], Any] | None,
        name: str,
        columnar: bool,
    ) -> Stream:
        if value is not None and not callable(value):
            raise TypeError(
                f"{kind} takes a function from a record to its number (e.g. "
                f"operator.itemgetter(1)) or None for the record itself; got {value!r}"
            )
        if value is not None:
            _check_callable(value, f"{kind} value function")
        if not isinstance(columnar, bool):
            raise TypeError(f"columnar must be True or False; got {columnar!r}")
        spec = ValueStateSpec("value")
        op = ReduceOp(
            self._unique(name),
            self._key_fn,
            fn,
            (spec,),
            rolling=kind,
            numbers=True,
            value_fn=value,
            columnar=columnar,
        )
        return Stream(self._graph, self._append(op))

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
        node = self._append(
            AggregateOp(self._unique(name), self._key_fn, create, add, finish, (spec,))
        )
        return Stream(self._graph, node)

    def count(self, *, name: str = "count", columnar: bool = True) -> Stream:
        """Running count per key: emits ``(key, n)`` for every record.

        A batch is counted as columns (no Python code per record; see
        ``KeyedRunner._run_count``); ``columnar=False`` counts record by record instead, with
        the same results (what the benchmark compares it with).
        """
        if not isinstance(columnar, bool):
            raise TypeError(f"columnar must be True or False; got {columnar!r}")
        spec = ValueStateSpec("value", default=0)
        node = self._append(CountOp(self._unique(name), self._key_fn, (spec,), columnar))
        return Stream(self._graph, node)


#: The reduce functions that run as columns (``KeyedStream.reduce``), by what they compute.
_ROLLING: tuple[tuple[str, Callable[[Any, Any], Any]], ...] = (
    ("sum", operator.add),
    ("min", min),
    ("max", max),
)


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

    __slots__ = ("_assigner", "_keyed", "_late", "_lateness")

    def __init__(
        self,
        keyed: KeyedStream,
        assigner: Tumbling | Sliding | Session,
        lateness: float,
        late: str | None = None,
    ) -> None:
        self._keyed = keyed
        self._assigner = assigner
        self._lateness = lateness
        self._late = late

    def _finish(self, name: str, spec: WindowSpec) -> Stream:
        if self._late is not None:
            spec = dataclasses.replace(spec, late=self._late)
        keyed = self._keyed
        op = WindowOp(keyed._unique(name), keyed._key_fn, spec, (windows_spec(), timers_spec()))
        return Stream(keyed._graph, keyed._append(op))

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
        return ConnectedKeyedStream(self._graph, self._node, (key_a, key_b))


class ConnectedKeyedStream(_Extendable):
    """Two keyed streams feeding one keyed operator that shares each key's state and timers."""

    __slots__ = ("_key_fns",)

    def __init__(
        self, graph: _Graph, node: _Node, key_fns: tuple[Callable[[Any], Any], ...]
    ) -> None:
        super().__init__(graph, node)
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
        node = self._append(op)
        return Stream(self._graph, node)

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

        Event time only. Each side's records are kept (in keyed state, sorted by timestamp)
        until the watermark passes what they can still match, then removed by an event-time
        timer per key; a record behind the watermark is a dead letter (``LateRecordError``),
        never silently dropped. See ``_joins.py``.
        """
        if not self._node.timed:
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
        node = self._append(op)
        return Stream(self._graph, node)

    def window_join(
        self,
        assigner: Tumbling | Sliding,
        fn: Callable[[Any, Any], Any] | None = None,
        *,
        name: str = "window_join",
    ) -> Stream:
        """Emit ``fn(x, y)`` (default ``(x, y)``) for every ``x`` of the first input and ``y``
        of the second with the same key in the same window of ``assigner`` (``Tumbling`` or
        ``Sliding``; once per window they share), when the watermark reaches the window's end.

        Event time only. Each open window keeps both sides' records (keyed state) until it
        fires; a record behind the watermark for one of its windows is a dead letter
        (``LateRecordError``), never silently dropped. See ``_joins.py``.
        """
        if not self._node.timed:
            raise ValueError(
                "window_join needs event time: give both inputs a timestamp assigner, "
                "flow.source(source, timestamps=lambda record: ...)"
            )
        session = isinstance(assigner, Session)
        if session:
            raise ValueError(
                "window_join takes Tumbling(size) or Sliding(size, slide); session windows "
                "of a join are not supported (join per key with connect(...).process and timers)"
            )
        if not isinstance(assigner, Tumbling | Sliding):
            raise TypeError(
                f"window_join takes Tumbling(size) or Sliding(size, slide); got {assigner!r}"
            )
        pair = _pair if fn is None else fn
        _check_callable(pair, "window_join fn")
        join = WindowJoin(assigner, pair)
        specs = (*window_join_specs(), timers_spec())
        op = ProcessOp(
            self._unique(name), TaggedKey(self._key_fns), join.process, specs, join.on_timer
        )
        return Stream(self._graph, self._append(op))


def _pair(x: Any, y: Any) -> tuple[Any, Any]:
    return (x, y)
