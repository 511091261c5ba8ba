"""A source the host program pushes records into: ``await job.send(record)``.

:class:`PushSource` is an unbounded, one-split source whose records come from the program that
runs the job (an HTTP handler, a queue consumer) instead of from a file or a broker. It lives
in the host's process and is read by a worker of the same event loop, so it needs workers in
this loop (``processes=False``, the default for one worker); :func:`~shoal.open_job` refuses it
with worker processes (:func:`refuse_push_source_in_processes`).

The contract (see docs/guides/embedding.md, "Pushing records"):

* **Backpressure.** At most ``capacity`` records wait to be read; ``send`` waits for room.
* **Offsets.** Each accepted record gets the next offset (0, 1, 2, ... and, after a resumed
  run, on from the checkpoint's position): ``send`` returns it. The split's position is the
  offset of the next record to read, and a checkpoint records it.
* **Accepted means processed.** A ``send`` that returned has handed its record to the job: a
  stop (``job.stop()``, ``close_input()``) drains every accepted record before the final
  checkpoint. A ``send`` that raised (:class:`InputClosedError`, :class:`JobStoppedError`) did
  not: the record is not in the job.
* **A worker crash** (an attempt restart from the last completed checkpoint) loses nothing:
  the source keeps every record from the last completed checkpoint's position on (``retain``;
  :func:`~shoal.open_job` trims it as checkpoints complete), and the restarted split rereads
  them. Exactly-once state holds as for any source.
* **The host process dies** (``kill -9`` of the service): records not covered by a completed
  checkpoint are gone with it. After ``resume=True`` the split reopens at the checkpoint's
  position and :attr:`PushSource.next_offset` says which offset comes next: resend your own
  log from there. That is at-least-once *from the caller* (exactly-once if the caller's log
  is replayed from ``next_offset``); a caller without a log of its own loses those records.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import anyio

from ._exceptions import InputClosedError
from ._sources import SourceBatch, _check_int, _check_position, _unknown_split

__all__ = ("IDLE_RETURN_S", "PushSource", "refuse_push_source_in_processes")

#: An idle read returns an empty batch after this long: a source actor handles its control
#: messages (checkpoint barriers, a split's move) only between two reads, so a read waiting
#: for a quiet caller must not hold them up for longer. Each empty return in a row doubles
#: the wait, up to :data:`IDLE_RETURN_MAX_S` (a record resets it): a long-idle input wakes
#: once a second, not twenty times (and a virtual clock's autojump makes few jumps over a
#: quiet virtual hour), at the cost of up to a second's delay for a barrier while idle.
IDLE_RETURN_S = 0.05
IDLE_RETURN_MAX_S = 1.0


class PushSource:
    """An in-process source fed by ``await send(record)`` (see the module docstring).

    Args:
        name: names the split (``"push:<name>"``); checkpoints and savepoints record its
            position under that id, so keep it stable across runs of one job.
        capacity: records that may wait unread before ``send`` waits (>= 1). A bigger
            buffer absorbs bursts; a smaller one pushes back on the caller sooner.

    Raises:
        TypeError / ValueError: a bad ``name`` or ``capacity``.
    """

    bounded: bool

    def __init__(self, name: str = "input", *, capacity: int = 1024) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"PushSource: name must be a non-empty str; got {name!r}")
        _check_int("PushSource", "capacity", capacity, 1)
        self.bounded = False
        self.name = name
        self.capacity = capacity
        self._split = f"push:{name}"
        # Records with offsets [_first, _next): retained (read, not yet checkpointed) below
        # _read, waiting to be read from _read on.
        self._log: deque[Any] = deque()
        self._first = 0
        self._read = 0
        self._next = 0
        #: Keep records read until a checkpoint covers them (set by open_job when checkpoints
        #: are on; without checkpoints nothing is ever reread, so nothing is kept).
        self.retain = False
        self._opened = anyio.Event()  # a reader has opened the split: offsets are known
        self._changed = anyio.Event()  # set (and replaced) when records arrive or room frees
        self._closed: BaseException | None = None  # why sends are refused now

    def __repr__(self) -> str:
        return f"PushSource({self.name!r}, capacity={self.capacity})"

    # -- the Source protocol -------------------------------------------------------------------

    def splits(self) -> Sequence[str]:
        """Return ``("push:<name>",)``."""
        return (self._split,)

    def open_split(self, split: str, position: Any | None = None) -> _PushReader:
        """Open the split at its start or at ``position`` (an offset: a restart rereads what
        the source retained from there; a resumed run starts its offsets there). The reader
        takes its place at its first read (a worker opens readers it may not use).

        Raises:
            ValueError: unknown split or a negative position; at the first read, a position
                outside what the source still holds.
        """
        if split != self._split:
            raise _unknown_split("PushSource", split, (self._split,))
        pos = None if position is None else _check_position("PushSource", position, 0, None)
        return _PushReader(self, pos)

    def _start_at(self, position: int | None) -> None:
        """A reader starts reading at ``position`` (None: the split's start)."""
        if not self._opened.is_set():
            if position is not None:  # a resumed run: offsets go on from the checkpoint
                self._first = self._read = self._next = position
            self._opened.set()
            return
        if position is None:
            self._read = self._first  # from its start: everything kept is reread
        elif self._first <= position <= self._next:
            self._read = position
        else:
            raise ValueError(
                f"PushSource {self.name!r}: cannot reopen at offset {position}: it holds "
                f"offsets {self._first}..{self._next} (retain=False, or trimmed past a "
                "checkpoint the job went back to); resend from your own log"
            )
        self._wake()

    # -- the host's side -----------------------------------------------------------------------

    @property
    def next_offset(self) -> int:
        """The offset the next accepted record gets."""
        return self._next

    @property
    def read_offset(self) -> int:
        """The offset of the next record the job reads (every one below it was read)."""
        return self._read

    async def wait_opened(self) -> None:
        """Return once the job has opened the split (or the source was closed)."""
        await self._opened.wait()

    async def wait_changed(self) -> None:
        """Return after the next change: records sent, read, or the input closed."""
        await self._changed.wait()

    @property
    def pending(self) -> int:
        """Records accepted and not read yet."""
        return self._next - self._read

    async def send(self, record: Any) -> int:
        """Hand ``record`` to the job; wait while ``capacity`` records wait unread (and until
        the job has opened the source). Return its offset.

        Raises:
            InputClosedError: the input was closed (``close_input``, ``job.stop()``).
            JobStoppedError: the job has ended (or failed): nothing reads the source now.
        """
        await self._wait_room(1)
        return self._accept((record,))

    async def send_many(self, records: Iterable[Any]) -> range:
        """Hand ``records`` to the job in order, each as :meth:`send` would (waiting for room
        as it goes); return their offsets. When it raises part-way, the records before the
        failing one were accepted (:attr:`next_offset` says how far it got).

        Raises:
            TypeError: ``records`` is a ``str``, ``bytes`` or ``bytearray`` (each character
                would be a record: wrap it in a list to send it as one), or not iterable.
        """
        if isinstance(records, str | bytes | bytearray):
            raise TypeError(
                f"send_many takes an iterable of records, not a {type(records).__name__} (each "
                f"character would be a record): send(x) sends one record, send_many([x]) too"
            )
        if not isinstance(records, Iterable):
            raise TypeError(f"send_many takes an iterable of records; got {type(records).__name__}")
        first: int | None = None
        try:
            for record in records:
                if (
                    self._closed is not None
                    or not self._opened.is_set()
                    or self.pending >= self.capacity
                ):
                    self._wake()  # the reader takes what was appended so far
                    await self._wait_room(1)
                if first is None:
                    first = self._next
                self._log.append(record)
                self._next += 1
        finally:
            self._wake()
        return range(self._next if first is None else first, self._next)

    def close_input(self) -> None:
        """End the input: what was accepted is read, then the split ends (the job drains and,
        with checkpoints on, takes its final checkpoint). Later sends raise
        :class:`InputClosedError`. Idempotent."""
        self.close(InputClosedError(f"the input of PushSource {self.name!r} is closed"))

    def close(self, error: BaseException) -> None:
        """Refuse every send from now on with ``error`` (the first reason given stays)."""
        if self._closed is None:
            self._closed = error
            self._opened.set()  # a send waiting for the start gets the error
            self._wake()

    def committed(self, position: Any) -> None:
        """A checkpoint that read the split up to ``position`` completed: forget what is
        before it (it is never reread)."""
        if not isinstance(position, int) or isinstance(position, bool):
            return
        drop = min(position, self._read) - self._first
        for _ in range(max(drop, 0)):
            self._log.popleft()
        self._first += max(drop, 0)

    # -- internals ----------------------------------------------------------------------------

    def _wake(self) -> None:
        event, self._changed = self._changed, anyio.Event()
        event.set()

    def _check_open(self) -> None:
        if self._closed is not None:
            error = self._closed
            raise type(error)(*error.args)

    async def _wait_room(self, count: int) -> None:
        self._check_open()
        await self._opened.wait()
        while self._next - self._read + count > max(self.capacity, count):
            self._check_open()
            await self._changed.wait()
        self._check_open()

    def _accept(self, records: Iterable[Any]) -> int:
        first = self._next
        for record in records:
            self._log.append(record)
            self._next += 1
        self._wake()
        return first

    def _take(self, max_records: int) -> SourceBatch | None:
        start = self._read
        count = min(max_records, self._next - start)
        if count <= 0:
            return None
        base = start - self._first
        values = [self._log[base + i] for i in range(count)]
        self._read = start + count
        if not self.retain:
            self.committed(self._read)
        self._wake()  # room for waiting senders
        return SourceBatch(values, list(range(start, self._read)), self._read)


class _PushReader:
    """Reads the split; cancel-safe (it takes records only when it returns them)."""

    __slots__ = ("_idle", "_position", "_source", "_started")

    def __init__(self, source: PushSource, position: int | None) -> None:
        self._source = source
        self._position = position
        self._started = False
        self._idle = IDLE_RETURN_S  # how long the next idle read waits

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        source = self._source
        if not self._started:
            self._started = True
            source._start_at(self._position)
        batch = source._take(max_records)
        if batch is None and source._closed is None:
            with anyio.move_on_after(self._idle):
                await source._changed.wait()
            batch = source._take(max_records)
        if batch is not None:
            self._idle = IDLE_RETURN_S
            return batch
        if source._closed is not None:
            return None  # closed and everything read: the split ends
        # Nothing came: an empty batch lets the source actor take the barriers and moves
        # waiting behind this read.
        self._idle = min(2 * self._idle, IDLE_RETURN_MAX_S)
        return SourceBatch([], [], source._read)

    def drain(self) -> SourceBatch | None:
        """The job stops: every accepted record still goes through."""
        return self._source._take(self._source.capacity + self._source.pending)

    async def aclose(self) -> None:
        pass


def refuse_push_source_in_processes(source: object, flow: str) -> None:
    """Worker processes rebuild the flow from its reference: their PushSource would be
    another object than the one the host sends to, so it is refused.

    Raises:
        TypeError: ``source`` is a :class:`PushSource`.
    """
    inputs = getattr(source, "inputs", None)  # a UnionSource: several inputs
    if isinstance(inputs, dict):
        for inner in inputs.values():
            refuse_push_source_in_processes(inner, flow)
    if isinstance(source, PushSource):
        raise TypeError(
            f"flow {flow!r} reads a PushSource, which lives in this process: run it with "
            "workers in this event loop (processes=False), or read the records from a "
            "source the worker processes can open themselves (a file, a broker)"
        )
