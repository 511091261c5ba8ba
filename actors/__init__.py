"""shoal.actors: the actor kernel.

Actors with bounded mailboxes and supervision, hosted by event-loop workers that reach each
other directly in one process or over Unix sockets (cbor2 frames, never pickle) across
processes, plus the generic primitive that migrates an actor between workers. The kernel knows
nothing of streams or storage.

Guarantees (see also the docstrings of Ref, Worker.migrate and open_worker):

* One instance handles one message at a time. Messages from one task, through one worker's
  refs, to one actor are handled in the order they were sent: locally (a FIFO mailbox),
  remotely (one buffer and one connection per destination worker, read in order), and when
  forwarded by a worker the actor has left (forwarding uses that same ordered path).
* Nothing is dropped silently: a full mailbox or link makes tell() wait; a tell that can no
  longer be delivered (actor stopped, unknown name on the receiving worker) is logged and
  counted in ``statistics().dead_letters``; an ask always gets an answer or an error
  (ActorStoppedError, PeerLostError, TimeoutError, the actor's own error).
* Remote errors: an ask whose remote handler raised gets RemoteActorError (type name and text);
  the kernel's own errors (ActorStoppedError, UnknownActorError, PeerLostError, MigrationError)
  keep their type across processes.
* Peer loss: when a peer's connection closes or breaks (kill -9, exit), its pending asks fail
  with PeerLostError, tells still buffered for it are counted in ``statistics().dead_letters``
  and logged once with their number (bytes already in the kernel's socket buffers die with the
  peer), and later sends to actors the directory places there raise PeerLostError. A peer that
  said goodbye is not reported as lost when one of our writes races its exit;
  ``Worker.wait_peer_lost(id)`` and ``statistics().lost_peers`` report it. After restarting
  the peer, ``Worker.reconnect(id)`` (or the peer connecting first) makes it reachable again.
* Migration: messages queued before the move are handled on the old worker, those arriving
  during it are held and forwarded in order, then refs on the old worker follow the actor.
  A *remote* sender whose directory is updated mid-stream may see its messages sent through
  the old host (forwarded) overtaken by those sent directly to the new one: the streaming layer
  orders that with in-band handoff markers.
* Co-resident workers (same process, same mesh) hand messages over by reference, without
  encoding: only workers in other processes check that messages are CBOR-encodable.
"""

from __future__ import annotations

from ._actor import Actor as Actor
from ._actor import SupervisionPolicy as SupervisionPolicy
from ._bootstrap import import_file as import_file
from ._bootstrap import resolve_object as resolve_object
from ._codec import Codec as Codec
from ._codec import default_codec as default_codec
from ._codec import register_message as register_message
from ._directory import Directory as Directory
from ._exceptions import ActorError as ActorError
from ._exceptions import ActorFailedError as ActorFailedError
from ._exceptions import ActorStartError as ActorStartError
from ._exceptions import ActorStoppedError as ActorStoppedError
from ._exceptions import BootstrapError as BootstrapError
from ._exceptions import MailboxFullError as MailboxFullError
from ._exceptions import MessageDecodeError as MessageDecodeError
from ._exceptions import MessageEncodeError as MessageEncodeError
from ._exceptions import MigrationError as MigrationError
from ._exceptions import PeerLostError as PeerLostError
from ._exceptions import RemoteActorError as RemoteActorError
from ._exceptions import UnknownActorError as UnknownActorError
from ._exceptions import WorkerProcessError as WorkerProcessError
from ._process import WorkerProcess as WorkerProcess
from ._process import open_worker_process as open_worker_process
from ._ref import Ref as Ref
from ._worker import Worker as Worker
from ._worker import WorkerStatistics as WorkerStatistics
from ._worker import open_worker as open_worker

__all__ = (
    # actors and workers
    "Actor",
    "SupervisionPolicy",
    "Ref",
    "Worker",
    "WorkerStatistics",
    "Directory",
    "open_worker",
    "open_worker_process",
    "WorkerProcess",
    # finding code by name in every process
    "resolve_object",
    "import_file",
    # messages crossing processes
    "Codec",
    "default_codec",
    "register_message",
    # errors
    "ActorError",
    "ActorFailedError",
    "ActorStartError",
    "ActorStoppedError",
    "BootstrapError",
    "MailboxFullError",
    "MessageDecodeError",
    "MessageEncodeError",
    "MigrationError",
    "PeerLostError",
    "RemoteActorError",
    "UnknownActorError",
    "WorkerProcessError",
)
