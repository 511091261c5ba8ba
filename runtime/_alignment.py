"""Checkpoint barrier alignment over the input channels of one key-group actor.

A key-group actor has several input channels (the splits feeding the first keyed stage, or the
upstream key-group actors). Barrier ``n`` splits each channel's stream into what belongs to
epoch ``n`` and what comes after. The actor may snapshot epoch ``n`` only once every open
channel has delivered barrier ``n``; meanwhile, what arrives on a channel that already delivered
it belongs to epoch ``n + 1`` and is held back (in arrival order), while the other channels keep
flowing. This is Flink's aligned checkpoint.

Holding is bounded: past ``max_held`` records the alignment gives up on that epoch (the part
is reported failed, the coordinator aborts the checkpoint, held messages are released in order,
and the job goes on; the next checkpoint is tried). A channel that ends counts as aligned.

The class is pure bookkeeping: it never sends or awaits, so the actor decides what to do with
the verdicts and the rules are testable alone.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ("BarrierAlignment",)


class BarrierAlignment:
    """Which channels have delivered the barrier of the epoch being aligned, and what is held."""

    __slots__ = (
        "_aborted",
        "_aligned",
        "_held",
        "_held_records",
        "epoch",
        "last_epoch",
        "max_held",
        "open_channels",
        "started_at",
    )

    def __init__(self, channels: set[str], max_held: int) -> None:
        self.open_channels = set(channels)
        self.max_held = max_held
        #: The epoch being aligned, or None.
        self.epoch: int | None = None
        #: The newest epoch whose barrier this actor has seen (aligned, aborted or done).
        self.last_epoch = 0
        self.started_at = 0.0
        self._aligned: set[str] = set()
        self._held: deque[Any] = deque()
        self._held_records = 0
        self._aborted = False

    @property
    def held_records(self) -> int:
        return self._held_records

    def must_hold(self, channel: str) -> bool:
        """Whether a message on ``channel`` belongs to the next epoch (its barrier came first)."""
        return self.epoch is not None and channel in self._aligned

    def hold(self, message: Any, records: int) -> bool:
        """Hold ``message``; False when that exceeds the bound (the caller should abort)."""
        self._held.append(message)
        self._held_records += records
        return self._held_records <= self.max_held

    def barrier(self, channel: str, epoch: int, now: float) -> str:
        """Barrier ``epoch`` arrived on ``channel``.

        Returns ``"stale"`` (an epoch already aligned or aborted: ignore it), ``"waiting"``
        (other open channels have not delivered it yet) or ``"aligned"`` (snapshot now, then
        call :meth:`finish`).
        """
        if self.epoch is None:
            if epoch <= self.last_epoch:
                return "stale"
            self.epoch = epoch
            self.last_epoch = epoch
            self.started_at = now
            self._aborted = False
        elif epoch != self.epoch:
            raise RuntimeError(
                f"barrier {epoch} on channel {channel!r} while aligning barrier {self.epoch}:"
                " a channel skipped a barrier"
            )
        self._aligned.add(channel)
        return "aligned" if self.open_channels <= self._aligned else "waiting"

    def end(self, channel: str) -> bool:
        """``channel`` ended; True when that completes the alignment in progress."""
        self.open_channels.discard(channel)
        return self.epoch is not None and self.open_channels <= self._aligned

    def abort(self) -> None:
        """Give up aligning the current epoch: the caller reports it failed and releases."""
        self._aborted = True
        self._aligned = set(self.open_channels)  # nothing more to wait for

    @property
    def aborted(self) -> bool:
        return self._aborted

    def to_data(self) -> dict[str, Any]:
        """The alignment as plain values (its held messages as they are), for a successor on
        another worker (live migration): it goes on exactly where this one stands."""
        return {
            "open": sorted(self.open_channels),
            "epoch": self.epoch,
            "last_epoch": self.last_epoch,
            "aligned": sorted(self._aligned),
            "held": list(self._held),
            "held_records": self._held_records,
            "aborted": self._aborted,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Take over :meth:`to_data`'s state (the clock of an alignment in progress restarts)."""
        self.open_channels = set(data["open"])
        self.epoch = data["epoch"]
        self.last_epoch = int(data["last_epoch"])
        self._aligned = set(data["aligned"])
        self._held = deque(data["held"])
        self._held_records = int(data["held_records"])
        self._aborted = bool(data["aborted"])

    def finish(self) -> deque[Any]:
        """The epoch is snapshotted (or aborted): stop holding; return the held messages."""
        held, self._held = self._held, deque()
        self._held_records = 0
        self.epoch = None
        self._aligned = set()
        return held
