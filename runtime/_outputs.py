"""Side outputs: a process function's second (third, ...) stream of results.

``ctx.output(tag, value)`` sends ``value`` to the stream ``stream.side_output(tag)`` reads
(Flink's ``OutputTag``). Inside the key-group actor a side value travels in the operator's one
output list wrapped in a :class:`SideValue` (so it keeps its place, its source position and its
timestamp like any emitted value); where the operator's output leaves the actor,
:func:`split_sides` takes the side values out, per tag, and each list goes down its own branch
of the plan (see ``_plan.py``). The wrapper never leaves the worker: what crosses to another
worker or a sink is the value itself.

A value sent to a tag no ``side_output`` reads goes to the dead letters
(:class:`~._exceptions.UnreadOutputError`): nothing is dropped silently.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ("OutputTag", "SideValue", "split_sides")

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class OutputTag:
    """The name of a side output: ``ctx.output(tag, value)`` writes to it,
    ``stream.side_output(tag)`` reads it. Two tags with the same name are the same output.

    Args:
        name: letters, digits, ``_``, ``.`` or ``-``.

    Raises:
        ValueError: the name is empty or has other characters.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                "OutputTag name must be a non-empty name of letters, digits, '_', '.' or '-'; "
                f"got {name!r}"
            )
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputTag) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("OutputTag", self.name))

    def __repr__(self) -> str:
        return f"OutputTag({self.name!r})"


class SideValue:
    """A value a process function sent to a side output, on its way to :func:`split_sides`."""

    __slots__ = ("tag", "value")

    def __init__(self, tag: str, value: Any) -> None:
        self.tag = tag
        self.value = value

    def __repr__(self) -> str:
        return f"SideValue({self.tag!r}, {self.value!r})"


Columns = tuple[list[Any], list[Any], list[Any] | None]


def split_sides(
    values: list[Any], offsets: list[Any], timestamps: list[Any] | None
) -> tuple[Columns, dict[str, Columns]]:
    """Separate the main output from the side values: ``(main, {tag: side})``, each as
    ``(values, offsets, timestamps)`` in the order they were emitted."""
    side_type = SideValue
    if not any(type(value) is side_type for value in values):
        return (values, offsets, timestamps), {}
    main: Columns = ([], [], None if timestamps is None else [])
    sides: dict[str, Columns] = {}
    stamps = timestamps if timestamps is not None else [None] * len(values)
    for value, offset, stamp in zip(values, offsets, stamps, strict=True):
        if type(value) is side_type:
            into = sides.get(value.tag)
            if into is None:
                into = sides[value.tag] = ([], [], None if timestamps is None else [])
            value = value.value
        else:
            into = main
        into[0].append(value)
        into[1].append(offset)
        if into[2] is not None:
            into[2].append(stamp)
    return main, sides
