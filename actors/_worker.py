"""Workers: one event loop's worth of actors, and how they reach each other."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio import ClosedResourceError, WouldBlock
from anyio.abc import TaskGroup

from ._actor import Actor, SupervisionPolicy
from ._bootstrap import factory_reference, resolve_object
from ._cell import Cell, Migration
from ._codec import Codec, default_codec
from ._directory import Directory
from ._exceptions import (
    ActorFailedError,
    ActorStoppedError,
    MigrationError,
    PeerLostError,
    UnknownActorError,
)
from ._log import get_logger
from ._mailbox import EMPTY
from ._messages import Ask, MigrateMarker, StopMarker
from ._ref import Ref
from ._transport import HIGH_WATER, Link, LocalLink, Mesh, SocketLink

if TYPE_CHECKING:
    from ._reply import Reply

__all__ = ("Worker", "WorkerStatistics", "open_worker")

log = get_logger("shoal.actors")

#: Workers open in this process, by mesh address, so co-resident peers skip the socket. A mesh
#: address is the socket path for a worker with a ``mesh_dir``, else its ``namespace`` and id:
#: workers in different namespaces (two jobs in one loop) never see each other.
_open_workers: dict[str, Worker] = {}

#: The namespace of workers opened without one (tests and hosts that open several workers).
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """A snapshot of one worker's counters (see :meth:`Worker.statistics`)."""

    worker_id: int
    actors: int
    messages_in: int
    messages_out: int
    remote_frames_out: int
    remote_frames_in: int
    bytes_out: int
    bytes_in: int
    dead_letters: int
    mailbox_depths: tuple[tuple[str, int], ...]
    lost_peers: tuple[int, ...]


def _mesh_key(mesh_dir: Path | None, worker_id: int, namespace: str = DEFAULT_NAMESPACE) -> str:
    if mesh_dir is None:
        return f"<in-process:{namespace}>/w{worker_id}"
    return str(mesh_dir / f"w{worker_id}.sock")


class Worker:
    """One event loop hosting many actors. Made by :func:`open_worker`, never directly."""

    def __init__(
        self,
        worker_id: int,
        task_group: TaskGroup,
        *,
        mesh_dir: Path | None,
        peers: frozenset[int],
        codec: Codec,
        connect_timeout: float,
        stop_timeout: float = 10.0,
        namespace: str = DEFAULT_NAMESPACE,
        link_buffer: int = HIGH_WATER,
    ) -> None:
        self.worker_id = worker_id
        self.link_buffer = link_buffer
        #: Set when this worker is being aborted (not stopped in order): its teardown's
        #: consequences are then logged at debug level (see log_consequence).
        self.aborting = False
        #: The peer this worker serves (a job's driver), if any: losing it ends this worker's
        #: work, so from then on the worker counts as aborting.
        self.parent: int | None = None
        self.namespace = namespace
        self.stop_timeout = stop_timeout
        self.peers = peers
        self.mesh_dir = mesh_dir
        self.codec = codec
        self.directory = Directory()
        self._tg = task_group
        self._cells: dict[str, Cell] = {}
        self._refs: dict[str, Ref] = {}
        self._links: dict[int, Link] = {}
        self._urgent_handlers: dict[str, Callable[[Any], bool]] = {}
        self._lost: dict[int, anyio.Event] = {}
        self._leaving: set[int] = set()  # peers that said goodbye (closing in order)
        self._readers: set[int] = set()  # peers whose connection to us is open (hello seen)
        self._failure: ActorFailedError | None = None
        self._closed = False
        self._key = _mesh_key(mesh_dir, worker_id, namespace)
        self.mesh: Mesh | None = None
        if mesh_dir is not None:
            self.mesh = Mesh(self, mesh_dir, connect_timeout=connect_timeout)
        self._finished_in = 0
        self._finished_dead = 0
        self.messages_out = 0
        self.dead_letters = 0

    def __repr__(self) -> str:
        return f"<Worker {self.worker_id} with {len(self._cells)} actors>"

    # -- actors ------------------------------------------------------------------------------

    async def spawn(
        self,
        factory: Callable[[], Actor],
        *,
        name: str,
        mailbox_size: int = 64,
        policy: SupervisionPolicy = SupervisionPolicy(),  # noqa: B008 - frozen, shared safely
    ) -> Ref:
        """Start an actor on this worker and return its ref once ``on_start`` has returned.

        Args:
            factory: makes the instance (an Actor subclass, or a function returning one). Only a
                class or a module-level function can migrate to another process (it is recorded
                as ``module:qualname``).
            name: unique among the actors this worker hosts.
            mailbox_size: how many messages may wait; a full mailbox makes senders wait.
            policy: what happens when ``receive`` raises.

        Raises:
            ValueError: the name is taken or the arguments are invalid.
            ActorStartError: the factory or ``on_start`` raised (chained); ``on_stop`` has run.
        """
        return await self._spawn(factory, name, mailbox_size, policy, None, None)

    @asynccontextmanager
    async def open_actor(
        self,
        factory: Callable[[], Actor],
        *,
        name: str,
        mailbox_size: int = 64,
        policy: SupervisionPolicy = SupervisionPolicy(),  # noqa: B008 - frozen, shared safely
    ) -> AsyncIterator[Ref]:
        """An actor as an async context manager: started on entry, stopped on exit.

        ``async with worker.open_actor(Counter, name="counter") as ref:`` enters once
        ``on_start`` has returned, and leaving the block stops the actor after it has handled
        what is already in its mailbox (``on_stop`` runs; later asks get ActorStoppedError),
        also when the block raises or is cancelled. An actor that stopped, failed or migrated
        away before the block ends is left as it is. Takes the arguments of :meth:`spawn`.
        """
        ref = await self.spawn(factory, name=name, mailbox_size=mailbox_size, policy=policy)
        cell = self._cells[name]
        try:
            yield ref
        finally:
            if self._cells.get(name) is cell and not cell.migrated:
                with anyio.CancelScope(shield=True):
                    await self.stop_actor(name)

    async def _spawn(
        self,
        factory: Callable[[], Actor],
        name: str,
        mailbox_size: int,
        policy: SupervisionPolicy,
        rehydrate: tuple[Any] | None,
        continuation: tuple[Any] | None,
    ) -> Ref:
        if not isinstance(name, str) or not name:
            raise ValueError(f"actor name must be a non-empty str; got {name!r}")
        if mailbox_size < 1:
            raise ValueError(f"mailbox_size must be >= 1; got {mailbox_size}")
        if self._closed:
            raise RuntimeError(f"worker {self.worker_id} is closed")
        if name in self._cells:
            raise ValueError(
                f"an actor named {name!r} is already running on worker {self.worker_id}"
            )
        ref = self.ref(name)
        cell = Cell(self, name, factory, policy=policy, mailbox_size=mailbox_size)
        self._cells[name] = cell
        previous = ref._mailbox
        ref._mailbox = cell.mailbox
        try:
            await self._tg.start(cell.run, rehydrate, continuation)
        except BaseException:
            if ref._mailbox is cell.mailbox:
                ref._mailbox = previous
            raise
        self.directory.place(name, self.worker_id)
        return ref

    def ref(self, name: str) -> Ref:
        """The ref for ``name``: local if hosted here, else routed via :attr:`directory`.

        Cheap and cached: one Ref per name. An unknown name is not an error here; sending
        through the ref raises :class:`UnknownActorError` if the name is still unknown then.
        """
        ref = self._refs.get(name)
        if ref is None:
            cell = self._cells.get(name)
            ref = Ref(self, name, cell.mailbox if cell is not None else None)
            self._refs[name] = ref
        return ref

    async def stop_actor(self, name: str) -> None:
        """Stop ``name`` after it has handled everything already in its mailbox.

        ``on_stop`` runs; asks that arrive after the stop request get ActorStoppedError.

        Raises:
            UnknownActorError: no actor of that name runs on this worker.
        """
        cell = self._cells.get(name)
        if cell is None:
            raise UnknownActorError(f"no actor named {name!r} runs on worker {self.worker_id}")
        with suppress(ClosedResourceError):
            await cell.mailbox.put(StopMarker())
        await cell.done.wait()

    def _cell_finished(self, cell: Cell) -> None:
        self._finished_in += cell.messages_in
        self._finished_dead += cell.dead_letters
        if cell.migrated:
            return  # migrate() retires the cell once its held messages are forwarded
        if self._cells.get(cell.name) is cell:
            del self._cells[cell.name]
            if self.directory.lookup(cell.name) == self.worker_id:
                self.directory.remove(cell.name)

    @property
    def failure(self) -> ActorFailedError | None:
        """The first actor failure escalated to this worker (which then stopped), or None."""
        return self._failure

    def _escalate(self, error: ActorFailedError) -> None:
        if self._failure is None:
            self._failure = error
            self._tg.cancel_scope.cancel()

    # -- statistics --------------------------------------------------------------------------

    def statistics(self) -> WorkerStatistics:
        """Counters since the worker opened, and the mailbox depth of every hosted actor."""
        cells = list(self._cells.values())
        frames_out = frames_in = bytes_out = bytes_in = 0
        for link in self._links.values():
            frames_out += link.frames_out
            bytes_out += link.bytes_out
        if self.mesh is not None:
            frames_in, bytes_in = self.mesh.frames_in, self.mesh.bytes_in
        return WorkerStatistics(
            worker_id=self.worker_id,
            actors=len(cells),
            messages_in=self._finished_in + sum(c.messages_in for c in cells),
            messages_out=self.messages_out,
            remote_frames_out=frames_out,
            remote_frames_in=frames_in,
            bytes_out=bytes_out,
            bytes_in=bytes_in,
            dead_letters=self.dead_letters
            + self._finished_dead
            + sum(c.dead_letters for c in cells),
            mailbox_depths=tuple((c.name, len(c.mailbox)) for c in cells),
            lost_peers=tuple(sorted(w for w, ev in self._lost.items() if ev.is_set())),
        )

    # -- peers -------------------------------------------------------------------------------

    def admit(self, *worker_ids: int) -> None:
        """Add workers to this worker's mesh (membership is dynamic: a job that scales up
        starts a worker with a new id and admits it everywhere before anything is sent to it).
        Ids are never reused within a mesh: a retired worker's id stays retired."""
        self.peers = self.peers | frozenset(int(w) for w in worker_ids)

    def _link(self, worker_id: int) -> Link:
        known = self._links.get(worker_id)
        if known is not None:
            return known
        if worker_id not in self.peers:
            raise PeerLostError(
                f"worker {worker_id} is not a peer of worker {self.worker_id}"
                f" (peers: {sorted(self.peers)})"
            )
        peer = _open_workers.get(_mesh_key(self.mesh_dir, worker_id, self.namespace))
        link: Link
        if peer is not None and not peer._closed:
            link = LocalLink(self, peer)
        elif self.mesh is not None:
            link = self.mesh.connect(worker_id, self._tg)
        else:
            raise PeerLostError(
                f"worker {worker_id} is not open in this process and worker {self.worker_id}"
                " has no mesh_dir to reach it by socket"
            )
        self._links[worker_id] = link
        return link

    def _peer_lost(self, worker_id: int, reason: str) -> None:
        if worker_id == self.parent:
            self.aborting = True
        link = self._links.get(worker_id)
        if link is not None:
            link.lose(reason)
        event = self._lost.get(worker_id)
        if event is None:
            event = self._lost[worker_id] = anyio.Event()
        if not event.is_set():
            if worker_id in self._leaving:
                log.debug("peer left", worker=self.worker_id, peer=worker_id)
            else:
                self.log_consequence(
                    "peer lost", worker=self.worker_id, peer=worker_id, reason=reason
                )
            event.set()

    def log_consequence(self, event: str, **fields: Any) -> None:
        """Log what follows from a stop or an abort at debug level, else as a warning.

        While a job is torn down (this worker aborting or closing), lost peers, dead letters and
        dropped messages are the expected consequences: a terminal should show the one line
        that says why, not one warning per actor. They are still counted.
        """
        (log.debug if self.aborting or self._closed else log.warning)(event, **fields)

    def _link_broke(self, worker_id: int, reason: str) -> None:
        """Our connection to ``worker_id`` broke while writing.

        If the peer's own connection to us is open, its reader has the last word: it reads the
        peer's goodbye (an orderly exit that merely raced our write) or the end of a crashed
        peer's stream, and reports accordingly. Either way nothing more can be sent on this link.
        """
        if worker_id == self.parent:
            self.aborting = True
        link = self._links.get(worker_id)
        if worker_id in self._readers and not self._closed:
            if link is not None:
                link.lose(reason)
            return
        self._peer_lost(worker_id, reason)

    def _count_undelivered(self, worker_id: int, count: int, reason: str) -> None:
        """Messages buffered for a peer that is gone: counted as dead letters, logged once."""
        self.dead_letters += count
        if worker_id in self._leaving or self._closed or self.aborting:
            log.info(
                "messages undelivered to a departing peer",
                worker=self.worker_id,
                peer=worker_id,
                count=count,
            )
        else:
            log.warning(
                "messages undelivered: peer lost",
                worker=self.worker_id,
                peer=worker_id,
                count=count,
                reason=reason,
            )

    def _peer_leaving(self, worker_id: int) -> None:
        """A peer said goodbye: its connection closing next is an orderly departure."""
        self._leaving.add(worker_id)

    def _peer_hello(self, worker_id: int) -> None:
        """A peer connected: if it had been lost, it is back (restarted)."""
        self._leaving.discard(worker_id)
        if self.is_peer_lost(worker_id):
            self.reconnect(worker_id)

    def reconnect(self, worker_id: int) -> None:
        """Forget that ``worker_id`` was lost: the next message to it connects afresh.

        Call it after restarting that worker (a peer that connects to this worker first is
        taken back automatically).
        """
        event = self._lost.get(worker_id)
        if event is not None and event.is_set():
            del self._lost[worker_id]
        link = self._links.get(worker_id)
        if link is not None and link.lost is not None:
            del self._links[worker_id]

    def _on_reply(self, peer_id: int, ask_id: int, ok: bool, payload: Any) -> None:
        link = self._links.get(peer_id)
        if isinstance(link, SocketLink):
            link.on_reply(ask_id, ok, payload)

    async def wait_peer_lost(self, worker_id: int) -> None:
        """Wait until the connection to ``worker_id`` is lost (returns at once if it is)."""
        event = self._lost.get(worker_id)
        if event is None:
            event = self._lost[worker_id] = anyio.Event()
        await event.wait()

    def is_peer_lost(self, worker_id: int) -> bool:
        """Whether ``worker_id`` is currently known to be gone."""
        event = self._lost.get(worker_id)
        return event is not None and event.is_set()

    # -- routing -----------------------------------------------------------------------------

    def _route(self, name: str) -> Cell | Link:
        cell = self._cells.get(name)
        if cell is not None:
            return cell
        worker_id = self.directory.lookup(name)
        if worker_id is None or worker_id == self.worker_id:
            raise UnknownActorError(
                f"no actor named {name!r} on worker {self.worker_id}, and the directory"
                " does not place it on another worker"
            )
        return self._link(worker_id)

    def _found_here(self, name: str, cell: Cell) -> Ref:
        """The actor a ref thought remote is here after all (spawned or migrated in): retarget."""
        ref = self.ref(name)
        ref._mailbox = cell.mailbox
        return ref

    async def _send_remote(self, name: str, message: Any) -> None:
        target = self._route(name)
        if isinstance(target, Cell):
            await self._found_here(name, target).tell(message)
            return
        self.messages_out += 1
        await target.tell(name, message)

    def _send_remote_nowait(self, name: str, message: Any) -> None:
        target = self._route(name)
        if isinstance(target, Cell):
            self._found_here(name, target).tell_nowait(message)
            return
        self.messages_out += 1
        target.tell_nowait(name, message)

    def _send_urgent(self, name: str, message: Any) -> None:
        target = self._route(name)
        if isinstance(target, Cell):
            self._urgent(name, message)
            return
        self.messages_out += 1
        target.tell_urgent(name, message)

    def _prepare_urgent(self, name: str) -> None:
        target = self._route(name)
        if not isinstance(target, Cell):
            target.prepare_urgent()

    def on_urgent(self, name: str, handler: Callable[[Any], bool] | None) -> None:
        """Handle urgent messages for ``name`` on this worker with ``handler`` (None: stop).

        The handler runs synchronously where the message arrives: in the sender's task for a
        sender on this worker, in the urgent lane's reader for another process's; it returns
        whether it took the message (False: the message goes to ``name``'s mailbox). It must
        not block, and should not raise: what it raises is logged as a dead letter.
        """
        if handler is None:
            self._urgent_handlers.pop(name, None)
        else:
            self._urgent_handlers[name] = handler

    def _urgent(self, name: str, message: Any) -> None:
        """An urgent message for ``name`` arrived here (see :meth:`Ref.tell_urgent`)."""
        handler = self._urgent_handlers.get(name)
        if handler is not None:
            try:
                if handler(message):
                    return
            except Exception as exc:
                self._reject(name, message, exc)
                return
        cell = self._cells.get(name)
        if cell is not None:
            with suppress(WouldBlock, ClosedResourceError):
                cell.mailbox.put_nowait(message)
                return
        # A full mailbox, or an actor elsewhere: deliver (or forward) without holding up the
        # caller, which may be the urgent lane's reader.
        self._tg.start_soon(self._deliver, name, message)

    async def _ask_remote(self, name: str, ask: Ask) -> None:
        target = self._route(name)
        if isinstance(target, Cell):
            await self._found_here(name, target)._ask(ask)
            return
        self.messages_out += 1
        await target.ask(name, ask)

    async def _deliver(self, name: str, item: Any) -> None:
        """Deliver a message (or Ask) that came from another worker, or forward it onwards.

        Waits while the mailbox is full: that is what stops the socket reader (backpressure).
        A tell for an unknown or stopped actor is a dead letter (logged and counted); an ask
        gets the error.
        """
        while True:
            cell = self._cells.get(name)
            if cell is None:
                break
            mailbox = cell.mailbox
            try:
                try:
                    mailbox.put_nowait(item)
                except WouldBlock:
                    await mailbox.put(item)
            except ClosedResourceError:
                if self._cells.get(name) is cell:
                    self._reject(name, item, ActorStoppedError(f"actor {name!r} has stopped"))
                    return
                continue  # migrated or spawned again meanwhile: look again
            return
        worker_id = self.directory.lookup(name)
        if worker_id is None or worker_id == self.worker_id:
            self._reject(
                name,
                item,
                UnknownActorError(f"no actor named {name!r} on worker {self.worker_id}"),
            )
            return
        try:
            link = self._link(worker_id)
            if type(item) is Ask:
                await link.ask(name, item)
            else:
                await link.tell(name, item)
        except Exception as exc:
            self._reject(name, item, exc)

    def _reject(self, name: str, item: Any, error: Exception) -> None:
        if type(item) is Ask:
            item.reply.fail(error)
        else:
            self.dead_letters += 1
            self.log_consequence("dead letter", worker=self.worker_id, actor=name, error=f"{error}")

    # -- migration ---------------------------------------------------------------------------

    async def migrate(self, name: str, to_worker: int) -> None:
        """Move actor ``name`` from this worker to ``to_worker``, state and queue included.

        The actor finishes the message in hand and everything already queued; messages that
        arrive meanwhile are held (the mailbox stays bounded, so senders wait). Then
        ``dehydrate()`` and ``on_stop()`` run here, the target makes a new instance,
        ``rehydrate(state)`` and ``on_start()`` run there, the held messages are forwarded in
        order, and this worker's directory and refs point at the target. Messages that reach
        this worker later are forwarded. Within one process any factory works; across
        processes the factory must be importable as ``module:qualname`` there.

        Raises:
            UnknownActorError: no actor of that name runs here.
            MigrationError: dehydrate or the target failed; the actor keeps running here (from
                its dehydrated state if it had already stopped).
            PeerLostError: the target worker is gone; the actor keeps running here.
        """
        cell = self._cells.get(name)
        if cell is None or cell.migrated:
            raise UnknownActorError(f"no actor named {name!r} runs on worker {self.worker_id}")
        if to_worker == self.worker_id:
            raise ValueError(f"actor {name!r} already runs on worker {to_worker}")
        if cell.migration is not None:
            raise MigrationError(f"actor {name!r} is already migrating")
        link = self._link(to_worker)
        if link.lost is not None:
            raise PeerLostError(link.lost)
        factory_ref: str | None = None
        if not isinstance(link, LocalLink):
            factory_ref = factory_reference(cell.factory)
            if factory_ref is None or _resolves_to(factory_ref, cell.factory) is False:
                raise MigrationError(
                    f"actor {name!r} cannot migrate to another process: its factory"
                    f" {cell.factory!r} is not importable as module:qualname; spawn it with an"
                    " Actor subclass or a module-level function"
                )
        migration = cell.migration = Migration()
        await cell.mailbox.put(MigrateMarker())
        await migration.handed.wait()
        if migration.error is not None:
            raise MigrationError(
                f"actor {name!r} could not migrate: dehydrate() raised"
                f" {type(migration.error).__name__}: {migration.error}"
            ) from migration.error
        try:
            with anyio.CancelScope(shield=True):
                if isinstance(link, LocalLink):
                    await link.peer._accept_migration(
                        name,
                        cell.factory,
                        cell.policy,
                        cell.mailbox_size,
                        migration.state,
                        migration.continuation,
                    )
                else:
                    assert factory_ref is not None
                    assert isinstance(link, SocketLink)
                    await link.migrate(
                        name,
                        factory_ref,
                        cell.policy,
                        cell.mailbox_size,
                        migration.state,
                        migration.continuation,
                    )
        except (MigrationError, PeerLostError):
            migration.verdict.set()  # rolled back: the cell restarts from the state
            raise
        except Exception as exc:
            migration.verdict.set()
            raise MigrationError(
                f"actor {name!r} could not migrate to worker {to_worker}:"
                f" {type(exc).__name__}: {exc}"
            ) from exc
        except BaseException:
            migration.verdict.set()
            raise
        migration.committed = True
        migration.verdict.set()
        await self._forward_held(cell, to_worker, link)

    async def _hand_off(self, cell: Cell, to_worker: int) -> None:
        """Retire ``cell`` after its actor handed its work to ``to_worker`` (see
        :meth:`Actor.hand_off`): what waits in its mailbox goes there, and so does what arrives
        later (the directory and this worker's ref point there)."""
        try:
            link = self._link(to_worker)
        except PeerLostError as exc:
            for item in cell.mailbox.close():
                self._reject(cell.name, item, exc)
            if self._cells.get(cell.name) is cell:
                del self._cells[cell.name]
            return
        await self._forward_held(cell, to_worker, link, quiet=True)

    async def _forward_held(
        self, cell: Cell, to_worker: int, link: Link, *, quiet: bool = False
    ) -> None:
        name = cell.name
        mailbox = cell.mailbox
        while True:
            # Senders still waiting for room hand their messages over too (their tell returns).
            item = mailbox.take_nowait()
            if item is EMPTY:
                break
            try:
                if type(item) is Ask:
                    await link.ask(name, item)
                elif type(item) is StopMarker:
                    continue  # a stop that raced the migration: the actor stopped here
                else:
                    await link.tell(name, item)
            except Exception as exc:
                self._reject(name, item, exc)
        # Nothing awaited since the mailbox was seen empty: no message can slip in between.
        self.directory.place(name, to_worker)
        ref = self._refs.get(name)
        if ref is not None and ref._mailbox is mailbox:
            ref._mailbox = None
        left = mailbox.close()
        assert not left, left  # take_nowait() found nothing, and nothing ran since
        if self._cells.get(name) is cell:
            del self._cells[name]
        (log.debug if quiet else log.info)(
            "actor migrated", actor=name, worker=self.worker_id, to_worker=to_worker
        )

    async def _accept_migration(
        self,
        name: str,
        factory: Callable[[], Actor],
        policy: SupervisionPolicy,
        mailbox_size: int,
        state: Any,
        continuation: tuple[Any] | None,
    ) -> None:
        try:
            await self._spawn(factory, name, mailbox_size, policy, (state,), continuation)
        except Exception as exc:
            raise MigrationError(
                f"worker {self.worker_id} could not take over actor {name!r}:"
                f" {type(exc).__name__}: {exc}"
            ) from exc

    async def _accept_remote_migration(
        self,
        name: str,
        factory_ref: str,
        policy: SupervisionPolicy,
        mailbox_size: int,
        state: Any,
        continuation: tuple[Any] | None,
        reply: Reply,
    ) -> None:
        try:
            factory = resolve_object(factory_ref)
            await self._accept_migration(name, factory, policy, mailbox_size, state, continuation)
        except Exception as exc:
            reply.fail(exc)
        else:
            reply.ok(None)

    # -- closing -----------------------------------------------------------------------------

    async def _close(self) -> None:
        self._closed = True
        # Every actor is halted at once and all share one deadline: an actor that waits on
        # another (a full mailbox) must not cost the others their time.
        cells = [cell for cell in reversed(list(self._cells.values())) if not cell.migrated]
        for cell in cells:
            cell.halt()
        with anyio.move_on_after(self.stop_timeout):
            for cell in cells:
                await cell.done.wait()
        late = [cell for cell in cells if not cell.done.is_set()]
        if late:
            (log.debug if self.aborting else log.warning)(
                "actors did not stop in time; cancelling them",
                worker=self.worker_id,
                actors=[cell.name for cell in late][:10],
                count=len(late),
            )
            for cell in late:
                cell.scope.cancel()
            for cell in late:
                await cell.done.wait()
        for link in list(self._links.values()):
            await link.aclose()


def _check_link_buffer(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1024:
        raise ValueError(f"link_buffer must be an int of at least 1024 bytes; got {size!r}")
    return size


def _resolves_to(reference: str, factory: object) -> bool:
    try:
        return resolve_object(reference) is factory
    except Exception:
        return False


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(path).absolute()


@asynccontextmanager
async def open_worker(
    worker_id: int = 0,
    *,
    mesh_dir: str | os.PathLike[str] | None = None,
    peers: Iterable[int] | None = None,
    connect_timeout: float = 30.0,
    stop_timeout: float = 10.0,
    codec: Codec | None = None,
    namespace: str | None = None,
    link_buffer: int = HIGH_WATER,
) -> AsyncIterator[Worker]:
    """Open a worker in the running event loop; leaving the block stops all its actors.

    Several workers can share one loop (tests, embedding): workers of the same mesh that are
    open in this process hand messages to each other directly, by reference, without encoding.
    Without ``mesh_dir``, the mesh is this process's ``namespace``: workers in different
    namespaces are independent, so two jobs can each open a worker 0 in one loop.
    With ``mesh_dir``, the worker also listens on ``<mesh_dir>/w<worker_id>.sock`` and reaches
    peers in other processes over Unix sockets (connecting on first use, retrying for up to
    ``connect_timeout`` seconds while the peer's socket does not exist yet).

    Args:
        worker_id: this worker's id, unique in the mesh.
        mesh_dir: directory holding the mesh's sockets (None: this process only).
        peers: every worker id in the mesh, this one included (None: just this one).
        connect_timeout: how long to wait for a peer's socket before it counts as lost.
        stop_timeout: on leaving, how long the actors (all halted at once, one deadline for all)
            may take to finish the message in hand before they are cancelled (their on_stop
            still runs).
        codec: the message codec (default: the kernel's, see register_message).
        link_buffer: bytes buffered per peer process before a sender waits (default 4 MiB);
            the connection's kernel socket buffers are asked for at the same size.
        namespace: without ``mesh_dir``, which in-process mesh the worker joins (default: one
            shared namespace); ignored with ``mesh_dir`` (the directory names the mesh).

    Raises:
        ActorFailedError: an actor with the "escalate" policy failed (or exceeded its restart
            limit); the body is cancelled and every other actor stopped first.
        ValueError: a worker with this id is already open in this mesh in this process.
    """
    namespace = DEFAULT_NAMESPACE if namespace is None else namespace
    # No filesystem access here: only the socket path is derived (absolute, not resolved).
    path = _absolute(mesh_dir) if mesh_dir is not None else None
    peer_set = frozenset(peers) if peers is not None else frozenset()
    peer_set |= {worker_id}
    key = _mesh_key(path, worker_id, namespace)
    body_error: Exception | None = None
    if key in _open_workers:
        raise ValueError(f"worker {worker_id} is already open in this process ({key})")
    worker: Worker | None = None
    try:
        async with anyio.create_task_group() as tg:
            worker = Worker(
                worker_id,
                tg,
                mesh_dir=path,
                peers=peer_set,
                codec=codec or default_codec,
                connect_timeout=connect_timeout,
                stop_timeout=stop_timeout,
                link_buffer=_check_link_buffer(link_buffer),
                namespace=namespace,
            )
            _open_workers[key] = worker
            try:
                if worker.mesh is not None:
                    await worker.mesh.listen(tg)
                try:
                    yield worker
                except Exception as exc:
                    # Raised again below, after the task group: not wrapped in a group.
                    body_error = exc
            finally:
                with anyio.CancelScope(shield=True):
                    await worker._close()
                tg.cancel_scope.cancel()
    finally:
        # The listener closes only once no task waits on it any more.
        if worker is not None:
            _open_workers.pop(key, None)
            if worker.mesh is not None:
                with anyio.CancelScope(shield=True):
                    await worker.mesh.aclose()
    if worker is not None and worker._failure is not None:
        raise worker._failure
    if body_error is not None:
        raise body_error
