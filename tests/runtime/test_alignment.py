"""Barrier alignment and the checkpoint coordinator, as pure bookkeeping."""

from __future__ import annotations

import pytest
from shoal.runtime._alignment import BarrierAlignment
from shoal.runtime._checkpoints import CheckpointCoordinator
from shoal.runtime._messages import BarrierAck


def test_a_channel_that_delivered_the_barrier_is_held_until_every_open_channel_has() -> None:
    alignment = BarrierAlignment({"a", "b", "c"}, max_held=100)
    assert not alignment.must_hold("a")
    assert alignment.barrier("a", 1, now=0.0) == "waiting"
    assert alignment.must_hold("a")
    assert not alignment.must_hold("b")
    assert alignment.hold("a-data", 10)
    assert alignment.barrier("b", 1, now=0.0) == "waiting"
    assert alignment.end("c")  # the last unaligned channel ends: aligned
    assert list(alignment.finish()) == ["a-data"]
    assert alignment.epoch is None
    assert not alignment.must_hold("a")
    assert alignment.open_channels == {"a", "b"}


def test_barriers_of_an_aligned_or_aborted_epoch_are_stale() -> None:
    alignment = BarrierAlignment({"a", "b"}, max_held=5)
    assert alignment.barrier("a", 1, now=0.0) == "waiting"
    assert not alignment.hold("big", 6)  # over the bound
    alignment.abort()
    assert alignment.aborted
    assert list(alignment.finish()) == ["big"]
    assert alignment.barrier("b", 1, now=0.0) == "stale"
    assert alignment.barrier("b", 2, now=0.0) == "waiting"
    assert not alignment.aborted


def test_a_channel_skipping_a_barrier_is_an_error() -> None:
    alignment = BarrierAlignment({"a", "b"}, max_held=5)
    alignment.barrier("a", 1, now=0.0)
    with pytest.raises(RuntimeError, match=r"^barrier 2 on channel 'b' while aligning barrier 1"):
        alignment.barrier("b", 2, now=0.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _coordinator(clock: FakeClock) -> CheckpointCoordinator:
    return CheckpointCoordinator(
        sources={"src:a", "src:b"}, key_groups={"op#0", "op#1"}, clock=clock, timeout_s=5.0
    )


def test_a_checkpoint_completes_when_every_part_acked_and_its_manifest_is_written() -> None:
    clock = FakeClock()
    coord = _coordinator(clock)
    epoch = coord.begin()
    assert epoch == 1
    assert coord.begin() is None  # one at a time
    assert coord.ack(BarrierAck(1, "src:a", 0, {"a": 10}, {})) is None
    assert coord.ack(BarrierAck(1, "src:b", 0, {"b": None}, {})) is None
    assert coord.ack(BarrierAck(1, "op#0", 0, {}, {"pause_s": 0.002})) is None
    # A drained key group still owes its part: the supervisor asks it directly.
    assert coord.drain("op#1") is True
    assert coord.owing() == ["op#1"]
    ready = coord.ack(BarrierAck(1, "op#1", 0, {}, {"record": {"x": 1}}))
    assert ready is not None
    assert ready.records() == [{"x": 1}]
    assert coord.statistics().completed == 0  # not before its manifest is written
    assert coord.begin() is None  # still in flight while the manifest is written
    clock.now = 0.5
    done = coord.committed(1, manifest_s=0.1)
    assert done is not None
    assert (done.epoch, done.positions, done.duration_s) == (1, {"a": 10, "b": None}, 0.5)
    assert done.manifest_s == 0.1
    assert done.max_pause_s == 0.002
    stats = coord.statistics()
    assert (stats.completed, stats.failed, stats.skipped, stats.last_completed) == (1, 0, 2, 1)


def test_a_failed_part_or_a_timeout_aborts_and_late_acks_are_ignored() -> None:
    clock = FakeClock()
    coord = _coordinator(clock)
    assert coord.begin() == 1
    coord.ack(BarrierAck(1, "op#0", 0, {}, {}, error="alignment over its bound"))
    # Aborted and counted at once, but in flight until every key group that may be writing
    # a file for it has reported: its files are removed only then, and no key group is asked
    # for checkpoint 2 while its file of checkpoint 1 is still being written.
    assert coord.statistics().failed == 1
    assert coord.in_progress == 1
    assert coord.begin() is None
    assert coord.ack(BarrierAck(1, "src:a", 0, {"a": 1}, {})) is None
    assert coord.ack(BarrierAck(1, "op#1", 0, {}, {"record": {"x": 1}})) is None
    assert coord.in_progress is None
    assert coord.begin() == 2
    clock.now = 6.0
    coord.expire()
    assert coord.in_progress is None
    assert coord.statistics().failed == 2
    assert coord.statistics().completed == 0


def test_a_drained_source_is_not_owed_a_key_group_snapshot() -> None:
    # A flow without a keyed stage reports its sources drained: nothing to ask them for.
    coord = _coordinator(FakeClock())
    assert coord.begin() == 1
    assert coord.drain("src:a") is False
    assert coord.owing() == []
