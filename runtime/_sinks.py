"""Sinks: where a job's output (and its dead letters) leave the dataflow.

A :class:`Sink` opens one :class:`SinkPartition` per worker (``gather=False``) or, with
``gather=True``, a single partition in the driver process to which the engine ships every
worker's output. A partition receives batches in order and is closed once.

None of these sinks is transactional: after a restore from a checkpoint, records emitted since
that checkpoint may be written again (at-least-once output); exactly-once output needs a
transactional sink that commits at checkpoint completion (``TransactionalJsonlSink`` in
``_txn_sink.py``; docs/reference.md, "Delivery guarantees", says which sink gives what).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import anyio

__all__ = (
    "SinkPartition",
    "Sink",
    "CollectingSink",
    "CallbackSink",
    "JsonlSink",
    "CountingSink",
    "DeadLetter",
    "DeadLetterSink",
)


@runtime_checkable
class SinkPartition(Protocol):
    """Writes the batches one worker (or, gathered, the whole job) produces."""

    async def write_batch(self, items: list[Any]) -> None:
        """Write ``items`` after every earlier batch."""
        ...

    async def aclose(self) -> None:
        """Flush and release the partition's resources."""
        ...


@runtime_checkable
class Sink(Protocol):
    """A destination for a job's output."""

    gather: bool

    def open_partition(self, worker: int, workers: int) -> SinkPartition:
        """Open the partition of ``worker`` (0-based) among ``workers``."""
        ...


def _check_worker(owner: str, worker: int, workers: int) -> None:
    for name, value in (("worker", worker), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{owner}: {name} must be an int; got {type(value).__name__}")
    if workers < 1:
        raise ValueError(f"{owner}: workers must be >= 1; got {workers}")
    if not 0 <= worker < workers:
        raise ValueError(f"{owner}: worker must be in [0, {workers}); got {worker}")


class CollectingSink:
    """Keeps every item in memory, in arrival order: for tests and small jobs.

    ``gather=True``: in a multi-process job all output is collected in the driver. Items
    accumulate across runs and partitions; call :meth:`clear` to start afresh.
    """

    gather: bool

    def __init__(self) -> None:
        self.gather = True
        self.items: list[Any] = []

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"CollectingSink({len(self.items)} items)"

    def clear(self) -> None:
        """Forget every collected item."""
        self.items.clear()

    def open_partition(self, worker: int, workers: int) -> SinkPartition:
        """Return a partition appending to :attr:`items`."""
        _check_worker("CollectingSink", worker, workers)
        return _CollectingPartition(self.items)


class _CollectingPartition:
    __slots__ = ("_items",)

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    async def write_batch(self, items: list[Any]) -> None:
        self._items.extend(items)

    async def aclose(self) -> None:
        pass


class CallbackSink:
    """Calls ``fn(item)`` for each item, or ``fn(items)`` once per batch with ``batch=True``.

    ``fn`` may be a plain function or an ``async def`` function (any callable whose result is
    awaitable is awaited, so the call completes before the next one starts). Calls happen in
    batch order within a partition; with ``gather=False`` each worker calls ``fn`` in its own
    process.

    Args:
        fn: the callback.
        gather: whether every worker's output is shipped to the driver and called there.
        batch: call ``fn`` with each batch (a list) instead of each item.

    Raises:
        TypeError: ``fn`` is not callable.
    """

    gather: bool

    def __init__(
        self, fn: Callable[[Any], Any], *, gather: bool = False, batch: bool = False
    ) -> None:
        if not callable(fn):
            raise TypeError(f"CallbackSink: fn must be callable; got {type(fn).__name__}")
        self.gather = bool(gather)
        self.batch = bool(batch)
        self._fn = fn

    def open_partition(self, worker: int, workers: int) -> SinkPartition:
        """Return a partition calling the callback."""
        _check_worker("CallbackSink", worker, workers)
        return _CallbackPartition(self._fn, self.batch)


class _CallbackPartition:
    __slots__ = ("_batch", "_fn")

    def __init__(self, fn: Callable[[Any], Any], batch: bool) -> None:
        self._fn, self._batch = fn, batch

    async def write_batch(self, items: list[Any]) -> None:
        fn = self._fn
        if self._batch:
            result = fn(items)
            if inspect.isawaitable(result):
                await result
            return
        isawaitable = inspect.isawaitable
        for item in items:
            result = fn(item)
            if isawaitable(result):
                await result

    async def aclose(self) -> None:
        pass


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# Buffered writes: one syscall per MiB rather than per batch.
_WRITE_BUFFER = 1 << 20


class JsonlSink:
    """Writes one compact JSON line per item (UTF-8, ``ensure_ascii=False``).

    Tuples become arrays. With ``workers == 1`` or ``gather=True`` the single partition writes
    exactly ``path``; with several workers, worker ``w`` writes ``<stem>-w<w><suffix>`` beside it
    (``out.jsonl`` -> ``out-w0.jsonl``, ``out-w1.jsonl``, ...). Parent directories are created
    when a partition opens. Each file is truncated when its partition opens (``append=False``) or
    appended to. A batch is encoded completely before any of it is written, so a batch with an
    unserializable item writes nothing. Writes are buffered; ``aclose`` flushes and fsyncs (the
    fsync runs in a worker thread, off the event loop).

    Args:
        path: the output file.
        gather: ship every worker's output to the driver and write one file there.
        append: append to existing files instead of truncating them.

    Raises:
        TypeError: ``path`` is not a str or os.PathLike.
    """

    gather: bool

    def __init__(
        self, path: str | os.PathLike[str], *, gather: bool = False, append: bool = False
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(
                f"JsonlSink: path must be a str or os.PathLike; got {type(path).__name__}"
            )
        self.path = Path(path)
        self.gather = bool(gather)
        self.append = bool(append)

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r}, gather={self.gather})"

    def partition_path(self, worker: int, workers: int) -> Path:
        """Return the file that ``worker``'s partition writes."""
        _check_worker("JsonlSink", worker, workers)
        if workers == 1 or self.gather:
            return self.path
        return self.path.with_name(f"{self.path.stem}-w{worker}{self.path.suffix}")

    def open_partition(self, worker: int, workers: int) -> SinkPartition:
        """Create parent directories and open the partition's file."""
        path = self.partition_path(worker, workers)
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "ab" if self.append else "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115
        return _JsonlPartition(f)


class _JsonlPartition:
    __slots__ = ("_file",)

    def __init__(self, f: BinaryIO) -> None:
        self._file: BinaryIO | None = f

    async def write_batch(self, items: list[Any]) -> None:
        f = self._file
        if f is None:
            raise RuntimeError("JsonlSink: write_batch on a closed partition")
        if not items:
            return
        f.write(_encode_lines("JsonlSink", items))

    async def aclose(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            f.flush()
            await anyio.to_thread.run_sync(os.fsync, f.fileno())
        finally:
            f.close()


def _encode_lines(owner: str, items: list[Any]) -> bytes:
    """Encode ``items`` as JSON lines (UTF-8, each ending in a newline), all or nothing.

    Raises:
        TypeError: an item is not JSON-serializable (the message names ``owner`` and its type).
    """
    encode = _ENCODER.encode
    try:
        lines = [encode(item) for item in items]
    except (TypeError, ValueError) as exc:
        bad = next(item for item in items if not _encodes(item))
        raise TypeError(
            f"{owner}: item of type {type(bad).__name__} is not JSON-serializable: {exc}"
        ) from exc
    lines.append("")  # the last line's newline, without copying the joined text again
    return "\n".join(lines).encode("utf-8")


def _encodes(item: Any) -> bool:
    try:
        _ENCODER.encode(item)
    except (TypeError, ValueError):
        return False
    return True


class CountingSink:
    """Counts items per partition without keeping them: for benchmarks.

    ``gather=False``. :attr:`count` sums the partitions opened in this process (in a
    multi-process job, each process sees only its own workers' counts).
    """

    gather: bool

    def __init__(self) -> None:
        self.gather = False
        self._partitions: list[_CountingPartition] = []

    @property
    def count(self) -> int:
        """Items written to the partitions opened in this process."""
        return sum(p.count for p in self._partitions)

    def __repr__(self) -> str:
        return f"CountingSink(count={self.count})"

    def open_partition(self, worker: int, workers: int) -> SinkPartition:
        """Return a partition that counts."""
        _check_worker("CountingSink", worker, workers)
        partition = _CountingPartition()
        self._partitions.append(partition)
        return partition


class _CountingPartition:
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    async def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)

    async def aclose(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# dead letters

_MAX_DEPTH = 64


def _json_safe(value: Any, depth: int = 0) -> Any:
    """Return ``value`` as JSON-native data; what JSON cannot hold becomes ``repr(value)``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return (
            value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
        )
    if depth >= _MAX_DEPTH:
        return repr(value)
    if isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {
            (k if isinstance(k, str) else repr(k)): _json_safe(v, depth + 1)
            for k, v in value.items()
        }
    return repr(value)


_FIELDS = ("operator", "error_type", "error", "split", "offset", "record", "key", "worker")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that an operator (or a source) could not process.

    Attributes:
        operator: the operator's name (for a source, the source's name).
        error_type: the exception's class name.
        error: the exception's message.
        split: the source split the record came from, when known.
        offset: its source position in that split, when known.
        record: the record itself.
        key: its key, for a keyed operator.
        worker: the worker that hit the error.
    """

    operator: str
    error_type: str
    error: str
    split: str | None
    offset: int | None
    record: Any
    key: Any = None
    worker: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON- (and CBOR-) encodable dict of every field.

        ``record`` and ``key`` are converted: tuples become lists, non-str dict keys and
        anything else JSON cannot hold (bytes, sets, objects, NaN) become their ``repr()``.
        """
        return {
            "operator": self.operator,
            "error_type": self.error_type,
            "error": self.error,
            "split": self.split,
            "offset": self.offset,
            "record": _json_safe(self.record),
            "key": _json_safe(self.key),
            "worker": self.worker,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeadLetter:
        """Rebuild a dead letter from :meth:`to_json`'s dict.

        ``DeadLetter.from_json(dl.to_json()) == dl`` when ``record`` and ``key`` are
        JSON-native; otherwise they come back in their converted form.

        Raises:
            ValueError: ``data`` lacks a field or has unknown ones.
        """
        if not isinstance(data, dict):
            raise TypeError(f"DeadLetter.from_json: expected a dict; got {type(data).__name__}")
        missing = [f for f in _FIELDS[:6] if f not in data]
        unknown = sorted(set(data) - set(_FIELDS))
        if missing or unknown:
            raise ValueError(
                f"DeadLetter.from_json: missing fields {missing}, unknown fields {unknown}"
            )
        return cls(**data)

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        operator: str,
        record: Any,
        split: str | None = None,
        offset: int | None = None,
        key: Any = None,
        worker: int | None = None,
    ) -> DeadLetter:
        """Build the dead letter for ``record``, which raised ``exc`` in ``operator``."""
        return cls(operator, type(exc).__name__, str(exc), split, offset, record, key, worker)

    @classmethod
    def from_source_error(
        cls, error: Any, *, operator: str, split: str, worker: int | None = None
    ) -> DeadLetter:
        """Build the dead letter for a source's ``SourceError`` (``offset``, ``raw``, ``error``).

        The ``"Type: message"`` text of the source error is split into type and message.
        """
        error_type, sep, message = str(error.error).partition(": ")
        if not sep:
            error_type, message = "SourceError", error_type
        return cls(operator, error_type, message, split, error.offset, error.raw, None, worker)


class DeadLetterSink:
    """Collects dead letters; optionally appends each as one JSON line to ``path``.

    ``gather=True``: every worker's dead letters reach the driver. Accepts :class:`DeadLetter`
    objects and the dicts of :meth:`DeadLetter.to_json` (the form in which the engine ships them
    between processes). Keeps the first ``limit`` letters in :attr:`letters`; :attr:`count`
    counts all of them. The file (parent directories created) is appended to, flushed after
    every batch, and fsynced at ``aclose``.

    Args:
        path: the JSON-lines file to append to, or None for memory only.
        limit: how many letters to keep in memory.

    Raises:
        TypeError: bad argument types.
        ValueError: ``limit`` < 0.
    """

    gather: bool

    def __init__(self, path: str | os.PathLike[str] | None = None, *, limit: int = 10_000) -> None:
        if path is not None and not isinstance(path, str | os.PathLike):
            raise TypeError(
                f"DeadLetterSink: path must be a str, os.PathLike or None; got "
                f"{type(path).__name__}"
            )
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"DeadLetterSink: limit must be an int; got {type(limit).__name__}")
        if limit < 0:
            raise ValueError(f"DeadLetterSink: limit must be >= 0; got {limit}")
        self.gather = True
        self.path = None if path is None else Path(path)
        self.limit = limit
        self.letters: list[DeadLetter] = []
        self.count = 0

    def __repr__(self) -> str:
        return f"DeadLetterSink(count={self.count}, path={self.path})"

    def open_partition(self, worker: int, workers: int) -> SinkPartition:
        """Return a partition recording into this sink (and appending to its file)."""
        _check_worker("DeadLetterSink", worker, workers)
        f = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "ab")  # noqa: SIM115
        return _DeadLetterPartition(self, f)

    def _record(self, letters: list[DeadLetter]) -> None:
        room = self.limit - len(self.letters)
        if room > 0:
            self.letters.extend(letters[:room])
        self.count += len(letters)


class _DeadLetterPartition:
    __slots__ = ("_file", "_sink")

    def __init__(self, sink: DeadLetterSink, f: BinaryIO | None) -> None:
        self._sink, self._file = sink, f

    async def write_batch(self, items: list[Any]) -> None:
        letters = []
        for item in items:
            if isinstance(item, DeadLetter):
                letters.append(item)
            elif isinstance(item, dict):
                letters.append(DeadLetter.from_json(item))
            else:
                raise TypeError(
                    f"DeadLetterSink: expected DeadLetter or its to_json() dict; got "
                    f"{type(item).__name__}"
                )
        self._sink._record(letters)
        f = self._file
        if f is not None and letters:
            lines = [_ENCODER.encode(letter.to_json()) for letter in letters]
            f.write(("\n".join(lines) + "\n").encode("utf-8"))
            f.flush()

    async def aclose(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            f.flush()
            await anyio.to_thread.run_sync(os.fsync, f.fileno())
        finally:
            f.close()
