"""Column-wise batch encoding: what crosses a process comes back as it left."""

from __future__ import annotations

import cbor2
from hypothesis import given
from hypothesis import strategies as st
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

scalars = st.one_of(
    st.integers(), st.text(max_size=8), st.booleans(), st.none(), st.binary(max_size=8)
)


def wire(obj: object) -> object:
    return cbor2.loads(cbor2.dumps(obj))


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
)


@given(columns)
def test_columns_round_trip_exactly(column: list[object]) -> None:
    back = decode_column(wire(encode_column(column)))  # type: ignore[arg-type]
    assert back == column
    assert [type(v) for v in back] == [type(v) for v in column]


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


def test_tuple_batches_of_mixed_widths_go_row_wise() -> None:
    records = [(1, 2), (3,), (4, 5)]
    assert decode_records(wire(encode_records(records))) == records  # type: ignore[arg-type]
