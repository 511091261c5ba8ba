"""CBOR encoding of messages that cross a process boundary (never pickle).

Plain CBOR values (None, bool, int, float, str, bytes, lists, dicts, ...) travel as they are.
Tuples stay tuples, at any depth (also as dict keys): a tuple is encoded as CBOR tag
:data:`TUPLE_TAG` around an array, so a flow gives the same values across processes as in one
loop. Other classes must be registered with :func:`register_message`:

* a frozen dataclass is encoded as CBOR tag 27 ("serialised object", RFC 8949 registry) around
  ``[tag, field1, field2, ...]`` (its ``__init__`` fields, in order) and rebuilt with
  ``cls(*fields)``;
* a class that defines ``to_wire(self)`` and a classmethod ``from_wire(cls, data)`` is encoded as
  tag 27 around ``[tag, obj.to_wire()]`` and rebuilt with ``cls.from_wire(data)``: use this to
  encode bulky data column-wise.

Registration is explicit and happens when *you* call it (nothing is registered at import): do it
in the module that defines the class, so every process that imports the class registers it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import cbor2

from ._exceptions import MessageDecodeError, MessageEncodeError

__all__ = ("Codec", "default_codec", "register_message")

#: CBOR tag 27: "serialised language-independent object with type name and constructor arguments".
OBJECT_TAG = 27

#: The tag around an array that was a tuple. Unregistered, from the first-come-first-served
#: range (three bytes on the wire); it is private to shoal's wire protocol, never stored on disk.
TUPLE_TAG = 0x8754


def _encode_tuple(encoder: cbor2.CBOREncoder, value: tuple[Any, ...]) -> None:
    encoder.encode_length(6, TUPLE_TAG)  # major type 6: a tag
    encoder.encode_array(value)


def _decode_tuple(value: Any, immutable: bool) -> tuple[Any, ...]:
    return tuple(value)


# cbor2 has no tuple type of its own (it encodes tuples as arrays, before ``default`` could see
# them), so tuples are overridden here. Giving cbor2 any ``encoders`` mapping costs every encoded
# item ~100 ns more (its C fast path is skipped): measured in docs/architecture.md; the runtime
# keeps the items it sends few by packing record batches column-wise (runtime/_columns.py).
_ENCODERS: dict[type, Callable[[cbor2.CBOREncoder, Any], None]] = {tuple: _encode_tuple}


class Codec:
    """Encodes and decodes messages with cbor2, knowing the registered message classes."""

    def __init__(self) -> None:
        self._encoders: dict[type, Callable[[Any], list[Any]]] = {}
        self._decoders: dict[str, Callable[[list[Any]], Any]] = {}
        self._tags: dict[type, str] = {}
        self._semantic = {OBJECT_TAG: self._decode_object, TUPLE_TAG: _decode_tuple}

    def register(self, cls: type, tag: str) -> None:
        """Register ``cls`` under ``tag`` (see the module docstring for the two encodings).

        Registering the same class under the same tag again is a no-op, so a module that is
        imported twice (or a bootstrap file loaded again) does no harm.

        Raises:
            ValueError: the tag or the class is already registered differently, or a dataclass
                is not frozen.
            TypeError: ``cls`` is neither a dataclass nor defines to_wire/from_wire.
        """
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"message tag must be a non-empty str; got {tag!r}")
        known = self._tags.get(cls)
        if known == tag:
            return
        if known is not None:
            raise ValueError(
                f"{cls.__qualname__} is already registered as {known!r}; cannot register it"
                f" again as {tag!r}"
            )
        if tag in self._decoders:
            raise ValueError(f"message tag {tag!r} is already used by another class")
        if callable(getattr(cls, "to_wire", None)) and callable(getattr(cls, "from_wire", None)):
            from_wire = cls.from_wire  # type: ignore[attr-defined]

            def encode_wire(obj: Any) -> list[Any]:
                return [tag, obj.to_wire()]

            def decode_wire(value: list[Any]) -> Any:
                return from_wire(value[1])

            self._encoders[cls] = encode_wire
            self._decoders[tag] = decode_wire
        elif dataclasses.is_dataclass(cls):
            if not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
                raise ValueError(
                    f"{cls.__qualname__} must be a frozen dataclass to be a message"
                    " (@dataclass(frozen=True, slots=True))"
                )
            names = [f.name for f in dataclasses.fields(cls) if f.init]
            if not names:

                def encode_fields(obj: Any) -> list[Any]:
                    return [tag]

            elif len(names) == 1:
                single = attrgetter(names[0])

                def encode_fields(obj: Any) -> list[Any]:
                    return [tag, single(obj)]

            else:
                several = attrgetter(*names)

                def encode_fields(obj: Any) -> list[Any]:
                    return [tag, *several(obj)]

            def decode_fields(value: list[Any]) -> Any:
                return cls(*value[1:])

            self._encoders[cls] = encode_fields
            self._decoders[tag] = decode_fields
        else:
            raise TypeError(
                f"{cls.__qualname__} cannot be registered as a message: make it a frozen"
                " dataclass or give it to_wire() and a from_wire() classmethod"
            )
        self._tags[cls] = tag

    def is_registered(self, cls: type) -> bool:
        """Whether ``cls`` has been registered."""
        return cls in self._tags

    def encode(self, obj: Any) -> bytes:
        """Encode ``obj`` as one CBOR item.

        Raises:
            MessageEncodeError: something in ``obj`` is neither plain CBOR nor registered.
        """
        try:
            return cbor2.dumps(obj, default=self._default, encoders=_ENCODERS)
        except MessageEncodeError:
            raise
        except (cbor2.CBORError, TypeError, ValueError) as exc:
            cause = exc.__cause__
            if isinstance(cause, MessageEncodeError):
                raise MessageEncodeError(str(cause)) from None
            raise MessageEncodeError(f"cannot encode message: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        """Decode one CBOR item produced by :meth:`encode` (in any process).

        Raises:
            MessageDecodeError: the data is not valid CBOR or names an unregistered tag.
        """
        try:
            return cbor2.loads(data, semantic_decoders=self._semantic)
        except (cbor2.CBORError, TypeError, ValueError, IndexError) as exc:
            cause = exc.__cause__
            if isinstance(cause, MessageDecodeError):
                raise MessageDecodeError(str(cause)) from None
            raise MessageDecodeError(f"cannot decode message: {exc}") from exc

    def _default(self, encoder: cbor2.CBOREncoder, obj: Any) -> None:
        try:
            encode = self._encoders[type(obj)]
        except KeyError:
            raise MessageEncodeError(
                f"{type(obj).__qualname__} cannot cross a process boundary: register it with"
                " register_message(cls, tag), or send plain CBOR values"
            ) from None
        encoder.encode(cbor2.CBORTag(OBJECT_TAG, encode(obj)))

    def _decode_object(self, value: Any, immutable: bool) -> Any:
        if not isinstance(value, list | tuple) or not value or not isinstance(value[0], str):
            raise MessageDecodeError(f"malformed tagged object: {value!r}")
        try:
            decode = self._decoders[value[0]]
        except KeyError:
            raise MessageDecodeError(
                f"unknown message tag {value[0]!r}: register the class with register_message()"
                " in this process too"
            ) from None
        return decode(list(value))


#: The codec the kernel uses for everything that crosses a process.
default_codec = Codec()


def register_message(cls: type, tag: str) -> None:
    """Register a message class with the kernel codec so it can cross processes.

    Args:
        cls: a frozen dataclass, or a class with ``to_wire()`` and classmethod ``from_wire()``.
        tag: a name unique among registered classes, stable across processes and releases.
    """
    default_codec.register(cls, tag)
