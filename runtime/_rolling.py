"""Running sum, min and max per key, a batch at a time (``KeyedStream.sum`` / ``min`` /
``max``, and ``reduce`` of ``operator.add``, ``min`` or ``max``).

The columnar path (:func:`running_columns`) takes a key group's batch whole: the batch's
distinct keys are found once (``dict.fromkeys``, C), each one's value so far is read once
(``ValueState.values_of``), the running values of the whole batch come from one tight loop over
a plain dict (no state handle, no ``store.key``, no user function per record) and every
distinct key's last value is written once (``ValueState.update_all``). It is the per-record
fold in the same order with the same Python operations (``acc + value``; ``value < acc`` is
what ``min(acc, value)`` asks), so results are identical by construction: floats add in arrival
order (bit for bit: no pairwise summation, no reassociation), ints are Python ints (no int64
overflow), ``min`` and ``max`` keep their first argument on a tie and treat NaN as Python does.

It takes a batch only when nothing in it can fail: every value an int or every value a float
for ``sum`` (``int + float`` raises ``OverflowError`` for a huge int), ints and floats for
``min``/``max``, and every key's value so far of those types too. Any other batch (a string, a
bool, a mix) goes record by record (:func:`fold_per_record`, the plain reduce's path too), where
a bad value is a dead letter with its error and position and the rest of the batch goes on.

numpy does not pay here (measured; see docs/benchmarks.md, "Columnar sum, min and max"): a key
group's batch is ~64 records in a job of 128 key groups, where converting to and from arrays
costs more than the loop, and at 8,192 records the conversions alone still cost as much.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from shoal.storage import KeyGroupStore, ValueState

__all__ = ("NUMBERS", "fold_per_record", "not_a_number", "running_columns")

#: The value types ``sum``, ``min`` and ``max`` take (a bool is not one of them: adding flags
#: is more often a mistake than meant; ``int(flag)`` says it is meant).
NUMBERS = frozenset((int, float))
_NONE = type(None)


class _DeadLetters(Protocol):
    def add(
        self, operator: str, exc: BaseException, split: str, offset: Any, record: Any, key: Any
    ) -> None: ...


def not_a_number(kind: str, value: Any) -> TypeError:
    """The dead letter's error for a value ``sum``/``min``/``max`` cannot take."""
    return TypeError(f"{kind} takes int or float values; got {type(value).__name__} {value!r}")


def running_columns(
    kind: str, state: ValueState, keys: list[Any], values: list[Any]
) -> list[Any] | None:
    """The running ``kind`` ("sum", "min", "max") of every record of a batch, in input order,
    with the state updated; None (nothing read or written) when the batch must go record by
    record (see the module docstring)."""
    if not keys:
        return []
    types = set(map(type, values))
    if kind == "sum" and len(types) != 1:
        return None
    if not types <= NUMBERS:
        return None
    acc = state.values_of(dict.fromkeys(keys))
    held = set(map(type, acc.values()))
    held.discard(_NONE)
    if not held <= (types if kind == "sum" else NUMBERS):
        return None
    running: list[Any] = []
    emit = running.append
    if kind == "sum":
        for key, value in zip(keys, values, strict=True):
            total = acc[key]
            total = value if total is None else total + value
            acc[key] = total
            emit(total)
    elif kind == "min":
        for key, value in zip(keys, values, strict=True):
            low = acc[key]
            if low is None or value < low:
                acc[key] = low = value
            emit(low)
    else:
        for key, value in zip(keys, values, strict=True):
            high = acc[key]
            if high is None or value > high:
                acc[key] = high = value
            emit(high)
    state.update_all(acc)
    return running


def fold_per_record(
    name: str,
    kind: str | None,
    fn: Callable[[Any, Any], Any],
    store: KeyGroupStore,
    state: ValueState,
    keys: list[Any],
    values: list[Any],
    records: list[Any],
    offsets: list[Any],
    split: str,
    dead: _DeadLetters,
) -> tuple[list[Any], list[Any]]:
    """``acc = fn(acc, value)`` record by record (a key's first value is its ``acc``), each
    running value emitted as ``(key, acc)``: a ``reduce``, and ``sum``/``min``/``max``
    (``kind``) where a batch cannot go as columns. A value whose fold raises (or, for a
    ``kind``, that is not an int or a float) is a dead letter naming ``records[i]`` (the
    record, where ``values[i]`` is what was taken of it); the rest go on."""
    get = state.value
    put = state.update
    out_values: list[Any] = []
    out_offsets: list[Any] = []
    emit = out_values.append
    for key, value, record, offset in zip(keys, values, records, offsets, strict=True):
        if kind is not None and type(value) not in NUMBERS:
            dead.add(name, not_a_number(kind, value), split, offset, record, key)
            continue
        store.key = key
        acc = get()
        try:
            acc = value if acc is None else fn(acc, value)
            put(acc)  # raises StateEncodeError for a value CBOR cannot encode
        except Exception as exc:
            dead.add(name, exc, split, offset, record, key)
            continue
        emit((key, acc))
        out_offsets.append(offset)
    return out_values, out_offsets
