"""Declared states: small frozen records naming a state and its kind.

A store is opened with a sequence of specs; each spec becomes one named LMDB database and one
handle (``store.states.<name>``). Names are checked when the spec is built, so a typo fails
where it is written rather than at the first record.

A spec may carry a :class:`StateTtl`: its values then expire (see ``_ttl.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import DuplicateStateError, InvalidNameError

__all__ = (
    "EVENT_TIME_TTL",
    "NEVER_RETURN_EXPIRED",
    "ON_CREATE_AND_WRITE",
    "ON_READ_AND_WRITE",
    "PROCESSING_TIME_TTL",
    "RETURN_EXPIRED_IF_NOT_CLEANED_UP",
    "AggregatingStateSpec",
    "ListStateSpec",
    "MapStateSpec",
    "ReducingStateSpec",
    "StateSpec",
    "StateTtl",
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


ON_CREATE_AND_WRITE = "on_create_and_write"
ON_READ_AND_WRITE = "on_read_and_write"
NEVER_RETURN_EXPIRED = "never_return_expired"
RETURN_EXPIRED_IF_NOT_CLEANED_UP = "return_expired_if_not_cleaned_up"
PROCESSING_TIME_TTL = "processing_time"
EVENT_TIME_TTL = "event_time"

_CHOICES = {
    "update": (ON_CREATE_AND_WRITE, ON_READ_AND_WRITE),
    "visibility": (NEVER_RETURN_EXPIRED, RETURN_EXPIRED_IF_NOT_CLEANED_UP),
    "time": (PROCESSING_TIME_TTL, EVENT_TIME_TTL),
}


@dataclass(frozen=True, slots=True)
class StateTtl:
    """A time-to-live for every value of one state (per key; per entry of a MapState).

    A value expires ``ttl`` after its timestamp, which is set when the value is written (and,
    with ``update="on_read_and_write"``, also when it is read). Expired values are removed on
    access, by an incremental pass over the committed entries as records are processed, and
    when the state is flushed (so a checkpoint never writes an expired value).

    Attributes:
        ttl: the time to live, > 0, in seconds of processing time or in timestamp units.
        update: ``"on_create_and_write"`` (default) or ``"on_read_and_write"``.
        visibility: ``"never_return_expired"`` (default: an expired value is gone the moment
            it expires; reading it removes it) or ``"return_expired_if_not_cleaned_up"`` (an
            expired value stays readable, and writable, until a cleanup pass removes it).
        time: ``"processing_time"`` (default: the runtime's clock) or ``"event_time"`` (the
            key group's watermark).
    """

    ttl: float
    update: str = ON_CREATE_AND_WRITE
    visibility: str = NEVER_RETURN_EXPIRED
    time: str = PROCESSING_TIME_TTL

    def __post_init__(self) -> None:
        ttl = self.ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
            raise ValueError(f"StateTtl: ttl must be a finite number > 0; got {ttl!r}")
        for field_name, allowed in _CHOICES.items():
            value = getattr(self, field_name)
            if value not in allowed:
                choices = " or ".join(repr(choice) for choice in allowed)
                raise ValueError(f"StateTtl: {field_name} must be {choices}; got {value!r}")


def _check_ttl(name: str, ttl: object) -> None:
    if ttl is not None and not isinstance(ttl, StateTtl):
        raise TypeError(f"state {name!r}: ttl must be a StateTtl(...) or None; got {ttl!r}")


@dataclass(frozen=True, slots=True)
class ValueStateSpec:
    """One value per key; ``value()`` gives ``default`` for a key never written or cleared."""

    name: str
    default: Any = None
    ttl: StateTtl | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_ttl(self.name, self.ttl)


@dataclass(frozen=True, slots=True)
class ListStateSpec:
    """A list per key, appended to with ``add``; an absent key reads as ``[]``."""

    name: str
    ttl: StateTtl | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_ttl(self.name, self.ttl)


@dataclass(frozen=True, slots=True)
class MapStateSpec:
    """A map per key from map keys (same rules as keys) to values, range-scannable; with a
    ``ttl``, each entry expires on its own."""

    name: str
    ttl: StateTtl | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_ttl(self.name, self.ttl)


@dataclass(frozen=True, slots=True)
class ReducingStateSpec:
    """One accumulated value per key: ``acc = reduce(acc, value)``, the first value as is."""

    name: str
    reduce: Callable[[Any, Any], Any]
    ttl: StateTtl | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_ttl(self.name, self.ttl)
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
    ttl: StateTtl | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_ttl(self.name, self.ttl)
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
