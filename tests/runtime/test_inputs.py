"""Many inputs: several sources merged once, before the first keyed operator (union, connect:
co-process functions and interval joins). Results equal oracles recomputed from the inputs, in
one loop, across worker processes, through crashes, checkpoint restores and a rescale."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import inputs_flows as flows
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.runtime._plan import compile_plan
from shoal.runtime.timeline import at, rescale

from shoal import (
    BoundedOutOfOrderness,
    CollectingSink,
    DeadLetterSink,
    Fault,
    Flow,
    IterableSource,
    Monotonous,
    TransactionalJsonlSink,
    Tumbling,
    ValueStateSpec,
    run_job,
)
from shoal.testing import KeyedHarness

FLOWS = str(Path(flows.__file__).resolve())


def _two_inputs(flow: Flow, **options: Any) -> tuple[Any, Any]:
    a = flow.source(IterableSource([("x", 1, 1)]), name="a", **options)
    b = flow.source(IterableSource([("x", 2, 2)]), name="b", **options)
    return a, b


# -- several sources and union ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_union_of_two_inputs_with_their_own_chains_counts_every_record() -> None:
    flow = Flow("u", num_key_groups=8)
    a = flow.source(IterableSource(list(range(300)), splits=3), name="a").map(lambda n: n % 7)
    b = (
        flow.source(IterableSource(list(range(200)), splits=2), name="b")
        .filter(lambda n: n % 2 == 0)
        .flat_map(lambda n: [n % 5, n % 5])
    )
    a.union(b).key_by(lambda n: n).count(name="c").sink(CollectingSink())
    assert compile_plan(flow).splits == (
        "a/items:0",
        "a/items:1",
        "a/items:2",
        "b/items:0",
        "b/items:1",
    )
    result = await run_job(flow, backend="memory", workers=2, processes=False, batch_size=7)
    expected = Counter(n % 7 for n in range(300)) + Counter(
        m for n in range(200) if n % 2 == 0 for m in (n % 5, n % 5)
    )
    final = {key: n for key, n in result.sink.items}  # type: ignore[attr-defined]
    assert final == dict(expected)
    assert result.records_in == 500


def test_a_single_source_keeps_its_split_ids() -> None:
    # Checkpoints and savepoints of existing jobs name these ids: they must not change.
    flow = Flow("one")
    flow.source(IterableSource(list(range(10)), splits=3)).key_by(str).count().sink(
        CollectingSink()
    )
    assert compile_plan(flow).splits == ("items:0", "items:1", "items:2")


@pytest.mark.asyncio
async def test_a_windowed_union_waits_for_the_slowest_input_and_loses_nothing() -> None:
    # Input "slow" has small timestamps, read alongside "fast"'s large ones: the window stage's
    # watermark is the minimum over every split of every input, so no record of "slow" is late.
    flow = Flow("w", num_key_groups=4)
    fast = [("k", 1000 + i, 1) for i in range(200)]
    slow = [("k", i, 1) for i in range(200)]
    a = flow.source(IterableSource(fast, splits=2), timestamps=flows._ts, name="fast")
    b = flow.source(
        IterableSource(slow, splits=1), timestamps=flows._ts, watermarks=Monotonous(), name="slow"
    )
    a.union(b).key_by(flows._key).window(Tumbling(100)).count().sink(CollectingSink())
    dead = DeadLetterSink()
    result = await run_job(flow, backend="memory", batch_size=3, dead_letters=dead)
    assert dead.count == 0
    assert sorted(map(tuple, result.sink.items)) == [  # type: ignore[attr-defined]
        ("k", start, start + 100, 100) for start in (0, 100, 1000, 1100)
    ]


def test_inputs_with_and_without_event_time_cannot_be_merged() -> None:
    flow = Flow("m")
    a = flow.source(IterableSource([1]), timestamps=lambda r: 0, name="a")
    b = flow.source(IterableSource([2]), name="b")
    with pytest.raises(
        ValueError,
        match=r"^union cannot merge inputs with event time and inputs without: give input 'b' "
        r"timestamps=<function record -> timestamp> too$",
    ):
        a.union(b)


def test_merging_mistakes_are_refused_with_the_fix() -> None:
    flow = Flow("m")
    a, _b = _two_inputs(flow)
    with pytest.raises(
        ValueError, match=r"^union needs at least one other stream: a\.union\(b, \.\.\.\)$"
    ):
        a.union()
    with pytest.raises(
        ValueError,
        match=r"^union takes different streams; one stream is given twice \(to read a stream "
        r"twice, extend it twice: fan-out\)$",
    ):
        a.union(a)
    with pytest.raises(
        ValueError, match=r"^input name 'a' is already used in flow 'm'; pick another$"
    ):
        flow.source(IterableSource([3]), name="a")
    other = Flow("other").source(IterableSource([3]))
    with pytest.raises(
        TypeError, match=r"^union takes streams of the same flow \(flow\.source\(\.\.\.\) of "
    ):
        a.union(other)


def test_an_input_never_used_is_refused() -> None:
    flow = Flow("m")
    a, b = _two_inputs(flow)
    flow.source(IterableSource([3]), name="c")
    a.union(b).key_by(str).count().sink(CollectingSink())
    with pytest.raises(
        ValueError,
        match=r"^input 'c' of flow 'm' is never used: extend it \(map, key_by, sink, \.\.\.\) "
        r"or merge it with another stream \(a\.union\(b\)\)$",
    ):
        flow.validate()


# -- connect: co-process functions -------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_co_process_enrichment_equals_the_oracle_with_two_workers() -> None:
    result = await run_job(
        f"{FLOWS}:enriched", workers=2, processes=False, backend="memory", batch_size=5
    )
    orders, profiles = flows.enrich_inputs(300, 2, 6)
    assert flows.enrichments(result.sink.items) == flows.enrich_oracle(orders, profiles)  # type: ignore[attr-defined]
    assert result.dead_letters == 0


@pytest.mark.asyncio
async def test_async_chains_and_an_async_co_process_function_see_every_record() -> None:
    async def double(n: int) -> int:
        return 2 * n

    async def add_a(key: Any, value: Any, ctx: Any) -> None:
        ctx.state.total.update(ctx.state.total.value() + value)
        ctx.emit((key, "a", ctx.state.total.value()))

    async def add_b(key: Any, value: Any, ctx: Any) -> None:
        ctx.state.total.update(ctx.state.total.value() - value)
        ctx.emit((key, "b", ctx.state.total.value()))

    flow = Flow("async_inputs", num_key_groups=4)
    a = flow.source(IterableSource(list(range(100)), splits=2), name="a").map(double)
    b = flow.source(IterableSource(list(range(50)), splits=1), name="b")
    (
        a.connect(b)
        .key_by(lambda n: n % 3, lambda n: n % 3)
        .process(add_a, add_b, states=[ValueStateSpec("total", default=0)], name="net")
        .sink(CollectingSink())
    )
    result = await run_job(flow, backend="memory", workers=2, processes=False, batch_size=6)
    items = result.sink.items  # type: ignore[attr-defined]
    assert Counter(side for _key, side, _total in items) == {"a": 100, "b": 50}
    final = {key: 0 for key in range(3)}
    for n in range(100):
        final[2 * n % 3] += 2 * n
    for n in range(50):
        final[n % 3] -= n
    # Each key's last output carries the key's total over both inputs.
    last = {key: total for key, _side, total in items}
    assert last == final


def test_co_process_arguments_are_checked() -> None:
    flow = Flow("c")
    a, b = _two_inputs(flow)
    keyed = a.connect(b).key_by(str, str)

    async def later(key: Any, value: Any, ctx: Any) -> None:
        return None

    with pytest.raises(
        TypeError,
        match=r"^co-process fn_a and fn_b must both be plain functions or both async def; got "
        r"one of each$",
    ):
        keyed.process(lambda k, v, c: None, later)
    with pytest.raises(TypeError, match=r"^co-process fn_b must be callable; got int$"):
        keyed.process(lambda k, v, c: None, 3)  # type: ignore[arg-type]


# -- interval join -----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(("lower", "upper"), [(-5, 7), (0, 0), (3, 12), (-9, -2)])
async def test_an_interval_join_equals_the_nested_loop_oracle(lower: int, upper: int) -> None:
    flow = flows.joined(count=250, seed=lower + 20, lower=lower, upper=upper)
    result = await run_job(flow, backend="memory", workers=2, processes=False, batch_size=4)
    a, b = flows.join_inputs(250, lower + 20, 6)
    assert flows.pairs(result.sink.items) == flows.join_oracle(a, b, lower, upper)  # type: ignore[attr-defined]
    assert result.dead_letters == 0


def _join_harness() -> KeyedHarness:
    flow = Flow("h")
    a, b = _two_inputs(flow, timestamps=flows._ts)
    a.key_by(flows._key).interval_join(b.key_by(flows._key), -2, 3, name="j").sink(CollectingSink())
    return KeyedHarness(flow, "j")


def test_interval_join_buffers_stay_bounded_as_the_watermark_moves() -> None:
    harness = _join_harness()
    sizes = []
    for ts in range(0, 2000, 2):
        harness.push("k", (0, ("k", ts, 0)), ts)
        harness.push("k", (1, ("k", ts + 1, 0)), ts + 1)
        harness.advance_watermark(ts + 1)
        sizes.append(
            len(harness.state("k", "_shoal_ijoin_a")) + len(harness.state("k", "_shoal_ijoin_b"))
        )
    # x waits until the watermark is past x.ts + 3, y until it is past y.ts + 2.
    assert max(sizes) <= 6
    harness.advance_watermark(float("inf"))
    assert harness.state("k", "_shoal_ijoin_a") is None
    assert harness.state("k", "_shoal_ijoin_b") is None
    assert harness.timers("k") == []


def test_an_interval_join_dead_letters_a_record_behind_the_watermark() -> None:
    harness = _join_harness()
    harness.push("k", (0, ("k", 10, 0)), 10)
    harness.advance_watermark(20)
    harness.push("k", (1, ("k", 12, 0)), 12)  # would match x at 10, which is gone
    (late,) = harness.late
    assert late.error_type == "LateRecordError"
    assert late.error == (
        "record at timestamp 12 is late for the interval join: the watermark "
        "is 20, so the records it would pair with may be gone"
    )
    assert harness.output == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    disorder=st.integers(0, 10),
    promise=st.integers(0, 10),
    lower=st.integers(-8, 8),
    width=st.integers(0, 10),
    splits=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    batch_size=st.sampled_from([1, 3, 16]),
    workers=st.integers(1, 3),
)
def test_an_interval_join_equals_the_nested_loop_oracle_over_its_on_time_records(
    seed: int,
    disorder: int,
    promise: int,
    lower: int,
    width: int,
    splits: tuple[int, int],
    batch_size: int,
    workers: int,
) -> None:
    # Random out-of-order inputs, a watermark strategy that may promise too little disorder
    # (promise < disorder: some records are late), random bounds and batches: every late record
    # is a dead letter, and the pairs equal the nested loop over the others.
    upper = lower + width
    flow = Flow("late", num_key_groups=4)
    a = flows.events(120, seed=seed, disorder=disorder)
    b = flows.events(90, seed=seed + 1, disorder=disorder, step=4)
    left = flow.source(
        IterableSource(a, splits=splits[0]),
        timestamps=flows._ts,
        watermarks=BoundedOutOfOrderness(promise),
    )
    right = flow.source(
        IterableSource(b, splits=splits[1]),
        timestamps=flows._ts,
        watermarks=BoundedOutOfOrderness(promise),
    )
    left.key_by(flows._key).interval_join(right.key_by(flows._key), lower, upper, flows._pair).sink(
        CollectingSink()
    )
    dead = DeadLetterSink()
    result = anyio.run(
        lambda: run_job(
            flow,
            backend="memory",
            workers=workers,
            processes=False,
            batch_size=batch_size,
            dead_letters=dead,
        )
    )
    assert {d.error_type for d in dead.letters} <= {"LateRecordError"}
    late = {(d.split, d.offset) for d in dead.letters}
    assert len(late) == dead.count
    if promise >= disorder:
        assert not late
    on_time_a = [
        x for i, x in enumerate(a) if (f"0/items:{i * splits[0] // len(a)}", i) not in late
    ]
    on_time_b = [
        y for i, y in enumerate(b) if (f"1/items:{i * splits[1] // len(b)}", i) not in late
    ]
    assert len(on_time_a) + len(on_time_b) == len(a) + len(b) - len(late)
    assert flows.pairs(result.sink.items) == flows.join_oracle(on_time_a, on_time_b, lower, upper)  # type: ignore[attr-defined]


def test_interval_join_arguments_are_checked() -> None:
    flow = Flow("j")
    a, b = _two_inputs(flow, timestamps=flows._ts)
    with pytest.raises(
        ValueError, match=r"^interval_join needs lower <= upper; got lower=3, upper=1$"
    ):
        a.key_by(str).interval_join(b.key_by(str), 3, 1)
    untimed = Flow("u")
    c, d = _two_inputs(untimed)
    with pytest.raises(
        ValueError,
        match=r"^interval_join needs event time: give both inputs a timestamp assigner, "
        r"flow\.source\(source, timestamps=lambda record: \.\.\.\)$",
    ):
        c.key_by(str).interval_join(d.key_by(str), 0, 1)


# -- checkpoints, crashes, rescaling -----------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("flow_name", ["joined", "enriched"])
async def test_two_input_flows_are_exact_through_a_crash_and_a_checkpoint_restore(
    tmp_path: Path, flow_name: str
) -> None:
    output = tmp_path / "out"
    result = await run_job(
        f"{FLOWS}:{flow_name}",
        params={"count": 1500, "output": str(output)},
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        batch_size=4,
        checkpoint_interval=0.01,
        restart_backoff=0.0,
        faults=[Fault("keygroup.batch", worker=1, attempt=0, hit=200)],
    )
    assert len(result.recoveries) == 1
    published = TransactionalJsonlSink(str(output)).read()
    _check(flow_name, published, 1500)


def _check(flow_name: str, items: list[Any], count: int) -> None:
    if flow_name == "joined":
        a, b = flows.join_inputs(count, 1, 6)
        assert flows.pairs(items) == flows.join_oracle(a, b, -5, 7)
    else:
        orders, profiles = flows.enrich_inputs(count, 2, 6)
        assert flows.enrichments(items) == flows.enrich_oracle(orders, profiles)


@pytest.mark.asyncio
@pytest.mark.parametrize("flow_name", ["joined", "enriched"])
async def test_two_input_flows_are_exact_through_a_rescale(tmp_path: Path, flow_name: str) -> None:
    output = tmp_path / "out"
    result = await run_job(
        f"{FLOWS}:{flow_name}",
        params={"count": 3000, "output": str(output)},
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        batch_size=4,
        checkpoint_interval=0.02,
        timeline=[at(rescale(3), records=1500)],
    )
    assert [(r.workers_before, r.workers_after) for r in result.rescales] == [(2, 3)]
    _check(flow_name, TransactionalJsonlSink(str(output)).read(), 3000)


@pytest.mark.processes
@pytest.mark.asyncio
async def test_an_interval_join_across_worker_processes_survives_kill_9(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = await run_job(
        f"{FLOWS}:joined",
        params={"count": 2000, "output": str(output)},
        workers=2,
        state_dir=tmp_path / "state",
        batch_size=4,
        mailbox_size=2,
        checkpoint_interval=0.02,
        restart_backoff=0.0,
        faults=[Fault("keygroup.batch", worker=1, attempt=0, hit=150)],
    )
    assert len(result.recoveries) == 1
    assert result.checkpoints is not None
    assert result.checkpoints.completed >= 1
    _check("joined", TransactionalJsonlSink(str(output)).read(), 2000)
