"""Refs: the only way to send an actor a message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from anyio import ClosedResourceError, WouldBlock

from ._exceptions import ActorStoppedError, MailboxFullError
from ._mailbox import Mailbox
from ._messages import Ask
from ._reply import LocalReply

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ("Ref",)


class Ref:
    """A handle to a named actor, local or remote, obtained from :meth:`Worker.ref`.

    A worker hands out one Ref object per name and retargets it when the actor is spawned,
    migrated or stopped, so holding on to a Ref is always safe. A local ref puts the message
    straight into the actor's bounded mailbox; a remote ref looks the name up in the worker's
    directory and hands an envelope to the transport for that worker.

    Ordering: messages from one task through refs of one worker to one actor are handled in the
    order they were sent (see docs/architecture for migration).
    """

    __slots__ = ("_mailbox", "_worker", "name")

    def __init__(self, worker: Worker, name: str, mailbox: Mailbox | None) -> None:
        self.name = name
        self._worker = worker
        self._mailbox = mailbox

    def __repr__(self) -> str:
        where = "local" if self._mailbox is not None else "remote"
        return f"<Ref {self.name!r} ({where}) on worker {self._worker.worker_id}>"

    @property
    def is_local(self) -> bool:
        """Whether the actor is hosted on this ref's worker right now."""
        return self._mailbox is not None

    async def tell(self, message: Any) -> None:
        """Send ``message``; wait while the mailbox (or the link to its worker) is full.

        Never drops. When the mailbox has room this returns without yielding to the event loop
        (one deque append): it is a checkpoint only when it has to wait.

        Raises:
            ActorStoppedError: the actor has stopped.
            UnknownActorError: no actor of this name is known here or in the directory.
            PeerLostError: the actor's worker is gone.
            MessageEncodeError: the message cannot cross to the actor's process.
        """
        mailbox = self._mailbox
        if mailbox is not None:
            try:
                mailbox.put_nowait(message)
            except WouldBlock:
                await self._put_waiting(mailbox, message)
            except ClosedResourceError:
                await self._retarget(mailbox, message)
            return
        await self._worker._send_remote(self.name, message)

    def tell_nowait(self, message: Any) -> None:
        """Send ``message`` if that needs no waiting.

        Raises:
            MailboxFullError: the mailbox (or the link to a remote worker) is full; it is an
                ``anyio.WouldBlock`` too.
            ActorStoppedError, UnknownActorError, PeerLostError, MessageEncodeError: as tell().
        """
        mailbox = self._mailbox
        if mailbox is not None:
            try:
                mailbox.put_nowait(message)
            except WouldBlock:
                raise MailboxFullError(f"mailbox of actor {self.name!r} is full") from None
            except ClosedResourceError:
                if self._mailbox is None or self._mailbox is mailbox:
                    raise self._stopped() from None
                self.tell_nowait(message)
            return
        self._worker._send_remote_nowait(self.name, message)

    def tell_urgent(self, message: Any) -> None:
        """Send ``message`` ahead of everything else to the actor's worker; never waits.

        For control messages whose meaning does not depend on their order with the data
        flowing to that worker (a key group's handoff): across processes it goes on the
        peer's *urgent lane* (its own connection, not behind the buffered data), and there
        the handler registered with :meth:`Worker.on_urgent` takes it at once, or it goes into
        the actor's mailbox (waiting for room there, if it must, without blocking the sender).
        It may overtake any message sent earlier, from anywhere.

        Raises:
            UnknownActorError, PeerLostError, MessageEncodeError: as tell().
        """
        self._worker._send_urgent(self.name, message)

    def prepare_urgent(self) -> None:
        """Open the way for a :meth:`tell_urgent` to this actor's worker ahead of time (its
        urgent lane: connecting takes a few turns of both loops), so the first one is not
        late. Nothing to do in one process or when it is open already; never waits.

        Raises:
            UnknownActorError: as tell().
        """
        self._worker._prepare_urgent(self.name)

    async def ask(self, message: Any, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Send ``message`` and wait for the actor's return value.

        Args:
            message: the request.
            timeout: seconds to wait in total (mailbox space included); None waits forever.

        Returns:
            What the actor's ``receive`` returned.

        Raises:
            TimeoutError: no answer within ``timeout``.
            ActorStoppedError: the actor stopped before answering.
            RemoteActorError: a remote actor raised an error (type name and text); a local actor's
                error (or a kernel error from any worker) is raised as itself.
            UnknownActorError, PeerLostError, MessageEncodeError: as tell().
        """
        reply = LocalReply()
        with anyio.fail_after(timeout):
            await self._ask(Ask(message, reply))
            return await reply.wait()

    async def _ask(self, ask: Ask) -> None:
        mailbox = self._mailbox
        if mailbox is not None:
            try:
                mailbox.put_nowait(ask)
            except WouldBlock:
                await self._put_waiting(mailbox, ask)
            except ClosedResourceError:
                await self._retarget(mailbox, ask)
            return
        await self._worker._ask_remote(self.name, ask)

    async def _put_waiting(self, mailbox: Mailbox, item: Any) -> None:
        try:
            await mailbox.put(item)
        except ClosedResourceError:
            await self._retarget(mailbox, item)

    async def _retarget(self, old: Mailbox, item: Any) -> None:
        # The mailbox we used is closed: the actor stopped, or moved, or was spawned again.
        if self._mailbox is old:
            raise self._stopped() from None
        if isinstance(item, Ask):
            await self._ask(item)
        else:
            await self.tell(item)

    def _stopped(self) -> ActorStoppedError:
        return ActorStoppedError(f"actor {self.name!r} has stopped")
