"""State specs: names are checked where they are written."""

from __future__ import annotations

import re

import pytest
from shoal.storage import (
    AggregatingStateSpec,
    DuplicateStateError,
    ListStateSpec,
    MapStateSpec,
    MemoryBackend,
    ReducingStateSpec,
    ValueStateSpec,
)


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "é", 3, None])
def test_bad_state_names_are_refused(name: object) -> None:
    message = "^" + re.escape(f"state name must match [A-Za-z_][A-Za-z0-9_]*; got {name!r}") + "$"
    with pytest.raises(ValueError, match=message):
        ValueStateSpec(name)  # type: ignore[arg-type]


def test_double_underscore_names_are_reserved() -> None:
    message = (
        r"^state name must not start with '__' \(reserved for internal databases\); got '__meta__'$"
    )
    for spec_type in (ValueStateSpec, ListStateSpec, MapStateSpec):
        with pytest.raises(ValueError, match=message):
            spec_type("__meta__")


def test_good_names_and_defaults() -> None:
    assert ValueStateSpec("_x1").default is None
    spec = AggregatingStateSpec("avg", create=list, add=lambda acc, v: [*acc, v])
    assert spec.result([1]) == [1]  # identity by default


def test_callables_are_checked() -> None:
    with pytest.raises(TypeError, match=r"^ReducingStateSpec 'r': reduce must be callable$"):
        ReducingStateSpec("r", reduce=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^AggregatingStateSpec 'a': add must be callable$"):
        AggregatingStateSpec("a", create=list, add=None)  # type: ignore[arg-type]


def test_specs_are_frozen() -> None:
    spec = ValueStateSpec("v")
    with pytest.raises(AttributeError):
        spec.name = "w"  # type: ignore[misc]


def test_duplicate_names_in_one_store_are_refused() -> None:
    with pytest.raises(DuplicateStateError, match=r"^state name 'v' is declared twice$"):
        MemoryBackend().open_store("op", 0, [ValueStateSpec("v"), ListStateSpec("v")])
    with pytest.raises(ValueError, match=r"^state name 'v' is declared twice$"):
        MemoryBackend().open_store("op", 0, [ValueStateSpec("v"), ValueStateSpec("v")])


def test_non_specs_are_refused() -> None:
    with pytest.raises(
        TypeError, match=r"^expected a state spec \(ValueStateSpec, \.\.\.\); got 'v'$"
    ):
        MemoryBackend().open_store("op", 0, ["v"])  # type: ignore[list-item]
