"""Virtual processing time for tests: a clock that moves only when told, or jumps when idle.

:class:`VirtualClock` is a :class:`~._time.Clock` (``now()``, ``call_at(deadline, callback)``)
that starts at ``start`` and never moves by itself. Used alone (not installed) it is a manual
clock on any event loop, uvloop included: ``advance(dt)`` / ``advance_to(t)`` move it and run
the ``call_at`` callbacks they pass, in deadline order.

**Installed** in the running loop (``with clock:`` inside the test), it also becomes the loop's
time: ``loop.time()`` returns ``clock.now()``, so ``anyio.sleep``, ``asyncio.sleep``,
``loop.call_later``, ``anyio.move_on_after`` (checkpoint intervals, backoff, timeouts) wait for
virtual seconds. With ``autojump=True`` the clock jumps, as trio's ``MockClock`` with an
autojump threshold does: when every task of the loop is blocked (nothing runnable, nothing
readable), time jumps to the earliest deadline, be it a loop timer or a ``call_at`` callback,
so a one-hour timer fires at once and a time-based test never waits in real time. It never
jumps while a task is runnable.

How, on asyncio: the loop's ``time`` is replaced on the loop object, and its selector's
``select(timeout)`` wrapped: a select that would block (the loop has nothing ready) first polls
with no timeout, and if nothing is ready either wakes the tasks waiting in
:meth:`VirtualClock.run_until_idle` or (autojump) moves virtual time to the next deadline and
returns; only with no deadline at all does it block, in real time, for I/O or a worker thread.
Leaving the ``with`` block restores ``loop.time`` and ``select`` and shifts the loop timers
still pending back onto real time, each keeping the virtual time it had left.

**uvloop** cannot be installed into: its loop is compiled, reads its own time and has no Python
selector to wrap, so :meth:`VirtualClock.install` raises :class:`VirtualClockError` there. The
manual, not-installed use works on uvloop (the runtime's processing-time timers and idle checks
go through ``call_at``); loop sleeps then take real time.

A worker thread (``anyio.to_thread``: a checkpoint file write, an fsync) is not a task: while
one runs and every task waits for it, autojump may move time on. Pass
``autojump_threshold=<real seconds>`` to wait that long for I/O or a thread before each jump.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from ._exceptions import VirtualClockError
from ._time import Cancellable, PendingCall

__all__ = ("VirtualClock", "run_virtual")

T = TypeVar("T")


class _Installed:
    """What installing changed in one loop, to undo it."""

    __slots__ = ("loop", "original_select", "original_time", "selector")

    def __init__(self, loop: asyncio.BaseEventLoop, selector: Any) -> None:
        self.loop = loop
        self.selector = selector
        self.original_time: Callable[[], float] = loop.time
        self.original_select: Callable[[float | None], Any] = selector.select


class VirtualClock:
    """A processing-time clock that moves only when told to, or (installed, with ``autojump``)
    jumps to the next deadline whenever every task is blocked.

    Args:
        start: the initial time, in seconds (what ``now()`` returns before any move).
        autojump: when installed, jump to the next deadline whenever the loop is idle.
        autojump_threshold: real seconds an idle loop waits for I/O or a worker thread
            before each jump (0: jump at once).

    Use it as the job's clock (``run_job(flow, clock=clock)``) and, for loop timers too,
    install it for the test's duration::

        with VirtualClock(autojump=True) as clock:
            await anyio.sleep(3600)  # returns at once; clock.now() == 3600.0
    """

    __slots__ = (
        "_calls",
        "_idle",
        "_installed",
        "_now",
        "_seq",
        "autojump",
        "start",
        "threshold",
    )

    def __init__(
        self, start: float = 0.0, *, autojump: bool = False, autojump_threshold: float = 0.0
    ) -> None:
        if isinstance(start, bool) or not isinstance(start, int | float) or start != start:
            raise TypeError(f"VirtualClock start must be a number of seconds; got {start!r}")
        if (
            isinstance(autojump_threshold, bool)
            or not isinstance(autojump_threshold, int | float)
            or not 0 <= autojump_threshold < float("inf")
        ):
            raise ValueError(
                f"autojump_threshold must be real seconds >= 0; got {autojump_threshold!r}"
            )
        self.start = float(start)
        self.autojump = autojump
        self.threshold = float(autojump_threshold)
        self._now = self.start
        self._calls: list[tuple[float, int, PendingCall]] = []
        self._seq = 0
        self._installed: _Installed | None = None
        self._idle: list[asyncio.Future[None]] = []

    # -- the Clock protocol ------------------------------------------------------------------

    def now(self) -> float:
        """The virtual time, in seconds."""
        return self._now

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Cancellable:
        """Run ``callback`` once the clock reaches ``deadline`` (at once if it has): from
        :meth:`advance`, or, installed, from the loop when it jumps there."""
        call = PendingCall(callback)
        if deadline <= self.now():
            callback()
            return call
        self._seq += 1
        heapq.heappush(self._calls, (deadline, self._seq, call))
        return call

    # -- moving it ---------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0) and run every ``call_at`` callback it
        passes, in deadline order (with the clock at each one's deadline). Installed, the loop
        timers it passes run when the loop next polls (the caller's next ``await``)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise ValueError(f"a clock only moves forward; got advance({seconds!r})")
        self.advance_to(self.now() + seconds)

    def advance_to(self, when: float) -> None:
        """Move the clock forward to ``when`` (not before now); see :meth:`advance`."""
        if isinstance(when, bool) or not isinstance(when, int | float) or not when >= self.now():
            raise ValueError(
                f"a clock only moves forward; got advance_to({when!r}) at now={self.now()!r}"
            )
        calls = self._calls
        while calls and calls[0][0] <= when:
            deadline, _seq, call = heapq.heappop(calls)
            if call.cancelled:
                continue
            call.cancelled = True
            self._now = max(self._now, deadline)
            call.callback()
        self._now = float(when)

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, of ``call_at`` or (installed) of a loop timer, in
        clock time; None when nothing waits on time."""
        calls = self._calls
        while calls and calls[0][2].cancelled:
            heapq.heappop(calls)
        found = calls[0][0] if calls else None
        installed = self._installed
        if installed is not None:
            timer = _earliest_timer(installed.loop)
            if timer is not None:
                when = timer  # the loop's time is the clock's while installed
                found = when if found is None else min(found, when)
        return found

    async def run_until_idle(self) -> None:
        """Return once every other task of the loop is blocked (waiting on time, I/O or an
        event), without moving time. Needs the clock installed.

        Raises:
            VirtualClockError: the clock is not installed in the running loop.
        """
        loop = asyncio.get_running_loop()
        if self._installed is None or self._installed.loop is not loop:
            raise VirtualClockError(
                "run_until_idle needs the clock installed in the running loop: "
                "use `with clock:` inside the test"
            )
        waiter: asyncio.Future[None] = loop.create_future()
        self._idle.append(waiter)
        await waiter

    # -- installing ----------------------------------------------------------------------------

    @property
    def installed(self) -> bool:
        """Whether the clock is the running loop's time (between install and uninstall)."""
        return self._installed is not None

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Make this clock ``loop``'s time (default: the running loop); see the module doc.

        Raises:
            VirtualClockError: already installed, or ``loop`` is not asyncio's own
                selector loop (uvloop: use the clock without installing it).
        """
        if self._installed is not None:
            raise VirtualClockError("this VirtualClock is already installed; uninstall it first")
        if loop is None:
            loop = asyncio.get_running_loop()
        selector: Any = getattr(loop, "_selector", None)
        if not isinstance(loop, asyncio.BaseEventLoop) or not callable(
            getattr(selector, "select", None)
        ):
            raise VirtualClockError(
                f"a VirtualClock can only be installed into asyncio's own selector event loop; "
                f"got {type(loop).__module__}.{type(loop).__qualname__} (uvloop has no "
                "Python selector to wrap): run this test on asyncio, or use the clock without "
                "installing it (advance() by hand; loop sleeps then take real time)"
            )
        if getattr(loop, "_shoal_virtual_clock", None) is not None:
            raise VirtualClockError("another VirtualClock is installed in this loop")
        installed = _Installed(loop, selector)
        self._installed = installed
        # The loop's time becomes the clock's: timers already pending keep the real time
        # they had left, now in virtual time.
        _shift_timers(loop, self._now - installed.original_time())
        loop.time = self._loop_time  # type: ignore[method-assign]
        selector.select = self._select
        loop._shoal_virtual_clock = self  # type: ignore[attr-defined]

    def uninstall(self) -> None:
        """Give the loop back its own time and selector (nothing if not installed). Loop
        timers still pending keep the virtual time they had left, now in real time."""
        installed, self._installed = self._installed, None
        if installed is None:
            return
        loop = installed.loop
        del loop.time
        del installed.selector.select
        del loop._shoal_virtual_clock  # type: ignore[attr-defined]
        _shift_timers(loop, installed.original_time() - self._now)
        for waiter in self._idle:
            if not waiter.done():
                waiter.set_exception(VirtualClockError("the VirtualClock was uninstalled"))
        self._idle.clear()

    def __enter__(self) -> VirtualClock:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()

    def _loop_time(self) -> float:
        return self._now

    def _select(self, timeout: float | None) -> Any:
        installed = self._installed
        assert installed is not None
        select = installed.original_select
        if timeout == 0:
            return select(0)
        # The loop has nothing ready: every task is blocked, unless I/O is ready now.
        events = select(0)
        if events:
            return events
        if self.threshold > 0:
            events = select(self.threshold)
            if events:
                return events
        if self._idle:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            return events
        target = self.next_deadline() if self.autojump else None
        if target is None:
            return select(None)  # wait for I/O or a thread (or another thread's advance)
        self._jump_to(installed, target)
        return events

    def _jump_to(self, installed: _Installed, target: float) -> None:
        """Autojump: move to ``target``; ``call_at`` callbacks run from the loop, not here."""
        loop = installed.loop
        calls = self._calls
        while calls and calls[0][0] <= target:
            _deadline, _seq, call = heapq.heappop(calls)
            if not call.cancelled:
                call.cancelled = True
                loop.call_soon(call.callback)
        self._now = max(self._now, target)

    def __repr__(self) -> str:
        mode = ", autojump=True" if self.autojump else ""
        return f"VirtualClock(now={self.now()!r}{mode})"


def _earliest_timer(loop: asyncio.AbstractEventLoop) -> float | None:
    """The loop time of ``loop``'s earliest timer that is not cancelled (None: no timer)."""
    scheduled: list[Any] = loop._scheduled  # type: ignore[attr-defined]
    if scheduled and not scheduled[0].cancelled():
        when: float = scheduled[0].when()
        return when
    live = [handle.when() for handle in scheduled if not handle.cancelled()]
    return min(live) if live else None


def run_virtual(
    fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, clock: VirtualClock | None = None
) -> T:
    """Run ``await fn(*args)`` in a new asyncio event loop with ``clock`` installed (default:
    a new ``VirtualClock(autojump=True)``) and return its result: the synchronous way into
    virtual time, like ``trio.run(..., clock=MockClock(autojump_threshold=0))``. The loop is
    asyncio's own selector loop (autojump cannot work on uvloop), closed at the end.

    Raises:
        RuntimeError: called from a running event loop (await the function there instead,
            with the clock installed: ``with clock:``).
    """
    chosen = VirtualClock(autojump=True) if clock is None else clock

    async def main() -> T:
        with chosen:
            return await fn(*args)

    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(main())


def _shift_timers(loop: asyncio.AbstractEventLoop, shift: float) -> None:
    """Move every pending timer of ``loop`` by ``shift`` seconds of loop time (the same for
    all: the heap's order holds)."""
    scheduled: list[Any] = loop._scheduled  # type: ignore[attr-defined]
    for handle in scheduled:
        handle._when += shift
