"""Column-wise encoding of record batches for the exchange between worker processes.

cbor2 spends about a microsecond on every container and 30-60 ns on every scalar it encodes
or decodes, so a batch of small records is transposed into a few long columns before it
crosses a process boundary, and each column is packed by type:

* a column of ints that fit in 64 bits travels as one byte string of little-endian int64s;
* a column of floats travels as one byte string of little-endian float64s (bit-exact: NaN,
  -0.0 and infinities survive);
* a column of strs travels as one UTF-8 byte string, the items joined by NUL;
* a column of tuples of one width is itself transposed into columns (so ``(key, (n, total))``
  records become four packed columns);
* any other column is a plain CBOR array.

A batch of ``(user, page, ts)`` tuples thus becomes two int64 buffers and one string buffer
(~60 ns per record to encode and decode, against ~500 ns as CBOR records). Records that are not
uniform tuples or dicts travel row-wise, as one column of whole records (packed when they are
all ints, floats or strs). Tuples and lists keep their type at any depth: the
packed forms restore tuples themselves, and what travels as CBOR relies on the kernel codec,
which tags tuples (``shoal.actors`` ``TUPLE_TAG``). These forms are meant to be encoded by that
codec; plain ``cbor2`` would turn tuples inside CBOR columns and rows into lists.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from typing import Any

__all__ = (
    "decode_column",
    "decode_keys",
    "decode_records",
    "encode_column",
    "encode_int_column",
    "encode_keys",
    "encode_records",
)

_ROWS = 0
_TUPLES = 1
_DICTS = 2

_CBOR = 0
_INT64 = 1
_STRS = 2
_FLOAT64 = 3
_RECORDS = 4  # a column of tuples of one width, itself column-wise (see encode_records)

_SWAP = sys.byteorder != "little"  # the wire format is little-endian


def encode_column(column: Sequence[Any]) -> list[Any]:
    """Pack one column (see the module docstring); :func:`decode_column` inverts it."""
    kinds = set(map(type, column))
    if kinds == {int}:
        try:
            packed = array("q", column)
        except OverflowError:
            pass
        else:
            if _SWAP:
                packed.byteswap()
            return [_INT64, packed.tobytes()]
    elif kinds == {str} and column:
        joined = "\x00".join(column)
        # A str holding NUL itself would split wrongly: such columns go as CBOR.
        if joined.count("\x00") == len(column) - 1:
            return [_STRS, joined.encode("utf-8", "surrogatepass")]
    elif kinds == {float}:
        floats = array("d", column)
        if _SWAP:
            floats.byteswap()
        return [_FLOAT64, floats.tobytes()]
    elif kinds == {tuple}:
        records = encode_records(column if isinstance(column, list) else list(column))
        if records[0] == _TUPLES:
            return [_RECORDS, records]
    return [_CBOR, list(column)]


def encode_int_column(column: Sequence[Any]) -> list[Any]:
    """Pack a column that is ints by construction (source offsets), without a type check.

    Anything else still round-trips: a value ``array('q')`` refuses sends the column down the
    checked path of :func:`encode_column`.
    """
    try:
        packed = array("q", column)
    except (TypeError, OverflowError):
        return encode_column(column)
    if _SWAP:
        packed.byteswap()
    return [_INT64, packed.tobytes()]


def decode_column(data: list[Any]) -> list[Any]:
    """Inverse of :func:`encode_column`."""
    kind, payload = data
    if kind == _INT64:
        packed = array("q", payload)
        if _SWAP:
            packed.byteswap()
        return packed.tolist()
    if kind == _STRS:
        return payload.decode("utf-8", "surrogatepass").split("\x00")  # type: ignore[no-any-return]
    if kind == _FLOAT64:
        floats = array("d", payload)
        if _SWAP:
            floats.byteswap()
        return floats.tolist()
    if kind == _RECORDS:
        return decode_records(payload)
    column: list[Any] = payload
    return column


def encode_records(records: list[Any]) -> list[Any]:
    """Return a CBOR-able, column-wise form of ``records`` (see :func:`decode_records`)."""
    if not records:
        return [_ROWS, [_CBOR, records]]
    first = records[0]
    kinds = set(map(type, records))
    if kinds == {tuple}:
        width = len(first)
        if width:
            try:  # strict: tuples of another width make zip raise, and the batch go row-wise
                columns = list(zip(*records, strict=True))
            except ValueError:
                columns = None
            if columns is not None and len(columns) == width:
                return [_TUPLES, width, [encode_column(column) for column in columns]]
    elif kinds == {dict}:
        names = list(first)
        # Dicts without fields have no column to carry the batch's length: they go row-wise.
        if names and all(list(record) == names for record in records):
            return [
                _DICTS,
                names,
                [encode_column([record[name] for record in records]) for name in names],
            ]
    if tuple in kinds or dict in kinds:
        return [_ROWS, [_CBOR, records]]
    # Scalars (or other values): one column of whole records, packed if ints, floats or strs.
    return [_ROWS, encode_column(records)]


def decode_records(data: list[Any]) -> list[Any]:
    """Inverse of :func:`encode_records`."""
    kind = data[0]
    if kind == _TUPLES:
        return list(zip(*map(decode_column, data[2]), strict=True))
    if kind == _DICTS:
        names = data[1]
        columns = map(decode_column, data[2])
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    return decode_column(data[1])  # the kernel codec kept tuples inside records as tuples


def encode_keys(keys: list[Any]) -> list[Any]:
    """Pack a column of keys (str, bytes, int or tuples of those).

    Keys were validated when they were routed (no bools, no floats), so an all-int column is
    packed without a per-key type check.
    """
    if keys and type(keys[0]) is int:
        return encode_int_column(keys)
    return encode_column(keys)


def decode_keys(data: list[Any]) -> list[Any]:
    """Unpack :func:`encode_keys` (tuple keys come back as tuples, see the module docstring)."""
    return decode_column(data)
