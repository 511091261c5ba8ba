"""An in-memory source for tests: records and in-band markers in one script per split.

``ScriptedSource([r1, r2, Pause(5.0), r3, CrashHere(), r4, EndOfStream()])`` reads ``r1``,
``r2``, waits five seconds, reads ``r3``, fails the job once at the ``CrashHere``, then reads
``r4`` and ends the split. Several scripts make several splits (``"script:0"``,
``"script:1"``, ...), read concurrently as a job reads any source's splits.

Markers:

* :class:`Pause` ``(seconds)``: the split reads nothing for ``seconds`` of the event loop's
  time before the next item (virtual seconds when a :class:`~shoal.testing.VirtualClock` is
  installed: a one-hour pause then takes no real time). Checkpoint barriers and moves of the
  split wait for the pause to end (a source takes them between two reads).
* :class:`CrashHere` ``()``: the first time any attempt of the job reaches it, the source
  raises :class:`~shoal.runtime.InjectedFault` (its worker fails; with checkpoints on the job
  restarts from the last completed checkpoint and reads past it). Each marker fires once per
  job: ``open_test_job`` re-arms them at its start, and a plain ``run_job`` fires each once per
  ``ScriptedSource`` object.
* :class:`EndOfStream` ``()``: the split ends here (nothing may follow it). A script without
  one stays open at its end (it reads nothing more, and the job runs until it is stopped:
  ``job.stop()``), so a test can act on a job that has read everything.

A split's position is the index of the next script item, so checkpoints record it, a restart
rewinds to it and each record's offset is its index in the script: every record is read once
per attempt, and exactly once in the state a recovery rebuilds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from ._faults import InjectedFault
from ._sources import SourceBatch, _check_position, _unknown_split

__all__ = ("CrashHere", "EndOfStream", "Pause", "ScriptedSource")

#: An open script's reader returns an empty batch after this long at its end: a source actor
#: takes barriers and moves only between two reads.
IDLE_RETURN_S = 0.05


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` of the loop's (virtual) time before the script's next item."""

    seconds: float

    def __post_init__(self) -> None:
        seconds = self.seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"Pause takes a number of seconds; got {seconds!r}")
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"Pause takes seconds >= 0 (and finite); got {seconds!r}")


@dataclass(frozen=True, slots=True)
class CrashHere:
    """Fail the job here, once (the first attempt that reaches it; the recovery goes past)."""


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """End the split here (the script's last item)."""


_MARKERS = (Pause, CrashHere, EndOfStream)


class ScriptedSource:
    """Records and markers (:class:`Pause`, :class:`CrashHere`, :class:`EndOfStream`), one
    script per split; see the module docstring.

    Args:
        *scripts: one sequence per split (a list or tuple of records and markers).
        name: the split ids' prefix: ``"<name>:0"``, ``"<name>:1"``, ...

    Raises:
        TypeError: no script, a script that is not a list or tuple, a bad ``name``.
        ValueError: an item after an :class:`EndOfStream`.
    """

    bounded: bool

    def __init__(self, *scripts: Sequence[Any], name: str = "script") -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"ScriptedSource: name must be a non-empty str; got {name!r}")
        if not scripts:
            raise TypeError("ScriptedSource takes at least one script (a list of records)")
        for index, script in enumerate(scripts):
            if not isinstance(script, list | tuple):
                raise TypeError(
                    f"ScriptedSource: script {index} must be a list or tuple of records and "
                    f"markers; got {type(script).__name__}"
                )
            ends = [i for i, item in enumerate(script) if isinstance(item, EndOfStream)]
            if ends and ends[0] != len(script) - 1:
                raise ValueError(
                    f"ScriptedSource: script {index} has items after its EndOfStream() at "
                    f"index {ends[0]}: nothing is read after the end of a stream"
                )
        self.name = name
        self.scripts: tuple[tuple[Any, ...], ...] = tuple(tuple(s) for s in scripts)
        self._ids = tuple(f"{name}:{i}" for i in range(len(scripts)))
        self.bounded = all(bool(s) and isinstance(s[-1], EndOfStream) for s in self.scripts)
        #: (split, index) of the CrashHere markers that have fired.
        self.crashed: set[tuple[str, int]] = set()
        # Per split, the position its reader has handed out up to; an event set (and replaced)
        # at each move.
        self._read: dict[str, int] = {}
        self._moved = anyio.Event()

    def __repr__(self) -> str:
        return f"ScriptedSource({len(self.scripts)} scripts, name={self.name!r})"

    def rearm(self) -> None:
        """Every :class:`CrashHere` fires again (a new job starts)."""
        self.crashed.clear()
        self._read.clear()

    def read_position(self, split: int = 0) -> int:
        """How far script ``split`` (its index) has been read: every item before this
        position was handed out (or passed) by the current reader."""
        return self._read.get(self._ids[split], 0)

    async def wait_read(self, position: int, split: int = 0) -> None:
        """Return once script ``split`` has been read up to ``position`` (every record before
        it handed to the job; pauses before it waited out). What the job made of them is in
        its state after the next checkpoint (``await job.checkpoint()``: its barrier follows
        them).

        Raises:
            ValueError: no such split, or a position past the script's end.
        """
        if type(split) is not int or not 0 <= split < len(self.scripts):
            raise ValueError(
                f"ScriptedSource has scripts 0..{len(self.scripts) - 1}; got {split!r}"
            )
        script = self.scripts[split]
        if type(position) is not int or not 0 <= position <= len(script):
            raise ValueError(f"script {split} has positions 0..{len(script)}; got {position!r}")
        while self.read_position(split) < position:
            await self._moved.wait()

    def _moved_to(self, split: str, position: int) -> None:
        self._read[split] = position
        event, self._moved = self._moved, anyio.Event()
        event.set()

    def splits(self) -> Sequence[str]:
        """``"<name>:0"``, ``"<name>:1"``, ... (one per script)."""
        return self._ids

    def open_split(self, split: str, position: Any | None = None) -> _ScriptReader:
        """Open ``split`` at its start or at ``position`` (a script index).

        Raises:
            ValueError: unknown split, or a position outside the script.
        """
        if split not in self._ids:
            raise _unknown_split("ScriptedSource", split, self._ids)
        script = self.scripts[self._ids.index(split)]
        start = (
            0 if position is None else _check_position("ScriptedSource", position, 0, len(script))
        )
        self._moved_to(split, start)  # a restart rewinds it
        return _ScriptReader(self, split, script, start)


class _ScriptReader:
    """Reads one script; cancel-safe (it moves past an item only once it has handled it)."""

    __slots__ = ("_at", "_script", "_source", "_split")

    def __init__(
        self, source: ScriptedSource, split: str, script: tuple[Any, ...], start: int
    ) -> None:
        self._source = source
        self._split = split
        self._script = script
        self._at = start

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        script = self._script
        at = self._at
        if at < len(script):
            item = script[at]
            if isinstance(item, EndOfStream):
                return None
            if isinstance(item, Pause):
                await anyio.sleep(item.seconds)
                return self._handed([], [], at + 1)
            if isinstance(item, CrashHere):
                mark = (self._split, at)
                if mark not in self._source.crashed:
                    self._source.crashed.add(mark)
                    raise InjectedFault(f"CrashHere() at {self._split} position {at}")
                return self._handed([], [], at + 1)
            values: list[Any] = []
            offsets: list[int] = []
            while at < len(script) and len(values) < max_records:
                item = script[at]
                if isinstance(item, _MARKERS):
                    break
                values.append(item)
                offsets.append(at)
                at += 1
            return self._handed(values, offsets, at)
        # An open end: nothing more comes; an empty batch now and then lets barriers through.
        await anyio.sleep(IDLE_RETURN_S)
        return SourceBatch([], [], at)

    def _handed(self, values: list[Any], offsets: list[int], position: int) -> SourceBatch:
        self._at = position
        self._source._moved_to(self._split, position)
        return SourceBatch(values, offsets, position)

    async def aclose(self) -> None:
        pass
