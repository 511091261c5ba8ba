"""An actor's mailbox: a bounded FIFO with one receiver (the cell's loop) and many senders.

Why not an anyio memory object stream (the house default for queues between tasks): every
actor has one, and the streaming engine's key-group actors are usually parked on an empty
mailbox when a message arrives, so the kernel paid for the stream's generality on every
message. Measured on the machine this was written on (CPython 3.11, anyio 4.16, uvloop; best
of 5 x 1M calls, ``timeit``):

* ``receive_nowait()`` on an empty stream raises and catches WouldBlock: ~400 ns, ~10% of a
  streaming worker's CPU in ``Cell._loop``. Here the loop checks emptiness: ``get_nowait()``
  returning :data:`EMPTY` costs 70 ns.
* ``send_nowait`` + ``receive_nowait``: 220 ns; ``put_nowait`` + ``get_nowait``: 154 ns (a bare
  deque append + popleft: 51 ns).
* Waking a parked receiver: the stream's ``receive()`` yields a whole event-loop turn before
  parking, then makes an anyio Event and an item-receiver record (with task info) per wait, and
  every send probes the receiver for a pending cancellation. Here the receiver parks on one
  bare asyncio future made only when the mailbox is empty, and ``put_nowait`` sets it.
  ``tests/actors/bench_throughput.py --local 0 --remote 0 --big 0`` (64 idle actors, each
  message finds its actor parked): 10.9-12.1 us per message with the stream, 1.9-2.1 us with
  this mailbox; parking on an anyio Event instead of the future measured 5.1-6.8 us.

The kernel runs on the asyncio backend only (uvloop or stock), so waiting on a bare asyncio
future is sound: anyio's cancel scopes cancel a task by cancelling the future it waits on (and
leave a task whose future is already done to run first; a plain ``task.cancel()`` may not, and
that case is handled too).

Semantics (those the kernel relied on with the memory stream, plus cancellation safety):

* Bounded: at most ``size`` items wait. ``put_nowait`` raises WouldBlock when full; ``put``
  waits for room (backpressure, never a drop). Neither checkpoints when there is room.
* Senders insert their own item: a ``put`` that waited appends its item itself when it resumes,
  with nothing awaited in between, so a cancelled ``put`` has inserted nothing, and a ``put``
  that returned has inserted its item (no half-inserted item, unlike the memory stream, where
  the receiver moved a waiting sender's item in and the sender could still see a cancellation).
* Fairness: waiting senders are woken first-come first-served, one per freed slot, and a freed
  slot is reserved for the sender it woke (``put_nowait`` and fresh ``put`` calls see the
  mailbox as full while senders wait), so a waiting sender cannot be starved by newcomers. A
  sender that is cancelled after being woken passes its slot on to the next waiting sender.
  Per-sender order holds because a sender awaits its own ``put`` before the next one.
* One receiver: ``get_nowait`` returns :data:`EMPTY` instead of raising; ``get`` parks on one
  future created only when the mailbox is empty. A cancelled ``get`` loses nothing: items stay
  in the deque until the receiver pops them itself.
* Closing: ``close()`` (or ``take_nowait()`` while draining) hands over what is queued and the
  items of senders still waiting, in order, and those senders' ``put`` returns normally, as
  the memory stream's ``receive_nowait`` did when the kernel drained a stopped or migrated
  actor's mailbox. A waiting sender with a cancellation pending at that moment is skipped (its
  ``put`` raises the cancellation, nothing handed over); a cancellation requested after the
  hand-over, in the same event-loop turn, still reaches the sender, whose item has then been
  handed over anyway (rejected or forwarded, never delivered twice). After close, ``put`` and
  ``put_nowait`` raise ClosedResourceError and ``get`` raises EndOfStream once empty.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final

from anyio import ClosedResourceError, EndOfStream, TaskInfo, WouldBlock, get_current_task

__all__ = ("EMPTY", "Mailbox", "MailboxStatistics")


class _Empty:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<EMPTY>"


#: What ``get_nowait`` and ``take_nowait`` return when there is nothing to take.
EMPTY: Final[Any] = _Empty()

_WAITING, _RESERVED, _HANDED = 0, 1, 2


class _Sender:
    """A sender waiting for room, with its item (handed over if the mailbox closes)."""

    __slots__ = ("future", "item", "state", "task")

    def __init__(self, future: asyncio.Future[None], item: Any, task: TaskInfo) -> None:
        self.future = future
        self.item = item
        self.task = task
        self.state = _WAITING


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    """A snapshot of one mailbox (see :meth:`Mailbox.statistics`)."""

    depth: int  # items queued
    size: int  # the bound
    senders_waiting: int  # senders waiting for room (woken ones included)
    receiver_waiting: bool


class Mailbox:
    """A bounded FIFO with one receiver; see the module docstring for the guarantees."""

    __slots__ = ("_closed", "_getter", "_items", "_limit", "_size", "_waiting", "_woken")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"mailbox size must be >= 1; got {size}")
        self._size = size
        self._items: deque[Any] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._waiting: deque[_Sender] = deque()  # not woken yet, first come first
        self._woken: dict[_Sender, None] = {}  # woken, each holding a reserved slot
        # How many items may be queued right now: the size less the reserved slots, -1 once
        # closed (so put_nowait needs one comparison). Invariant: senders wait only while
        # len(_items) >= _limit, so newcomers cannot overtake them.
        self._limit = size
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Mailbox {len(self._items)}/{self._size} {state}>"

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            depth=len(self._items),
            size=self._size,
            senders_waiting=len(self._waiting) + len(self._woken),
            receiver_waiting=self._getter is not None,
        )

    # -- sending -----------------------------------------------------------------------------

    def put_nowait(self, item: Any) -> None:
        """Queue ``item``, or raise WouldBlock if full (ClosedResourceError if closed)."""
        items = self._items
        if len(items) >= self._limit:
            if self._closed:
                raise ClosedResourceError
            raise WouldBlock
        items.append(item)
        getter = self._getter  # _wake_getter(), inlined: this is every tell's path
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    async def put(self, item: Any) -> None:
        """Queue ``item``, waiting while the mailbox is full.

        Returns without yielding when there is room. Cancelled, it has queued nothing.

        Raises:
            ClosedResourceError: the mailbox is (or got) closed and the item was not taken.
        """
        items = self._items
        if len(items) < self._limit:
            self.put_nowait(item)
            return
        if self._closed:
            raise ClosedResourceError
        sender = _Sender(asyncio.get_running_loop().create_future(), item, get_current_task())
        self._waiting.append(sender)
        try:
            await sender.future
        except BaseException:
            state = sender.state
            if state == _WAITING:
                with suppress(ValueError):  # already dropped by close() or _wake_senders()
                    self._waiting.remove(sender)
            elif state == _RESERVED:
                self._release(sender)
                self._wake_senders()  # the slot goes to the next waiting sender
            raise
        state = sender.state
        if state == _HANDED:
            return
        if state == _RESERVED:
            self._release(sender)
            if not self._closed:
                # Nothing awaited since the check: the item goes in with the put returning.
                items.append(item)
                self._wake_getter()
                return
        raise ClosedResourceError

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    def _release(self, sender: _Sender) -> None:
        del self._woken[sender]
        if not self._closed:
            self._limit += 1

    def _wake_senders(self) -> None:
        """Give each free slot to the longest-waiting sender still waiting."""
        waiting = self._waiting
        while waiting and len(self._items) < self._limit:
            sender = waiting.popleft()
            if sender.future.done():  # cancelled: its put is about to raise
                continue
            sender.state = _RESERVED
            self._woken[sender] = None
            self._limit -= 1
            sender.future.set_result(None)

    # -- receiving ---------------------------------------------------------------------------

    def get_nowait(self) -> Any:
        """The next item, or :data:`EMPTY` (no exception: the cell loop's common path)."""
        items = self._items
        if not items:
            return EMPTY
        item = items.popleft()
        if self._waiting:
            self._wake_senders()
        return item

    async def get(self) -> Any:
        """The next item, waiting while the mailbox is empty.

        Cancelled, it has taken nothing. Only one task may wait at a time (the cell's loop).

        Raises:
            EndOfStream: the mailbox is closed and empty.
        """
        items = self._items
        while not items:
            if self._closed:
                raise EndOfStream
            if self._getter is not None:
                raise RuntimeError("another task is already waiting on this mailbox")
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                if self._getter is getter:
                    self._getter = None
        item = items.popleft()
        if self._waiting:
            self._wake_senders()
        return item

    # -- draining and closing ----------------------------------------------------------------

    def take_nowait(self) -> Any:
        """Like :meth:`get_nowait`, but when the queue is empty take a waiting sender's item.

        For draining a mailbox that is about to close (migration): that sender's ``put`` then
        returns normally. Returns :data:`EMPTY` when neither is left.
        """
        item = self.get_nowait()
        if item is EMPTY:
            sender = self._hand_over_sender()
            if sender is not None:
                item = sender.item
                self._wake_senders()
        return item

    def close(self) -> list[Any]:
        """Close the mailbox; return what was queued plus the items of waiting senders.

        Those senders' ``put`` returns normally (the caller now owns their items); a waiting
        receiver gets EndOfStream. Idempotent: a second call returns an empty list.
        """
        if self._closed:
            return []
        self._closed = True
        self._limit = -1
        left = list(self._items)
        self._items.clear()
        while (sender := self._hand_over_sender()) is not None:
            left.append(sender.item)
        # Senders with a cancellation pending were skipped: they wake up to raise it (or
        # ClosedResourceError), having handed over nothing.
        for sender in (*self._woken, *self._waiting):
            if not sender.future.done():
                sender.future.set_result(None)
        self._waiting.clear()
        self._wake_getter()
        return left

    def _hand_over_sender(self) -> _Sender | None:
        """Mark the longest-waiting sender without a pending cancellation as handed over."""
        for sender in self._woken:  # woken first: they have waited longest
            if not sender.task.has_pending_cancellation():
                self._release(sender)
                break
        else:
            for sender in self._waiting:
                if not sender.future.done() and not sender.task.has_pending_cancellation():
                    self._waiting.remove(sender)
                    break
            else:
                return None
        sender.state = _HANDED
        if not sender.future.done():
            sender.future.set_result(None)
        return sender
