"""Checkpoint figures: what completed checkpoints cost, aggregated for reports and metrics.

The checkpoint coordinator feeds a :class:`CheckpointFigures` with every completed checkpoint
(and the supervisor with every recovery); :meth:`CheckpointFigures.statistics` returns the
frozen :class:`CheckpointStatistics` record that ``JobResult.checkpoints``, ``shoal run``'s
summary and the Prometheus collector read.

Where each figure comes from: a checkpoint's duration is the coordinator's clock from the
trigger to the manifest written; each key group's acknowledgement carries its alignment time
(first barrier to the last of its input channels), its processing pause (the local epoch
commit), and the record of the file it wrote (``GroupRecord.to_data()``: the chain's files of
this epoch are the ones written now, a ``"full"`` or a ``"delta"``, with size and entries).

Counts and sums cover the whole run. Percentiles cover a recent window (the last
:data:`DURATION_WINDOW` checkpoints, the last :data:`SAMPLE_WINDOW` key-group pauses and
alignments), so a job that runs for days keeps bounded memory; maxima cover the whole run.
Drained key groups (their input ended; the supervisor asks them for their final state) do not
count towards pause and alignment: nothing of theirs waits while they commit.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = (
    "DURATION_WINDOW",
    "SAMPLE_WINDOW",
    "CheckpointFigures",
    "CheckpointStatistics",
    "CheckpointWritten",
    "percentile",
)

#: Percentiles of checkpoint durations are taken over this many recent checkpoints.
DURATION_WINDOW = 1024
#: Percentiles of pauses and alignments are taken over this many recent key-group samples
#: (128 checkpoints of 128 key groups): sorting them costs ~2 ms, once per new checkpoint.
SAMPLE_WINDOW = 16384


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``; None when there are none.

    Nearest rank: the smallest value with at least ``q`` of the values at or below it (p99 of
    nine values is their maximum; p50 of four is the second smallest).
    """
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class CheckpointWritten:
    """What one completed checkpoint wrote and how long its key groups waited.

    Attributes:
        epoch: the checkpoint's number.
        duration_s: trigger to manifest written.
        max_pause_s: the longest processing pause of one key group (0.0: none paused).
        max_alignment_s: the longest barrier alignment of one key group.
        key_groups: how many key groups took part.
        full_files / delta_files: key-group files written for this epoch, by kind (an
            unchanged key group writes none).
        full_bytes / delta_bytes: their bytes.
        full_entries / delta_entries: the entries in them (a delta's deletions included).
    """

    epoch: int
    duration_s: float
    max_pause_s: float
    max_alignment_s: float
    key_groups: int
    full_files: int
    delta_files: int
    full_bytes: int
    delta_bytes: int
    full_entries: int
    delta_entries: int

    @property
    def bytes_written(self) -> int:
        return self.full_bytes + self.delta_bytes

    @property
    def entries_written(self) -> int:
        return self.full_entries + self.delta_entries

    def log_fields(self) -> dict[str, Any]:
        """The fields of the ``checkpoint completed`` log line (milliseconds rounded)."""
        return {
            "epoch": self.epoch,
            "duration_ms": round(self.duration_s * 1000, 2),
            "max_pause_ms": round(self.max_pause_s * 1000, 2),
            "max_alignment_ms": round(self.max_alignment_s * 1000, 2),
            "key_groups": self.key_groups,
            "full_files": self.full_files,
            "delta_files": self.delta_files,
            "bytes_written": self.bytes_written,
            "entries_written": self.entries_written,
        }


def checkpoint_written(
    epoch: int, duration_s: float, key_groups: Mapping[str, Mapping[str, Any]]
) -> CheckpointWritten:
    """Sum up one checkpoint's key-group acknowledgements (see the module docstring)."""
    pauses, alignments = _samples(key_groups.values())
    files = {"full": [0, 0, 0], "delta": [0, 0, 0]}  # kind -> [files, bytes, entries]
    for stats in key_groups.values():
        # Figures never fail a checkpoint: a record without a chain counts no file.
        for file in stats.get("record", {}).get("chain", ()):
            if file["epoch"] == epoch and file["kind"] in files:
                files[file["kind"]][0] += 1
                files[file["kind"]][1] += file["size"]
                files[file["kind"]][2] += file["entries"]
    return CheckpointWritten(
        epoch=epoch,
        duration_s=duration_s,
        max_pause_s=max(pauses, default=0.0),
        max_alignment_s=max(alignments, default=0.0),
        key_groups=len(key_groups),
        full_files=files["full"][0],
        delta_files=files["delta"][0],
        full_bytes=files["full"][1],
        delta_bytes=files["delta"][1],
        full_entries=files["full"][2],
        delta_entries=files["delta"][2],
    )


def _samples(acks: Iterable[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """Pauses and alignments of the key groups that were processing (not drained ones)."""
    pauses: list[float] = []
    alignments: list[float] = []
    for stats in acks:
        if stats.get("drained"):
            continue
        if "pause_s" in stats:
            pauses.append(float(stats["pause_s"]))
        if "alignment_s" in stats:
            alignments.append(float(stats["alignment_s"]))
    return pauses, alignments


@dataclass(frozen=True, slots=True)
class CheckpointStatistics:
    """Checkpoints so far: counts, and the figures of the completed ones.

    Percentile fields are ``None`` until a checkpoint completes. Counts, sums and maxima cover
    the whole run; percentiles a recent window (see ``shoal.runtime._checkpoint_stats``).

    Attributes:
        completed: checkpoints whose manifest was written.
        failed: checkpoints aborted (a part failed, alignment over its bound, a timeout, the
            manifest not written).
        skipped: triggers that found a checkpoint still in flight (one at a time).
        last_completed: the newest completed epoch (0: none).
        durations_s: trigger to manifest written, per completed checkpoint (the last
            ``DURATION_WINDOW``, oldest first).
        max_pause_s: the longest processing pause of one key group (its local epoch commit;
            0.0 before any checkpoint completed).
        duration_p50_s / duration_p99_s: of ``durations_s``.
        duration_sum_s: of every completed checkpoint (for a Prometheus summary).
        pause_p99_s: of the key groups' pauses, one sample per key group per checkpoint.
        pause_samples / pause_sum_s: how many pauses, and their seconds, over the run.
        alignment_p99_s / max_alignment_s: of the key groups' barrier alignment (first
            barrier to the last input channel's).
        alignment_samples / alignment_sum_s: likewise.
        full_files / delta_files: key-group files written, by kind.
        full_bytes / delta_bytes: their bytes.
        full_entries / delta_entries: the entries in them.
        last: what the newest completed checkpoint wrote (None: none yet).
        recoveries_s: seconds per recovery (failure noticed to processing again).
    """

    completed: int
    failed: int
    skipped: int
    last_completed: int
    durations_s: tuple[float, ...]
    max_pause_s: float
    duration_p50_s: float | None = None
    duration_p99_s: float | None = None
    duration_sum_s: float = 0.0
    pause_p99_s: float | None = None
    pause_samples: int = 0
    pause_sum_s: float = 0.0
    alignment_p99_s: float | None = None
    max_alignment_s: float = 0.0
    alignment_samples: int = 0
    alignment_sum_s: float = 0.0
    full_files: int = 0
    delta_files: int = 0
    full_bytes: int = 0
    delta_bytes: int = 0
    full_entries: int = 0
    delta_entries: int = 0
    last: CheckpointWritten | None = None
    recoveries_s: tuple[float, ...] = ()

    @property
    def bytes_written(self) -> int:
        """Bytes of every key-group file written by completed checkpoints."""
        return self.full_bytes + self.delta_bytes

    @property
    def entries_written(self) -> int:
        """Entries in every key-group file written by completed checkpoints."""
        return self.full_entries + self.delta_entries


class CheckpointFigures:
    """Aggregates completed checkpoints and recoveries into :class:`CheckpointStatistics`.

    ``statistics()`` is cached until the next ``add`` or ``recovered``: a progress report or
    a scrape between two checkpoints costs nothing.
    """

    def __init__(self) -> None:
        self.completed = 0
        self._durations: deque[float] = deque(maxlen=DURATION_WINDOW)
        self._pauses: deque[float] = deque(maxlen=SAMPLE_WINDOW)
        self._alignments: deque[float] = deque(maxlen=SAMPLE_WINDOW)
        self._duration_sum = 0.0
        # [samples, seconds] over the whole run
        self._pause_total = [0, 0.0]
        self._alignment_total = [0, 0.0]
        self._max_pause = 0.0
        self._max_alignment = 0.0
        self._totals = dict.fromkeys(
            (
                "full_files",
                "delta_files",
                "full_bytes",
                "delta_bytes",
                "full_entries",
                "delta_entries",
            ),
            0,
        )
        self._last: CheckpointWritten | None = None
        self._recoveries: list[float] = []
        self._cache: tuple[CheckpointStatistics, ...] = ()

    def add(
        self, epoch: int, duration_s: float, key_groups: Mapping[str, Mapping[str, Any]]
    ) -> CheckpointWritten:
        """Count completed checkpoint ``epoch`` (its key groups' acknowledgement stats)."""
        written = checkpoint_written(epoch, duration_s, key_groups)
        pauses, alignments = _samples(key_groups.values())
        self.completed += 1
        self._durations.append(duration_s)
        self._duration_sum += duration_s
        self._pauses.extend(pauses)
        self._alignments.extend(alignments)
        self._pause_total[0] += len(pauses)
        self._pause_total[1] += sum(pauses)
        self._alignment_total[0] += len(alignments)
        self._alignment_total[1] += sum(alignments)
        self._max_pause = max(self._max_pause, written.max_pause_s)
        self._max_alignment = max(self._max_alignment, written.max_alignment_s)
        for name in self._totals:
            self._totals[name] += getattr(written, name)
        self._last = written
        self._cache = ()
        return written

    def recovered(self, seconds: float) -> None:
        """Count one recovery: ``seconds`` from the failure noticed to processing again."""
        self._recoveries.append(seconds)
        self._cache = ()

    def statistics(self, *, failed: int, skipped: int) -> CheckpointStatistics:
        """The record of every checkpoint so far (``failed`` and ``skipped`` from the
        coordinator, which counts them)."""
        if self._cache and (self._cache[0].failed, self._cache[0].skipped) == (failed, skipped):
            return self._cache[0]
        durations = tuple(self._durations)
        stats = CheckpointStatistics(
            completed=self.completed,
            failed=failed,
            skipped=skipped,
            last_completed=0 if self._last is None else self._last.epoch,
            durations_s=durations,
            max_pause_s=self._max_pause,
            duration_p50_s=percentile(durations, 0.5),
            duration_p99_s=percentile(durations, 0.99),
            duration_sum_s=self._duration_sum,
            pause_p99_s=percentile(self._pauses, 0.99),
            pause_samples=int(self._pause_total[0]),
            pause_sum_s=float(self._pause_total[1]),
            alignment_p99_s=percentile(self._alignments, 0.99),
            max_alignment_s=self._max_alignment,
            alignment_samples=int(self._alignment_total[0]),
            alignment_sum_s=float(self._alignment_total[1]),
            **self._totals,
            last=self._last,
            recoveries_s=tuple(self._recoveries),
        )
        self._cache = (stats,)
        return stats
