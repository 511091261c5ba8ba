"""Checking a job's per-key results against a reference function (the test's oracle)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ("KeyDifference", "assert_matches_reference", "per_key_differences")

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class KeyDifference:
    """One key whose result differs: ``expected`` or ``actual`` is ``None`` with
    ``missing`` / ``unexpected`` set when the key is absent on that side."""

    key: Any
    expected: Any
    actual: Any
    missing: bool = False
    unexpected: bool = False

    def describe(self) -> str:
        if self.missing:
            return f"key {self.key!r}: missing from the results (expected {self.expected!r})"
        if self.unexpected:
            return f"key {self.key!r}: not in the input (got {self.actual!r})"
        return f"key {self.key!r}: expected {self.expected!r}, got {self.actual!r}"


def _as_mapping(actual: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> dict[Any, Any]:
    if isinstance(actual, Mapping):
        return dict(actual)
    result: dict[Any, Any] = {}
    for pair in actual:
        key, value = pair
        result[key] = value  # a per-key stream of results: the last one is the final one
    return result


def per_key_differences(
    actual: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
    reference: Callable[[Any, list[Any]], Any],
    inputs: Iterable[Any],
    *,
    key: Callable[[Any], Any],
    value: Callable[[Any], Any] | None = None,
) -> list[KeyDifference]:
    """The keys whose result in ``actual`` is not ``reference(key, values)``.

    Args:
        actual: the job's result per key: a mapping, or ``(key, result)`` pairs of which the
            last per key counts (a running aggregate's output).
        reference: the plain-Python definition, ``(key, that key's values in input order)
            -> expected result``.
        inputs: the records the job read, in order.
        key: ``record -> key`` (what the flow keys by).
        value: ``record -> value`` handed to ``reference`` (default: the record).

    Returns:
        One :class:`KeyDifference` per differing key, in the order keys first appear in
        ``inputs`` (keys only in ``actual`` last, in its order).
    """
    grouped: dict[Any, list[Any]] = {}
    for record in inputs:
        grouped.setdefault(key(record), []).append(record if value is None else value(record))
    got = _as_mapping(actual)
    differences = []
    for k, values in grouped.items():
        expected = reference(k, values)
        found = got.get(k, _MISSING)
        if found is _MISSING:
            differences.append(KeyDifference(k, expected, None, missing=True))
        elif found != expected:
            differences.append(KeyDifference(k, expected, found))
    differences.extend(
        KeyDifference(k, None, found, unexpected=True)
        for k, found in got.items()
        if k not in grouped
    )
    return differences


def assert_matches_reference(
    actual: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
    reference: Callable[[Any, list[Any]], Any],
    inputs: Iterable[Any],
    *,
    key: Callable[[Any], Any],
    value: Callable[[Any], Any] | None = None,
    show: int = 5,
) -> None:
    """Assert that every key's result is what ``reference`` computes from the inputs (see
    :func:`per_key_differences` for the arguments); the assertion message names how many
    keys differ and the first ``show`` of them.

    Raises:
        AssertionError: some key differs, is missing, or is not in the input.
    """
    records = list(inputs)
    differences = per_key_differences(actual, reference, records, key=key, value=value)
    if not differences:
        return
    total = len({key(record) for record in records} | set(_as_mapping(actual)))
    shown = differences[:show]
    lines = [
        f"{len(differences)} of {total} keys differ from the reference"
        + (f" (the first {len(shown)} shown)" if len(differences) > len(shown) else "")
        + ":"
    ]
    lines.extend(f"  {difference.describe()}" for difference in shown)
    raise AssertionError("\n".join(lines))
