"""The dataflow API fails at the boundary with messages that name the mistake."""

from __future__ import annotations

import pytest
from shoal.runtime import CollectingSink, Flow, IterableSource
from shoal.runtime._plan import compile_plan, place_key_groups, place_splits


def test_linear_flow_compiles_into_stages() -> None:
    flow = Flow("f", num_key_groups=8)
    (
        flow.source(IterableSource(range(10), splits=2))
        .map(lambda x: x + 1)
        .key_by(lambda x: x % 3)
        .count(name="counts")
        .filter(lambda kv: kv[1] > 1)
        .key_by(lambda kv: kv[0])
        .reduce(lambda a, b: b, name="latest")
        .sink(CollectingSink())
    )
    plan = compile_plan(flow)
    assert [stage.name for stage in plan.stages] == ["source", "counts", "latest"]
    assert [len(stage.chain) for stage in plan.stages] == [1, 1, 0]
    assert plan.stages[0].next_operator == "counts"
    assert plan.stages[2].next_key_fn is None
    assert len(plan.splits) == 2
    assert plan.channels_into(1) == plan.splits
    assert plan.channels_into(2) == tuple(f"counts#{g}" for g in range(8))


@pytest.mark.parametrize("groups", [0, -1, 1.5, "8", True, 1 << 16])
def test_bad_num_key_groups(groups: object) -> None:
    with pytest.raises(ValueError, match=r"^num_key_groups must be an int from 1 to 32768; got "):
        Flow("f", num_key_groups=groups)  # type: ignore[arg-type]


def test_bad_flow_name() -> None:
    with pytest.raises(
        ValueError,
        match=r"^Flow name must be a non-empty name of letters, digits, '_', '.' or '-'; "
        r"got 'a b'$",
    ):
        Flow("a b")


def test_map_needs_a_callable() -> None:
    stream = Flow("f").source(IterableSource([1]))
    with pytest.raises(TypeError, match=r"^map function must be callable; got int$"):
        stream.map(3)  # type: ignore[arg-type]


def test_streams_are_linear() -> None:
    stream = Flow("f").source(IterableSource([1]))
    stream.map(str)
    with pytest.raises(
        ValueError, match=r"^this stream was already extended; flows are linear pipelines"
    ):
        stream.map(str)


def test_duplicate_operator_names() -> None:
    stream = Flow("f").source(IterableSource([1])).key_by(str).count(name="n")
    with pytest.raises(
        ValueError, match=r"^operator name 'n' is already used in this flow; pick another$"
    ):
        stream.key_by(str).count(name="n")


def test_flow_must_end_in_a_sink() -> None:
    flow = Flow("f")
    flow.source(IterableSource([1])).map(str)
    with pytest.raises(
        ValueError, match=r"^Flow 'f' does not end in a sink: add \.sink\(\.\.\.\)$"
    ):
        compile_plan(flow)


def test_a_second_source_after_a_keyed_operator_is_refused() -> None:
    # Several inputs merge before the first keyed operator (see tests/runtime/test_inputs.py).
    flow = Flow("f")
    flow.source(IterableSource([1])).key_by(str).count()
    with pytest.raises(
        ValueError,
        match=r"^flow 'f' already has a keyed operator or sink after its input; inputs merge "
        r"before the first keyed operator: add every source first, then union or connect them$",
    ):
        flow.source(IterableSource([2]))


def test_nothing_follows_a_sink() -> None:
    flow = Flow("f")
    stream = flow.source(IterableSource([1]))
    stream.sink(CollectingSink())
    with pytest.raises(
        ValueError, match=r"^a flow ends at its sink; nothing can follow \.sink\(\.\.\.\)$"
    ):
        stream.map(str)


@pytest.mark.parametrize(
    ("groups", "workers"), [(128, 1), (128, 2), (128, 3), (7, 4), (5, 5), (3, 4)]
)
def test_key_group_placement_is_contiguous_and_balanced(groups: int, workers: int) -> None:
    owners = place_key_groups(groups, workers)
    assert owners == sorted(owners)
    counts = [owners.count(w) for w in range(workers)]
    assert max(counts) <= -(-groups // workers)
    assert sum(counts) == groups


def test_splits_round_robin() -> None:
    assert place_splits(["a", "b", "c", "d", "e"], 2) == [0, 1, 0, 1, 0]
