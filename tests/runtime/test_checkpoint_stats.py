"""Checkpoint statistics: what completed checkpoints cost, aggregated from the key groups' acks
(durations, pauses, alignment, bytes written by kind), logged per checkpoint with its epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import e2e_flows as flows
import pytest
from shoal.runtime._checkpoint_stats import (
    DURATION_WINDOW,
    CheckpointFigures,
    percentile,
)
from shoal.runtime._checkpoints import CheckpointCoordinator
from shoal.runtime._messages import BarrierAck
from structlog.testing import capture_logs

from shoal import run_job


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(group: int, epoch: int, *files: tuple[str, int, int, int]) -> dict[str, Any]:
    """A ``GroupRecord.to_data()`` whose chain holds ``files`` as (kind, epoch, size, entries)."""
    return {
        "operator": "op",
        "key_group": group,
        "epoch": epoch,
        "chain": [
            {
                "path": f"f{group}-{e}",
                "kind": kind,
                "epoch": e,
                "base": None if kind == "full" else e - 1,
                "xxh3_128": "0" * 32,
                "size": size,
                "entries": entries,
            }
            for kind, e, size, entries in files
        ],
    }


def complete(
    coord: CheckpointCoordinator, clock: FakeClock, duration: float, acks: dict[str, Any]
) -> None:
    """Run one checkpoint through the coordinator: trigger, every ack, manifest written."""
    epoch = coord.begin()
    assert epoch is not None
    started = clock.now
    coord.ack(BarrierAck(epoch, "src:a", 0, {"a": epoch}, {}))
    for actor, stats in acks.items():
        coord.ack(BarrierAck(epoch, actor, 0, {}, stats))
    clock.now = started + duration
    assert coord.committed(epoch) is not None


def coordinator(clock: FakeClock) -> CheckpointCoordinator:
    return CheckpointCoordinator(
        sources={"src:a"}, key_groups={"op#0", "op#1"}, clock=clock, timeout_s=5.0
    )


def test_percentiles_are_nearest_rank_and_none_without_values() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    nine = [float(i) for i in range(1, 10)]
    assert percentile(nine, 0.99) == 9.0
    assert percentile(nine, 0.5) == 5.0
    hundred = [float(i) for i in range(1, 101)]
    assert percentile(hundred, 0.99) == 99.0


def test_statistics_before_any_checkpoint_completed_have_no_percentiles() -> None:
    stats = coordinator(FakeClock()).statistics()
    assert (stats.completed, stats.failed, stats.skipped, stats.last_completed) == (0, 0, 0, 0)
    assert stats.durations_s == ()
    assert (stats.duration_p50_s, stats.duration_p99_s) == (None, None)
    assert (stats.pause_p99_s, stats.alignment_p99_s) == (None, None)
    assert (stats.max_pause_s, stats.max_alignment_s) == (0.0, 0.0)
    assert (stats.bytes_written, stats.full_files, stats.delta_files) == (0, 0, 0)
    assert stats.last is None
    assert stats.recoveries_s == ()


def test_statistics_aggregate_durations_pauses_alignment_and_files_by_kind() -> None:
    clock = FakeClock()
    coord = coordinator(clock)
    complete(
        coord,
        clock,
        0.5,
        {
            "op#0": {
                "pause_s": 0.010,
                "alignment_s": 0.001,
                "record": record(0, 1, ("full", 1, 1000, 50)),
            },
            "op#1": {
                "pause_s": 0.002,
                "alignment_s": 0.003,
                "record": record(1, 1, ("full", 1, 400, 20)),
            },
        },
    )
    complete(
        coord,
        clock,
        0.25,
        {
            # A delta on its full: only the file of this epoch was written now.
            "op#0": {
                "pause_s": 0.004,
                "alignment_s": 0.002,
                "record": record(0, 2, ("full", 1, 1000, 50), ("delta", 2, 120, 6)),
            },
            # Unchanged: no file of epoch 2 (its chain is still the full of epoch 1).
            "op#1": {
                "pause_s": 0.001,
                "alignment_s": 0.0,
                "record": record(1, 1, ("full", 1, 400, 20)),
            },
        },
    )
    stats = coord.statistics()
    assert (stats.completed, stats.failed, stats.last_completed) == (2, 0, 2)
    assert stats.durations_s == (0.5, 0.25)  # binary fractions: the fake clock adds exactly
    assert (stats.duration_p50_s, stats.duration_p99_s) == (0.25, 0.5)
    assert stats.duration_sum_s == 0.75
    assert stats.max_pause_s == 0.010
    assert stats.pause_p99_s == 0.010
    assert (stats.pause_samples, stats.alignment_samples) == (4, 4)
    assert stats.pause_sum_s == pytest.approx(0.017)
    assert stats.alignment_sum_s == pytest.approx(0.006)
    assert (stats.alignment_p99_s, stats.max_alignment_s) == (0.003, 0.003)
    assert (stats.full_files, stats.full_bytes) == (2, 1400)
    assert (stats.delta_files, stats.delta_bytes) == (1, 120)
    assert stats.bytes_written == 1520
    assert (stats.full_entries, stats.delta_entries, stats.entries_written) == (70, 6, 76)
    last = stats.last
    assert last is not None
    assert (last.epoch, last.duration_s, last.key_groups) == (2, 0.25, 2)
    assert (last.full_files, last.delta_files, last.bytes_written, last.entries_written) == (
        0,
        1,
        120,
        6,
    )
    assert (last.max_pause_s, last.max_alignment_s) == (0.004, 0.002)


def test_drained_key_groups_count_for_bytes_but_not_for_pauses() -> None:
    clock = FakeClock()
    coord = coordinator(clock)
    complete(
        coord,
        clock,
        0.1,
        {
            "op#0": {"pause_s": 0.003, "alignment_s": 0.001},
            "op#1": {
                "pause_s": 0.5,
                "alignment_s": 0.0,
                "drained": True,
                "record": record(1, 1, ("full", 1, 64, 2)),
            },
        },
    )
    stats = coord.statistics()
    assert (stats.max_pause_s, stats.pause_p99_s) == (0.003, 0.003)
    assert stats.alignment_p99_s == 0.001
    assert (stats.full_files, stats.full_bytes) == (1, 64)


def test_failed_and_skipped_come_from_the_coordinator_and_refresh_the_cached_record() -> None:
    clock = FakeClock()
    coord = coordinator(clock)
    complete(coord, clock, 0.1, {"op#0": {"pause_s": 0.001}, "op#1": {"pause_s": 0.001}})
    first = coord.statistics()
    assert coord.statistics() is first  # cached: nothing changed
    assert coord.begin() == 2
    assert coord.begin() is None  # skipped: one in flight
    coord.ack(BarrierAck(2, "op#0", 0, {}, {}, error="disk full"))
    coord.ack(BarrierAck(2, "op#1", 0, {}, {}))
    stats = coord.statistics()
    assert stats is not first
    assert (stats.completed, stats.failed, stats.skipped) == (1, 1, 1)
    assert stats.durations_s == (0.1,)


def test_percentile_windows_are_bounded_and_totals_cover_the_whole_run() -> None:
    figures = CheckpointFigures()
    for epoch in range(1, DURATION_WINDOW + 11):
        figures.add(epoch, 1.0 if epoch <= 10 else 0.5, {"op#0": {"pause_s": 0.001}})
    stats = figures.statistics(failed=0, skipped=0)
    assert stats.completed == DURATION_WINDOW + 10
    assert len(stats.durations_s) == DURATION_WINDOW
    assert stats.duration_p99_s == 0.5  # the ten slow ones left the window
    assert stats.duration_sum_s == pytest.approx(10 * 1.0 + DURATION_WINDOW * 0.5)


def test_recoveries_are_counted_in_order() -> None:
    figures = CheckpointFigures()
    figures.recovered(1.5)
    figures.recovered(0.25)
    assert figures.statistics(failed=0, skipped=0).recoveries_s == (1.5, 0.25)


def test_each_completed_checkpoint_logs_at_info_and_each_failed_one_at_warning() -> None:
    clock = FakeClock()
    coord = coordinator(clock)
    with capture_logs() as logs:
        complete(
            coord,
            clock,
            0.25,
            {
                "op#0": {
                    "pause_s": 0.004,
                    "alignment_s": 0.002,
                    "record": record(0, 1, ("full", 1, 100, 5)),
                },
                "op#1": {"pause_s": 0.001, "alignment_s": 0.0},
            },
        )
        assert coord.begin() == 2
        coord.ack(BarrierAck(2, "op#0", 0, {}, {}, error="op#0: checkpoint 2: disk full"))
    [done, failed] = logs
    assert done == {
        "event": "checkpoint completed",
        "log_level": "info",
        "epoch": 1,
        "duration_ms": 250.0,
        "manifest_ms": 0.0,
        "max_pause_ms": 4.0,
        "max_alignment_ms": 2.0,
        "key_groups": 2,
        "full_files": 1,
        "delta_files": 0,
        "bytes_written": 100,
        "entries_written": 5,
    }
    assert failed == {
        "event": "checkpoint aborted",
        "log_level": "warning",
        "epoch": 2,
        "reason": "op#0: checkpoint 2: disk full",
    }


PARAMS: dict[str, Any] = {
    "seed": 7,
    "n": 20_000,
    "vocabulary": 500,
    "splits": 2,
    "key_groups": 8,
    "op": "count",
    "stages": 1,
}


@pytest.mark.asyncio
async def test_a_checkpointed_job_reports_durations_pauses_and_the_files_it_wrote(
    tmp_path: Path,
) -> None:
    result = await run_job(
        flows.randomized(**PARAMS),
        processes=False,
        state_dir=tmp_path,
        batch_size=8,
        mailbox_size=2,
        checkpoint_interval=0.02,
    )
    stats = result.checkpoints
    assert stats is not None
    assert stats.completed >= 1
    assert stats.duration_p50_s is not None
    assert stats.duration_p99_s is not None
    assert 0 < stats.duration_p50_s <= stats.duration_p99_s <= max(stats.durations_s)
    assert stats.pause_p99_s is not None
    assert 0 < stats.pause_p99_s <= stats.max_pause_s
    assert stats.alignment_p99_s is not None
    assert stats.full_files >= 1  # the first checkpoint writes every key group in full
    assert stats.bytes_written > 0
    assert stats.entries_written > 0
    assert stats.last is not None
    assert stats.last.epoch == stats.last_completed


@pytest.mark.asyncio
async def test_recoveries_reach_the_statistics_and_the_collector(tmp_path: Path) -> None:
    import recovery_flows
    from shoal.runtime._faults import Fault
    from test_metrics import labels, parse, scrape

    from shoal import JobCollector

    params = {"seed": 5, "n": 20_000, "vocabulary": 300, "splits": 3, "key_groups": 8}
    result = await run_job(
        recovery_flows.stats(**params),
        workers=2,
        processes=False,
        state_dir=tmp_path,
        batch_size=16,
        mailbox_size=2,
        checkpoint_interval=0.05,
        restart_backoff=0.0,
        faults=[Fault("keygroup.batch", worker=1, attempt=0, hit=400, action="fail")],
    )
    assert result.recoveries  # at least the injected failure's (what follows holds for any)
    stats = result.checkpoints
    assert stats is not None
    assert stats.recoveries_s == result.recoveries
    _types, samples = parse(scrape(JobCollector("stats", lambda: [], lambda: stats)))
    assert samples[("shoal_recovery_seconds_count", labels(job="stats"))] == len(result.recoveries)
    assert samples[("shoal_recovery_seconds_sum", labels(job="stats"))] == pytest.approx(
        sum(result.recoveries)
    )
