"""The key and value codecs: fixed vectors, errors, and round-trip properties."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shoal.storage import (
    DecodeError,
    EncodeError,
    InvalidKeyError,
    check_key,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
)
from shoal.storage._codec import encode_keys, encode_values

# The key encoding is part of the savepoint format and feeds key-group hashing: these bytes
# must never change.
FIXED_VECTORS: list[tuple[Any, str]] = [
    (0, "00"),
    (1, "01"),
    (23, "17"),
    (24, "1818"),
    (255, "18ff"),
    (256, "190100"),
    (2**32, "1b0000000100000000"),
    (-1, "20"),
    (-1000, "3903e7"),
    (2**64, "c249010000000000000000"),
    ("", "60"),
    ("a", "6161"),
    ("alice", "65616c696365"),
    ("é", "62c3a9"),
    (b"", "40"),
    (b"\x00\xff", "4200ff"),
    ((), "80"),
    ((1, "a"), "82016161"),
    (("user", 42, b"\x01"), "836475736572182a4101"),
    (((1,), ("x",)), "828101816178"),
]


@pytest.mark.parametrize(("key", "expected"), FIXED_VECTORS)
def test_encode_key_fixed_vectors(key: Any, expected: str) -> None:
    assert encode_key(key).hex() == expected
    assert decode_key(bytes.fromhex(expected)) == key


def _message(got: str, hint: str = "") -> str:
    return (
        "^" + re.escape(f"key must be str, bytes, int or a tuple of those; got {got}{hint}") + "$"
    )


@pytest.mark.parametrize(
    ("key", "pattern"),
    [
        ([1, 2], _message("list", " — did you mean a tuple?")),
        (1.5, _message("float")),
        (True, _message("bool")),
        ({"a": 1}, _message("dict")),
        (None, _message("NoneType")),
        (("a", [1]), _message("list inside a tuple", " — did you mean a tuple?")),
        (("a", (1, 2.0)), _message("float inside a tuple")),
        (frozenset(), _message("frozenset")),
    ],
)
def test_bad_keys_are_refused_with_the_type_named(key: Any, pattern: str) -> None:
    with pytest.raises(TypeError, match=pattern):
        check_key(key)
    with pytest.raises(InvalidKeyError, match=pattern):
        encode_key(key)


def test_map_keys_are_named_as_such() -> None:
    with pytest.raises(
        TypeError,
        match=r"^map key must be str, bytes, int or a tuple of those; got float$",
    ):
        check_key(0.5, what="map key")


def test_deeply_nested_tuples_are_refused() -> None:
    key: Any = 1
    for _ in range(40):
        key = (key,)
    with pytest.raises(TypeError, match=r"^key must be .*; got tuples nested more than 32 deep$"):
        check_key(key)


def test_decode_key_refuses_non_keys() -> None:
    for data in (encode_value(1.5), b"\x01\x02", encode_value([1]) + b"\x00", b"\x18\x01", b""):
        with pytest.raises(DecodeError, match=r"^not a"):
            decode_key(data)


def test_encode_value_refuses_objects_and_names_the_type() -> None:
    with pytest.raises(EncodeError, match=r"^cannot encode object value as CBOR: "):
        encode_value(object())


def test_decode_value_refuses_garbage() -> None:
    with pytest.raises(DecodeError, match=r"^not a value encoding: ff"):
        decode_value(b"\xff")


scalars = st.one_of(st.text(max_size=8), st.binary(max_size=8), st.integers())
keys = st.recursive(
    scalars,
    lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=3).map(tuple),
    max_leaves=8,
)


@given(keys)
def test_key_round_trip(key: Any) -> None:
    encoded = encode_key(key)
    assert decode_key(encoded) == key
    assert type(decode_key(encoded)) is type(key)


@given(keys, keys)
def test_key_encoding_is_injective_and_prefix_free(a: Any, b: Any) -> None:
    ea, eb = encode_key(a), encode_key(b)
    assert (ea == eb) == (a == b)
    if ea != eb:
        assert not eb.startswith(ea)


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=0, max_value=2**64 - 1))
def test_non_negative_ints_sort_numerically(a: int, b: int) -> None:
    assert (encode_key(a) < encode_key(b)) == (a < b)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(values)
def test_value_round_trip(value: Any) -> None:
    assert decode_value(encode_value(value)) == value


# The batch encoders used by flush must give exactly the per-item bytes.


def test_encode_keys_gives_the_fixed_vectors() -> None:
    scalar = [(key, expected) for key, expected in FIXED_VECTORS if type(key) is not tuple]
    assert [b.hex() for b in encode_keys([key for key, _ in scalar])] == [e for _, e in scalar]
    assert encode_keys([]) == []


@given(st.lists(scalars, max_size=20))
def test_encode_keys_matches_encode_key(batch: list[Any]) -> None:
    assert encode_keys(batch) == [encode_key(key) for key in batch]


@given(st.lists(values, max_size=20))
def test_encode_values_matches_encode_value(batch: list[Any]) -> None:
    assert encode_values(batch) == [encode_value(value) for value in batch]


def test_encode_values_keeps_no_state_between_values() -> None:
    shared = [1, 2]
    batch = [shared, shared, {"a": shared}, "x" * 30, "x" * 30, 1.5, 1.5]
    assert encode_values(batch) == [encode_value(value) for value in batch]


def test_encode_values_refuses_objects() -> None:
    with pytest.raises(EncodeError, match=r"^cannot encode a value as CBOR: "):
        encode_values([1, object(), 2])
