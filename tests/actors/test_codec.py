"""The kernel codec: plain CBOR values, registered dataclasses, to_wire/from_wire classes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Self

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shoal.actors import Codec, MessageDecodeError, MessageEncodeError


@dataclass(frozen=True, slots=True)
class Point:
    x: int
    label: str
    tags: list[str]


@dataclass(frozen=True, slots=True)
class Empty:
    pass


class Columns:
    """Encodes itself column-wise, as the runtime's data batches do."""

    def __init__(self, keys: list[str], values: list[int]) -> None:
        self.keys = keys
        self.values = values

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Columns) and other.keys == self.keys and other.values == self.values
        )

    __hash__ = None  # type: ignore[assignment]

    def to_wire(self) -> Any:
        return [self.keys, self.values]

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        return cls(list(data[0]), list(data[1]))


@pytest.fixture
def codec() -> Codec:
    codec = Codec()
    codec.register(Point, "test.point")
    codec.register(Empty, "test.empty")
    codec.register(Columns, "test.columns")
    return codec


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
plain = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=5)
    ),
    max_leaves=20,
)
points = st.builds(Point, st.integers(), st.text(), st.lists(st.text(), max_size=3))
columns = st.lists(st.tuples(st.text(), st.integers()), max_size=10).map(
    lambda rows: Columns([k for k, _ in rows], [v for _, v in rows])
)
messages = st.recursive(
    plain | points | columns | st.just(Empty()),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(plain)
def test_plain_values_round_trip(value: Any) -> None:
    codec = Codec()
    assert codec.decode(codec.encode(value)) == value


@given(messages)
def test_registered_classes_round_trip_anywhere_in_a_message(value: Any) -> None:
    codec = Codec()
    codec.register(Point, "test.point")
    codec.register(Empty, "test.empty")
    codec.register(Columns, "test.columns")
    assert codec.decode(codec.encode(value)) == value


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``(1,) == [1]`` is False, but be exact)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


hashable = st.recursive(
    st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=6,
)
nested = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(hashable, inner, max_size=4)
    ),
    max_leaves=20,
)


@given(nested)
def test_tuples_and_lists_keep_their_type_at_any_depth(value: Any) -> None:
    codec = Codec()
    assert same(codec.decode(codec.encode(value)), value)


def test_tuples_stay_tuples(codec: Codec) -> None:
    value = (1, (2, [3, (4,)]), {(5, "a"): ()})
    assert same(codec.decode(codec.encode(value)), value)
    point = Point(1, "p", ("a", "b"))  # type: ignore[arg-type]
    assert same(codec.decode(codec.encode([point]))[0].tags, ("a", "b"))


def test_nan_survives(codec: Codec) -> None:
    assert math.isnan(codec.decode(codec.encode(float("nan"))))


def test_to_wire_is_used(codec: Codec) -> None:
    data = codec.encode(Columns(["a", "b"], [1, 2]))
    assert Codec().decode(Codec().encode(["test.columns", [["a", "b"], [1, 2]]])) == [
        "test.columns",
        [["a", "b"], [1, 2]],
    ]
    assert codec.decode(data) == Columns(["a", "b"], [1, 2])


class Stranger:
    pass


def test_unregistered_class_is_refused_with_the_fix(codec: Codec) -> None:
    with pytest.raises(
        MessageEncodeError,
        match=r"^Stranger cannot cross a process boundary: register it with"
        r" register_message\(cls, tag\), or send plain CBOR values$",
    ):
        codec.encode({"a": [Stranger()]})


def test_unknown_tag_is_refused(codec: Codec) -> None:
    with pytest.raises(
        MessageDecodeError,
        match=r"^unknown message tag 'test.point': register the class with"
        r" register_message\(\) in this process too$",
    ):
        Codec().decode(codec.encode(Point(1, "a", [])))


def test_garbage_is_refused() -> None:
    with pytest.raises(MessageDecodeError):
        Codec().decode(b"\xff\xff")


def test_registration_rules(codec: Codec) -> None:
    codec.register(Point, "test.point")  # the same again: fine

    @dataclass(frozen=True)
    class Other:
        x: int

    @dataclass
    class Mutable:
        x: int

    with pytest.raises(ValueError, match=r"^message tag 'test.point' is already used"):
        codec.register(Other, "test.point")
    with pytest.raises(
        ValueError,
        match=r"^Point is already registered as 'test.point'; cannot register it again as"
        r" 'x'$",
    ):
        codec.register(Point, "x")
    with pytest.raises(ValueError, match=r"must be a frozen dataclass to be a message"):
        codec.register(Mutable, "m")
    with pytest.raises(TypeError, match=r"cannot be registered as a message"):
        codec.register(int, "int")
    with pytest.raises(ValueError, match=r"^message tag must be a non-empty str; got ''$"):
        codec.register(Other, "")
