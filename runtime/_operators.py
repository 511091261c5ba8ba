"""Batch execution of operators: stateless chains and keyed operator runners.

Everything here works on parallel columns (values and their source offsets) for one batch.
User code that raises never stops the batch: the record goes to the dead-letter list with the
error and its position, the rest of the batch goes on. The fast paths
(``list.extend(map(fn, ...))``) cost one C-level loop, and every user function runs exactly once
per record, also in a batch in which some record raised (the loop resumes after the failing
record; nothing is redone).
"""

from __future__ import annotations

import inspect
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from itertools import compress
from operator import itemgetter
from types import CoroutineType
from typing import Any

from shoal.storage import KeyGroupStore

from ._async_ops import in_key, run_keys_async
from ._dataflow import (
    AggregateOp,
    AsyncFilterOp,
    AsyncMapOp,
    CountOp,
    FilterOp,
    FlatMapOp,
    KeyedOp,
    MapOp,
    ProcessOp,
    ReduceOp,
    WindowOp,
)
from ._keys import KeyGroupRouter
from ._outputs import OutputTag, SideValue
from ._rolling import fold_per_record, running_columns
from ._sinks import DeadLetter
from ._time import MIN_WATERMARK
from ._timers import EVENT_TIME, PROCESSING_TIME, KeyedTime, Timers
from ._windows import WindowRunner

__all__ = (
    "DeadLetters",
    "KeyedRunner",
    "ProcessContext",
    "apply_chain",
    "apply_chain_timed",
    "key_and_route",
    "key_and_route_timed",
)

StatelessOp = MapOp | FilterOp | FlatMapOp | AsyncMapOp | AsyncFilterOp
Routed = dict[int, tuple[list[Any], list[Any], list[int]]]
RoutedTimed = dict[int, tuple[list[Any], list[Any], list[int], list[Any]]]


class DeadLetters:
    """Collects a worker's dead letters until they are shipped to the dead-letter sink."""

    __slots__ = ("count", "pending", "worker")

    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.pending: list[DeadLetter] = []
        self.count = 0

    def add(
        self,
        operator: str,
        exc: BaseException,
        split: str,
        offset: int,
        record: Any,
        key: Any = None,
    ) -> None:
        self.count += 1
        self.pending.append(
            DeadLetter(
                operator=operator,
                error_type=type(exc).__name__,
                error=str(exc),
                split=split,
                offset=offset,
                record=record,
                key=key,
                worker=self.worker,
            )
        )

    def add_source_error(self, error: Any, split: str) -> None:
        """A record the source could not decode (a :class:`SourceError`)."""
        self.count += 1
        self.pending.append(
            DeadLetter.from_source_error(error, operator="source", split=split, worker=self.worker)
        )

    def take(self) -> list[DeadLetter]:
        letters, self.pending = self.pending, []
        return letters


def _apply_once(
    fn: Callable[[Any], Any], values: list[Any]
) -> tuple[list[Any], list[tuple[int, Exception]] | None]:
    """Return ``[fn(v) for v in values]`` without the records whose call raised.

    Every record's call happens exactly once (user code may count or have side effects): the
    C-level ``list.extend(map(fn, it))`` keeps what it appended before ``fn`` raised, and the
    shared iterator ``it`` has consumed exactly the failing record, so the loop notes that
    record and carries on with the next one. Returns the results and the ``(index, error)`` of
    every record that failed (None when none did, the common case).
    """
    results: list[Any] = []
    failed: list[tuple[int, Exception]] | None = None
    it = iter(values)
    while True:
        try:
            results.extend(map(fn, it))
        except Exception as exc:
            if failed is None:
                failed = []
            failed.append((len(results) + len(failed), exc))
        else:
            return results, failed


def _drop_failed(
    name: str,
    failed: list[tuple[int, Exception]],
    values: list[Any],
    offsets: list[int],
    split: str,
    dead: DeadLetters,
) -> tuple[list[Any], list[int]]:
    """Dead-letter the failed records (in input order) and return the others' columns."""
    for index, exc in failed:
        dead.add(name, exc, split, offsets[index], values[index])
    keep = _kept(failed, len(values))
    return list(compress(values, keep)), list(compress(offsets, keep))


def _kept(failed: list[tuple[int, Exception]], count: int) -> list[bool]:
    """A mask of the ``count`` records that did not fail."""
    keep = [True] * count
    for index, _exc in failed:
        keep[index] = False
    return keep


def _flat_map(
    op: FlatMapOp, values: list[Any], offsets: list[int], split: str, dead: DeadLetters
) -> tuple[list[Any], list[int]]:
    out_values: list[Any] = []
    out_offsets: list[int] = []
    fn = op.fn
    for value, offset in zip(values, offsets, strict=True):
        try:
            items = list(fn(value))
        except Exception as exc:
            dead.add(op.name, exc, split, offset, value)
            continue
        out_values.extend(items)
        out_offsets.extend([offset] * len(items))
    return out_values, out_offsets


def _refuse_coroutines(
    name: str,
    results: list[Any],
    values: list[Any],
    offsets: list[int],
    split: str,
    dead: DeadLetters,
) -> list[Any]:
    """A plain function returned coroutines (``lambda x: fetch(x)`` over an ``async def``):
    nothing awaits them, so every record of the batch is a dead letter saying why (the
    coroutines are closed: no "never awaited" warnings). Checked on a batch's first result:
    one type check per batch. Returns no values."""
    for result in results:
        if type(result) is CoroutineType:
            result.close()
    error = TypeError(
        f"{name} function returned a coroutine: pass the async def function itself "
        f"(map/filter await it), not a plain function that calls it"
    )
    for value, offset in zip(values, offsets, strict=False):
        dead.add(name, error, split, offset, value)
    return []


def apply_chain(
    chain: Sequence[StatelessOp],
    values: list[Any],
    offsets: list[int],
    split: str,
    dead: DeadLetters,
) -> tuple[list[Any], list[int]]:
    """Run stateless operators over one batch; failed records become dead letters."""
    for op in chain:
        if not values:
            break
        if type(op) is MapOp:
            results, failed = _apply_once(op.fn, values)
            if results and type(results[0]) is CoroutineType:
                return _refuse_coroutines(op.name, results, values, offsets, split, dead), []
            if failed is not None:
                offsets = _drop_failed(op.name, failed, values, offsets, split, dead)[1]
            values = results
        elif type(op) is FilterOp:
            mask, failed = _apply_once(op.fn, values)
            if mask and type(mask[0]) is CoroutineType:
                return _refuse_coroutines(op.name, mask, values, offsets, split, dead), []
            if failed is not None:
                values, offsets = _drop_failed(op.name, failed, values, offsets, split, dead)
            if not all(mask):
                values = list(compress(values, mask))
                offsets = list(compress(offsets, mask))
        else:
            assert type(op) is FlatMapOp
            values, offsets = _flat_map(op, values, offsets, split, dead)
    return values, offsets


def key_and_route(
    operator: str,
    key_fn: Callable[[Any], Any],
    router: KeyGroupRouter,
    values: list[Any],
    offsets: list[int],
    split: str,
    dead: DeadLetters,
) -> Routed:
    """Key every record with ``key_fn`` and split the batch per key group.

    A key function that raises, or returns something that is not a valid key, sends that
    record to the dead letters (operator ``<operator>.key_by``).
    """
    keys, failed = _apply_once(key_fn, values)
    if failed is None:
        try:
            return router.route(keys, values, offsets)
        except TypeError:
            failed = []
    keys, keep = _key_failures(operator, router, keys, failed, values, offsets, split, dead)
    return router.route(keys, list(compress(values, keep)), list(compress(offsets, keep)))


def key_and_route_timed(
    operator: str,
    key_fn: Callable[[Any], Any],
    router: KeyGroupRouter,
    values: list[Any],
    offsets: list[int],
    timestamps: list[Any],
    split: str,
    dead: DeadLetters,
) -> RoutedTimed:
    """:func:`key_and_route` for a batch with an event-time column."""
    keys, failed = _apply_once(key_fn, values)
    if failed is None:
        try:
            return router.route_timed(keys, values, offsets, timestamps)
        except TypeError:
            failed = []
    keys, keep = _key_failures(operator, router, keys, failed, values, offsets, split, dead)
    return router.route_timed(
        keys,
        list(compress(values, keep)),
        list(compress(offsets, keep)),
        list(compress(timestamps, keep)),
    )


def _key_failures(
    operator: str,
    router: KeyGroupRouter,
    keys: list[Any],
    failed: list[tuple[int, Exception]],
    values: list[Any],
    offsets: list[int],
    split: str,
    dead: DeadLetters,
) -> tuple[list[Any], list[bool]]:
    """Dead-letter the records whose key function raised or gave an invalid key (in input
    order); return the other records' keys and the mask of the records kept."""
    where = f"{operator}.key_by"
    raised = _kept(failed, len(values))  # False where the key function raised
    if failed:
        # Line the keys up with the records again: a record whose key function raised has none.
        found = iter(keys)
        keys = [next(found) if ok else None for ok in raised]
    # Some key function raised or some key is not a valid key: find the invalid keys without
    # calling key_fn again, then dead-letter every failed record in input order.
    for index, key in enumerate(keys):
        if raised[index]:
            try:
                router.group_of(key)
            except TypeError as exc:
                failed.append((index, exc))
                if type(key) is CoroutineType:
                    key.close()  # nothing will await it (the message says why)
    failed.sort(key=itemgetter(0))
    for index, error in failed:
        dead.add(where, error, split, offsets[index], values[index])
    keep = _kept(failed, len(keys))
    return list(compress(keys, keep)), keep


def apply_chain_timed(
    chain: Sequence[StatelessOp],
    values: list[Any],
    offsets: list[int],
    timestamps: list[Any],
    split: str,
    dead: DeadLetters,
) -> tuple[list[Any], list[int], list[Any]]:
    """:func:`apply_chain` for a batch with an event-time column: every record keeps its
    timestamp through map and filter; a flat_map's records inherit their input's."""
    for op in chain:
        if not values:
            break
        if type(op) is FlatMapOp:
            out_values: list[Any] = []
            out_offsets: list[int] = []
            out_stamps: list[Any] = []
            fn = op.fn
            for value, offset, stamp in zip(values, offsets, timestamps, strict=True):
                try:
                    items = list(fn(value))
                except Exception as exc:
                    dead.add(op.name, exc, split, offset, value)
                    continue
                out_values.extend(items)
                out_offsets.extend([offset] * len(items))
                out_stamps.extend([stamp] * len(items))
            values, offsets, timestamps = out_values, out_offsets, out_stamps
            continue
        results, failed = _apply_once(op.fn, values)
        if results and type(results[0]) is CoroutineType:
            return _refuse_coroutines(op.name, results, values, offsets, split, dead), [], []
        if failed is not None:
            for index, error in failed:
                dead.add(op.name, error, split, offsets[index], values[index])
            keep = _kept(failed, len(values))
            values = list(compress(values, keep))
            offsets = list(compress(offsets, keep))
            timestamps = list(compress(timestamps, keep))
        if type(op) is MapOp:
            values = results
        elif not all(results):
            values = list(compress(values, results))
            offsets = list(compress(offsets, results))
            timestamps = list(compress(timestamps, results))
    return values, offsets, timestamps


class ProcessContext:
    """What a process function sees besides the key and the value.

    Attributes:
        state: the declared states by name (``ctx.state.clicks``), scoped to the current key.
        emit: ``ctx.emit(x)`` sends ``x`` downstream; it inherits the current record's source
            position (what a dead letter downstream would name). ``ctx.output(tag, x)`` sends
            ``x`` to a side output instead (see ``_outputs.py``).
        key_group: the key group this actor owns.
        operator: the operator's name.
        timestamp: the current record's event time (in ``on_timer``: the timer's), or None in a
            flow without event time.
        timers: the current key's timers (``register_event_time(ts)``, ...; see
            ``_timers.py``); usable in an operator declared with ``on_timer``.
    """

    __slots__ = (
        "_letters",
        "_store",
        "_time",
        "emit",
        "key_group",
        "operator",
        "sides",
        "state",
        "timers",
        "timestamp",
    )

    def __init__(
        self, operator: str, key_group: int, store: KeyGroupStore, time: KeyedTime | None = None
    ) -> None:
        self.operator = operator
        self.key_group = key_group
        self._store = store
        self._time = time
        self.state = store.states
        self.emit: Callable[[Any], None] = _no_output
        self.timestamp: Any = None
        self.timers: Timers | None = None if time is None else Timers(time)
        #: Values sent to side outputs since the runner last asked (``KeyedRunner.take_sides``):
        #: a batch without any skips looking for them.
        self.sides = 0
        #: ``(dead letters, split, key)`` of the timer running now (see :meth:`_dead_letter`).
        self._letters: tuple[DeadLetters, str, Any] | None = None

    @property
    def key(self) -> Any:
        """The current key."""
        return self._store.key

    @property
    def watermark(self) -> float:
        """The key group's watermark: records older than it are late (``-inf`` at first)."""
        return MIN_WATERMARK if self._time is None else self._time.watermark

    def _dead_letter(self, exc: Exception, record: Any) -> None:
        """Internal, for an ``on_timer`` that applies a function to many things (a window
        join's pairs): send ``record`` to the dead letters as if the operator's function had
        raised ``exc`` on it, and let the call go on (outside a timer: raise ``exc``)."""
        if self._letters is None:
            raise exc
        dead, split, key = self._letters
        dead.add(self.operator, exc, split, -1, record, key)

    def output(self, tag: OutputTag, value: Any) -> None:
        """Send ``value`` to the side output ``tag`` (read with ``stream.side_output(tag)``),
        with the current record's timestamp and source position, as :attr:`emit` does."""
        if type(tag) is not OutputTag:
            raise TypeError(f"ctx.output takes an OutputTag('name') first; got {tag!r}")
        self.emit(SideValue(tag.name, value))
        self.sides += 1


class _Unpaired:
    """Dead letters for a batch whose offsets are ``(offset, timestamp)`` pairs."""

    __slots__ = ("_dead",)

    def __init__(self, dead: DeadLetters) -> None:
        self._dead = dead

    def add(
        self, operator: str, exc: BaseException, split: str, offset: Any, record: Any, key: Any
    ) -> None:
        self._dead.add(operator, exc, split, offset[0], record, key)


def _no_output(_value: Any) -> None:
    raise RuntimeError("ctx.emit is only valid while the process function runs")


class KeyedRunner:
    """Runs one keyed operator over batches for one key group, on that group's store.

    A record whose user function raises goes to the dead letters; whatever state changes and
    emits the call made before raising are kept (no per-record rollback). Storing a value whose
    type CBOR cannot encode raises ``StateEncodeError`` at that write, so such a record is a
    dead letter too; something unencodable nested inside a list, tuple or dict is only found
    when the state is flushed, and fails the job with a ``StateEncodeError`` naming the
    operator, key group, state, key and type (see ``shoal.storage``).
    """

    __slots__ = (
        "_contexts",
        "_ctx",
        "_key_group",
        "_op",
        "_store",
        "_time",
        "_ttl",
        "_value",
        "_window",
        "is_async",
        "operator",
    )

    def __init__(
        self, op: KeyedOp, store: KeyGroupStore, key_group: int, time: KeyedTime | None = None
    ) -> None:
        self._op = op
        self._store = store
        self._time = time
        self.operator = op.name
        self._key_group = key_group
        self._ctx = ProcessContext(op.name, key_group, store, time)
        #: An ``async def`` process function: the actor awaits ``run_async`` and
        #: ``fire_timers_async`` instead (see ``_async_ops.py``).
        self.is_async = type(op) is ProcessOp and op.concurrency is not None
        self._contexts: list[ProcessContext] = []  # one per concurrent key, made on demand
        self._value = None if isinstance(op, ProcessOp | WindowOp) else store.state("value")
        self._window: WindowRunner | None = None
        # TTL states (see shoal.storage's _ttl.py): "now" is the clock for processing-time
        # TTL; for event-time TTL the current record's (or timer's) timestamp, else the
        # watermark. Each batch runs an incremental cleanup pass over them.
        self._ttl = any(getattr(spec, "ttl", None) is not None for spec in op.states)
        if self._ttl and time is not None:
            ctx = self._ctx
            store.processing_time = time.clock.now
            store.event_time = lambda: time.watermark if ctx.timestamp is None else ctx.timestamp
        if type(op) is WindowOp:
            assert time is not None
            assert time.timers is not None
            self._window = WindowRunner(op.name, op.window, store, time.timers)

    def run(
        self,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        split: str,
        dead: DeadLetters,
        timestamps: list[Any] | None = None,
    ) -> tuple[list[Any], list[int], list[Any] | None]:
        """Apply the operator to one batch; return the emitted values, their offsets and their
        timestamps (None when the batch had none): an output inherits its input's."""
        op = self._op
        if type(op) is WindowOp:
            assert self._window is not None
            assert timestamps is not None
            assert self._time is not None
            return self._window.run(
                keys, values, offsets, timestamps, split, dead, self._time.watermark
            )
        if type(op) is ProcessOp:
            processed = self._run_process(op, keys, values, offsets, split, dead, timestamps)
            if self._ttl:  # the incremental pass: a bounded cost per record
                self._store.cleanup_expired(2 * len(keys))
            return processed
        if type(op) is CountOp:
            if op.columnar:
                out, out_offsets = self._run_count(keys, offsets)
            else:
                out, out_offsets = self._run_count_per_record(keys, offsets)
            return out, out_offsets, timestamps
        if type(op) is ReduceOp and op.rolling is not None:
            return self._run_rolling(op, keys, values, offsets, split, dead, timestamps)
        if timestamps is None:
            if type(op) is ReduceOp:
                out, out_offsets = self._run_reduce(op, keys, values, offsets, split, dead)
            else:
                assert type(op) is AggregateOp
                out, out_offsets = self._run_aggregate(op, keys, values, offsets, split, dead)
            return out, out_offsets, None
        # An output per input that did not fail: carry the timestamps along with the offsets,
        # paired, and split them after (no cost to the untimed path).
        paired: list[Any] = list(zip(offsets, timestamps, strict=True))
        unpair: Any = _Unpaired(dead)
        if type(op) is ReduceOp:
            out, out_pairs = self._run_reduce(op, keys, values, paired, split, unpair)
        else:
            assert type(op) is AggregateOp
            out, out_pairs = self._run_aggregate(op, keys, values, paired, split, unpair)
        pairs: list[Any] = out_pairs
        return out, [pair[0] for pair in pairs], [pair[1] for pair in pairs]

    def _due(self, watermark: float | None) -> Iterator[tuple[Any, Any, int]]:
        """The timers due, ``(key, ts, kind)`` in timestamp order per kind: event time at
        ``watermark`` (None: none), processing time at the clock's now; rearms after."""
        time = self._time
        if time is None or time.timers is None:
            return
        timers = time.timers
        due: list[tuple[int, float]] = []
        if watermark is not None:
            due.append((EVENT_TIME, watermark))
        now = time.clock.now()
        next_due = timers.next_due(PROCESSING_TIME)
        if next_due is not None and next_due <= now:
            due.append((PROCESSING_TIME, now))
        for kind, upto in due:
            for ts, key in timers.due(kind, upto):
                yield key, ts, kind
        timers.rearm()  # wake the key group at the next processing-time timer

    def take_sides(self) -> bool:
        """Whether the output since the last call holds side-output values (``ctx.output``)."""
        sent = self._ctx.sides
        self._ctx.sides = 0
        for ctx in self._contexts:
            sent += ctx.sides
            ctx.sides = 0
        window = self._window
        if window is not None:  # late records sent to the window's late side output
            sent += window.sides
            window.sides = 0
        return sent > 0

    def fire_timers(
        self, watermark: float | None, split: str, dead: DeadLetters
    ) -> tuple[list[Any], list[int], list[Any]]:
        """Run every event-time timer due at ``watermark`` (None: none) and every
        processing-time timer due at the clock's now, in timestamp order; return what they
        emitted."""
        out: tuple[list[Any], list[int], list[Any]] = ([], [], [])
        window = self._window
        if window is not None:  # windows fire on event time only
            if watermark is not None:
                window.fire(watermark, out, split, dead)
            return out
        current = MIN_WATERMARK if self._time is None else self._time.watermark
        for key, ts, kind in self._due(watermark):
            self._on_timer(key, ts, kind, current, out, split, dead)
        return out

    async def fire_timers_async(
        self, watermark: float | None, split: str, dead: DeadLetters
    ) -> tuple[list[Any], list[int], list[Any]]:
        """:meth:`fire_timers` for an async operator: one ``on_timer`` at a time, awaited."""
        out: tuple[list[Any], list[int], list[Any]] = ([], [], [])
        current = MIN_WATERMARK if self._time is None else self._time.watermark
        for key, ts, kind in self._due(watermark):
            self._store.key = key
            result = self._on_timer(key, ts, kind, current, out, split, dead)
            if result is not None:
                await result
        return out

    async def run_async(
        self,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        split: str,
        dead: DeadLetters,
        timestamps: list[Any] | None = None,
    ) -> tuple[list[Any], list[int], list[Any] | None]:
        """:meth:`run` for an ``async def`` process function (see ``_async_ops.py``)."""
        op = self._op
        assert type(op) is ProcessOp
        assert op.concurrency is not None
        while len(self._contexts) < min(op.concurrency, len(keys)):
            self._contexts.append(ProcessContext(op.name, self._key_group, self._store, self._time))
        try:
            processed = await run_keys_async(
                op,
                self._store,
                iter(self._contexts),
                keys,
                values,
                offsets,
                split,
                dead,
                timestamps,
            )
        finally:
            for ctx in self._contexts:
                ctx.emit = _no_output
                ctx.timestamp = None
        if self._ttl:
            self._store.cleanup_expired(2 * len(keys))
        return processed

    def _on_timer(
        self,
        key: Any,
        ts: Any,
        kind: int,
        watermark: float,
        out: tuple[list[Any], list[int], list[Any]],
        split: str,
        dead: DeadLetters,
    ) -> Awaitable[None] | None:
        """Call ``on_timer`` for one timer; for an ``async def`` one, return what to await
        (it finishes the call's bookkeeping), else None."""
        op = self._op
        assert type(op) is ProcessOp
        assert op.on_timer is not None
        ctx = self._ctx
        values = out[0]
        before = len(values)
        # An output of a timer is stamped with the timer's time (event time), or with the
        # watermark (processing time: never late downstream).
        stamp = ts if kind == EVENT_TIME else watermark
        ctx.timestamp = stamp
        ctx.emit = values.append
        ctx._letters = (dead, split, key)
        where = f"{op.name}.on_timer"
        try:
            result = op.on_timer(key, ts, ctx)
        except Exception as exc:
            dead.add(where, exc, split, -1, ts, key)
            result = None
        if inspect.iscoroutine(result):
            return self._timer_done(
                in_key(result, self._store, key, where),
                before,
                stamp,
                out,
                split,
                dead,
                key,
                ts,
                where,
            )
        # An internal callback (a window join) may restamp its output (see _joins.py).
        self._timer_emitted(before, ctx.timestamp, out)
        return None

    async def _timer_done(
        self,
        call: Awaitable[Any],
        before: int,
        stamp: Any,
        out: tuple[list[Any], list[int], list[Any]],
        split: str,
        dead: DeadLetters,
        key: Any,
        ts: Any,
        where: str,
    ) -> None:
        try:
            await call
        except Exception as exc:
            dead.add(where, exc, split, -1, ts, key)
        finally:
            self._timer_emitted(before, stamp, out)

    def _timer_emitted(
        self, before: int, stamp: Any, out: tuple[list[Any], list[int], list[Any]]
    ) -> None:
        ctx = self._ctx
        ctx.emit = _no_output
        ctx.timestamp = None
        emitted = len(out[0]) - before
        out[1].extend([-1] * emitted)
        out[2].extend([stamp] * emitted)

    def _run_process(
        self,
        op: ProcessOp,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        split: str,
        dead: DeadLetters,
        timestamps: list[Any] | None,
    ) -> tuple[list[Any], list[int], list[Any] | None]:
        store = self._store
        ctx = self._ctx
        fn = op.fn
        out_values: list[Any] = []
        out_offsets: list[int] = []
        out_stamps: list[Any] | None = None if timestamps is None else []
        stamps = [None] * len(keys) if timestamps is None else timestamps
        # emit is the list's own append (no Python-level call); offsets are caught up after
        # each record, which costs two len() calls instead of a method call per emit.
        ctx.emit = out_values.append
        try:
            for key, value, offset, stamp in zip(keys, values, offsets, stamps, strict=True):
                store.key = key
                ctx.timestamp = stamp
                try:
                    fn(key, value, ctx)
                except Exception as exc:
                    dead.add(op.name, exc, split, offset, value, key)
                behind = len(out_values) - len(out_offsets)
                if behind:
                    if behind == 1:
                        out_offsets.append(offset)
                    else:
                        out_offsets.extend([offset] * behind)
                    if out_stamps is not None:
                        out_stamps.extend([stamp] * behind)
        finally:
            ctx.emit = _no_output
            ctx.timestamp = None
        return out_values, out_offsets, out_stamps

    def _run_reduce(
        self,
        op: ReduceOp,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        split: str,
        dead: DeadLetters,
    ) -> tuple[list[Any], list[int]]:
        assert self._value is not None
        return fold_per_record(
            op.name,
            None,
            op.fn,
            self._store,
            self._value,
            keys,
            values,
            values,
            offsets,
            split,
            dead,
        )

    def _run_rolling(
        self,
        op: ReduceOp,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        split: str,
        dead: DeadLetters,
        timestamps: list[Any] | None,
    ) -> tuple[list[Any], list[int], list[Any] | None]:
        """``sum``/``min``/``max`` and ``reduce(operator.add | min | max)``: the batch as
        columns where its values allow, else record by record (see ``_rolling.py``)."""
        records = values
        if op.value_fn is not None:
            values, failed = _apply_once(op.value_fn, records)
            if failed is not None:
                for index, exc in failed:
                    dead.add(op.name, exc, split, offsets[index], records[index], keys[index])
                keep = _kept(failed, len(records))
                keys = list(compress(keys, keep))
                records = list(compress(records, keep))
                offsets = list(compress(offsets, keep))
                if timestamps is not None:
                    timestamps = list(compress(timestamps, keep))
        if op.columnar:
            assert op.rolling is not None
            assert self._value is not None
            running = running_columns(op.rolling, self._value, keys, values)
            if running is not None:  # every record has its output
                out = list(zip(keys, running, strict=True))
                return out, list(offsets), None if timestamps is None else list(timestamps)
        if timestamps is None:
            out, out_offsets = self._rolling_per_record(
                op, keys, values, records, offsets, split, dead
            )
            return out, out_offsets, None
        paired: list[Any] = list(zip(offsets, timestamps, strict=True))
        out, out_pairs = self._rolling_per_record(
            op, keys, values, records, paired, split, _Unpaired(dead)
        )
        pairs: list[Any] = out_pairs
        return out, [pair[0] for pair in pairs], [pair[1] for pair in pairs]

    def _rolling_per_record(
        self,
        op: ReduceOp,
        keys: list[Any],
        values: list[Any],
        records: list[Any],
        offsets: list[Any],
        split: str,
        dead: Any,
    ) -> tuple[list[Any], list[Any]]:
        assert self._value is not None
        return fold_per_record(
            op.name,
            op.rolling if op.numbers else None,  # reduce(operator.add | ...) takes any value
            op.fn,
            self._store,
            self._value,
            keys,
            values,
            records,
            offsets,
            split,
            dead,
        )

    def _run_count(self, keys: list[Any], offsets: list[int]) -> tuple[list[Any], list[int]]:
        """The running count of a whole batch as columns: no Python code runs per record.

        ``Counter`` tallies the batch's keys (C); each distinct key's count so far is read
        once; a per-key ``itertools.count`` starting after it yields the key's running values,
        drawn in input order by ``map(next, ...)`` (C); ``zip`` pairs them with the keys (C).
        Python runs once per distinct key. Same output as counting record by record
        (``tests/runtime/test_columnar.py`` compares them). count() cannot fail on a valid
        key, so it needs no per-record error handling.
        """
        state = self._value
        assert state is not None
        tally = Counter(keys)
        base = state.values_of(tally)
        counters = {key: itertools.count(n + 1) for key, n in base.items()}
        running = list(map(next, map(counters.__getitem__, keys)))
        state.update_all({key: base[key] + n for key, n in tally.items()})
        return list(zip(keys, running, strict=True)), list(offsets)

    def _run_count_per_record(
        self, keys: list[Any], offsets: list[int]
    ) -> tuple[list[Any], list[int]]:
        """The running count record by record (``count(columnar=False)``): what the columnar
        path is compared with, in tests and in the benchmark."""
        store = self._store
        state = self._value
        assert state is not None
        get = state.value
        put = state.update
        out_values: list[Any] = []
        emit = out_values.append
        for key in keys:
            store.key = key
            n = get() + 1
            put(n)
            emit((key, n))
        return out_values, list(offsets)

    def _run_aggregate(
        self,
        op: AggregateOp,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        split: str,
        dead: DeadLetters,
    ) -> tuple[list[Any], list[int]]:
        store = self._store
        state = self._value
        assert state is not None
        get = state.value
        put = state.update
        create, add, result = op.create, op.add, op.result
        out_values: list[Any] = []
        out_offsets: list[int] = []
        emit = out_values.append
        for key, value, offset in zip(keys, values, offsets, strict=True):
            store.key = key
            acc = get()
            try:
                acc = add(create() if acc is None else acc, value)
                out = result(acc)
                put(acc)  # raises StateEncodeError for a value CBOR cannot encode
            except Exception as exc:
                dead.add(op.name, exc, split, offset, value, key)
                continue
            emit((key, out))
            out_offsets.append(offset)
        return out_values, out_offsets
