"""Declared states: small frozen records naming a state and its kind.

A store is opened with a sequence of specs; each spec becomes one named LMDB database and one
handle (``store.states.<name>``). Names are checked when the spec is built, so a typo fails
where it is written rather than at the first record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import DuplicateStateError, InvalidNameError

__all__ = (
    "AggregatingStateSpec",
    "ListStateSpec",
    "MapStateSpec",
    "ReducingStateSpec",
    "StateSpec",
    "ValueStateSpec",
    "check_specs",
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_name(name: object) -> None:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidNameError(f"state name must match [A-Za-z_][A-Za-z0-9_]*; got {name!r}")
    if name.startswith("__"):
        raise InvalidNameError(
            f"state name must not start with '__' (reserved for internal databases); got {name!r}"
        )


def _identity(acc: Any) -> Any:
    return acc


@dataclass(frozen=True, slots=True)
class ValueStateSpec:
    """One value per key; ``value()`` gives ``default`` for a key never written or cleared."""

    name: str
    default: Any = None

    def __post_init__(self) -> None:
        _check_name(self.name)


@dataclass(frozen=True, slots=True)
class ListStateSpec:
    """A list per key, appended to with ``add``; an absent key reads as ``[]``."""

    name: str

    def __post_init__(self) -> None:
        _check_name(self.name)


@dataclass(frozen=True, slots=True)
class MapStateSpec:
    """A map per key from map keys (same rules as keys) to values, range-scannable."""

    name: str

    def __post_init__(self) -> None:
        _check_name(self.name)


@dataclass(frozen=True, slots=True)
class ReducingStateSpec:
    """One accumulated value per key: ``acc = reduce(acc, value)``, the first value as is."""

    name: str
    reduce: Callable[[Any, Any], Any]

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not callable(self.reduce):
            raise TypeError(f"ReducingStateSpec {self.name!r}: reduce must be callable")


@dataclass(frozen=True, slots=True)
class AggregatingStateSpec:
    """An accumulator per key: ``acc = add(acc or create(), value)``, read as ``result(acc)``.

    The accumulator (not the result) is what is stored, so it must be CBOR-encodable.
    """

    name: str
    create: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    result: Callable[[Any], Any] = field(default=_identity)

    def __post_init__(self) -> None:
        _check_name(self.name)
        for role in ("create", "add", "result"):
            if not callable(getattr(self, role)):
                raise TypeError(f"AggregatingStateSpec {self.name!r}: {role} must be callable")


StateSpec = ValueStateSpec | ListStateSpec | MapStateSpec | ReducingStateSpec | AggregatingStateSpec

_SPEC_TYPES = (ValueStateSpec, ListStateSpec, MapStateSpec, ReducingStateSpec, AggregatingStateSpec)


def check_specs(specs: Iterable[StateSpec]) -> tuple[StateSpec, ...]:
    """Return the specs as a tuple after checking their types and that names are unique.

    Raises:
        TypeError: An item is not a state spec.
        DuplicateStateError: Two specs share a name (a ``ValueError``).
    """
    checked = tuple(specs)
    seen: set[str] = set()
    for spec in checked:
        if not isinstance(spec, _SPEC_TYPES):
            raise TypeError(f"expected a state spec (ValueStateSpec, ...); got {spec!r}")
        if spec.name in seen:
            raise DuplicateStateError(f"state name {spec.name!r} is declared twice")
        seen.add(spec.name)
    return checked
