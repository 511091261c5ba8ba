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

__all__ = ("Ask", "MigrateMarker", "StopMarker")


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
