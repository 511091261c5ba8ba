"""JSON-lines files as a source: byte-range splits, decoded a slice of lines at a time.

The reader reads a file chunk (1 MiB) at a time, finds every line start in it with one numpy
scan, and decodes a whole batch of lines with one ``list.extend(map(decode, lines))`` (no Python
bytecode per line). When a line does not decode (bad JSON, bad UTF-8, a blank line), the values
decoded before it are kept, the line becomes a :class:`SourceError` carrying its exact byte
offset (a blank line is skipped), and decoding resumes after it: no line is decoded twice.
See docs/architecture.md for the choice of msgspec and the measurements.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, BinaryIO

import msgspec
import numpy as np

from ._sources import (
    SourceBatch,
    SourceError,
    SplitReader,
    StrPath,
    _check_int,
    _check_max_records,
    _check_position,
    _unknown_split,
)

__all__ = ("JsonlSource",)

_MiB = 1 << 20
# One read per MiB: large enough that syscall and split overhead vanish per line, small enough
# that a read from the page cache (~0.1-0.3 ms) never stalls the event loop noticeably.
_READ_CHUNK = _MiB
# Reads near or past the end of a split only need to finish the split's last line.
_TAIL_CHUNK = 64 * 1024
_NEWLINE = ord("\n")
# Strict RFC 8259 JSON: NaN/Infinity and numbers out of float range are errors, as is invalid
# UTF-8 anywhere in a line. One decoder per process: it caches the keys it has seen.
_DECODE = msgspec.json.Decoder().decode
_DECODE_ERRORS = (msgspec.MsgspecError, RecursionError)


class JsonlSource:
    """JSON-lines files read in byte-range splits, as Hadoop and Flink split text files.

    Each file of size ``S`` is cut into ranges ``[k*split_bytes, min((k+1)*split_bytes, S))``;
    a split owns exactly the lines that *start* inside its range (the last one may run past
    its end), so whatever ``split_bytes`` is, every line belongs to exactly one split. File
    sizes are taken at construction: bytes appended later are not read. Empty files have no
    splits. Construction only looks at file sizes; files are opened by the readers, on their
    first read.

    Records are the parsed JSON values (strict RFC 8259, decoded with msgspec: ``NaN``,
    ``Infinity`` and numbers beyond the float range are errors). A record's offset is the byte
    offset of its line's start; a position is the byte offset of the next line to read. Blank
    lines are skipped. A line that does not parse (bad JSON, bad UTF-8, too deeply nested)
    becomes a :class:`SourceError` with ``raw`` = the line's text decoded with
    ``errors="replace"`` and ``error`` = ``"DecodeError: <msgspec's message>"``. Lines end with
    ``\\n``; a ``\\r`` before it is accepted as JSON whitespace.

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


def _line_starts(buf: bytes, base: int) -> list[int]:
    """File offsets of the lines ``buf.split(b"\\n")[:-1]`` (``buf`` starts at ``base``)."""
    newlines = np.flatnonzero(np.frombuffer(buf, np.uint8) == _NEWLINE)
    starts = np.empty(len(newlines), np.int64)
    if len(newlines):
        starts[0] = base
        starts[1:] = newlines[:-1] + (base + 1)
    return starts.tolist()


class _JsonlReader:
    """Reads the lines that start in ``[pos, end)``; never awaits, so it is cancel-safe."""

    __slots__ = (
        "_align",
        "_end",
        "_eof",
        "_file",
        "_i",
        "_lines",
        "_next",
        "_path",
        "_read_pos",
        "_starts",
        "_tail",
    )

    def __init__(self, path: str, pos: int, end: int, *, align: bool) -> None:
        self._path = path
        self._end = end
        # With `align`, reading starts one byte early and drops everything up to the first
        # newline: that part belongs to a line started in the previous split (or, when the byte
        # before `pos` is a newline, it is empty and the first line starts exactly at `pos`).
        self._align = align
        self._read_pos = pos - 1 if align else pos  # file offset of the next read
        self._file: BinaryIO | None = None
        self._lines: list[bytes] = []  # complete lines of the current chunk ...
        self._starts: list[int] = []  # ... and the file offset of each
        self._i = 0  # the next line to hand out
        # Offset of the line after _lines: where the split resumes once _lines are handed out.
        self._next = self._read_pos
        self._tail = b""  # an incomplete line at the end of the chunk; it starts at _next
        self._eof = self._read_pos >= end

    def _fill(self) -> bool:
        """Load the next complete lines of the split; False when it has no more."""
        while not self._eof:
            if self._file is None:
                self._file = open(self._path, "rb", buffering=0)  # noqa: SIM115
                self._file.seek(self._read_pos)
            left = self._end - self._read_pos
            data = self._file.read(
                _READ_CHUNK if left >= _READ_CHUNK else max(left, 0) + _TAIL_CHUNK
            )
            base = self._next
            if not data:
                self._eof = True
                if self._tail and not self._align and base < self._end:
                    # The last line has no terminating newline: it ends at the end of the file.
                    self._lines, self._starts, self._i = [self._tail], [base], 0
                    self._next, self._tail = self._read_pos, b""
                    return True
                return False
            self._read_pos += len(data)
            buf = self._tail + data if self._tail else data
            lines = buf.split(b"\n")
            self._tail = lines.pop()
            self._next = self._read_pos - len(self._tail)
            if not lines:
                if self._align:  # still inside the previous split's last line: drop it
                    self._tail, self._next = b"", self._read_pos
                continue
            starts = _line_starts(buf, base)
            if self._align:
                del lines[0], starts[0]
                self._align = False
            # Lines that start at or after the split's end belong to the next split.
            cut = bisect_left(starts, self._end)
            if cut < len(starts):
                self._next = starts[cut]
                del lines[cut:], starts[cut:]
                self._eof = True
                self._tail = b""
            if lines:
                self._lines, self._starts, self._i = lines, starts, 0
                return True
        return False

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        _check_max_records(max_records)
        values: list[Any] = []
        offsets: list[int] = []
        errors: list[SourceError] = []
        n = 0  # records and errors in this batch (blank lines are neither)
        while n < max_records:
            if self._i >= len(self._lines) and not self._fill():
                break
            i, lines, starts = self._i, self._lines, self._starts
            j = min(len(lines), i + max_records - n)
            self._i = j
            while i < j:
                decoded = len(values)
                try:
                    # One C-level pass over the slice. When a line fails, list.extend has
                    # kept the values before it, so their count locates the bad line and
                    # nothing is decoded twice.
                    values.extend(map(_DECODE, lines[i:j]))
                except _DECODE_ERRORS as exc:
                    bad = i + len(values) - decoded
                    offsets += starts[i:bad]
                    n += bad - i
                    line = lines[bad]
                    if line.strip():  # a blank line is no record and no error
                        raw = line[:-1] if line.endswith(b"\r") else line
                        error = f"{type(exc).__name__}: {exc}"
                        errors.append(
                            SourceError(starts[bad], raw.decode("utf-8", "replace"), error)
                        )
                        n += 1
                    i = bad + 1
                else:
                    offsets += starts[i:j]
                    n += j - i
                    i = j
        if not values and not errors:
            await self.aclose()
            return None
        position = self._starts[self._i] if self._i < len(self._lines) else self._next
        return SourceBatch(values, offsets, position, errors)

    async def aclose(self) -> None:
        f, self._file = self._file, None
        self._eof = True
        self._lines, self._starts, self._i = [], [], 0
        if f is not None:
            f.close()
