"""Errors raised by the actor kernel."""

from __future__ import annotations

import anyio

__all__ = (
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


class ActorError(Exception):
    """Base class of every error the actor kernel raises on purpose."""


class ActorStoppedError(ActorError):
    """The target actor stopped (or was never reachable) before it could handle the message."""


class ActorFailedError(ActorError):
    """An actor failed and its supervision policy escalated the failure to the worker."""

    def __init__(self, message: str, *, actor: str | None = None) -> None:
        super().__init__(message)
        #: The name of the actor that failed, when one did.
        self.actor = actor


class ActorStartError(ActorError):
    """An actor's factory, rehydrate() or on_start() raised, so spawning it failed."""


class UnknownActorError(ActorError, LookupError):
    """No actor with this name is hosted here and the directory does not place it anywhere."""


class MailboxFullError(ActorError, anyio.WouldBlock):
    """tell_nowait() found the target's mailbox full (also an anyio.WouldBlock)."""


class RemoteActorError(ActorError):
    """An actor in another process raised while handling an ask; carries the type name and text."""

    def __init__(self, actor: str, type_name: str, message: str) -> None:
        super().__init__(f"actor {actor!r} raised {type_name}: {message}")
        self.actor = actor
        self.type_name = type_name
        self.remote_message = message


class PeerLostError(ActorError):
    """The worker that hosts the target is gone (its process died, closed, or never came up)."""


class MessageEncodeError(ActorError, TypeError):
    """A message cannot be encoded with CBOR, so it cannot cross a process boundary."""


class MessageDecodeError(ActorError, ValueError):
    """A received frame or message could not be decoded."""


class MigrationError(ActorError):
    """Moving an actor to another worker failed; the actor keeps running where it was."""


class WorkerProcessError(ActorError):
    """A worker process failed to start or exited before it reported ready."""


class BootstrapError(ActorError):
    """A worker process's bootstrap failed for a reason its message says in full: the process
    reports the message to its parent and prints no traceback."""
