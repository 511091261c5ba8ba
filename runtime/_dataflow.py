"""The dataflow API: sources -> map / filter / flat_map -> key_by -> keyed operator -> sinks.

A :class:`Flow` is a description, not a running thing: the engine compiles it into stages and
runs the same description in one event loop or across worker processes. Flows are linear
pipelines; a stream is extended once (branching arrives with a later release).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.storage import StateSpec, ValueStateSpec

from ._keys import DEFAULT_KEY_GROUPS, check_num_key_groups
from ._sinks import Sink
from ._sources import Source
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
    "CountOp",
    "EventTime",
    "FilterOp",
    "FlatMapOp",
    "Flow",
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


@dataclass(slots=True)
class _Graph:
    source: Source | None = None
    time: EventTime | None = None
    ops: list[StatelessOp | KeyedOp | SinkOp] = field(default_factory=list)
    tail: object | None = None  # the stream that may still be extended


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
    ) -> Stream:
        """Start the flow at ``source``; a flow has exactly one source.

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
        """
        if self._graph.source is not None:
            raise ValueError(f"Flow {self.name!r} already has a source; a flow has exactly one")
        for attribute in ("splits", "open_split"):
            if not callable(getattr(source, attribute, None)):
                raise TypeError(
                    f"source must provide splits() and open_split(); got {type(source).__name__}"
                )
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
            self._graph.time = EventTime(timestamps, strategy, idle_timeout)
        self._graph.source = source
        return Stream(self._graph)

    @property
    def event_time(self) -> EventTime | None:
        """The flow's event time (None: the source was given no timestamps)."""
        return self._graph.time

    def get_source(self) -> Source:
        """The flow's source (ValueError if none was set)."""
        if self._graph.source is None:
            raise ValueError(f"Flow {self.name!r} has no source: call flow.source(...) first")
        return self._graph.source

    @property
    def operations(self) -> tuple[StatelessOp | KeyedOp | SinkOp, ...]:
        """The operations in pipeline order."""
        return tuple(self._graph.ops)

    def keyed_operators(self) -> tuple[KeyedOp, ...]:
        """The keyed operators, in pipeline order."""
        return tuple(
            op
            for op in self._graph.ops
            if isinstance(op, ProcessOp | ReduceOp | AggregateOp | CountOp | WindowOp)
        )

    def validate(self) -> None:
        """Raise ValueError unless the flow has a source and ends in a sink."""
        self.get_source()
        if not self._graph.ops or not isinstance(self._graph.ops[-1], SinkOp):
            raise ValueError(f"Flow {self.name!r} does not end in a sink: add .sink(...)")


class _Extendable:
    __slots__ = ("_graph",)

    def __init__(self, graph: _Graph) -> None:
        self._graph = graph
        graph.tail = self

    def _append(self, op: StatelessOp | KeyedOp | SinkOp) -> None:
        if self._graph.tail is not self:
            raise ValueError(
                "this stream was already extended; flows are linear pipelines "
                "(extend the stream returned by the last call)"
            )
        if self._graph.ops and isinstance(self._graph.ops[-1], SinkOp):
            raise ValueError("a flow ends at its sink; nothing can follow .sink(...)")
        self._graph.ops.append(op)

    def _unique(self, name: str) -> str:
        _check_name(name, "operator name")
        taken = {op.name for op in self._graph.ops}
        if name in taken:
            raise ValueError(f"operator name {name!r} is already used in this flow; pick another")
        return name


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
        return Stream(self._graph)

    def filter(self, fn: Callable[[Any], Any], *, concurrency: int | None = None) -> Stream:
        """Keep the records for which ``fn`` returns a true value (``fn`` may be ``async``,
        as for :meth:`map`)."""
        bound = _check_concurrency(fn, concurrency, "filter predicate")
        self._append(FilterOp(fn) if bound is None else AsyncFilterOp(fn, bound))
        return Stream(self._graph)

    def flat_map(self, fn: Callable[[Any], Iterable[Any]]) -> Stream:
        """Replace every record with the records of the iterable ``fn`` returns."""
        _check_callable(fn, "flat_map function")
        self._append(FlatMapOp(fn))
        return Stream(self._graph)

    def key_by(self, fn: Callable[[Any], Any]) -> KeyedStream:
        """Partition the stream by ``fn(record)``: a str, bytes, int or tuple of those."""
        _check_callable(fn, "key function")
        if self._graph.tail is not self:
            raise ValueError("this stream was already extended; flows are linear pipelines")
        return KeyedStream(self._graph, fn)

    def sink(self, sink: Sink) -> None:
        """End the flow in ``sink``."""
        if not callable(getattr(sink, "open_partition", None)):
            raise TypeError(f"sink must provide open_partition(); got {type(sink).__name__}")
        self._append(SinkOp(sink))


class KeyedStream(_Extendable):
    """A stream partitioned by key: every record of a key reaches the same key-group actor."""

    __slots__ = ("_key_fn",)

    def __init__(self, graph: _Graph, key_fn: Callable[[Any], Any]) -> None:
        super().__init__(graph)
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
        self._append(
            ProcessOp(self._unique(name), self._key_fn, fn, specs, on_timer, concurrency=bound)
        )
        return Stream(self._graph)

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
        if self._graph.tail is not self:
            raise ValueError("this stream was already extended; flows are linear pipelines")
        return WindowedStream(self, assigner, allowed_lateness)

    def reduce(self, fn: Callable[[Any, Any], Any], *, name: str = "reduce") -> Stream:
        """Keep ``acc = fn(acc, value)`` per key and emit ``(key, acc)`` for every record."""
        _check_callable(fn, "reduce function")
        spec = ValueStateSpec("value")
        self._append(ReduceOp(self._unique(name), self._key_fn, fn, (spec,)))
        return Stream(self._graph)

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
        return Stream(self._graph)

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
        return Stream(self._graph)


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
        return Stream(keyed._graph)

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
        spec = WindowSpec(self._assigner, self._lateness, _zero, _count_add, _identity, _add)
        return self._finish(name, spec)
