"""The key and value encodings: canonical CBOR for keys, plain CBOR for values.

The key encoding is frozen: the runtime hashes ``encode_key(key)`` to assign key groups and
savepoints store it, so the same key must give the same bytes in every process and release.
It is RFC 8949 core deterministic encoding (``cbor2.dumps(key, canonical=True)``) of a
restricted set of types: ``str``, ``bytes``, ``int`` (not ``bool``) and tuples of those,
nested. Tuples encode as CBOR arrays and decode back as tuples.

Byte order of encoded keys (the order LMDB keeps and range scans follow): non-negative ints
below 2**64 sort numerically and before negative ints; negative ints sort as -1, -2, ...;
strings and byte strings sort shorter-first, then bytewise (UTF-8 for str); ints sort before
bytes, bytes before str, str before tuples.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from itertools import chain
from operator import sub
from typing import Any

import cbor2

from ._exceptions import DecodeError, EncodeError, InvalidKeyError

__all__ = (
    "check_key",
    "check_keys",
    "decode_key",
    "decode_value",
    "encode_key",
    "encode_keys",
    "encode_value",
    "encode_values",
)

#: Tuples nested deeper than this are refused: decoding would hit cbor2's depth guard.
MAX_KEY_DEPTH = 32

_dumps = cbor2.dumps
_loads = cbor2.loads


def _key_problem(key: object, depth: int = 0) -> str | None:
    """Return what is wrong with ``key`` ("list", "float inside a tuple"), or None if valid."""
    kind = type(key)
    if kind is str or kind is int or kind is bytes:
        return None
    if kind is not tuple:
        return kind.__name__
    if depth >= MAX_KEY_DEPTH:
        return f"tuples nested more than {MAX_KEY_DEPTH} deep"
    for item in key:  # type: ignore[attr-defined]
        problem = _key_problem(item, depth + 1)
        if problem is not None:
            if problem.endswith((" deep", " a tuple")):
                return problem
            return f"{problem} inside a tuple"
    return None


def _key_error(what: str, problem: str) -> InvalidKeyError:
    message = f"{what} must be str, bytes, int or a tuple of those; got {problem}"
    if problem == "list" or problem == "list inside a tuple":
        message += " — did you mean a tuple?"
    elif problem == "coroutine":
        message += " — the key function is async (or returns a coroutine): key functions are plain"
    return InvalidKeyError(message)


def check_key(key: object, *, what: str = "key") -> None:
    """Check that ``key`` can be a state key (or, with ``what="map key"``, a MapState key).

    Only exact ``str``, ``bytes`` and ``int`` (not ``bool``, not subclasses such as enums)
    and tuples of those are keys: they hash and compare the same in every process, and their
    encoding is canonical.

    Args:
        key: The candidate key.
        what: How to name the key in the error message.

    Raises:
        InvalidKeyError: A ``TypeError`` whose message names the offending type, e.g.
            ``key must be str, bytes, int or a tuple of those; got list — did you mean a
            tuple?``.
    """
    problem = _key_problem(key)
    if problem is not None:
        raise _key_error(what, problem)


_SCALAR_KEY_TYPES = frozenset((str, int, bytes))
_TUPLE_ONLY = {tuple}


def check_keys(keys: Iterable[object], *, what: str = "key") -> None:
    """Check every key of ``keys`` as :func:`check_key` does; raise for the first bad one.

    A column of exact str, int and bytes keys, or of flat tuples of those, is checked in
    C-level passes over the types (~20-40 ns per key); only a column holding anything else
    (nested tuples, a mix of tuples and scalars, invalid keys) is checked key by key.

    Raises:
        InvalidKeyError: Some key is not a valid key (the first one is named).
    """
    if not isinstance(keys, list | tuple):
        keys = list(keys)
    kinds = set(map(type, keys))
    if kinds <= _SCALAR_KEY_TYPES:
        return
    if kinds == _TUPLE_ONLY:
        tuples: list[tuple[object, ...]] = keys  # type: ignore[assignment]
        if set(map(type, chain.from_iterable(tuples))) <= _SCALAR_KEY_TYPES:
            return
    for key in keys:
        problem = _key_problem(key)
        if problem is not None:
            raise _key_error(what, problem)


def encode_key(key: object) -> bytes:
    """Encode a key as canonical CBOR.

    Guarantees: deterministic across processes, machines and releases (fixed vectors are
    pinned in the tests); injective (different keys give different bytes); prefix-free (no
    encoding is a proper prefix of another), so ``encode_key(a) + encode_key(b)`` is a
    composite key that splits back unambiguously.

    Raises:
        InvalidKeyError: ``key`` is not a valid key (see ``check_key``).
    """
    kind = type(key)
    if not (kind is str or kind is int or kind is bytes):
        check_key(key)
    return _dumps(key, canonical=True)


def _encode_each(items: Iterable[object], canonical: bool) -> list[bytes]:
    """Return ``[cbor2.dumps(item, canonical=canonical) for item in items]``, in C loops.

    One encoder writes every item into one buffer (``cbor2.dumps`` builds an encoder and a
    buffer per call, which costs more than encoding an int or a short str); ``truncate()``
    with no size (the ``None`` that ``encode`` returns) leaves the buffer as is and gives the
    end of the item just written, and the buffer is then read back item by item. The encoder
    keeps no state between items (no value sharing, no string references), so each item's
    bytes are exactly its own ``dumps``.
    """
    buffer = io.BytesIO()
    ends = list(
        map(buffer.truncate, map(cbor2.CBOREncoder(buffer, canonical=canonical).encode, items))
    )
    buffer.seek(0)
    return list(map(buffer.read, map(sub, ends, chain((0,), ends))))


def encode_keys(keys: Iterable[object]) -> list[bytes]:
    """Return ``[encode_key(key) for key in keys]`` for keys that are exact str, int or bytes.

    Much faster than calling ``encode_key`` per key, and the bytes are the same (the same
    canonical CBOR). It does not check the keys: the caller must know that each one's type
    is exactly ``str``, ``int`` or ``bytes`` (anything else would be encoded, not refused).
    """
    return _encode_each(keys, True)


def encode_values(values: Iterable[object]) -> list[bytes]:
    """Return ``[encode_value(value) for value in values]``, much faster.

    Raises:
        EncodeError: Some value has no CBOR encoding (call ``encode_value`` per value to
            find which one).
    """
    try:
        return _encode_each(values, False)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise EncodeError(f"cannot encode a value as CBOR: {exc}") from exc


def decode_key(data: bytes) -> Any:
    """Decode bytes made by ``encode_key``; CBOR arrays come back as tuples.

    Raises:
        DecodeError: ``data`` is not exactly one canonical key encoding.
    """
    try:
        key = _loads(data, immutable=True)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise DecodeError(f"not a key encoding: {bytes(data)[:32].hex()} ({exc})") from exc
    # Re-encoding also catches trailing bytes, which cbor2.loads ignores.
    if _key_problem(key) is not None or _dumps(key, canonical=True) != data:
        raise DecodeError(f"not a canonical key encoding: {bytes(data)[:32].hex()}")
    return key


def split_composite(data: bytes) -> tuple[bytes, bytes]:
    """Split ``encode_key(a) + encode_key(b)`` into its two encodings.

    Raises:
        DecodeError: ``data`` does not start with one complete CBOR item.
    """
    try:
        decoder = cbor2.CBORDecoder(io.BytesIO(data))
        decoder.decode()
        cut = decoder.fp.tell()
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise DecodeError(f"not a composite key: {bytes(data)[:32].hex()} ({exc})") from exc
    return bytes(data[:cut]), bytes(data[cut:])


def encode_value(value: object) -> bytes:
    """Encode a state value as CBOR.

    Values round-trip as CBOR does: tuples come back as lists, and anything cbor2 cannot
    encode (arbitrary objects) is refused. No pickle is ever used.

    Raises:
        EncodeError: ``value`` (or something inside it) has no CBOR encoding.
    """
    try:
        return _dumps(value)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise EncodeError(f"cannot encode {type(value).__name__} value as CBOR: {exc}") from exc


def decode_value(data: bytes) -> Any:
    """Decode bytes made by ``encode_value``.

    Raises:
        DecodeError: ``data`` is not valid CBOR.
    """
    try:
        return _loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise DecodeError(f"not a value encoding: {bytes(data)[:32].hex()} ({exc})") from exc
