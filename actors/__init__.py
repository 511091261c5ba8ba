"""shoal.actors: the actor kernel.

Actors with bounded mailboxes and supervision, hosted by event-loop workers that reach each
other directly in one process or over Unix sockets (cbor2 frames, never pickle) across
processes, plus the generic primitive that migrates an actor between workers. The kernel knows
nothing of streams or storage.
"""

from __future__ import annotations

from ._actor import Actor as Actor
from ._actor import SupervisionPolicy as SupervisionPolicy
from ._codec import Codec as Codec
from ._codec import default_codec as default_codec
from ._codec import register_message as register_message
from ._directory import Directory as Directory
from ._exceptions import ActorError as ActorError
from ._exceptions import ActorFailedError as ActorFailedError
from ._exceptions import ActorStartError as ActorStartError
from ._exceptions import ActorStoppedError as ActorStoppedError
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
    # messages crossing processes
    "Codec",
    "default_codec",
    "register_message",
    # errors
    "ActorError",
    "ActorFailedError",
    "ActorStartError",
    "ActorStoppedError",
    "MailboxFullError",
    "MessageDecodeError",
    "MessageEncodeError",
    "MigrationError",
    "PeerLostError",
    "RemoteActorError",
    "UnknownActorError",
    "WorkerProcessError",
)
