"""Flows that are graphs: a stream read by several operators (fan-out, also after a keyed
operator), side outputs of process functions, merges after keyed operators and window joins.
Results equal oracles recomputed from the inputs, in one loop, across worker processes, and
through a crash and a checkpoint restore (exactly once, with transactional sinks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import graph_flows as flows
import pytest
from shoal.runtime._plan import compile_plan

from shoal import (
    CollectingSink,
    DeadLetterSink,
    Fault,
    Flow,
    IterableSource,
    OutputTag,
    run_job,
)

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
        match=r"^side_output reads what a process function sends with ctx\.output\(tag, value\): "
        r"this stream \(after 'c'\) is not the output of \.process\(\.\.\.\)$",
    ):
        counts.side_output(OutputTag("x"))
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
    with pytest.raises(ValueError, match=r"^the sinks of flow 'f' must all gather their output"):
        compile_plan(flow)
