"""Column-wise encoding of record batches for the exchange between worker processes.

cbor2 spends about a microsecond on every list, tuple or dict it encodes, so a batch of small
records is transposed into a few long columns of scalars before it crosses a process boundary:
a batch of ``(user, page, ts)`` tuples becomes three lists. Records that are not uniform tuples
or dicts travel row-wise. Top-level tuples and dicts come back as they left; tuples *nested
inside* a record arrive as lists (CBOR has one array type).
"""

from __future__ import annotations

from typing import Any

__all__ = ("decode_keys", "decode_records", "encode_records")

_ROWS = 0
_TUPLES = 1
_DICTS = 2


def encode_records(records: list[Any]) -> list[Any]:
    """Return a CBOR-able, column-wise form of ``records`` (see :func:`decode_records`)."""
    if not records:
        return [_ROWS, records, []]
    first = records[0]
    kinds = set(map(type, records))
    if kinds == {tuple}:
        width = len(first)
        if width and set(map(len, records)) == {width}:
            return [_TUPLES, width, list(zip(*records, strict=True))]
    elif kinds == {dict}:
        names = list(first)
        # Dicts without fields have no column to carry the batch's length: they go row-wise.
        if names and all(list(record) == names for record in records):
            return [_DICTS, names, [[record[name] for record in records] for name in names]]
    return [_ROWS, records, [i for i, record in enumerate(records) if type(record) is tuple]]


def decode_records(data: list[Any]) -> list[Any]:
    """Inverse of :func:`encode_records`."""
    kind = data[0]
    if kind == _TUPLES:
        return list(zip(*data[2], strict=True))
    if kind == _DICTS:
        names = data[1]
        return [dict(zip(names, row, strict=True)) for row in zip(*data[2], strict=True)]
    records: list[Any] = data[1]
    for index in data[2]:  # rows that left as tuples come back as tuples
        records[index] = tuple(records[index])
    return records


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(item) for item in value) if type(value) is list else value


def decode_keys(keys: list[Any]) -> list[Any]:
    """Restore tuple keys that CBOR turned into arrays (a key is never a list)."""
    if any(type(key) is list for key in keys):
        return [_as_tuple(key) for key in keys]
    return keys
