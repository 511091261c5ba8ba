"""Running sum, min, max and mean per key, a batch at a time (``KeyedStream.sum`` / ``min`` /
``max`` / ``mean``, and ``reduce`` of ``operator.add``, ``min`` or ``max``).

The columnar path (:func:`running_columns`) takes a key group's batch whole: the batch's
distinct keys are found once (``dict.fromkeys``, C), each one's value so far is read once
(``ValueState.values_of``), the running values of the whole batch come from one tight loop over
a plain dict (no state handle, no ``store.key``, no user function per record) and every
distinct key's last value is written once (``ValueState.update_all``). It is the per-record
fold in the same order with the same Python operations (``acc + value``; ``value < acc`` is
what ``min(acc, value)`` asks), so results are identical by construction: floats add in arrival
order (bit for bit: no pairwise summation, no reassociation), ints are Python ints (no int64
overflow), ``min`` and ``max`` keep their first argument on a tie and treat NaN as Python does.

``mean`` keeps ``[count, total]`` per key (the total as ``sum`` keeps it) and emits
``total / count``: the same operations record by record (:func:`mean_start`, :func:`mean_add`,
:func:`mean_result`) and as columns (a count and a total per distinct key in plain dicts).

It takes a batch only when nothing in it can fail: every value an int or every value a float
for ``sum`` and ``mean`` (``int + float`` raises ``OverflowError`` for a huge int), ints and
floats for ``min``/``max``, and every key's value so far of those types too; a ``mean`` whose
``int / int`` is too large for a float (``OverflowError``) sends the whole batch record by
record, before anything is written, where that record is a dead letter. Any other batch (a string, a
bool, a mix) goes record by record (:func:`fold_per_record`, the plain reduce's path too), where
a bad value is a dead letter with its error and position and the rest of the batch goes on.

numpy does not pay here (measured; see docs/benchmarks.md, "Columnar sum, min, max and mean"): a key
group's batch is ~64 records in a job of 128 key groups, where converting to and from arrays
costs more than the loop, and at 8,192 records the conversions alone still cost as much.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from shoal.storage import KeyGroupStore, ValueState

__all__ = (
    "NUMBERS",
    "fold_per_record",
    "mean_add",
    "mean_result",
    "mean_start",
    "not_a_number",
    "running_columns",
)

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


def mean_start(value: Any) -> list[Any]:
    """A key's first value: its ``[count, total]``."""
    return [1, value]


def mean_add(acc: list[Any], value: Any) -> list[Any]:
    """``[count, total]`` after one more value (``total + value``, as ``sum`` adds)."""
    return [acc[0] + 1, acc[1] + value]


def mean_result(acc: list[Any]) -> Any:
    """The mean of ``[count, total]``: ``total / count`` (a float)."""
    return acc[1] / acc[0]


def _itself(value: Any) -> Any:
    return value


#: What a key's first value starts and what is emitted of an accumulator, by kind (not
#: there: the value itself, the accumulator itself).
_START: dict[str | None, Callable[[Any], Any]] = {"mean": mean_start}
_RESULT: dict[str | None, Callable[[Any], Any]] = {"mean": mean_result}


def running_columns(
    kind: str, state: ValueState, keys: list[Any], values: list[Any]
) -> list[Any] | None:
    """The running ``kind`` ("sum", "min", "max", "mean") of every record of a batch, in
    input order, with the state updated; None (nothing written) when the batch must go
    record by record (see the module docstring)."""
    if not keys:
        return []
    types = set(map(type, values))
    if kind in ("sum", "mean") and len(types) != 1:
        return None
    if not types <= NUMBERS:
        return None
    acc = state.values_of(dict.fromkeys(keys))
    if kind == "mean":
        return _running_means(state, acc, types, keys, values)
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


def _running_means(
    state: ValueState,
    acc: dict[Any, Any],
    types: set[type],
    keys: list[Any],
    values: list[Any],
) -> list[Any] | None:
    """``running_columns`` for "mean": ``acc`` holds each distinct key's ``[count, total]``
    (None: not seen yet); ``types`` is the batch's one value type. One loop over a new
    ``[count, total]`` list per distinct key (copies: the cached ones stay as they are until
    the batch is done), which become the state as they are."""
    pairs: dict[Any, list[Any]] = {}
    for key, held in acc.items():
        if held is None:
            pairs[key] = [0, None]
        elif type(held[1]) in types:
            pairs[key] = [*held]
        else:
            return None
    running: list[Any] = []
    emit = running.append
    try:
        for key, value in zip(keys, values, strict=True):
            pair = pairs[key]
            count = pair[0] + 1
            total = pair[1]
            total = value if total is None else total + value
            pair[0] = count
            pair[1] = total
            emit(total / count)
    except OverflowError:  # an int total too large for a float: record by record
        return None
    state.update_all(pairs)
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
    running value emitted as ``(key, acc)``: a ``reduce``, and ``sum``/``min``/``max``/
    ``mean`` (``kind``; a mean starts ``[1, value]`` and emits ``total / count``) where a batch
    cannot go as columns. A value whose fold raises (or, for a ``kind``, that is not an int or
    a float) is a dead letter naming ``records[i]`` (the record, where ``values[i]`` is what
    was taken of it); the rest go on."""
    get = state.value
    put = state.update
    start = _START.get(kind, _itself)
    result = _RESULT.get(kind)
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
            acc = fn(acc, value) if acc is not None else start(value)
            out = acc if result is None else result(acc)
            put(acc)  # raises StateEncodeError for a value CBOR cannot encode
        except Exception as exc:
            dead.add(name, exc, split, offset, record, key)
            continue
        emit((key, out))
        out_offsets.append(offset)
    return out_values, out_offsets
