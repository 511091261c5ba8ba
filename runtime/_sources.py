"""Sources: where records enter a job, split into independently resumable parts.

A source is divided into *splits* (ranges of a sequence, byte ranges of files, shards of a
generator). The engine distributes splits over workers; each split is read by one
:class:`SplitReader` that hands out :class:`SourceBatch` es. Every batch carries the position
*after* it, so a checkpoint can record it and a restore can reopen the split exactly there.

The lifecycle of a source (see docs/guides/sources.md, "Writing a source"):

1. **Construction and** :meth:`Source.splits` run in *every* process that builds the flow: the
   driver (which only needs the split ids) and each worker process (which rebuilds the flow from
   its reference; nothing is pickled). Both must be cheap and open nothing: no connection, no
   file handle, no thread.
2. ``await source.open(context)`` (optional) runs **once per worker** that was given at least one
   split, when the worker starts and before the job's clock starts. The
   :class:`SourceContext` names the worker's index, the worker count and the worker's splits.
   Connections, clients and file handles shared by a worker's splits are opened here.
3. ``source.open_split(split, position)`` runs on that worker for each of its splits (also
   before the clock starts, for the splits a worker gets when it starts); it returns a
   :class:`SplitReader`. ``position`` is ``None`` (the split's start) or a position a
   :class:`SourceBatch` carried, when a restore rewinds the split.
4. ``await reader.read_batch(n)`` until it returns ``None`` (the split ended) or the job stops;
   then ``await reader.aclose()``.
5. ``await source.aclose()`` (optional) runs once per worker that ran ``open``, after every
   reader of the worker was closed, also when the job fails or is cancelled.

``bounded`` says whether every split ends on its own. :func:`~shoal.runtime.run_job` runs a
bounded source until every split has ended; it refuses an unbounded one (``bounded = False``)
unless it is given a ``stop`` event, which is then the only way the job ends with a result.

Stopping is cancel-safe: when a job stops, a ``read_batch`` waiting for data is cancelled, and
the engine then calls the reader's optional ``drain()`` once and processes what it returns. A
reader that awaits after taking records from its origin keeps them on itself (not in locals)
and hands them out from the next ``read_batch`` or from ``drain``: every record a source handed
out before a stop is processed.

Guarantees shared by every source in this package:

* split ids are stable: they depend on the source's arguments, never on the number of workers;
* reading every split to the end, in any order, with any batch sizes, and with any number of
  reopenings at recorded positions, yields every record exactly once, with the same offsets;
* a record that cannot be decoded becomes a :class:`SourceError` in the batch (so it reaches the
  dead-letter sink), never an exception that stops the job and never a silent drop.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol, TypeAlias, runtime_checkable

import anyio

from ._keys import DEFAULT_KEY_GROUPS, key_partition

__all__ = (
    "SourceBatch",
    "SourceContext",
    "SourceError",
    "SplitReader",
    "Source",
    "IterableSource",
    "AsyncIterableSource",
    "UnionSource",
    "check_bounded",
    "drain_reader",
)

StrPath: TypeAlias = "str | os.PathLike[str]"


@dataclass(frozen=True, slots=True)
class SourceError:
    """A record the source could not decode; it goes to the dead-letter sink.

    Attributes:
        offset: the record's source position (for a file, the byte offset of the line).
        raw: the undecodable record as the source saw it (for a file, the line's text decoded
            with ``errors="replace"``, without its line terminator).
        error: ``"<ExceptionType>: <message>"``.
    """

    offset: int
    raw: Any
    error: str


@dataclass(slots=True)
class SourceBatch:
    """Records read from one split, in split order.

    Attributes:
        values: the records.
        offsets: the source position of each record (same length as ``values``).
        position: CBOR-able position of the split *after* this batch; opening the split at it
            resumes with the next record.
        errors: records that could not be decoded, in split order.
    """

    values: list[Any]
    offsets: list[int]
    position: Any
    errors: list[SourceError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a worker tells its source in ``open``: who it is and which splits it reads.

    Attributes:
        job: the flow's name.
        worker: this worker's index, ``0 <= worker < workers``.
        workers: the number of workers of the job.
        splits: the split ids this worker reads, in the source's order (never empty: a worker
            without splits does not open the source).
    """

    job: str
    worker: int
    workers: int
    splits: tuple[str, ...]


@runtime_checkable
class SplitReader(Protocol):
    """Reads one split of a source.

    A reader may also define ``drain(self) -> SourceBatch | None`` (synchronous): the records it
    took from its origin during a ``read_batch`` that was cancelled because the job stopped,
    or ``None``. The engine calls it once after such a cancellation. A reader that never awaits
    between taking a record from its origin and returning it needs no ``drain``.
    """

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        """Return the next batch of at most ``max_records`` records (and errors).

        Returns ``None`` once the split is exhausted (bounded sources only; an unbounded split
        waits for more records instead). Cancelled only when the job stops; must then lose no
        record it took (see the class docstring).
        """
        ...

    async def aclose(self) -> None:
        """Release the reader's resources (files, iterators). Idempotent."""
        ...


@runtime_checkable
class Source(Protocol):
    """A splittable, resumable origin of records (see the module docstring's lifecycle).

    Optional hooks, called when defined: ``async def open(self, context: SourceContext)`` once
    per worker before its splits are opened, and ``async def aclose(self)`` once per worker
    after they are closed.

    Attributes:
        bounded: True if every split ends on its own (``read_batch`` eventually returns
            ``None``); False if the source runs until the job is stopped.
    """

    bounded: bool

    def splits(self) -> Sequence[str]:
        """Return the stable split ids, independent of the number of workers (cheap)."""
        ...

    def open_split(self, split: str, position: Any | None = None) -> SplitReader:
        """Open ``split`` from its start (``position=None``) or right after ``position``."""
        ...


def check_bounded(source: object, *, has_stop: bool, flow: str) -> bool:
    """Return ``source.bounded``; refuse an unbounded source that nothing could stop.

    Raises:
        TypeError: ``bounded`` is missing or not a bool.
        ValueError: the source is unbounded and ``has_stop`` is False.
    """
    bounded = getattr(source, "bounded", None)
    if not isinstance(bounded, bool):
        raise TypeError(
            f"the source of flow {flow!r} must have a bool attribute 'bounded' (True if its "
            f"splits end on their own); got {bounded!r}"
        )
    if not bounded and not has_stop:
        raise ValueError(
            f"the source of flow {flow!r} is unbounded (bounded=False) and would run forever: "
            f"pass stop=anyio.Event() and set it to end the job"
        )
    return bounded


class UnionSource:
    """The inputs of a flow with several sources, as one source (built by ``Flow.get_source``).

    Its split ids are ``"<input name>/<split>"`` (input names have no ``/``); each split is read
    by its own input's source. An input's ``open`` hook runs on a worker with that input's
    splits there (its own ids), the first time one of its splits is read there; ``aclose``
    runs for every input that was opened. It is bounded when every input is.
    """

    def __init__(self, inputs: Sequence[tuple[str, Source]]) -> None:
        self.inputs = dict(inputs)
        self.bounded = all(getattr(source, "bounded", None) is True for _, source in inputs)
        self._context: SourceContext | None = None
        self._opened: list[str] = []

    def splits(self) -> list[str]:
        return [
            f"{name}/{split}" for name, source in self.inputs.items() for split in source.splits()
        ]

    def _locate(self, split: str) -> tuple[str, Source, str]:
        name, _, inner = split.partition("/")
        source = self.inputs.get(name)
        if source is None or not inner:
            raise ValueError(
                f"split {split!r} names no input of this flow ({', '.join(self.inputs)})"
            )
        return name, source, inner

    async def open(self, context: SourceContext) -> None:
        self._context = context
        for split in context.splits:
            await self.open_input_of(split)

    async def open_input_of(self, split: str) -> None:
        """Run the ``open`` hook of ``split``'s input on this worker unless it ran already."""
        name, source, _inner = self._locate(split)
        if name in self._opened:
            return
        self._opened.append(name)
        hook = getattr(source, "open", None)
        if hook is None:
            return
        context = self._context
        assert context is not None, "the source host opens the union before any split"
        mine = tuple(
            inner
            for outer in context.splits
            for found, _source, inner in [self._locate(outer)]
            if found == name
        )
        await hook(
            SourceContext(
                context.job, context.worker, context.workers, mine or (split.partition("/")[2],)
            )
        )

    def open_split(self, split: str, position: Any | None = None) -> SplitReader:
        _name, source, inner = self._locate(split)
        return source.open_split(inner, position)

    async def aclose(self) -> None:
        opened, self._opened = self._opened, []
        for name in opened:
            hook = getattr(self.inputs[name], "aclose", None)
            if hook is not None:
                await hook()


def drain_reader(reader: SplitReader) -> SourceBatch | None:
    """What ``reader`` took but has not handed out (its optional ``drain``), or None."""
    drain: Callable[[], SourceBatch | None] | None = getattr(reader, "drain", None)
    return None if drain is None else drain()


# ---------------------------------------------------------------------------------------------
# argument checking shared by the sources


def _check_int(owner: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}; got {value}")
    return value


def _check_max_records(max_records: int) -> None:
    if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
        raise ValueError(f"max_records must be an int >= 1; got {max_records!r}")


def _unknown_split(owner: str, split: str, known: Sequence[str]) -> ValueError:
    shown = ", ".join(repr(s) for s in known[:5]) + (", ..." if len(known) > 5 else "")
    return ValueError(f"{owner}: unknown split {split!r}; this source's splits are {shown}")


def _check_position(owner: str, position: object, low: int, high: int | None) -> int:
    if isinstance(position, bool) or not isinstance(position, int):
        raise TypeError(f"{owner}: position must be an int; got {type(position).__name__}")
    if position < low or (high is not None and position > high):
        bound = "" if high is None else f", {high}"
        raise ValueError(f"{owner}: position {position} is outside the split [{low}{bound}]")
    return position


# ---------------------------------------------------------------------------------------------
# in-memory sources


class IterableSource:
    """An in-memory source over a Python iterable: for tests, examples and small jobs.

    A ``Sequence`` (list, tuple, range, ...) is cut into ``splits`` contiguous index ranges
    (split ``i`` covers ``[i*n//splits, (i+1)*n//splits)``) and can be reopened at any position
    any number of times. Any other iterable gives exactly one split. A re-iterable (a set, a
    dict view) is iterated afresh on each open; a one-shot iterator (a generator, ``iter(x)``)
    can be opened only once, and resuming it at position ``p`` skips its first ``p`` items.

    Offsets are indexes in the iterable; a position is the index of the next item. The
    sequence must not change while the source is read. Unpaced, reading does not yield to the
    event loop by itself (records are already in memory): the engine's sends downstream do.

    ``rate`` paces the source: every split reads at most ``rate / splits`` records per second
    (so the source at most ``rate``), in batches of at most :data:`PACED_BATCH` records, each
    after a sleep of its share of a second (before reading: a stop cancels the sleep, never a
    batch in hand). A paced source lets a test or a benchmark act on a job while it runs (a
    rescale, a rebalance, a kill) with a long input instead of racing a short one. A rate is
    an upper bound: on a loaded machine the job reads slower.

    ``partition_by`` makes the source *key-partitioned*: split ``i`` holds, in their order, the
    items whose key (``partition_by(item)``, the key the flow's first ``key_by`` computes)
    has ``key_partition(key, splits, num_key_groups) == i``, and each split is read on the
    worker owning those key groups, so the records reach the first keyed operator without
    crossing workers (docs/guides/sources.md). Offsets are then indexes in that order (split
    0's items, then split 1's, ...).

    Split ids are ``"items:<i>"``.

    Args:
        items: the records.
        splits: number of splits; more than 1 only for a ``Sequence``.
        rate: records per second over all splits, a finite number > 0; ``None`` (the default)
            reads as fast as the job takes them.
        partition_by: the key of a record, to partition the splits by (a ``Sequence`` only).
        num_key_groups: the flow's number of key groups (with ``partition_by``).

    Raises:
        TypeError: ``items`` is not iterable, or is a ``str``/``bytes``; ``splits`` not an
            int; ``rate`` not a number or None.
        ValueError: ``splits`` < 1, or > 1 for an iterable that is not a ``Sequence``; ``rate``
            not finite and > 0.
    """

    bounded: bool
    _items: Iterable[Any]
    _ranges: list[tuple[int, int | None]]

    def __init__(
        self,
        items: Iterable[Any],
        *,
        splits: int = 1,
        rate: float | None = None,
        partition_by: Callable[[Any], Any] | None = None,
        num_key_groups: int = DEFAULT_KEY_GROUPS,
    ) -> None:
        if isinstance(items, str | bytes | bytearray):
            raise TypeError(
                f"IterableSource: items must be an iterable of records, not "
                f"{type(items).__name__}; wrap it in a list to emit it as one record"
            )
        if not isinstance(items, Iterable):
            raise TypeError(
                f"IterableSource: items must be an iterable; got {type(items).__name__}"
            )
        _check_int("IterableSource", "splits", splits, 1)
        self._rate = _check_rate(rate)
        self.bounded = True
        #: Split ``i`` holds only keys of the ``i``-th range of key groups (see key_partition).
        self.key_partitioned = partition_by is not None
        self._opened = False
        if partition_by is not None:
            if not callable(partition_by):
                raise TypeError(
                    "IterableSource: partition_by must be a function record -> key; got "
                    f"{type(partition_by).__name__}"
                )
            if not isinstance(items, Sequence):
                raise TypeError(
                    "IterableSource: partition_by needs a Sequence (a list, a tuple, ...) of "
                    f"records; got {type(items).__name__}"
                )
            parts: list[list[Any]] = [[] for _ in range(splits)]
            for item in items:
                parts[key_partition(partition_by(item), splits, num_key_groups)].append(item)
            items = [item for part in parts for item in part]
            self._ranges = []
            start = 0
            for part in parts:
                self._ranges.append((start, start + len(part)))
                start += len(part)
            self._items = items
        elif isinstance(items, Sequence):
            self._items = items
            n = len(items)
            self._ranges = [(i * n // splits, (i + 1) * n // splits) for i in range(splits)]
        else:
            if splits != 1:
                raise ValueError(
                    f"IterableSource: splits must be 1 for an iterable that is not a Sequence "
                    f"(got splits={splits}); pass a list to split it"
                )
            self._items = items
            self._ranges = [(0, None)]
        self._ids = tuple(f"items:{i}" for i in range(len(self._ranges)))

    def __repr__(self) -> str:
        paced = "" if self._rate is None else f", rate={self._rate:g}"
        return f"IterableSource({type(self._items).__name__}, splits={len(self._ids)}{paced})"

    @property
    def rate(self) -> float | None:
        """Records per second over all splits; ``None``: unpaced."""
        return self._rate

    def splits(self) -> Sequence[str]:
        """Return ``("items:0", ..., "items:<splits-1>")``."""
        return self._ids

    def open_split(self, split: str, position: Any | None = None) -> SplitReader:
        """Open ``split`` at its start or right after ``position`` (an item index).

        Raises:
            ValueError: unknown split, or a position outside the split's range.
            RuntimeError: a one-shot iterator opened a second time.
        """
        try:
            start, end = self._ranges[self._ids.index(split)]
        except ValueError:
            raise _unknown_split("IterableSource", split, self._ids) from None
        pos = start if position is None else _check_position("IterableSource", position, start, end)
        reader = self._reader(pos, end)
        if self._rate is None:
            return reader
        return _PacedReader(reader, self._rate / len(self._ids))

    def _reader(self, pos: int, end: int | None) -> SplitReader:
        items = self._items
        if isinstance(items, Sequence):
            assert end is not None
            return _SequenceReader(items, pos, end)
        if isinstance(items, Iterator):
            if self._opened:
                raise RuntimeError(
                    "IterableSource: a one-shot iterator can only be opened once; pass a list "
                    "(or another re-iterable) to reopen or resume a split"
                )
            self._opened = True
        return _IteratorReader(iter(items), pos)


#: A paced split reads at most this many records per batch: its sleeps stay short (256
#: records at 2,500 records/s is ~0.1 s), so the rate holds at the scale of a job's steps.
PACED_BATCH = 256


def _check_rate(rate: object) -> float | None:
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise TypeError(
            f"IterableSource: rate must be a number of records per second, or None for no "
            f"pacing; got {type(rate).__name__}"
        )
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(
            f"IterableSource: rate must be > 0 records per second (None: no pacing); got {rate!r}"
        )
    return float(rate)


class _PacedReader:
    """A split reader that sleeps its batch's share of a second before each read."""

    __slots__ = ("_rate", "_reader")

    def __init__(self, reader: SplitReader, rate: float) -> None:
        self._reader, self._rate = reader, rate

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        _check_max_records(max_records)
        max_records = min(max_records, PACED_BATCH)
        await anyio.sleep(max_records / self._rate)  # before reading: cancel-safe
        return await self._reader.read_batch(max_records)

    async def aclose(self) -> None:
        await self._reader.aclose()


class _SequenceReader:
    __slots__ = ("_end", "_pos", "_seq")

    def __init__(self, seq: Sequence[Any], pos: int, end: int) -> None:
        self._seq, self._pos, self._end = seq, pos, end

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        _check_max_records(max_records)
        pos = self._pos
        if pos >= self._end:
            return None
        stop = min(pos + max_records, self._end)
        seq = self._seq
        if isinstance(seq, list | tuple | range):
            values = list(seq[pos:stop])
        else:
            values = [seq[i] for i in range(pos, stop)]
        self._pos = stop
        return SourceBatch(values, list(range(pos, stop)), stop)

    async def aclose(self) -> None:
        self._pos = self._end


class _IteratorReader:
    __slots__ = ("_it", "_pos", "_skip")

    def __init__(self, it: Iterator[Any], pos: int) -> None:
        self._it: Iterator[Any] | None = it
        self._pos = pos
        self._skip = pos

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        _check_max_records(max_records)
        it = self._it
        if it is None:
            return None
        if self._skip:
            # Resuming a one-shot iterator: its first `position` items were read before.
            for _ in islice(it, self._skip):
                pass
            self._skip = 0
        values = list(islice(it, max_records))
        if not values:
            await self.aclose()
            return None
        pos = self._pos
        self._pos = pos + len(values)
        return SourceBatch(values, list(range(pos, self._pos)), self._pos)

    async def aclose(self) -> None:
        it, self._it = self._it, None
        close = getattr(it, "close", None)
        if close is not None:
            close()


class AsyncIterableSource:
    """A one-split source over an async iterable.

    Offsets are item indexes; a position is the index of the next item. Resuming at position
    ``p`` iterates afresh and skips ``p`` items, so pass a zero-argument *factory* returning a
    new async iterable (or a re-iterable object) when the split must be reopened: a one-shot
    async iterator (an async generator object) can be opened only once.

    ``read_batch(n)`` returns once it holds ``n`` items or the iterable ends: for low latency
    on a slow iterable, the engine asks for small batches. Reads are cancel-safe: items taken
    from the iterable before a stop cancelled the read are kept and returned by ``drain``.

    The split id is ``"aiter:0"``.

    Args:
        aiterable: an async iterable, or a callable returning one.
        bounded: True (default) if the iterable ends on its own; False for a live feed that
            ends only when the job is stopped (``run_job`` then requires ``stop``).

    Raises:
        TypeError: ``aiterable`` is neither an async iterable nor callable; ``bounded`` is not
            a bool.
    """

    bounded: bool

    def __init__(
        self,
        aiterable: AsyncIterable[Any] | Callable[[], AsyncIterable[Any]],
        *,
        bounded: bool = True,
    ) -> None:
        if not isinstance(aiterable, AsyncIterable) and not callable(aiterable):
            raise TypeError(
                f"AsyncIterableSource: aiterable must be an async iterable or a callable "
                f"returning one; got {type(aiterable).__name__}"
            )
        if not isinstance(bounded, bool):
            raise TypeError(
                f"AsyncIterableSource: bounded must be a bool; got {type(bounded).__name__}"
            )
        self.bounded = bounded
        self._source = aiterable
        self._opened = False

    def splits(self) -> Sequence[str]:
        """Return ``("aiter:0",)``."""
        return ("aiter:0",)

    def open_split(self, split: str, position: Any | None = None) -> SplitReader:
        """Open the split at its start or right after ``position`` (an item index).

        Raises:
            ValueError: unknown split or negative position.
            TypeError: the factory did not return an async iterable.
            RuntimeError: a one-shot async iterator opened a second time.
        """
        if split != "aiter:0":
            raise _unknown_split("AsyncIterableSource", split, ("aiter:0",))
        pos = 0 if position is None else _check_position("AsyncIterableSource", position, 0, None)
        source = self._source
        if isinstance(source, AsyncIterable):
            if isinstance(source, AsyncIterator):
                if self._opened:
                    raise RuntimeError(
                        "AsyncIterableSource: a one-shot async iterator can only be opened "
                        "once; pass a factory (a callable returning a new async iterable) to "
                        "reopen or resume the split"
                    )
                self._opened = True
            aiterable = source
        else:
            aiterable = source()
            if not isinstance(aiterable, AsyncIterable):
                raise TypeError(
                    f"AsyncIterableSource: the factory must return an async iterable; got "
                    f"{type(aiterable).__name__}"
                )
        return _AsyncIteratorReader(aiter(aiterable), pos)


_END = object()


class _AsyncIteratorReader:
    """Cancel-safe: every item taken from the iterator lives in ``_pending`` until handed out,
    so a read cancelled at any ``await`` loses nothing (``drain`` returns what it held)."""

    __slots__ = ("_it", "_pending", "_pos", "_skip")

    def __init__(self, it: AsyncIterator[Any], pos: int) -> None:
        self._it: AsyncIterator[Any] | None = it
        self._pos = pos
        self._skip = pos
        self._pending: list[Any] = []

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        _check_max_records(max_records)
        pending = self._pending
        while self._skip and self._it is not None:
            if await anext(self._it, _END) is _END:
                await self.aclose()
            else:
                self._skip -= 1
        while len(pending) < max_records and self._it is not None:
            item = await anext(self._it, _END)
            if item is _END:
                await self.aclose()
            else:
                pending.append(item)
        return self._take(max_records)

    def drain(self) -> SourceBatch | None:
        """The items taken by a cancelled ``read_batch``, or None."""
        return self._take(len(self._pending))

    def _take(self, max_records: int) -> SourceBatch | None:
        pending = self._pending
        if not pending:
            return None
        if len(pending) <= max_records:
            values, self._pending = pending, []
        else:
            values, self._pending = pending[:max_records], pending[max_records:]
        pos = self._pos
        self._pos = pos + len(values)
        return SourceBatch(values, list(range(pos, self._pos)), self._pos)

    async def aclose(self) -> None:
        it, self._it = self._it, None
        close = getattr(it, "aclose", None)
        if close is not None:
            await close()
