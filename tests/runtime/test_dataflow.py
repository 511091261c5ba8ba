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
    assert [[len(o.chain) for o in stage.outlets] for stage in plan.stages] == [[1], [1], [0]]
    assert plan.stages[0].outlets[0].operator == "counts"
    assert [stage.downstream for stage in plan.stages] == [(1,), (2,), ()]
    assert plan.stages[2].outlets[0].sink == 0
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


def test_a_stream_extended_twice_forks() -> None:
    flow = Flow("f")
    stream = flow.source(IterableSource([1]))
    stream.map(str).sink(CollectingSink())
    stream.map(repr).sink(CollectingSink())
    outlet = compile_plan(flow).stages[0].outlets
    assert [len(o.forks) for o in outlet] == [0, 0]
    assert [o.sink for o in outlet] == [0, 1]


def test_a_branch_without_a_sink_is_refused() -> None:
    flow = Flow("f")
    stream = flow.source(IterableSource([1])).key_by(str).count(name="c")
    stream.sink(CollectingSink())
    stream.map(str)
    with pytest.raises(
        ValueError,
        match=r"^a stream of flow 'f' \(after 'map'\) is never sunk: every branch ends in "
        r"\.sink\(\.\.\.\)$",
    ):
        compile_plan(flow)


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


def test_an_unused_input_is_refused() -> None:
    flow = Flow("f")
    flow.source(IterableSource([1])).key_by(str).count().sink(CollectingSink())
    flow.source(IterableSource([2]), name="late")
    with pytest.raises(
        ValueError,
        match=r"^input 'late' of flow 'f' is never used: extend it \(map, key_by, sink, \.\.\.\) "
        r"or merge it with another stream \(a\.union\(b\)\)$",
    ):
        compile_plan(flow)


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
