"""A source that records its lifecycle, and a flow around it (worker processes rebuild it)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from shoal import (
    CollectingSink,
    Flow,
    SourceBatch,
    SourceContext,
    SplitReader,
)


class LifecycleSource:
    """``splits`` numbered ranges of ``per_split`` ints; every lifecycle call is logged.

    Log entries go to ``events`` (a list, in one loop) and, when ``log_path`` is given, to that
    file as JSON lines with the process id (worker processes append to one file).
    """

    bounded = True

    def __init__(self, splits: int, per_split: int, log_path: str | None = None) -> None:
        self._ids = tuple(f"part:{i}" for i in range(splits))
        self.per_split = per_split
        self.log_path = log_path
        self.events: list[tuple[Any, ...]] = []
        self.log("construct")

    def log(self, *event: Any) -> None:
        self.events.append(event)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(json.dumps([os.getpid(), *event]) + "\n")

    def splits(self) -> Sequence[str]:
        return self._ids

    async def open(self, context: SourceContext) -> None:
        self.log("open", context.job, context.worker, context.workers, list(context.splits))

    def open_split(self, split: str, position: Any | None = None) -> SplitReader:
        self.log("open_split", split, position)
        start = self._ids.index(split) * self.per_split
        return _Reader(self, split, start if position is None else position, start + self.per_split)

    async def aclose(self) -> None:
        self.log("aclose")


class _Reader:
    def __init__(self, source: LifecycleSource, split: str, pos: int, end: int) -> None:
        self.source, self.split, self.pos, self.end = source, split, pos, end

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        if self.pos >= self.end:
            return None
        self.source.log("read", self.split)
        stop = min(self.end, self.pos + max_records)
        offsets = list(range(self.pos, stop))
        self.pos = stop
        return SourceBatch(offsets, offsets, stop)

    async def aclose(self) -> None:
        self.source.log("close_split", self.split)


def lifecycle(splits: int = 3, per_split: int = 100, log_path: str | None = None) -> Flow:
    """Count records per parity."""
    flow = Flow("lifecycle", num_key_groups=4)
    source = LifecycleSource(splits, per_split, log_path)
    flow.source(source).key_by(lambda n: n % 2).count(name="n").sink(CollectingSink())
    return flow
