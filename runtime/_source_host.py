"""One worker's share of the flow's source: opened once per worker, closed once.

The source host is an actor spawned when a worker starts, before the job's clock starts and
before any source actor. Its ``on_start`` runs the source's optional per-worker ``open`` hook
with a :class:`SourceContext` and opens the readers of the worker's splits; source actors take
their readers from it. The kernel stops actors in the reverse order of their start, so the host
stops after every source actor of its worker has closed its reader: its ``on_stop`` closes any
reader nobody took and runs the source's optional ``aclose`` hook, also when the job fails or is
cancelled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from shoal.actors import Actor

from ._sources import Source, SourceContext, SplitReader

__all__ = ("SourceHost", "source_host_name")


def source_host_name(worker: int) -> str:
    return f"srchost:{worker}"


class SourceHost(Actor):
    """Runs a source's per-worker lifecycle (see the module docstring and ``_sources``)."""

    def __init__(self, source: Source, context: SourceContext) -> None:
        self.source = source
        self.context = context
        self._opened = False
        self._ready: dict[str, SplitReader] = {}
        self._replaced: list[SplitReader] = []  # opened at start, then reopened at a position

    async def on_start(self) -> None:
        if not self.context.splits:
            return  # a worker without splits never opens the source (until one moves here)
        await self.adopt()
        for split in self.context.splits:
            self._ready[split] = self.source.open_split(split, None)

    async def adopt(self) -> None:
        """Open the source on this worker if it is not yet (its ``open`` hook runs once): a
        split moved here from another worker is about to be read."""
        if self._opened:
            return
        open_hook: Callable[[SourceContext], Awaitable[None]] | None = getattr(
            self.source, "open", None
        )
        if open_hook is not None:
            await open_hook(self.context)
        self._opened = True

    def open_split(self, split: str, position: Any | None = None) -> SplitReader:
        """A reader for ``split``: the one opened at start, or a new one at ``position``."""
        if position is None:
            reader = self._ready.pop(split, None)
            if reader is not None:
                return reader
        elif split in self._ready:
            self._replaced.append(self._ready.pop(split))
        return self.source.open_split(split, position)

    async def on_stop(self) -> None:
        unused = [*self._ready.values(), *self._replaced]
        self._ready, self._replaced = {}, []
        try:
            for reader in unused:
                await reader.aclose()
        finally:
            if self._opened:
                self._opened = False
                close_hook: Callable[[], Awaitable[None]] | None = getattr(
                    self.source, "aclose", None
                )
                if close_hook is not None:
                    await close_hook()

    async def receive(self, message: Any) -> Any:
        raise TypeError(f"source host got an unexpected message {message!r}")
