"""KeyedHarness: one keyed operator on the real runner, store and timers, driven by hand."""

from __future__ import annotations

from typing import Any

import pytest
from shoal.runtime._keys import key_group_of
from shoal.runtime._placement import Placement

from shoal import (
    AggregatingStateSpec,
    CollectingSink,
    Flow,
    IterableSource,
    ListStateSpec,
    MapStateSpec,
    ProcessContext,
    ReducingStateSpec,
    Sliding,
    Tumbling,
    ValueStateSpec,
)
from shoal.testing import Emitted, HarnessError, KeyedHarness, Timer

STATES = [
    ValueStateSpec("count", default=0),
    ListStateSpec("seen"),
    MapStateSpec("by_value"),
    ReducingStateSpec("biggest", reduce=max),
    AggregatingStateSpec(
        "mean",
        create=lambda: [0, 0],
        add=lambda a, v: [a[0] + v, a[1] + 1],
        result=lambda a: a[0] / a[1],
    ),
]


def remember(key: str, value: int, ctx: ProcessContext) -> None:
    """Counts, keeps every value, and asks to be woken 10 units after each record."""
    state = ctx.state
    state.count.update(state.count.value() + 1)
    state.seen.add(value)
    state.by_value.put(str(value), ctx.timestamp)
    state.biggest.add(value)
    state.mean.add(value)
    assert ctx.timers is not None
    ctx.timers.register_event_time(ctx.timestamp + 10)
    ctx.timers.register_processing_time(ctx.timers.processing_time() + 60)
    ctx.emit((key, value))


def wake(key: str, ts: float, ctx: ProcessContext) -> None:
    assert ctx.timers is not None
    ctx.emit(("timer", key, ts, ctx.timers.processing_time(), ctx.state.count.value()))


def harness(**options: Any) -> KeyedHarness:
    return KeyedHarness.for_function(
        remember, states=STATES, on_timer=wake, num_key_groups=16, **options
    )


def test_push_runs_the_function_and_output_keeps_timestamps() -> None:
    h = harness()
    assert h.push("a", 5, timestamp=100) == [Emitted(("a", 5), 100)]
    h.push("b", 7, timestamp=101)
    assert h.output == [Emitted(("a", 5), 100), Emitted(("b", 7), 101)]
    assert h.take_output() == [Emitted(("a", 5), 100), Emitted(("b", 7), 101)]
    assert h.output == []


def test_state_reads_every_kind_of_state_for_a_key() -> None:
    h = harness()
    h.push("a", 5, timestamp=1)
    h.push("a", 3, timestamp=2)
    assert h.state("a", "count") == 2
    assert h.state("a", "seen") == [5, 3]
    assert h.state("a", "by_value") == {"5": 1, "3": 2}
    assert h.state("a", "biggest") == 5
    assert h.state("a", "mean") == 4.0
    assert h.state("nobody", "seen") is None


def test_set_state_writes_what_the_function_then_reads() -> None:
    h = harness()
    h.set_state("a", "count", 41)
    h.set_state("a", "seen", [1, 2])
    h.set_state("a", "by_value", {"x": 0})
    h.set_state("a", "biggest", 9)
    h.set_state("a", "mean", [10, 2])  # the accumulator: sum 10 over 2 values
    h.push("a", 2, timestamp=1)
    assert h.state("a", "count") == 42
    assert h.state("a", "seen") == [1, 2, 2]
    assert h.state("a", "by_value") == {"x": 0, "2": 1}
    assert h.state("a", "biggest") == 9
    assert h.state("a", "mean") == 4.0
    h.set_state("a", "count", None)
    assert h.state("a", "count") == 0  # cleared: the declared default


def test_timers_lists_a_keys_timers_and_the_watermark_fires_event_time_ones() -> None:
    h = harness()
    h.push("a", 1, timestamp=5)
    h.push("a", 1, timestamp=8)
    assert h.timers("a") == [
        Timer("event", 15),
        Timer("event", 18),
        Timer("processing", 60.0),
    ]
    assert h.advance_watermark(15) == [Emitted(("timer", "a", 15, 0.0, 2), 15)]
    assert h.timers("a") == [Timer("event", 18), Timer("processing", 60.0)]
    assert h.watermark == 15


def test_processing_time_fires_timers_in_deadline_order_across_key_groups() -> None:
    h = KeyedHarness.for_function(remember, states=STATES, on_timer=wake, num_key_groups=16)
    keys = ["a", "b", "c"]
    assert len({key_group_of(k, 16) for k in keys}) == 3  # three key groups
    h.push("c", 1, timestamp=0)  # timer at 60
    h.advance_processing_time(5)
    h.push("a", 1, timestamp=0)  # timer at 65
    h.advance_processing_time(5)
    h.push("b", 1, timestamp=0)  # timer at 70
    h.take_output()
    fired = h.advance_processing_time(100)
    assert [(e.value[1], e.value[2], e.value[3]) for e in fired] == [
        ("c", 60.0, 60.0),
        ("a", 65.0, 65.0),
        ("b", 70.0, 70.0),
    ]
    assert h.clock.now() == 110.0


def test_a_window_fires_at_the_watermark_and_late_records_are_reported() -> None:
    h = KeyedHarness.for_window(Tumbling(10), lambda w: w.count())
    h.push("x", "r1", timestamp=3)
    h.push("x", "r2", timestamp=9)
    h.push("y", "r3", timestamp=12)
    assert h.advance_watermark(10) == [Emitted(("x", 0, 10, 2), 9)]
    h.push("x", "late", timestamp=4)
    assert [(d.record, d.key, d.error_type) for d in h.late] == [("late", "x", "LateRecordError")]
    assert h.advance_watermark(20) == [Emitted(("y", 10, 20, 1), 19)]


def test_a_flows_keyed_operator_runs_as_in_the_flow() -> None:
    flow = Flow("sums", num_key_groups=8)
    (
        flow.source(IterableSource([]))
        .key_by(lambda r: r[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]), name="sum")
        .sink(CollectingSink())
    )
    h = KeyedHarness(flow)
    h.push("a", ("a", 1))
    assert h.push("a", ("a", 2)) == [Emitted(("a", ("a", 3)), None)]
    assert h.state("a", "value") == ("a", 3)


def test_a_function_that_raises_fails_the_push_naming_it_by_default() -> None:
    def picky(key: str, value: int, ctx: ProcessContext) -> None:
        if value < 0:
            raise ValueError("negative")
        ctx.emit(value)

    h = KeyedHarness.for_function(picky, event_time=False)
    with pytest.raises(
        HarnessError,
        match=r"^operator 'process' raised ValueError: negative \(key 'a', record -1\); set "
        r"harness.raise_errors = False to let errors go to harness.dead_letters as a job does$",
    ):
        h.push("a", -1)
    # A function of the wrong shape is caught the same way, not as an empty output.
    wrong = KeyedHarness.for_function(lambda key, value: None, event_time=False)  # type: ignore[arg-type,return-value]
    with pytest.raises(HarnessError, match=r"^operator 'process' raised TypeError: "):
        wrong.push("a", 1)


def test_with_raise_errors_off_a_record_that_raises_is_a_dead_letter_and_it_goes_on() -> None:
    def picky(key: str, value: int, ctx: ProcessContext) -> None:
        if value < 0:
            raise ValueError("negative")
        ctx.emit(value)

    h = KeyedHarness.for_function(picky, event_time=False)
    h.raise_errors = False
    h.push("a", -1)
    h.push("a", 1)
    assert h.output == [Emitted(1, None)]
    assert [(d.key, d.record, d.error) for d in h.dead_letters] == [("a", -1, "negative")]
    assert h.late == []


def test_snapshot_and_restore_carry_state_timers_watermark_and_clock() -> None:
    h = harness()
    h.push("a", 5, timestamp=1)
    h.push("b", 6, timestamp=2)
    h.advance_watermark(3)
    h.advance_processing_time(30)
    snapshot = h.snapshot()
    assert isinstance(snapshot, bytes)
    h.push("a", 100, timestamp=4)  # after the snapshot: not in it
    restored = KeyedHarness.for_function(
        remember, states=STATES, on_timer=wake, num_key_groups=16, snapshot=snapshot
    )
    assert restored.state("a", "seen") == [5]
    assert restored.timers("b") == [Timer("event", 12), Timer("processing", 60.0)]
    assert restored.watermark == 3
    assert restored.clock.now() == 30.0
    fired = restored.advance_processing_time(30)  # the restored timers fire
    assert sorted(e.value[1] for e in fired) == ["a", "b"]


def test_restore_of_a_flow_operator_is_the_snapshot_constructor() -> None:
    flow = Flow("counts", num_key_groups=4)
    flow.source(IterableSource([])).key_by(lambda r: r).count(name="n").sink(CollectingSink())
    h = KeyedHarness(flow)
    h.push("k", "k")
    again = KeyedHarness.restore(h.snapshot(), flow, "n")
    assert again.push("k", "k") == [Emitted(("k", 2), None)]


def test_repartition_splits_key_groups_as_a_rescale_places_them_and_carries_state() -> None:
    h = harness()
    keys = [f"user-{i}" for i in range(40)]
    for i, key in enumerate(keys):
        h.push(key, i, timestamp=i)
    parts = h.repartition(3)
    expected = Placement(0, (0,), (0,) * 16, ()).rescaled([0, 1, 2])
    assert [p.key_groups for p in parts] == [expected.groups_of(w) for w in range(3)]
    assert sorted(g for p in parts for g in p.key_groups) == list(range(16))
    for key in keys:
        owner = next(p for p in parts if key_group_of(key, 16) in p.key_groups)
        assert owner.state(key, "count") == 1
        assert owner.timers(key) == h.timers(key)
    # the parts together emit what the whole would
    fired = sorted(e for p in parts for e in p.advance_watermark(100))
    assert fired == sorted(h.advance_watermark(100))


def test_an_invalid_key_is_refused_as_a_job_would_refuse_it() -> None:
    with pytest.raises(
        TypeError,
        match=r"^key must be str, bytes, int or a tuple of those; got list — did you mean a "
        r"tuple\?$",
    ):
        harness().push(["not", "a", "key"], 1, timestamp=0)


# -- bad usage: each a specific, documented HarnessError -------------------------------------


def test_a_timestamp_is_required_on_event_time() -> None:
    with pytest.raises(
        HarnessError,
        match=r"^push\('a', \.\.\.\): operator 'process' runs on event time; "
        r"pass timestamp=<int or float>$",
    ):
        harness().push("a", 1)


def test_a_timestamp_is_refused_without_event_time() -> None:
    h = KeyedHarness.for_function(remember, states=STATES, event_time=False)
    with pytest.raises(
        HarnessError,
        match=r"^push\('a', \.\.\., timestamp=5\): operator 'process' runs without event time "
        r"\(its flow has no timestamp assigner\); drop the timestamp or use event_time=True$",
    ):
        h.push("a", 1, timestamp=5)
    with pytest.raises(
        HarnessError,
        match=r"^advance_watermark: operator 'process' runs without event time \(its flow has "
        r"no timestamp assigner\): build the harness with event_time=True \(for_function\) "
        r"or from a flow whose source has timestamps=, or drive processing time with "
        r"advance_processing_time$",
    ):
        h.advance_watermark(5)


def test_an_unknown_state_name_is_refused_with_the_declared_ones() -> None:
    with pytest.raises(
        HarnessError,
        match=r"^operator 'process' declares no state 'cnt'; it declares: count, seen, "
        r"by_value, biggest, mean$",
    ):
        harness().state("a", "cnt")


def test_internal_states_are_read_only() -> None:
    with pytest.raises(
        HarnessError,
        match=r"^state '_shoal_timers' is shoal's own \(timers, windows\): drive it with push "
        r"and advance_watermark / advance_processing_time$",
    ):
        harness().set_state("a", "_shoal_timers", [])


def test_time_only_moves_forward() -> None:
    h = harness()
    h.advance_watermark(10)
    with pytest.raises(
        HarnessError,
        match=r"^the watermark only moves forward: it is 10; got advance_watermark\(5\)$",
    ):
        h.advance_watermark(5)
    with pytest.raises(
        HarnessError,
        match=r"^processing time only moves forward; got advance_processing_time\(-1\)$",
    ):
        h.advance_processing_time(-1)
    with pytest.raises(
        HarnessError,
        match=r"^advance_processing_time takes a number \(an int or a float\); got '1'$",
    ):
        h.advance_processing_time("1")  # type: ignore[arg-type]


def test_a_repartitioned_harness_refuses_keys_it_does_not_own() -> None:
    parts = harness().repartition(2)
    key = next(f"k{i}" for i in range(100) if key_group_of(f"k{i}", 16) in parts[1].key_groups)
    group = key_group_of(key, 16)
    with pytest.raises(
        HarnessError,
        match=rf"^key '{key}' is in key group {group}, which this harness \(worker 0 of a "
        r"repartition\) does not own: use the harness whose key_groups hold it$",
    ):
        parts[0].push(key, 1, timestamp=0)
    with pytest.raises(
        HarnessError,
        match=r"^repartition a harness that owns every key group; this one owns 8 of 16 \(it "
        r"is worker 0 of a repartition\)$",
    ):
        parts[0].repartition(2)
    with pytest.raises(HarnessError, match=r"^repartition takes a worker count >= 1; got 0$"):
        harness().repartition(0)


def test_a_snapshot_of_another_operator_is_refused() -> None:
    snapshot = harness().snapshot()
    with pytest.raises(
        HarnessError,
        match=r"^this snapshot is of operator 'process' with states \['count', 'seen', "
        r"'by_value', 'biggest', 'mean', '_shoal_timers'\], 16 key groups, event_time=True; "
        r"this harness runs 'window' with states \['_shoal_windows', '_shoal_timers'\], 128 "
        r"key groups, event_time=True$",
    ):
        KeyedHarness.for_window(Sliding(10, 5), lambda w: w.count(), snapshot=snapshot)
    with pytest.raises(
        HarnessError,
        match=r"^not a KeyedHarness snapshot: pass the bytes KeyedHarness.snapshot\(\) "
        r"returned$",
    ):
        KeyedHarness.for_function(remember, states=STATES, snapshot=b"junk")


def test_a_flow_must_name_which_keyed_operator() -> None:
    flow = Flow("two")
    (
        flow.source(IterableSource([]))
        .key_by(lambda r: r)
        .count(name="first")
        .key_by(lambda r: r)
        .count(name="second")
        .sink(CollectingSink())
    )
    with pytest.raises(
        HarnessError,
        match=r"^flow 'two' has several keyed operators \(first, second\): pass "
        r"operator=<name>$",
    ):
        KeyedHarness(flow)
    with pytest.raises(
        HarnessError,
        match=r"^flow 'two' has no keyed operator 'third'; it has: first, second$",
    ):
        KeyedHarness(flow, "third")
    empty = Flow("none")
    empty.source(IterableSource([])).map(str).sink(CollectingSink())
    with pytest.raises(HarnessError, match=r"^flow 'none' has no keyed operator to test$"):
        KeyedHarness(empty)
