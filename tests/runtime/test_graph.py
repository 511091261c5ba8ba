"""Flows that are graphs: a stream read by several operators (fan-out, also after a keyed
operator), side outputs of process functions, merges after keyed operators and window joins.
Results equal oracles recomputed from the inputs, in one loop, across worker processes, and
through a crash and a checkpoint restore (exactly once, with transactional sinks)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import graph_flows as flows
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
    JsonlSink,
    Monotonous,
    OutputTag,
    Session,
    Sliding,
    Tumbling,
    run_job,
)
from shoal.testing import KeyedHarness, open_test_job

FLOWS = str(Path(flows.__file__).resolve())


# -- fan-out, side outputs, merges after keyed operators ---------------------------------------


def test_the_branched_flow_compiles_into_a_graph_of_stages() -> None:
    plan = compile_plan(flows.branched(count=10))
    assert [stage.name for stage in plan.stages] == [
        "source",
        "counts",
        "milestones",
        "split",
        "mixed",
    ]
    # The input feeds counts, split and (through the union) mixed; counts feeds a sink,
    # milestones and mixed: each of those aligns over every channel feeding it.
    assert [stage.downstream for stage in plan.stages] == [(1, 3, 4), (2, 4), (), (), ()]
    assert [stage.sinks for stage in plan.stages] == [(), (0,), (1,), (2, 3), (4,)]
    assert plan.channels_into(4) == (
        *plan.splits,
        *(f"counts#{group}" for group in range(8)),
    )
    assert [tag for tag, _outlets in plan.stages[3].sides] == ["big"]


@pytest.mark.asyncio
async def test_a_branched_flow_equals_the_oracle_in_one_loop() -> None:
    result = await run_job(
        f"{FLOWS}:branched", workers=2, processes=False, backend="memory", batch_size=5
    )
    assert flows.read(flows.collected(result.flow)) == flows.branched_oracle()
    assert result.dead_letters == 0


@pytest.mark.asyncio
async def test_a_branched_flow_is_exact_through_a_crash_and_a_checkpoint_restore(
    tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    result = await run_job(
        f"{FLOWS}:branched",
        params={"count": 1200, "output": str(output)},
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        batch_size=4,
        checkpoint_interval=0.01,
        restart_backoff=0.0,
        faults=[Fault("keygroup.batch", worker=1, attempt=0, hit=300)],
    )
    assert len(result.recoveries) == 1
    assert result.checkpoints is not None
    assert result.checkpoints.completed >= 1
    assert flows.read(flows.published(str(output))) == flows.branched_oracle(1200)


@pytest.mark.asyncio
async def test_a_branched_flow_is_exact_through_a_rescale(tmp_path: Path) -> None:
    # Moving key groups owes handoff markers on every channel into them: the input's splits
    # and the key groups of every upstream operator (a merge after a keyed operator has both).
    output = tmp_path / "out"
    result = await run_job(
        f"{FLOWS}:branched",
        params={"count": 3000, "output": str(output)},
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        batch_size=4,
        checkpoint_interval=0.02,
        timeline=[at(rescale(3), records=1500)],
    )
    assert [(r.workers_before, r.workers_after) for r in result.rescales] == [(2, 3)]
    assert flows.read(flows.published(str(output))) == flows.branched_oracle(3000)


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_branched_flow_across_worker_processes_survives_kill_9(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = await run_job(
        f"{FLOWS}:branched",
        params={"count": 1500, "output": str(output)},
        workers=2,
        state_dir=tmp_path / "state",
        batch_size=4,
        mailbox_size=2,
        checkpoint_interval=0.02,
        restart_backoff=0.0,
        faults=[Fault("keygroup.batch", worker=1, attempt=0, hit=200)],
    )
    assert len(result.recoveries) == 1
    assert flows.read(flows.published(str(output))) == flows.branched_oracle(1500)


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_branched_flow_gathers_every_sink_across_worker_processes(tmp_path: Path) -> None:
    result = await run_job(
        f"{FLOWS}:branched", workers=2, state_dir=tmp_path / "state", batch_size=5
    )
    assert flows.read(flows.collected(result.flow)) == flows.branched_oracle()
    # Each branch's output, in the order the flow added its sinks (as the guide reads it).
    assert len(result.sinks) == len(flows.SINKS)
    by_sink = dict(zip(flows.SINKS, (sink.items for sink in result.sinks), strict=True))  # type: ignore[attr-defined]
    assert flows.read(by_sink) == flows.branched_oracle()


@pytest.mark.asyncio
async def test_a_value_sent_to_an_unread_output_is_a_dead_letter() -> None:
    flow = Flow("unread", num_key_groups=4)
    tag, other = OutputTag("read"), OutputTag("nobody")

    def route(key: Any, n: int, ctx: Any) -> None:
        ctx.output(tag if n % 2 else other, n)

    split = flow.source(IterableSource(range(10))).key_by(lambda n: n % 3).process(route)
    read = CollectingSink()
    split.side_output(tag).sink(read)
    dead = DeadLetterSink()
    result = await run_job(flow, backend="memory", processes=False, dead_letters=dead)
    assert sorted(read.items) == [1, 3, 5, 7, 9]
    assert result.dead_letters == 5
    assert sorted(letter.record for letter in dead.letters) == [0, 2, 4, 6, 8]
    assert {letter.error_type for letter in dead.letters} == {"UnreadOutputError"}
    assert {letter.error for letter in dead.letters} == {
        "'process' sent a value to its side output 'nobody', which nothing reads (read a side "
        "output with stream.side_output(OutputTag(name)))"
    }


def test_side_outputs_and_sinks_are_checked_when_the_flow_is_built() -> None:
    flow = Flow("f")
    counts = flow.source(IterableSource([1])).key_by(str).count(name="c")
    with pytest.raises(
        ValueError,
        match=r"^side_output reads what a process function sends with ctx\.output\(tag, value\), "
        r"or a window's late records \(\.window\(\.\.\., late=tag\)\): this stream "
        r"\(after 'c'\) is neither$",
    ):
        counts.side_output(OutputTag("x"))
    keyed = Flow("w").source(IterableSource([1]), timestamps=int).key_by(str)
    with pytest.raises(
        ValueError,
        match=r"^side_output: this stream \(after 'window'\) is a window's output; the window "
        r"declares its late output as OutputTag\('late'\), and OutputTag\('other'\) is not "
        r"declared \(a window's side output is its late records: "
        r"\.window\(\.\.\., late=OutputTag\(name\)\)\)$",
    ):
        keyed.window(Tumbling(5), late=OutputTag("late")).count().side_output(OutputTag("other"))
    with pytest.raises(
        ValueError,
        match=r"^side_output: this stream \(after 'w2'\) is a window's output; the window "
        r"declares no late output, and OutputTag\('x'\) is not declared ",
    ):
        keyed.window(Tumbling(5)).count(name="w2").side_output(OutputTag("x"))
    with pytest.raises(TypeError, match=r"^side_output takes an OutputTag\('name'\); got 'x'$"):
        counts.side_output("x")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"^OutputTag name must be a non-empty name of letters, digits, '_', '\.' or '-'; "
        r"got 'a b'$",
    ):
        OutputTag("a b")
    counts.sink(CollectingSink())
    counts.sink(flows.TransactionalJsonlSink("/nonexistent/never-opened"))
    with pytest.raises(
        ValueError,
        match=r"^the sinks of flow 'f' must all gather their output to the driver, or none: "
        r"CollectingSink\(0 items\) gather\(s\), TransactionalJsonlSink\('/nonexistent/"
        r"never-opened', gather=False\) do\(es\) not \(pass gather= to the sinks that take it\)$",
    ):
        compile_plan(flow)
    mixed = Flow("g")
    stream = mixed.source(IterableSource([1]))
    stream.sink(JsonlSink("/nonexistent/plain.jsonl"))
    stream.sink(flows.TransactionalJsonlSink("/nonexistent/txn"))
    with pytest.raises(
        ValueError,
        match=r"^the sinks of flow 'g' must all be transactional, or none: "
        r"TransactionalJsonlSink\('/nonexistent/txn', gather=False\) is/are, JsonlSink",
    ):
        compile_plan(mixed)


@pytest.mark.asyncio
async def test_a_keyed_operator_s_output_connects_with_an_input() -> None:
    flow = Flow("later", num_key_groups=4)
    evs = flows.events(120, seed=9, keys=3)
    counts = flow.source(IterableSource(evs, splits=2), name="a").key_by(_key).count(name="n")
    other = flow.source(IterableSource(evs[:40]), name="b")
    sink = CollectingSink()
    (
        counts.connect(other)
        .key_by(lambda kv: kv[0], _key)
        .process(
            lambda key, kv, ctx: ctx.emit(("count", *kv)),
            lambda key, e, ctx: ctx.emit(("event", *e)),
            name="both",
        )
        .sink(sink)
    )
    plan = compile_plan(flow)
    assert plan.channels_into(2) == ("b/items:0", *(f"n#{g}" for g in range(4)))
    await run_job(flow, backend="memory", workers=2, processes=False, batch_size=5)
    expected = Counter(("count", k, n) for k, n in _counts(evs))
    expected.update(("event", *e) for e in evs[:40])
    assert Counter(flows.norm(item) for item in sink.items) == expected


BRANCHES = st.lists(
    st.tuples(st.sampled_from(["map", "count", "side", "after"]), st.integers(2, 4)),
    min_size=1,
    max_size=4,
)


def _key(event: Any) -> str:
    return str(event[0])


def _counts(events: Any) -> Counter[Any]:
    """``(key, n)`` for n = 1 .. the key's number of events: what a running count emits."""
    totals = Counter(e[0] for e in events)
    return Counter((k, n) for k, total in totals.items() for n in range(1, total + 1))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), count=st.integers(0, 80), branches=BRANCHES)
def test_random_branching_flows_equal_the_oracle(
    seed: int, count: int, branches: list[tuple[str, int]]
) -> None:
    evs = flows.events(count, seed=seed, keys=4)
    flow = Flow("random", num_key_groups=4)
    source = flow.source(IterableSource(evs, splits=2))
    keyed = source.key_by(_key)
    base: Any = None
    sinks: dict[str, CollectingSink] = {}
    expected: dict[str, Counter[Any]] = {}
    for i, (kind, m) in enumerate(branches):
        sink = sinks[f"{i}"] = CollectingSink()
        chosen = [e for e in evs if e[2] % m == 0]
        if kind == "map":  # fan-out of the input into a stateless branch
            source.filter(lambda e, m=m: e[2] % m == 0).map(lambda e: e[2]).sink(sink)
            expected[f"{i}"] = Counter(e[2] for e in chosen)
        elif kind == "count":  # fan-out of the input into another keyed operator
            source.filter(lambda e, m=m: e[2] % m == 0).key_by(_key).count(name=f"c{i}").sink(sink)
            expected[f"{i}"] = _counts(chosen)
        elif kind == "side":  # a process function's main and side outputs
            tag = OutputTag(f"t{i}")

            def route(key: Any, e: Any, ctx: Any, m: int = m, tag: OutputTag = tag) -> None:
                if e[2] % m == 0:
                    ctx.emit(e)
                else:
                    ctx.output(tag, e)

            split = keyed.process(route, name=f"p{i}")
            split.sink(sink)
            side = sinks[f"{i}s"] = CollectingSink()
            split.side_output(tag).sink(side)
            expected[f"{i}"] = Counter(chosen)
            expected[f"{i}s"] = Counter(e for e in evs if e[2] % m)
        else:  # fan-out after a keyed operator (the same one for every such branch)
            if base is None:
                base = keyed.count(name="base")
            base.filter(lambda kv, m=m: kv[1] % m == 0).sink(sink)
            expected[f"{i}"] = Counter(kv for kv in _counts(evs) if kv[1] % m == 0)
    anyio.run(lambda: run_job(flow, backend="memory", workers=2, processes=False, batch_size=3))
    got = {name: Counter(flows.norm(item) for item in sink.items) for name, sink in sinks.items()}
    assert got == expected


# -- window join -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_window_join_equals_the_nested_loop_oracle_in_one_loop() -> None:
    result = await run_job(
        f"{FLOWS}:window_joined", workers=2, processes=False, backend="memory", batch_size=4
    )
    a, b = flows.join_inputs(300, 5, 4)
    expected = flows.window_join_oracle(a, b, Tumbling(10).assign)
    assert flows.pairs(result.flow.sinks[0].items) == expected
    assert sum(expected.values()) > 100  # the oracle is not trivially empty
    assert result.dead_letters == 0


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_window_join_across_worker_processes_survives_kill_9(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = await run_job(
        f"{FLOWS}:window_joined",
        params={"count": 1500, "output": str(output)},
        workers=2,
        state_dir=tmp_path / "state",
        batch_size=4,
        mailbox_size=2,
        checkpoint_interval=0.02,
        restart_backoff=0.0,
        faults=[Fault("keygroup.batch", worker=1, attempt=0, hit=150)],
    )
    assert len(result.recoveries) == 1
    a, b = flows.join_inputs(1500, 5, 4)
    expected = flows.window_join_oracle(a, b, Tumbling(10).assign)
    assert flows.pairs(flows.TransactionalJsonlSink(str(output)).read()) == expected


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(0, 60),
    disorder=st.integers(0, 5),
    shape=st.sampled_from([(5, None), (8, 3), (6, 6), (7, 4)]),
)
def test_random_window_joins_equal_the_nested_loop_oracle(
    seed: int, count: int, disorder: int, shape: tuple[int, int | None]
) -> None:
    size, slide = shape
    assigner = Tumbling(size) if slide is None else Sliding(size, slide)
    a = flows.events(count, seed=seed, keys=3, disorder=disorder)
    b = flows.events(count // 2 + 1, seed=seed + 1, keys=3, disorder=disorder)
    flow = Flow("wj", num_key_groups=4)
    options: dict[str, Any] = {
        "timestamps": lambda e: e[1],
        "watermarks": BoundedOutOfOrderness(disorder),
    }
    left = flow.source(IterableSource(a, splits=2), name="a", **options).key_by(lambda e: e[0])
    right = flow.source(IterableSource(b), name="b", **options).key_by(lambda e: e[0])
    sink = CollectingSink()
    left.window_join(right, assigner).sink(sink)
    result = anyio.run(
        lambda: run_job(flow, backend="memory", workers=2, processes=False, batch_size=3)
    )
    assert flows.pairs(sink.items) == flows.window_join_oracle(a, b, assigner.assign)
    assert result.dead_letters == 0


def test_a_window_join_dead_letters_a_record_behind_the_watermark() -> None:
    flow = Flow("late", num_key_groups=2)
    options: dict[str, Any] = {"timestamps": lambda e: e[1], "watermarks": Monotonous()}
    # b's split reads (x, 25) first: its watermark passes the end of [0, 10) before (x, 3).
    left = flow.source(IterableSource([("x", 2, 0), ("x", 30, 0)]), name="a", **options)
    right = flow.source(IterableSource([("x", 25, 1), ("x", 3, 1)]), name="b", **options)
    sink = CollectingSink()
    dead = DeadLetterSink()
    (left.key_by(lambda e: e[0]).window_join(right.key_by(lambda e: e[0]), Tumbling(10)).sink(sink))
    anyio.run(
        lambda: run_job(flow, backend="memory", processes=False, batch_size=1, dead_letters=dead)
    )
    late = [letter for letter in dead.letters if letter.error_type == "LateRecordError"]
    # A connected operator's dead letter carries the record tagged with its input (b: 1).
    assert [flows.norm(letter.record) for letter in late] == [(1, ("x", 3, 1))]
    assert sink.items == []


@pytest.mark.parametrize("backend", ["memory", "lmdb"])
@pytest.mark.parametrize("size", [10, 0.5])
def test_a_window_join_over_float_timestamps_equals_the_nested_loop_oracle(
    backend: str, size: float, tmp_path: Path
) -> None:
    # Float timestamps (and float window ends) are valid event time: every pair is joined,
    # nothing is a dead letter, and no window is left in state.
    a = [("x", 1.5, 0), ("x", 3.25, 1), ("y", 2.75, 2), ("x", 12.75, 3), ("x", 0.25, 4)]
    b = [("x", 2.0, 5), ("y", 2.5, 6), ("x", 1.75, 7), ("x", 3.4, 8), ("x", 11.0, 9)]
    flow = Flow("floats", num_key_groups=2)
    options: dict[str, Any] = {
        "timestamps": lambda e: e[1],
        "watermarks": BoundedOutOfOrderness(5),
    }
    left = flow.source(IterableSource(a), name="a", **options).key_by(lambda e: e[0])
    right = flow.source(IterableSource(b), name="b", **options).key_by(lambda e: e[0])
    sink = CollectingSink()
    assigner = Tumbling(size)
    left.window_join(right, assigner).sink(sink)
    result = anyio.run(
        lambda: run_job(flow, backend=backend, state_dir=tmp_path, processes=False, batch_size=2)
    )
    expected = flows.window_join_oracle(a, b, assigner.assign)
    assert sum(expected.values()) >= 3  # the oracle is not trivially empty
    assert flows.pairs(sink.items) == expected
    assert result.dead_letters == 0


def test_a_window_join_fn_raising_on_one_pair_dead_letters_that_pair_only() -> None:
    flow = Flow("raising", num_key_groups=2)
    options: dict[str, Any] = {"timestamps": lambda e: e[1], "watermarks": Monotonous()}
    left = flow.source(
        IterableSource([("k", 1, "good1"), ("k", 2, "bad"), ("k", 3, "good2")]), name="a", **options
    )
    right = flow.source(IterableSource([("k", 4, "y1")]), name="b", **options)

    def fn(x: Any, y: Any) -> tuple[str, str]:
        if x[2] == "bad":
            raise ValueError("no pair for bad")
        return (x[2], y[2])

    sink = CollectingSink()
    dead = DeadLetterSink()
    left.key_by(lambda e: e[0]).window_join(right.key_by(lambda e: e[0]), Tumbling(10), fn).sink(
        sink
    )
    anyio.run(
        lambda: run_job(flow, backend="memory", processes=False, batch_size=1, dead_letters=dead)
    )
    assert sorted(flows.norm(item) for item in sink.items) == [("good1", "y1"), ("good2", "y1")]
    assert [
        (letter.operator, letter.error_type, letter.error, letter.key) for letter in dead.letters
    ] == [("window_join", "ValueError", "no pair for bad", "k")]
    # The failing pair and its window, not the timer's timestamp.
    assert {part: flows.norm(value) for part, value in dead.letters[0].record.items()} == {
        "x": ("k", 2, "bad"),
        "y": ("k", 4, "y1"),
        "window": (0, 10),
    }


def test_window_join_arguments_are_checked() -> None:
    flow = Flow("f")
    a = flow.source(IterableSource([1]), name="a").key_by(str)
    b = flow.source(IterableSource([2]), name="b").key_by(str)
    with pytest.raises(
        ValueError,
        match=r"^window_join needs event time: give both inputs a timestamp assigner, ",
    ):
        a.window_join(b, Tumbling(5))
    timed = Flow("t")
    c = timed.source(IterableSource([1]), timestamps=int, name="c").key_by(str)
    d = timed.source(IterableSource([2]), timestamps=int, name="d").key_by(str)
    with pytest.raises(
        ValueError, match=r"^window_join takes Tumbling\(size\) or Sliding\(size, slide\); session"
    ):
        c.window_join(d, Session(3))


def test_the_harness_keeps_side_outputs_apart_from_the_main_output() -> None:
    tag = OutputTag("odd")

    def split(key: Any, n: int, ctx: Any) -> None:
        if n % 2:
            ctx.output(tag, n)
        else:
            ctx.emit(n)

    harness = KeyedHarness.for_function(split, event_time=False)
    for n in range(5):
        harness.push("k", n)
    assert [e.value for e in harness.output] == [0, 2, 4]
    assert [e.value for e in harness.side_output(tag)] == [1, 3]
    assert harness.side_output(OutputTag("other")) == []


@pytest.mark.asyncio
async def test_main_output_of_a_stream_read_only_for_its_side_outputs_is_a_dead_letter() -> None:
    flow = Flow("main", num_key_groups=2)
    tag = OutputTag("even")

    def route(key: Any, n: int, ctx: Any) -> None:
        if n % 2:
            ctx.emit(n)
        else:
            ctx.output(tag, n)

    evens = CollectingSink()
    flow.source(IterableSource(range(6))).key_by(lambda n: n).process(route).side_output(tag).sink(
        evens
    )
    dead = DeadLetterSink()
    await run_job(flow, backend="memory", processes=False, dead_letters=dead)
    assert sorted(evens.items) == [0, 2, 4]
    assert sorted(letter.record for letter in dead.letters) == [1, 3, 5]
    assert {letter.error for letter in dead.letters} == {
        "'process' sent a value to its main output, which nothing reads (its stream is only "
        "read for its side outputs: sink it too, or emit nothing)"
    }


@pytest.mark.asyncio
async def test_an_async_process_function_and_its_timers_send_to_side_outputs() -> None:
    flow = Flow("async_sides", num_key_groups=4)
    tag = OutputTag("timers")

    async def remember(key: Any, e: Any, ctx: Any) -> None:
        await anyio.lowlevel.checkpoint()
        ctx.emit(e)
        ctx.timers.register_event_time(e[1] + 100)

    async def fired(key: Any, ts: float, ctx: Any) -> None:
        await anyio.lowlevel.checkpoint()
        ctx.output(tag, (key, ts))

    evs = flows.events(60, seed=4, keys=3)
    main, side = CollectingSink(), CollectingSink()
    stream = (
        flow.source(IterableSource(evs, splits=2), timestamps=lambda e: e[1])
        .key_by(_key)
        .process(remember, on_timer=fired, name="p")
    )
    stream.sink(main)
    stream.side_output(tag).sink(side)
    await run_job(flow, backend="memory", workers=2, processes=False, batch_size=4)
    assert Counter(flows.norm(item) for item in main.items) == Counter(evs)
    assert Counter(flows.norm(item) for item in side.items) == Counter(
        {(e[0], e[1] + 100): 1 for e in evs}
    )


@pytest.mark.asyncio
async def test_a_test_job_s_output_names_the_fix_for_a_flow_with_several_sinks() -> None:
    flow = Flow("two", num_key_groups=2)
    stream = flow.source(IterableSource(range(3)))
    first, second = CollectingSink(), CollectingSink()
    stream.sink(first)
    stream.map(str).sink(second)
    async with open_test_job(flow) as job:
        await job.wait()
        with pytest.raises(
            TypeError,
            match=r"^job\.output reads the flow's one sink; flow 'two' has 2 \(read each "
            r"CollectingSink's \.items instead\)$",
        ):
            _ = job.output
    assert sorted(first.items) == [0, 1, 2]
    assert sorted(second.items) == ["0", "1", "2"]


@pytest.mark.asyncio
async def test_two_inputs_may_run_as_separate_pipelines_of_one_flow() -> None:
    flow = Flow("apart", num_key_groups=4)
    evs = flows.events(90, seed=2, keys=3)
    timed = flow.source(IterableSource(evs, splits=2), timestamps=lambda e: e[1], name="timed")
    plain = flow.source(IterableSource(range(50)), name="plain")
    windows, counts = CollectingSink(), CollectingSink()
    timed.key_by(_key).window(Tumbling(20)).count(name="w").sink(windows)
    plain.key_by(lambda n: n % 5).count(name="c").sink(counts)
    plan = compile_plan(flow)
    # Each keyed operator aligns and takes watermarks over its own input's splits only.
    assert plan.channels_into(1) == ("timed/items:0", "timed/items:1")
    assert plan.channels_into(2) == ("plain/items:0",)
    await run_job(flow, backend="memory", workers=2, processes=False, batch_size=4)
    expected = Counter((e[0], e[1] - e[1] % 20, e[1] - e[1] % 20 + 20) for e in evs)
    assert {(k, s, e): n for k, s, e, n in windows.items} == dict(expected)
    assert dict(sorted(counts.items)) == {k: 10 for k in range(5)}
