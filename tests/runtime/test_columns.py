"""Column-wise batch encoding: what crosses a process comes back as it left."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import typed_flows
from hypothesis import given
from hypothesis import strategies as st
from shoal.actors import default_codec
from shoal.runtime._columns import (
    decode_column,
    decode_keys,
    decode_records,
    encode_column,
    encode_int_column,
    encode_keys,
    encode_records,
)
from shoal.runtime._messages import Data

from shoal import run_job

scalars = st.one_of(
    st.integers(), st.text(max_size=8), st.booleans(), st.none(), st.binary(max_size=8)
)


def wire(obj: object) -> object:
    """What crossing a process does: the kernel codec's encode, then its decode."""
    return default_codec.decode(default_codec.encode(obj))


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (a tuple is not a list, 1 is not True)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) is float and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@given(st.integers(1, 4).flatmap(lambda n: st.lists(st.tuples(*[scalars] * n), max_size=30)))
def test_uniform_tuples_round_trip_as_tuples(records: list[tuple[object, ...]]) -> None:
    assert decode_records(wire(encode_records(records))) == records  # type: ignore[arg-type]


@given(
    st.lists(
        st.fixed_dictionaries({"user": st.integers(), "page": st.text(max_size=5)}), max_size=30
    )
)
def test_uniform_dicts_round_trip(records: list[dict[str, object]]) -> None:
    assert decode_records(wire(encode_records(records))) == records  # type: ignore[arg-type]


@given(
    st.lists(
        st.one_of(scalars, st.tuples(scalars), st.dictionaries(st.text(max_size=3), scalars)),
        max_size=30,
    )
)
def test_mixed_records_round_trip(records: list[object]) -> None:
    assert decode_records(wire(encode_records(records))) == records  # type: ignore[arg-type]


def test_uniform_tuples_travel_as_packed_columns() -> None:
    encoded = encode_records([(1, "a"), (2, "b")])
    ints = (1).to_bytes(8, "little") + (2).to_bytes(8, "little")
    assert encoded == [1, 2, [[1, ints], [2, b"a\x00b"]]]


columns = st.one_of(
    st.lists(st.integers(), max_size=40),  # includes ints beyond 64 bits: CBOR fallback
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40),
    st.lists(st.text(max_size=6), max_size=40),  # includes NUL and surrogate-free unicode
    st.lists(st.booleans(), max_size=10),  # bools must not come back as ints
    st.lists(st.one_of(st.integers(), st.booleans(), st.text(max_size=3), st.none()), max_size=20),
    st.lists(st.floats(), max_size=20),  # NaN, -0.0 and infinities included
    st.lists(st.tuples(st.integers(), st.floats(allow_nan=False)), max_size=20),
)


@given(columns)
def test_columns_round_trip_exactly(column: list[object]) -> None:
    back = decode_column(wire(encode_column(column)))  # type: ignore[arg-type]
    assert same(back, column)


def test_column_edge_cases() -> None:
    for column in ([True, 1], ["a\x00b", "c"], [""], ["", ""], [2**63], [-(2**63)], []):
        back = decode_column(wire(encode_column(column)))  # type: ignore[arg-type]
        assert back == column
        assert [type(v) for v in back] == [type(v) for v in column]


keys = st.recursive(
    st.one_of(st.integers(), st.text(max_size=5), st.binary(max_size=5)),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=6,
)


@given(st.lists(keys, max_size=20))
def test_keys_round_trip_and_tuple_keys_come_back_as_tuples(key_list: list[object]) -> None:
    assert decode_keys(wire(encode_keys(key_list))) == key_list  # type: ignore[arg-type]


def test_data_message_wire_round_trip() -> None:
    data = Data("split-0", "split-0", [("a", 1), ("b", 2)], [(1, "x"), (2, "y")], [10, 11])
    assert Data.from_wire(wire(data.to_wire())) == data  # type: ignore[arg-type]


@given(st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=30))
def test_int_columns_by_construction_still_round_trip_anything(column: list[object]) -> None:
    back = decode_column(wire(encode_int_column(column)))  # type: ignore[arg-type]
    assert back == column
    assert [type(v) for v in back] == [type(v) for v in column]


nested_values = st.recursive(
    scalars | st.floats(),
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple),
    max_leaves=10,
)


@given(
    st.one_of(
        st.lists(st.tuples(keys, nested_values), max_size=20),  # uniform: column-wise
        st.lists(st.tuples(nested_values, st.tuples(st.integers(), nested_values)), max_size=20),
        st.lists(nested_values, max_size=20),  # anything: row-wise
    )
)
def test_tuples_and_lists_keep_their_type_at_any_depth(records: list[Any]) -> None:
    assert same(decode_records(wire(encode_records(records))), records)  # type: ignore[arg-type]


def test_nested_tuples_travel_as_packed_columns() -> None:
    encoded = encode_records([("a", (1, 2.5)), ("b", (3, -0.0))])
    assert encoded[:2] == [1, 2]
    inner = encoded[2][1]
    assert inner[0] == 4  # a column of pairs, itself column-wise
    assert [column[0] for column in inner[1][2]] == [1, 3]  # int64 and float64
    assert same(decode_records(wire(encoded)), [("a", (1, 2.5)), ("b", (3, -0.0))])


def test_tuple_batches_of_mixed_widths_go_row_wise() -> None:
    records = [(1, 2), (3,), (4, 5)]
    assert decode_records(wire(encode_records(records))) == records  # type: ignore[arg-type]


TYPED_FLOWS = str(Path(typed_flows.__file__).resolve())


def exact(value: Any) -> str:
    """A rendering that tells tuples from lists at every depth (``repr`` does)."""
    return repr(value)


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_flow_gives_the_same_output_and_types_in_one_loop_and_in_processes(
    tmp_path: Path,
) -> None:
    in_loop = await run_job(typed_flows.nested_types(), state_dir=tmp_path / "loop", batch_size=16)
    across = await run_job(
        f"{TYPED_FLOWS}:nested_types",
        workers=2,
        processes=True,
        state_dir=tmp_path / "procs",
        batch_size=16,
    )
    loop_items = sorted(map(exact, in_loop.sink.items))  # type: ignore[attr-defined]
    proc_items = sorted(map(exact, across.sink.items))  # type: ignore[attr-defined]
    assert len(loop_items) == 400
    assert proc_items == loop_items
    spot = (
        "(2, (('k', 1), (2, ((15, [15, (3, 'x')]), [3.75]), [2, (2,)]), {'k': [2, (2,)]}), [(2,)])"
    )
    assert spot in proc_items
