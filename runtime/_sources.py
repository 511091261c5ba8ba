"""Sources: where records enter a job, split into independently resumable parts.

A source is divided into *splits* (ranges of a sequence, byte ranges of files, shards of a
generator). The engine distributes splits over workers; each split is read by one
:class:`SplitReader` that hands out :class:`SourceBatch` es. Every batch carries the position
*after* it, so a checkpoint can record it and a restore can reopen the split exactly there.

Guarantees shared by every source in this module:

* split ids are stable: they depend on the source's arguments, never on the number of workers;
* reading every split to the end, in any order, with any batch sizes, and with any number of
  reopenings at recorded positions, yields every record exactly once, with the same offsets;
* a record that cannot be decoded becomes a :class:`SourceError` in the batch (so it reaches the
  dead-letter sink), never an exception that stops the job and never a silent drop.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol, TypeAlias, runtime_checkable

__all__ = (
    "SourceBatch",
    "SourceError",
    "SplitReader",
    "Source",
    "IterableSource",
    "AsyncIterableSource",
    "JsonlSource",
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


@runtime_checkable
class SplitReader(Protocol):
    """Reads one split of a source."""

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        """Return the next batch of at most ``max_records`` records (and errors).

        Returns ``None`` once the split is exhausted (bounded sources only; an unbounded split
        waits for more records instead).
        """
        ...

    async def aclose(self) -> None:
        """Release the reader's resources (files, iterators). Idempotent."""
        ...


@runtime_checkable
class Source(Protocol):
    """A splittable, resumable origin of records."""

    bounded: bool

    def splits(self) -> Sequence[str]:
        """Return the stable split ids, independent of the number of workers."""
        ...

    def open_split(self, split: str, position: Any | None = None) -> SplitReader:
        """Open ``split`` from its start (``position=None``) or right after ``position``."""
        ...


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
    sequence must not change while the source is read. Reading does not yield to the event
    loop by itself (records are already in memory): the engine's sends downstream do.

    Split ids are ``"items:<i>"``.

    Args:
        items: the records.
        splits: number of splits; more than 1 only for a ``Sequence``.

    Raises:
        TypeError: ``items`` is not iterable, or is a ``str``/``bytes``; ``splits`` not an int.
        ValueError: ``splits`` < 1, or > 1 for an iterable that is not a ``Sequence``.
    """

    bounded: bool

    def __init__(self, items: Iterable[Any], *, splits: int = 1) -> None:
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
        self.bounded = True
        self._items = items
        self._opened = False
        if isinstance(items, Sequence):
            n = len(items)
            self._ranges: list[tuple[int, int | None]] = [
                (i * n // splits, (i + 1) * n // splits) for i in range(splits)
            ]
        else:
            if splits != 1:
                raise ValueError(
                    f"IterableSource: splits must be 1 for an iterable that is not a Sequence "
                    f"(got splits={splits}); pass a list to split it"
                )
            self._ranges = [(0, None)]
        self._ids = tuple(f"items:{i}" for i in range(len(self._ranges)))

    def __repr__(self) -> str:
        return f"IterableSource({type(self._items).__name__}, splits={len(self._ids)})"

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
    """A one-split source over an async iterable; bounded: it ends when the iterable ends.

    Offsets are item indexes; a position is the index of the next item. Resuming at position
    ``p`` iterates afresh and skips ``p`` items, so pass a zero-argument *factory* returning a
    new async iterable (or a re-iterable object) when the split must be reopened: a one-shot
    async iterator (an async generator object) can be opened only once.

    ``read_batch(n)`` returns once it holds ``n`` items or the iterable ends: for low latency
    on a slow iterable, the engine asks for small batches.

    The split id is ``"aiter:0"``.

    Args:
        aiterable: an async iterable, or a callable returning one.

    Raises:
        TypeError: ``aiterable`` is neither an async iterable nor callable.
    """

    bounded: bool

    def __init__(self, aiterable: AsyncIterable[Any] | Callable[[], AsyncIterable[Any]]) -> None:
        if not isinstance(aiterable, AsyncIterable) and not callable(aiterable):
            raise TypeError(
                f"AsyncIterableSource: aiterable must be an async iterable or a callable "
                f"returning one; got {type(aiterable).__name__}"
            )
        self.bounded = True
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


class _AsyncIteratorReader:
    __slots__ = ("_it", "_pos", "_skip")

    def __init__(self, it: AsyncIterator[Any], pos: int) -> None:
        self._it: AsyncIterator[Any] | None = it
        self._pos = pos
        self._skip = pos

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        _check_max_records(max_records)
        it = self._it
        if it is None:
            return None
        end = object()
        while self._skip:
            if await anext(it, end) is end:
                await self.aclose()
                return None
            self._skip -= 1
        values: list[Any] = []
        while len(values) < max_records:
            item = await anext(it, end)
            if item is end:
                await self.aclose()
                break
            values.append(item)
        if not values:
            return None
        pos = self._pos
        self._pos = pos + len(values)
        return SourceBatch(values, list(range(pos, self._pos)), self._pos)

    async def aclose(self) -> None:
        it, self._it = self._it, None
        close = getattr(it, "aclose", None)
        if close is not None:
            await close()


# ---------------------------------------------------------------------------------------------
# JSON lines files

_MiB = 1 << 20
# One read per MiB: large enough that syscall and split overhead vanish per line, small enough
# that a read from the page cache (~0.1-0.3 ms) never stalls the event loop noticeably.
_READ_CHUNK = _MiB
_DECODER = json.JSONDecoder()
# Reads near or past the end of a split only need to finish the split's last line.
_TAIL_CHUNK = 64 * 1024


class JsonlSource:
    """JSON-lines files read in byte-range splits, as Hadoop and Flink split text files.

    Each file of size ``S`` is cut into ranges ``[k*split_bytes, min((k+1)*split_bytes, S))``;
    a split owns exactly the lines that *start* inside its range (the last one may run past
    its end), so whatever ``split_bytes`` is, every line belongs to exactly one split. File
    sizes are taken at construction: bytes appended later are not read. Empty files have no
    splits.

    Records are the parsed JSON values. A record's offset is the byte offset of its line's
    start; a position is the byte offset of the next line to read. Blank lines are skipped.
    A line that does not parse (bad JSON, bad UTF-8, too deeply nested) becomes a
    :class:`SourceError` with ``raw`` = the line's text decoded with ``errors="replace"``.
    Lines end with ``\\n``; a ``\\r`` before it is accepted as JSON whitespace.

    Split ids are ``"<path>:<start>-<end>"`` with the path as given.

    Args:
        path_or_paths: a path or a non-empty sequence of distinct paths.
        split_bytes: the size of a split's byte range (default 32 MiB).

    Raises:
        FileNotFoundError: a path is not an existing file (the message names it).
        TypeError: bad argument types.
        ValueError: empty or duplicate paths, ``split_bytes`` < 1.
    """

    bounded: bool

    def __init__(
        self, path_or_paths: StrPath | Sequence[StrPath], *, split_bytes: int = 32 * _MiB
    ) -> None:
        if isinstance(path_or_paths, str | os.PathLike):
            paths = [os.fspath(path_or_paths)]
        elif isinstance(path_or_paths, Sequence) and not isinstance(path_or_paths, bytes):
            if not path_or_paths:
                raise ValueError("JsonlSource: path_or_paths must not be empty")
            paths = []
            for p in path_or_paths:
                if not isinstance(p, str | os.PathLike):
                    raise TypeError(
                        f"JsonlSource: each path must be a str or os.PathLike; got "
                        f"{type(p).__name__}"
                    )
                paths.append(os.fspath(p))
        else:
            raise TypeError(
                f"JsonlSource: path_or_paths must be a path or a sequence of paths; got "
                f"{type(path_or_paths).__name__}"
            )
        if len(set(paths)) != len(paths):
            raise ValueError("JsonlSource: path_or_paths contains the same path twice")
        _check_int("JsonlSource", "split_bytes", split_bytes, 1)
        self.bounded = True
        self.split_bytes = split_bytes
        self._splits: dict[str, tuple[str, int, int]] = {}
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"JsonlSource: no such file: {path!r}")
            size = os.path.getsize(path)
            for start in range(0, size, split_bytes):
                end = min(start + split_bytes, size)
                self._splits[f"{path}:{start}-{end}"] = (path, start, end)
        self._ids = tuple(self._splits)

    def __repr__(self) -> str:
        return f"JsonlSource({len(self._ids)} splits, split_bytes={self.split_bytes})"

    def splits(self) -> Sequence[str]:
        """Return the split ids, file by file in the given order, ranges ascending."""
        return self._ids

    def open_split(self, split: str, position: Any | None = None) -> SplitReader:
        """Open ``split`` at its first line or at ``position`` (a line start it recorded).

        The file is opened on the first ``read_batch``.

        Raises:
            ValueError: unknown split, or a position before the split's range.
        """
        try:
            path, start, end = self._splits[split]
        except KeyError:
            raise _unknown_split("JsonlSource", split, self._ids) from None
        if position is None:
            return _JsonlReader(path, start, end, align=start > 0)
        pos = _check_position("JsonlSource", position, start, None)
        return _JsonlReader(path, pos, end, align=False)


class _JsonlReader:
    __slots__ = (
        "_align",
        "_end",
        "_eof",
        "_file",
        "_i",
        "_lines",
        "_path",
        "_pos",
        "_read_pos",
        "_tail",
    )

    def __init__(self, path: str, pos: int, end: int, *, align: bool) -> None:
        self._path = path
        self._end = end
        # With `align`, reading starts one byte early and drops everything up to the first
        # newline: that part belongs to a line started in the previous split (or, when the byte
        # before `pos` is a newline, it is empty and the first line starts exactly at `pos`).
        self._align = align
        self._pos = pos - 1 if align else pos  # offset of _lines[_i] (or of _tail)
        self._read_pos = self._pos  # file offset of the next read
        self._file: Any = None
        self._lines: list[bytes] = []
        self._i = 0
        self._tail = b""
        self._eof = self._pos >= end

    def _fill(self) -> bool:
        """Load the next complete lines into ``_lines``; False when the file has no more."""
        while not self._eof:
            if self._file is None:
                self._file = open(self._path, "rb", buffering=0)  # noqa: SIM115
                self._file.seek(self._read_pos)
            left = self._end - self._read_pos
            data: bytes = self._file.read(
                _READ_CHUNK if left >= _READ_CHUNK else max(left, 0) + _TAIL_CHUNK
            )
            if not data:
                self._eof = True
                if self._tail and not self._align:
                    # The last line has no terminating newline.
                    self._lines, self._i, self._tail = [self._tail], 0, b""
                    return True
                return False
            self._read_pos += len(data)
            buf = self._tail + data if self._tail else data
            lines = buf.split(b"\n")
            self._tail = lines.pop()
            if self._align:
                if not lines:
                    self._pos += len(buf)
                    self._tail = b""
                    continue
                self._pos += len(lines[0]) + 1
                del lines[0]
                self._align = False
                if self._pos >= self._end:
                    self._eof = True
                    return False
            if lines:
                self._lines, self._i = lines, 0
                return True
        return False

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        _check_max_records(max_records)
        values: list[Any] = []
        offsets: list[int] = []
        errors: list[SourceError] = []
        decode = _DECODER.decode
        end = self._end
        pos = self._pos
        lines, i = self._lines, self._i
        n = 0
        while n < max_records:
            if i >= len(lines):
                self._pos, self._i = pos, i
                if not self._fill():
                    break
                pos, lines, i = self._pos, self._lines, self._i
            if pos >= end:
                break
            line = lines[i]
            i += 1
            start = pos
            pos += len(line) + 1
            n += 1
            try:
                # Decoding UTF-8 first is strict (json.loads on bytes would guess UTF-16/32
                # from a line's first bytes) and faster.
                values.append(decode(line.decode()))
            except (ValueError, RecursionError) as exc:
                # Blank lines fail to parse too; testing for them only here keeps the common
                # path free of a per-line check.
                if not line.strip():
                    n -= 1
                    continue
                raw = line[:-1] if line.endswith(b"\r") else line
                errors.append(
                    SourceError(
                        start, raw.decode("utf-8", "replace"), f"{type(exc).__name__}: {exc}"
                    )
                )
            else:
                offsets.append(start)
        if self._eof and i >= len(lines):
            # An unterminated last line ends at the end of the file, not one byte after it.
            pos = min(pos, self._read_pos)
        self._pos, self._i = pos, i
        if not values and not errors:
            await self.aclose()
            return None
        return SourceBatch(values, offsets, pos, errors)

    async def aclose(self) -> None:
        f, self._file = self._file, None
        self._eof = True
        self._lines, self._i = [], 0
        if f is not None:
            f.close()
