"""Where the answer to an ask goes: a waiting task in this process, or a peer worker."""

from __future__ import annotations

from typing import Any, Protocol

import anyio

__all__ = ("LocalReply", "Reply")


class Reply(Protocol):
    """Receives exactly one outcome of an ask; later outcomes are ignored."""

    def ok(self, value: Any) -> None:
        """Deliver the result."""

    def fail(self, exc: BaseException) -> None:
        """Deliver an error, raised at the asker."""


class LocalReply:
    """A one-shot slot an asking task in this process waits on."""

    __slots__ = ("_error", "_event", "_value", "done")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self.done = False

    def ok(self, value: Any) -> None:
        if not self.done:
            self.done = True
            self._value = value
            self._event.set()

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self.done = True
            self._error = exc
            self._event.set()

    async def wait(self) -> Any:
        """Wait for the outcome: return the value or raise the error."""
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value
