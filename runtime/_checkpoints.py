"""The checkpoint coordinator: which checkpoint is in flight, who has acked, when it completes.

The job supervisor owns one. ``begin()`` opens checkpoint ``n`` (at most one at a time, as
Flink's default); the supervisor then tells every worker controller ``InjectBarrier(n)``. Every
source actor acks with its split's position, every key-group actor with what its snapshot wrote
(``BarrierAck``). The checkpoint completes when every source has acked and every key-group
actor has acked or has drained (a drained key group's state is final and takes no barriers).
A part that failed, or a checkpoint older than ``timeout_s``, aborts it: counted, logged, and the
next one is tried; acks of an aborted checkpoint are ignored.

Pure bookkeeping with an injected clock: no I/O, no awaiting, testable alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from shoal.actors._log import get_logger

from ._messages import BarrierAck

__all__ = ("CheckpointCoordinator", "CheckpointStatistics", "CompletedCheckpoint")

log = get_logger("shoal.checkpoint")

#: A checkpoint not complete after this long is aborted (a stuck or lost part).
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class CompletedCheckpoint:
    """A checkpoint every part acknowledged.

    Attributes:
        epoch: the checkpoint's number (1, 2, ...).
        positions: split -> position to reopen it at (``None``: from its start).
        key_groups: key-group actor name -> what its snapshot reported (entries, bytes,
            written, pause_s, alignment_s); drained key groups are absent.
        duration_s: from trigger to the last ack.
    """

    epoch: int
    positions: dict[str, Any]
    key_groups: dict[str, dict[str, Any]]
    duration_s: float

    @property
    def max_pause_s(self) -> float:
        """The longest processing pause of one key group for this checkpoint (its flush)."""
        return max((s.get("pause_s", 0.0) for s in self.key_groups.values()), default=0.0)

    @property
    def max_alignment_s(self) -> float:
        return max((s.get("alignment_s", 0.0) for s in self.key_groups.values()), default=0.0)


@dataclass(frozen=True, slots=True)
class CheckpointStatistics:
    """Checkpoints so far: counts and the figures of the completed ones."""

    completed: int
    failed: int
    skipped: int
    last_completed: int
    durations_s: tuple[float, ...]
    max_pause_s: float


@dataclass(slots=True)
class _Pending:
    epoch: int
    started: float
    positions: dict[str, Any] = field(default_factory=dict)
    sources_acked: set[str] = field(default_factory=set)
    key_groups: dict[str, dict[str, Any]] = field(default_factory=dict)


class CheckpointCoordinator:
    """Tracks checkpoints of one job (see the module docstring)."""

    def __init__(
        self,
        *,
        sources: Iterable[str],
        key_groups: Iterable[str],
        clock: Callable[[], float],
        timeout_s: float = DEFAULT_TIMEOUT_S,
        first_epoch: int = 1,
    ) -> None:
        self.sources = frozenset(sources)
        self.key_groups = frozenset(key_groups)
        self.clock = clock
        self.timeout_s = timeout_s
        self.drained: set[str] = set()
        self.completed: list[CompletedCheckpoint] = []
        self.failed = 0
        self.skipped = 0
        self._next = first_epoch
        self._pending: _Pending | None = None

    @property
    def in_progress(self) -> int | None:
        return None if self._pending is None else self._pending.epoch

    @property
    def last_completed(self) -> CompletedCheckpoint | None:
        return self.completed[-1] if self.completed else None

    def begin(self) -> int | None:
        """Open the next checkpoint and return its epoch; None while one is still in flight."""
        if self._pending is not None:
            self.skipped += 1
            return None
        epoch = self._next
        self._next += 1
        self._pending = _Pending(epoch, self.clock())
        return epoch

    def ack(self, ack: BarrierAck) -> CompletedCheckpoint | None:
        """Record one part; return the checkpoint if this ack completed it."""
        pending = self._pending
        if pending is None or ack.epoch != pending.epoch:
            return None  # an aborted (or unknown) checkpoint's late ack
        if ack.error is not None:
            self.abort(ack.error)
            return None
        if ack.actor in self.sources:
            pending.sources_acked.add(ack.actor)
            pending.positions.update(ack.positions)
        else:
            pending.key_groups[ack.actor] = dict(ack.stats)
        return self._complete_if_done()

    def drain(self, actor: str) -> CompletedCheckpoint | None:
        """``actor`` drained: it takes no more barriers. May complete the checkpoint."""
        self.drained.add(actor)
        return self._complete_if_done() if self._pending is not None else None

    def abort(self, reason: str) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        self.failed += 1
        log.warning("checkpoint aborted", epoch=pending.epoch, reason=reason)

    def expire(self) -> None:
        """Abort the checkpoint in flight if it is older than ``timeout_s``."""
        pending = self._pending
        if pending is not None and self.clock() - pending.started > self.timeout_s:
            missing = sorted(
                (self.sources - pending.sources_acked)
                | (self.key_groups - pending.key_groups.keys() - self.drained)
            )
            self.abort(f"timed out after {self.timeout_s} s waiting for {missing[:5]}")

    def _complete_if_done(self) -> CompletedCheckpoint | None:
        pending = self._pending
        assert pending is not None
        if pending.sources_acked != self.sources:
            return None
        if not self.key_groups <= pending.key_groups.keys() | self.drained:
            return None
        self._pending = None
        done = CompletedCheckpoint(
            pending.epoch,
            pending.positions,
            pending.key_groups,
            self.clock() - pending.started,
        )
        self.completed.append(done)
        log.info(
            "checkpoint completed",
            epoch=done.epoch,
            duration_ms=round(done.duration_s * 1000, 2),
            max_pause_ms=round(done.max_pause_s * 1000, 2),
        )
        return done

    def statistics(self) -> CheckpointStatistics:
        return CheckpointStatistics(
            completed=len(self.completed),
            failed=self.failed,
            skipped=self.skipped,
            last_completed=self.completed[-1].epoch if self.completed else 0,
            durations_s=tuple(c.duration_s for c in self.completed),
            max_pause_s=max((c.max_pause_s for c in self.completed), default=0.0),
        )
