"""Links between workers: direct hand-over in one process, framed CBOR over Unix sockets.

Wire format: a frame is a 4-byte big-endian length and a CBOR indefinite-length array of
envelopes. Each envelope is encoded when it is sent (so an encoding error reaches the sender)
and appended to the destination's buffer; a flusher task per destination joins the buffer into
frames of about :data:`FRAME_BYTES` each. The flusher runs when the event loop gets to it, so
everything sent in the meantime coalesces into one frame and one ``send`` syscall.

Envelopes (CBOR arrays):

* ``[0, name, message]``: tell
* ``[1, name, message, reply_worker, ask_id]``: ask
* ``[2, ask_id, ok, value_or_[type_name, text]]``: reply to an ask or a migration
* ``[3, ask_id, name, factory_ref, [strategy, max_restarts, within_s], mailbox_size, state,
  continuation]``: migrate an actor in (continuation is None or ``[message]``)
* ``[5, worker_id]``: hello, the first envelope on every connection; ``[5, worker_id, 1]`` on
  a peer's *urgent lane*
* ``[6, worker_id]``: goodbye, the last envelope of a worker that closes in order (its peers
  then treat the closed connection as a departure, not a loss)
* ``[7, name, message]``: an urgent tell (only on the urgent lane)

The urgent lane is a second connection to the same peer, opened on the first urgent tell
(:meth:`Ref.tell_urgent <shoal.actors.Ref.tell_urgent>`): its few messages do not queue behind
the megabytes of data the first connection's buffers may hold, and its reader never waits on a
full mailbox of the data lane. An urgent message may therefore overtake anything sent before it
to that worker; the data connection alone decides whether the peer is alive.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio import BrokenResourceError, ClosedResourceError, EndOfStream
from anyio.abc import SocketAttribute, SocketStream, TaskGroup
from anyio.lowlevel import checkpoint

from ._actor import SupervisionPolicy
from ._exceptions import (
    ActorStoppedError,
    MailboxFullError,
    MessageDecodeError,
    MessageEncodeError,
    MigrationError,
    PeerLostError,
    RemoteActorError,
    UnknownActorError,
)
from ._log import get_logger
from ._messages import Ask
from ._reply import LocalReply, Reply

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ("Link", "LocalLink", "Mesh", "RemoteReply", "SocketLink")

log = get_logger("shoal.actors")

TELL, ASK, REPLY, MIGRATE, HELLO, BYE, URGENT = 0, 1, 2, 3, 5, 6, 7
#: The lanes of a peer connection (the second element of a hello after the worker id).
DATA_LANE, URGENT_LANE = 0, 1

#: Target frame size: big enough to amortise the syscall and the CBOR call, small enough that a
#: frame is decoded and delivered before the next one is needed.
FRAME_BYTES = 64 * 1024
#: Default link buffer: above this many buffered bytes for one destination, tell() waits
#: (backpressure) until the flusher has written the buffer down to a quarter of it. The same
#: size is asked for the connection's kernel socket buffers. ``open_worker(link_buffer=...)``.
HIGH_WATER = 4 * 1024 * 1024
#: One socket read takes whatever is there, up to this: a reader runs once per event-loop turn,
#: and a turn of a busy worker can last tens of milliseconds.
RECEIVE_BYTES = 4 * 1024 * 1024
# Kernel socket buffers are asked for at the link buffer's size (the OS clamps it to its
# maximum, e.g. net.core.wmem_max): with the ~200 KiB default, a peer could move at most that
# much per turn of the reader's event loop (measured: ~350k records/s between two busy workers).
#: A frame larger than this is taken for a corrupt stream.
MAX_FRAME = 256 * 1024 * 1024

_HEADER = struct.Struct(">I")

#: Kernel errors that keep their type when they come back from another worker.
_KERNEL_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (ActorStoppedError, UnknownActorError, PeerLostError, MigrationError)
}


def rebuild_error(actor: str, type_name: str, text: str) -> Exception:
    """The exception an asker sees for an error that happened in another worker."""
    cls = _KERNEL_ERRORS.get(type_name)
    if cls is not None:
        return cls(text)
    return RemoteActorError(actor, type_name, text)


def _error_payload(exc: BaseException) -> list[str]:
    if isinstance(exc, RemoteActorError):
        return [exc.type_name, exc.remote_message]
    return [type(exc).__name__, str(exc)]


def _grow_buffer(stream: SocketStream, option: int, size: int) -> None:
    """Ask for ``size`` bytes of kernel buffer (best effort: the OS may clamp it)."""
    raw = stream.extra(SocketAttribute.raw_socket, None)
    if raw is not None:
        with suppress(OSError):
            raw.setsockopt(socket.SOL_SOCKET, option, size)


class Link(Protocol):
    """The way from one worker to one peer."""

    @property
    def lost(self) -> str | None: ...
    @property
    def frames_out(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...

    async def tell(self, name: str, message: Any) -> None: ...
    def tell_nowait(self, name: str, message: Any) -> None: ...
    def tell_urgent(self, name: str, message: Any) -> None: ...
    def prepare_urgent(self) -> None: ...
    async def ask(self, name: str, ask: Ask) -> None: ...
    def send_reply(self, ask_id: int, ok: bool, payload: Any) -> None: ...
    def lose(self, reason: str) -> None: ...
    async def aclose(self) -> None: ...


class LocalLink:
    """A peer open in this process: messages are handed over by reference, not encoded."""

    frames_out = 0
    bytes_out = 0

    def __init__(self, worker: Worker, peer: Worker) -> None:
        self.worker = worker
        self.peer = peer

    @property
    def lost(self) -> str | None:
        if self.peer._closed:
            return f"worker {self.peer.worker_id} is closed"
        return None

    def _check(self) -> None:
        reason = self.lost
        if reason is not None:
            raise PeerLostError(reason)

    async def tell(self, name: str, message: Any) -> None:
        self._check()
        await self.peer._deliver(name, message)

    def tell_nowait(self, name: str, message: Any) -> None:
        self._check()
        self.peer.ref(name).tell_nowait(message)

    def tell_urgent(self, name: str, message: Any) -> None:
        self._check()
        self.peer._urgent(name, message)

    def prepare_urgent(self) -> None:
        """Nothing to open in one process."""

    async def ask(self, name: str, ask: Ask) -> None:
        self._check()
        await self.peer._deliver(name, ask)

    def send_reply(self, ask_id: int, ok: bool, payload: Any) -> None:
        self.peer._on_reply(self.worker.worker_id, ask_id, ok, payload)

    def lose(self, reason: str) -> None:
        pass

    async def aclose(self) -> None:
        pass


class RemoteReply:
    """Sends the outcome of an ask back to the worker that asked."""

    __slots__ = ("ask_id", "done", "to_worker", "worker")

    def __init__(self, worker: Worker, to_worker: int, ask_id: int) -> None:
        self.worker = worker
        self.to_worker = to_worker
        self.ask_id = ask_id
        self.done = False

    def ok(self, value: Any) -> None:
        if not self.done:
            self.done = True
            self._send(True, value)

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self.done = True
            self._send(False, _error_payload(exc))

    def _send(self, ok: bool, payload: Any) -> None:
        try:
            self.worker._link(self.to_worker).send_reply(self.ask_id, ok, payload)
        except MessageEncodeError as exc:
            self._send(False, _error_payload(exc))
        except PeerLostError:
            log.info("reply dropped: asker's worker is gone", peer=self.to_worker)


class SocketLink:
    """Outgoing traffic to one peer process: a buffer, a flusher task, one Unix socket."""

    def __init__(
        self,
        worker: Worker,
        peer_id: int,
        path: Path,
        connect_timeout: float,
        *,
        lane: int = DATA_LANE,
    ) -> None:
        self.worker = worker
        self.peer_id = peer_id
        self.path = path
        self.connect_timeout = connect_timeout
        self.lane = lane
        self.codec = worker.codec
        self._high = worker.link_buffer
        self._low = worker.link_buffer // 4
        hello = self.codec.encode(
            [HELLO, worker.worker_id] if lane == DATA_LANE else [HELLO, worker.worker_id, lane]
        )
        self._urgent_lane: SocketLink | None = None
        # Urgent lane: its raw socket once connected (a frame is written straight from
        # tell_urgent when nothing else is being written), the rest of a frame the kernel
        # did not take at once (the flusher writes it), and whether the flusher is writing.
        self._raw: socket.socket | None = None
        self._rest = b""
        self._sending = False
        self._buf: list[bytes] = [hello]
        # The batch the flusher is writing, and how many of its envelopes have been sent.
        self._writing: list[bytes] = []
        self._written = 0
        self._buffered = len(hello)
        self._idle = False
        self._wake = anyio.Event()
        self._room: anyio.Event | None = None
        self._pending: dict[int, tuple[Reply, str]] = {}
        self._ids = itertools.count(1)
        self._scope = anyio.CancelScope()
        self._stream: SocketStream | None = None
        self.lost: str | None = None
        self.frames_out = 0
        self.bytes_out = 0

    # -- sending -----------------------------------------------------------------------------

    def _enqueue(self, data: bytes) -> None:
        if self.lost is not None:
            raise PeerLostError(self.lost)
        self._buf.append(data)
        self._buffered += len(data)
        if self._idle:
            self._idle = False
            self._wake.set()

    async def _wait_room(self) -> None:
        while self._buffered > self._high and self.lost is None:
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()
        if self.lost is not None:
            raise PeerLostError(self.lost)

    async def tell(self, name: str, message: Any) -> None:
        self._enqueue(self.codec.encode([TELL, name, message]))
        if self._buffered > self._high:
            await self._wait_room()

    def tell_nowait(self, name: str, message: Any) -> None:
        if self._buffered > self._high:
            raise MailboxFullError(f"the link to worker {self.peer_id} is full")
        self._enqueue(self.codec.encode([TELL, name, message]))

    def tell_urgent(self, name: str, message: Any) -> None:
        """Send on the urgent lane (opened on first use); never waits."""
        if self.lost is not None:
            raise PeerLostError(self.lost)
        lane = self._open_urgent()
        data = self.codec.encode([URGENT, name, message])
        if not lane._write_now(data):
            lane._enqueue(data)

    def prepare_urgent(self) -> None:
        """Open the urgent lane now, if it is not open: its first message is then written
        straight to a connected socket and read in the peer's I/O callback. (On first use it
        waits for the connection, and goes with the hello through the peer's reader task:
        ~2-8 ms more on a busy host, measured on a move's handoff.)"""
        if self.lost is None:
            self._open_urgent()

    def _open_urgent(self) -> SocketLink:
        lane = self._urgent_lane
        if lane is None:
            lane = SocketLink(
                self.worker, self.peer_id, self.path, self.connect_timeout, lane=URGENT_LANE
            )
            self._urgent_lane = lane
            self.worker._tg.start_soon(lane.run)
        return lane

    def _write_now(self, data: bytes) -> bool:
        """Write one envelope as a frame straight to the socket, not waiting for the flusher's
        turn on a busy loop (and anyio's yield before each send); False: not possible now."""
        raw = self._raw
        if raw is None or self._buf or self._rest or self._sending or self.lost is not None:
            return False
        frame = b"".join([_HEADER.pack(len(data) + 2), b"\x9f", data, b"\xff"])
        try:
            sent = raw.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False  # the flusher finds out and reports it
        self.frames_out += 1
        self.bytes_out += len(frame)
        if sent < len(frame):
            self._rest = frame[sent:]
            if self._idle:
                self._idle = False
                self._wake.set()
        return True

    async def ask(self, name: str, ask: Ask) -> None:
        ask_id = next(self._ids)
        data = self.codec.encode([ASK, name, ask.message, self.worker.worker_id, ask_id])
        self._enqueue(data)
        self._pending[ask_id] = (ask.reply, name)
        if self._buffered > self._high:
            await self._wait_room()

    def send_reply(self, ask_id: int, ok: bool, payload: Any) -> None:
        # Replies skip the high-water wait: they are bounded by the asks that caused them.
        self._enqueue(self.codec.encode([REPLY, ask_id, ok, payload]))

    async def migrate(
        self,
        name: str,
        factory_ref: str,
        policy: SupervisionPolicy,
        mailbox_size: int,
        state: Any,
        continuation: tuple[Any] | None,
    ) -> None:
        """Have the peer construct and start ``name``; return once it has, or raise."""
        ask_id = next(self._ids)
        reply = LocalReply()
        data = self.codec.encode(
            [
                MIGRATE,
                ask_id,
                name,
                factory_ref,
                [policy.strategy, policy.max_restarts, policy.within_s],
                mailbox_size,
                state,
                None if continuation is None else [continuation[0]],
            ]
        )
        self._enqueue(data)
        self._pending[ask_id] = (reply, name)
        await reply.wait()

    def on_reply(self, ask_id: int, ok: bool, payload: Any) -> None:
        entry = self._pending.pop(ask_id, None)
        if entry is None:
            return
        reply, name = entry
        if ok:
            reply.ok(payload)
        else:
            type_name, text = payload
            reply.fail(rebuild_error(name, type_name, text))

    # -- the flusher -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, then write frames until closed or lost. Never raises."""
        with self._scope:
            try:
                stream = await self._connect()
            except OSError as exc:
                self._broke(str(exc), connected=False)
                return
            self._stream = stream
            try:
                await self._flush_forever(stream)
            except (BrokenResourceError, ClosedResourceError, OSError) as exc:
                self._broke(f"connection to worker {self.peer_id} broke: {exc!r}", connected=True)
            finally:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()

    def _broke(self, reason: str, *, connected: bool) -> None:
        if self.lane != DATA_LANE:
            # What the urgent lane held is lost with the peer; whether the peer is gone is the
            # data lane's to say (a broken urgent lane to a live peer loses the whole link).
            self.lose(reason)
            self.worker._link_broke(self.peer_id, reason)
        elif connected:
            self.worker._link_broke(self.peer_id, reason)
        else:
            self.worker._peer_lost(self.peer_id, reason)

    async def _connect(self) -> SocketStream:
        deadline = anyio.current_time() + self.connect_timeout
        delay = 0.002
        while True:
            try:
                stream = await anyio.connect_unix(self.path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if anyio.current_time() >= deadline:
                    raise OSError(
                        f"could not connect to worker {self.peer_id} at {str(self.path)!r}"
                        f" within {self.connect_timeout} s"
                    ) from exc
            else:
                _grow_buffer(stream, socket.SO_SNDBUF, self._high)
                if self.lane != DATA_LANE:
                    self._raw = stream.extra(SocketAttribute.raw_socket, None)
                return stream
            # Polling for a socket file that does not exist yet: no event to wait on.
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _flush_forever(self, stream: SocketStream) -> None:
        header = _HEADER.pack
        while True:
            if self._rest:  # the end of a frame _write_now could not write at once
                self._sending = True
                await stream.send(self._rest)
                self._rest = b""
                self._sending = False
            if not self._buf:
                self._wake = anyio.Event()
                self._idle = True
                await self._wake.wait()
                if self._buffered < FRAME_BYTES and not self._rest:
                    # One more turn of the loop: whatever else is ready joins this frame.
                    await checkpoint()
                continue
            self._sending = True
            items, self._buf = self._buf, []
            self._writing, self._written = items, 0
            start = 0
            size = 0
            for index, item in enumerate(items):
                size += len(item)
                if size >= FRAME_BYTES or index == len(items) - 1:
                    chunk = items[start : index + 1]
                    frame = b"".join([header(size + 2), b"\x9f", *chunk, b"\xff"])
                    await stream.send(frame)
                    self._written = index + 1
                    self._buffered -= size
                    self.frames_out += 1
                    self.bytes_out += len(frame)
                    start, size = index + 1, 0
                    room = self._room
                    if room is not None and self._buffered <= self._low:
                        self._room = None
                        room.set()
            self._sending = False

    # -- losing and closing ------------------------------------------------------------------

    def lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        # Envelopes not yet handed to the socket can no longer be delivered: count them (the
        # hello, if it never left, is not a message). Those already in the kernel's socket
        # buffers when the peer died are lost without a trace: the layer above recovers them.
        dropped = len(self._buf) + len(self._writing) - self._written
        if self._stream is None and self._buf:
            dropped -= 1
        if dropped > 0:
            self.worker._count_undelivered(self.peer_id, dropped, reason)
        self._buf.clear()
        self._writing, self._written = [], 0
        self._buffered = 0
        pending, self._pending = self._pending, {}
        for reply, _name in pending.values():
            reply.fail(PeerLostError(reason))
        if self._room is not None:
            self._room.set()
        self._scope.cancel()
        if self._urgent_lane is not None:
            self._urgent_lane.lose(reason)

    async def aclose(self) -> None:
        """Say goodbye, flush what is buffered (briefly), then close."""
        if self.lost is None and self._stream is not None:
            self._enqueue(self.codec.encode([BYE, self.worker.worker_id]))
        with anyio.move_on_after(2.0):
            while self._buf and self.lost is None and self._stream is not None:
                self._room = self._room or anyio.Event()
                await self._room.wait()
        self.lost = self.lost or f"worker {self.worker.worker_id} closed its link"
        self._scope.cancel()
        if self._urgent_lane is not None:
            self._urgent_lane.lost = self.lost
            self._urgent_lane._scope.cancel()


class Mesh:
    """This worker's socket side: the listener and the links to peer processes."""

    def __init__(self, worker: Worker, mesh_dir: Path, *, connect_timeout: float) -> None:
        self.worker = worker
        self.mesh_dir = mesh_dir
        self.connect_timeout = connect_timeout
        self.path = mesh_dir / f"w{worker.worker_id}.sock"
        self.frames_in = 0
        self.bytes_in = 0
        self._listener: anyio.abc.SocketListener | None = None

    def socket_path(self, worker_id: int) -> Path:
        return self.mesh_dir / f"w{worker_id}.sock"

    async def listen(self, tg: TaskGroup) -> None:
        path = str(self.path)
        if len(path.encode()) > 100:
            raise ValueError(
                f"socket path {path!r} is too long for a Unix socket (max ~100 bytes):"
                " use a shorter mesh_dir"
            )
        self.path.unlink(missing_ok=True)  # a stale socket from a crashed run
        self._listener = await anyio.create_unix_listener(self.path)
        tg.start_soon(self._accept_loop, self._listener, tg)

    async def _accept_loop(self, listener: anyio.abc.SocketListener, tg: TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (ClosedResourceError, BrokenResourceError, OSError):
                return
            tg.start_soon(self._serve, stream)

    def connect(self, peer_id: int, tg: TaskGroup) -> SocketLink:
        link = SocketLink(self.worker, peer_id, self.socket_path(peer_id), self.connect_timeout)
        tg.start_soon(link.run)
        return link

    async def _serve(self, stream: SocketStream) -> None:
        """Read frames from one peer and deliver them; a full mailbox pauses reading."""
        _grow_buffer(stream, socket.SO_RCVBUF, self.worker.link_buffer)
        peer_id: int | None = None
        urgent = False  # this connection is a peer's urgent lane
        buf = bytearray()
        try:
            while True:
                if urgent and await self._serve_inline(stream, buf):
                    break
                try:
                    data = await stream.receive(RECEIVE_BYTES)
                except (EndOfStream, BrokenResourceError, ClosedResourceError):
                    break
                self.bytes_in += len(data)
                buf += data
                for envelopes in self._frames(buf):
                    for envelope in envelopes:
                        if peer_id is None:
                            if envelope[0] != HELLO:
                                raise MessageDecodeError("no hello first")  # noqa: TRY301
                            peer_id = int(envelope[1])
                            urgent = len(envelope) > 2 and envelope[2] == URGENT_LANE
                            if not urgent:
                                self.worker._peer_hello(peer_id)
                                self.worker._readers.add(peer_id)
                        elif urgent:
                            self._urgent(envelope)
                        else:
                            await self._dispatch(peer_id, envelope)
        except MessageDecodeError as exc:
            log.error("bad frame; dropping connection", peer=peer_id, error=str(exc))  # noqa: TRY400
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            if peer_id is not None and not urgent:
                self.worker._readers.discard(peer_id)
                if not self.worker._closed:
                    self.worker._peer_lost(peer_id, f"connection from worker {peer_id} closed")

    def _frames(self, buf: bytearray) -> Iterator[list[Any]]:
        """The complete frames at the start of ``buf``, decoded (and removed from it)."""
        decode = self.worker.codec.decode
        offset = 0
        end = len(buf)
        try:
            while end - offset >= 4:
                (size,) = _HEADER.unpack_from(buf, offset)
                if size > MAX_FRAME:
                    raise MessageDecodeError(f"frame of {size} bytes exceeds the limit")
                if end - offset - 4 < size:
                    break
                frame = bytes(buf[offset + 4 : offset + 4 + size])
                offset += 4 + size
                self.frames_in += 1
                yield decode(frame)
        finally:
            if offset:
                del buf[:offset]

    def _urgent(self, envelope: list[Any]) -> None:
        if envelope[0] != URGENT:
            raise MessageDecodeError("not an urgent envelope on the urgent lane")
        self.worker._urgent(envelope[1], envelope[2])

    async def _serve_inline(self, stream: SocketStream, buf: bytearray) -> bool:
        """Read the urgent lane in the event loop's own I/O callback, not in a task: a task
        runs a turn after its socket is readable (and anyio yields once more before each
        read), a turn that lasts as long as every busy actor's batch on this loop. Returns
        False where the loop is not asyncio's (or uvloop): the caller reads as usual."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        raw = stream.extra(SocketAttribute.raw_socket, None)
        if raw is None:
            return False
        closed = anyio.Event()
        failed: list[MessageDecodeError] = []

        def readable() -> None:
            try:
                while True:
                    data = raw.recv(RECEIVE_BYTES)
                    if not data:
                        closed.set()
                        break
                    self.bytes_in += len(data)
                    buf.extend(data)
            except BlockingIOError:
                pass
            except OSError:
                closed.set()
            try:
                for envelopes in self._frames(buf):
                    for envelope in envelopes:
                        self._urgent(envelope)
            except MessageDecodeError as exc:
                failed.append(exc)
                closed.set()
            except Exception as exc:  # an I/O callback must not raise into the event loop
                failed.append(MessageDecodeError(f"urgent message not delivered: {exc!r}"))
                closed.set()
            if closed.is_set():
                loop.remove_reader(raw)

        for envelopes in self._frames(buf):  # what came with the hello
            for envelope in envelopes:
                self._urgent(envelope)
        loop.add_reader(raw, readable)
        try:
            await closed.wait()
        finally:
            loop.remove_reader(raw)
        if failed:
            raise failed[0]
        return True

    async def _dispatch(self, peer_id: int, envelope: list[Any]) -> None:
        kind = envelope[0]
        worker = self.worker
        if kind == TELL:
            await worker._deliver(envelope[1], envelope[2])
        elif kind == ASK:
            reply = RemoteReply(worker, envelope[3], envelope[4])
            await worker._deliver(envelope[1], Ask(envelope[2], reply))
        elif kind == REPLY:
            worker._on_reply(peer_id, envelope[1], envelope[2], envelope[3])
        elif kind == BYE:
            worker._peer_leaving(peer_id)
        elif kind == MIGRATE:
            _, ask_id, name, factory_ref, policy, mailbox_size, state, cont = envelope
            worker._tg.start_soon(
                worker._accept_remote_migration,
                name,
                factory_ref,
                SupervisionPolicy(policy[0], int(policy[1]), float(policy[2])),
                int(mailbox_size),
                state,
                None if cont is None else (cont[0],),
                RemoteReply(worker, peer_id, ask_id),
            )
        else:
            # A peer speaking another protocol version: the envelope cannot be delivered.
            worker.dead_letters += 1
            log.error("unknown envelope kind; message dropped", kind=kind, peer=peer_id)

    async def aclose(self) -> None:
        if self._listener is not None:
            await self._listener.aclose()
        self.path.unlink(missing_ok=True)
