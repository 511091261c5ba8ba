"""State values CBOR cannot encode: refused where the record is known, else named at flush.

A value whose own type cannot be encoded is refused by the write that stores it, so its record
is a dead letter with its position. Something unencodable nested in a list, tuple or dict is
found by the flush, which fails the job naming the operator, key group, state, key and type; a
failed final flush (when a key-group actor stops) fails the worker too, never silently.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from shoal.actors import ActorFailedError, open_worker
from shoal.runtime._keygroup import KeyGroupActor
from shoal.runtime._messages import Data
from shoal.runtime._plan import actor_name, compile_plan
from shoal.runtime._worker import WorkerEnv
from shoal.storage import MemoryBackend

from shoal import (
    CollectingSink,
    Flow,
    IterableSource,
    JobError,
    ProcessContext,
    ValueStateSpec,
    key_group_of,
    run,
)


class Thing:
    """Not a CBOR type."""


def keep(key: str, value: int, ctx: ProcessContext) -> None:
    if value == 3:
        ctx.state.v.update(Thing())
    elif value == 5:
        ctx.state.v.update([value, {"nested": Thing()}])
    else:
        ctx.state.v.update(value)
    ctx.emit(value)


def flow_of(values: list[int]) -> Flow:
    flow = Flow("f", num_key_groups=4)
    (
        flow.source(IterableSource(values))
        .key_by(lambda value: f"k{value}")
        .process(keep, states=[ValueStateSpec("v")], name="keep")
        .sink(CollectingSink())
    )
    return flow


def test_a_value_of_a_type_cbor_cannot_encode_sends_its_record_to_the_dead_letters() -> None:
    result = run(flow_of([0, 1, 2, 3, 4]), backend="memory")
    assert sorted(result.sink.items) == [0, 1, 2, 4]  # type: ignore[attr-defined]
    assert result.read_state("keep", "v") == {"k0": 0, "k1": 1, "k2": 2, "k4": 4}
    (letter,) = result.dead_letter_sink.letters  # type: ignore[attr-defined]
    assert (letter.operator, letter.error_type, letter.offset, letter.record, letter.key) == (
        "keep",
        "StateEncodeError",
        3,
        3,
        "k3",
    )
    group = key_group_of("k3", 4)
    assert letter.error.startswith(
        f"state 'v' of operator 'keep' (key group {group}), key 'k3': cannot encode a Thing as"
        " CBOR;"
    )


def test_a_nested_value_cbor_cannot_encode_fails_the_job_naming_operator_state_key_type() -> None:
    with pytest.raises(
        JobError,
        match=r"^job 'f' failed: actor 'keep#\d' failed: StateEncodeError: state 'v' of operator"
        r" 'keep' \(key group \d\), key 'k5': cannot encode a list holding a Thing as CBOR; state"
        r" values must be None, bool, int, float, str, bytes, or lists, tuples and dicts of"
        r" those: convert the Thing \(to a dict, a str, \.\.\.\) before storing it$",
    ):
        run(flow_of([0, 1, 5, 2]), backend="memory")


def test_an_aggregate_accumulator_cbor_cannot_encode_is_a_dead_letter() -> None:
    flow = Flow("agg", num_key_groups=2)
    (
        flow.source(IterableSource([1, 2, 3]))
        .key_by(lambda value: "k")
        .aggregate(lambda: 0, lambda acc, v: Thing() if v == 2 else acc + v, name="sum")
        .sink(CollectingSink())
    )
    result = run(flow, backend="memory")
    assert result.sink.items == [("k", 1), ("k", 4)]  # type: ignore[attr-defined]
    assert [letter.offset for letter in result.dead_letter_sink.letters] == [1]  # type: ignore[attr-defined]


def _store_nested_thing(key: str, value: Any, ctx: ProcessContext) -> None:
    ctx.state.v.update([Thing()])  # a list: accepted by the write, refused by the flush


async def _process_one_record_then_stop(flow: Flow) -> None:
    """Host the flow's key-group actor 0 alone, give it one record, stop it (no end of stream)."""
    plan = compile_plan(flow)
    (stage,) = plan.keyed_stages
    async with open_worker() as kernel:
        env = WorkerEnv(
            plan=plan,
            index=0,
            workers=1,
            driver=0,
            kernel=kernel,
            backend=MemoryBackend(),
            group_owner=[0],
            split_owner=[0] * len(plan.splits),
            batch_size=8,
            mailbox_size=4,
            sink=plan.sink.open_partition(0, 1),
        )
        name = actor_name(stage.name, 0)
        ref = await kernel.spawn(partial(KeyGroupActor, env, stage.index, 0), name=name)
        await ref.ask(Data("split-0", "split-0", ["k"], [1], [0]))
        await kernel.stop_actor(name)  # on_stop flushes what was never flushed


@pytest.mark.asyncio
async def test_a_failed_final_flush_fails_the_worker_instead_of_being_logged() -> None:
    flow = Flow("f", num_key_groups=1)
    (
        flow.source(IterableSource([1]))
        .key_by(lambda value: "k")
        .process(_store_nested_thing, states=[ValueStateSpec("v")], name="keep")
        .sink(CollectingSink())
    )
    with pytest.raises(
        ActorFailedError,
        match=r"^actor 'keep#0' failed its final flush: StateEncodeError: state 'v' of operator"
        r" 'keep' \(key group 0\), key 'k': cannot encode a list holding a Thing as CBOR; ",
    ):
        await _process_one_record_then_stop(flow)
