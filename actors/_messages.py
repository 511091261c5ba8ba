"""The kernel's own message records: what travels in a mailbox besides user messages.

A user message that is told is put in the mailbox as is (no wrapper: a local tell costs one
mailbox append). Everything else is one of the records below; they are private to the
kernel, so a user message can never be mistaken for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._reply import Reply

__all__ = ("Ask", "MigrateMarker", "ProcessFailure", "StopMarker")


@dataclass(frozen=True, slots=True)
class Ask:
    """A request whose result (or error) goes to ``reply``."""

    message: Any
    reply: Reply


@dataclass(frozen=True, slots=True)
class StopMarker:
    """Stop after everything queued before this marker has been handled."""


@dataclass(frozen=True, slots=True)
class MigrateMarker:
    """Dehydrate and stop after everything queued before this marker, then wait for a verdict."""


@dataclass(frozen=True, slots=True)
class ProcessFailure:
    """Why a worker process is about to exit with an error, sent to its parent before it exits.

    It travels on the process's status pipe as CBOR (see ``_process``), so the parent can name
    the root cause instead of an exit status. ``actor`` is the failing actor's name when an
    actor's failure ended the worker, else None.
    """

    type_name: str
    message: str
    actor: str | None
    traceback: str

    def to_cbor_list(self) -> list[Any]:
        return [self.type_name, self.message, self.actor, self.traceback]

    @classmethod
    def from_cbor_list(cls, fields: list[Any]) -> ProcessFailure:
        type_name, message, actor, traceback = fields
        return cls(
            str(type_name), str(message), None if actor is None else str(actor), str(traceback)
        )
