"""One hosted actor: its bounded mailbox, its instance and the task that feeds it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import anyio
from anyio import CancelScope, ClosedResourceError, EndOfStream, WouldBlock
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint

from ._actor import Actor, SupervisionPolicy
from ._exceptions import ActorFailedError, ActorStartError, ActorStoppedError
from ._log import get_logger
from ._mailbox import EMPTY, Mailbox
from ._messages import Ask, MigrateMarker, StopMarker

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ("Cell", "Migration")

log = get_logger("shoal.actors")

#: How long on_stop may take when the actor is torn down by cancellation.
TEARDOWN_TIMEOUT_S = 10.0
#: How long an actor handles messages in a row before it lets the other ready tasks of its
#: event loop run (see Cell._loop): without it, an actor with a full mailbox kept the loop for
#: its whole backlog (tens to hundreds of ms), and every control message on the loop waited.
TURN_S = 0.002


class Migration:
    """The handshake between ``Worker.migrate`` and the cell's task."""

    __slots__ = ("committed", "continuation", "error", "handed", "state", "verdict")

    def __init__(self) -> None:
        self.handed = anyio.Event()  # set by the cell: state (or error) is ready
        self.verdict = anyio.Event()  # set by migrate: committed or rolled back
        self.state: Any = None
        self.continuation: tuple[Any] | None = None
        self.error: BaseException | None = None
        self.committed = False


class Cell:
    """The kernel side of one actor; the worker owns it, the actor never sees it."""

    def __init__(
        self,
        worker: Worker,
        name: str,
        factory: Callable[[], Actor],
        *,
        policy: SupervisionPolicy,
        mailbox_size: int,
    ) -> None:
        self.worker = worker
        self.name = name
        self.factory = factory
        self.policy = policy
        self.mailbox_size = mailbox_size
        # The mailbox bound is the actor's backpressure: a full mailbox makes senders wait.
        # Not an anyio memory object stream: see _mailbox.py for why (and what was measured).
        self.mailbox = Mailbox(mailbox_size)
        self.instance: Actor | None = None
        self.continuation: tuple[Any] | None = None
        self.messages_in = 0
        self.dead_letters = 0
        self.done = anyio.Event()
        self.scope = CancelScope()
        self.halting = False
        self.migration: Migration | None = None
        self.migrated = False
        #: Set by ``Actor.hand_off``: the worker its successor runs on.
        self.forward_to: int | None = None
        self._restarts: deque[float] = deque()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(
        self,
        rehydrate: tuple[Any] | None = None,
        continuation: tuple[Any] | None = None,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Start the instance, report readiness, then feed it until it stops."""
        try:
            with self.scope:
                try:
                    await self._start_instance(rehydrate)
                except Exception as exc:
                    raise ActorStartError(
                        f"actor {self.name!r} failed to start: {type(exc).__name__}: {exc}"
                    ) from exc
                if continuation is not None:
                    self.continuation = continuation
                task_status.started()
                await self._loop()
        finally:
            with CancelScope(shield=True):
                await self._teardown()

    async def _start_instance(self, rehydrate: tuple[Any] | None) -> None:
        instance = self.factory()
        if not isinstance(instance, Actor):
            raise TypeError(
                f"the factory of actor {self.name!r} returned {type(instance).__qualname__},"
                " not an Actor"
            )
        instance.name = self.name
        instance.ref = self.worker.ref(self.name)
        instance.worker = self.worker
        instance._cell = self
        self.instance = instance
        if rehydrate is not None:
            await instance.rehydrate(rehydrate[0])
        await instance.on_start()

    async def _stop_instance(self) -> None:
        instance, self.instance = self.instance, None
        if instance is not None:
            try:
                await instance.on_stop()
            except Exception:
                log.exception("on_stop raised", actor=self.name, worker=self.worker.worker_id)

    async def _teardown(self) -> None:
        with anyio.move_on_after(TEARDOWN_TIMEOUT_S):
            await self._stop_instance()
        if self.forward_to is not None and not self.halting:
            # Handed off: the mailbox goes to the successor (the worker retires the cell).
            self.migrated = True
            self.continuation = None
            await self.worker._hand_off(self, self.forward_to)
        elif not self.migrated:
            # What is queued, and what senders still wait to queue, is rejected; those
            # senders' tells return (the messages count as dead letters), asks get the error.
            for item in self.mailbox.close():
                self._reject(item)
        self.worker._cell_finished(self)
        self.done.set()

    def _reject(self, item: Any) -> None:
        if type(item) is Ask:
            item.reply.fail(ActorStoppedError(f"actor {self.name!r} has stopped"))
        elif type(item) is not StopMarker and type(item) is not MigrateMarker:
            self.dead_letters += 1
            self.worker.log_consequence("message dropped: actor stopped", actor=self.name)

    def halt(self) -> None:
        """Stop after the message in hand, without draining the mailbox (worker exit)."""
        self.halting = True
        # A full mailbox means the loop sees `halting` with its next message anyway.
        with suppress(WouldBlock, ClosedResourceError):
            self.mailbox.put_nowait(StopMarker())

    # -- the message loop --------------------------------------------------------------------

    async def _loop(self) -> None:
        mailbox = self.mailbox
        get_nowait = mailbox.get_nowait
        clock = time.perf_counter
        turn = clock()
        while True:
            # Emptiness is a return value, not an exception: this is every message's path.
            item = get_nowait()
            if item is not EMPTY and clock() - turn > TURN_S:
                # A fair turn: an actor with a full mailbox lets the other ready tasks run
                # every TURN_S (a control message elsewhere waits at most that long for it).
                await checkpoint()
                turn = clock()
            if item is EMPTY:
                turn = clock()
                if self.continuation is None:
                    try:
                        item = await mailbox.get()
                    except EndOfStream:
                        return
                else:
                    # Let every ready task run (and maybe fill the mailbox) before going idle.
                    await checkpoint()
                    item = get_nowait()
                    if item is EMPTY:
                        if self.continuation is None:
                            continue
                        (item,) = self.continuation
                        self.continuation = None
            if self.halting:
                self._reject(item)
                return
            kind = type(item)
            if kind is Ask:
                self.messages_in += 1
                try:
                    result = await self.instance.receive(item.message)  # type: ignore[union-attr]
                except Exception as exc:
                    item.reply.fail(exc)
                    if not await self._failed(exc):
                        return
                else:
                    item.reply.ok(result)
                if self.forward_to is not None:
                    return
            elif kind is StopMarker:
                return
            elif kind is MigrateMarker:
                if not await self._migrate_out():
                    return
            else:
                self.messages_in += 1
                try:
                    await self.instance.receive(item)  # type: ignore[union-attr]
                except Exception as exc:
                    if not await self._failed(exc):
                        return
                if self.forward_to is not None:
                    return

    async def _failed(self, exc: Exception) -> bool:
        """Apply the supervision policy; return whether the loop goes on."""
        instance = self.instance
        (log.debug if self.worker.aborting else log.warning)(
            "actor failed",
            actor=self.name,
            worker=self.worker.worker_id,
            error=f"{type(exc).__name__}: {exc}",
            strategy=self.policy.strategy,
        )
        if instance is not None:
            try:
                await instance.on_failure(exc)
            except Exception as hook_exc:
                log.exception("on_failure raised", actor=self.name)
                exc = hook_exc
        strategy = self.policy.strategy
        if strategy == "restart":
            now = time.monotonic()
            window = self._restarts
            while window and now - window[0] > self.policy.within_s:
                window.popleft()
            if len(window) < self.policy.max_restarts:
                window.append(now)
                await self._stop_instance()
                self.continuation = None
                try:
                    await self._start_instance(None)
                except Exception as start_exc:
                    self._escalate(start_exc, "failed to restart")
                    return False
                return True
            self._escalate(
                exc,
                f"failed more than {self.policy.max_restarts} times within"
                f" {self.policy.within_s} s",
            )
            return False
        if strategy == "stop":
            return False
        self._escalate(exc, "failed")
        return False

    def _escalate(self, exc: BaseException, what: str) -> None:
        error = ActorFailedError(
            f"actor {self.name!r} {what}: {type(exc).__name__}: {exc}", actor=self.name
        )
        error.__cause__ = exc
        self.worker._escalate(error)

    async def _migrate_out(self) -> bool:
        """Hand the state to ``Worker.migrate``; return whether the loop goes on here."""
        migration = self.migration
        instance = self.instance
        if migration is None or instance is None:  # pragma: no cover - markers are private
            return True
        try:
            migration.state = await instance.dehydrate()
        except Exception as exc:
            migration.error = exc
            self.migration = None
            migration.handed.set()
            return True
        migration.continuation, self.continuation = self.continuation, None
        await self._stop_instance()
        migration.handed.set()
        await migration.verdict.wait()
        if migration.committed:
            self.migrated = True
            return False
        # Rolled back: the actor comes back here from its own dehydrated state.
        self.migration = None
        try:
            await self._start_instance((migration.state,))
        except Exception as exc:
            self._escalate(exc, "failed to restart after an aborted migration")
            return False
        self.continuation = migration.continuation
        return True
