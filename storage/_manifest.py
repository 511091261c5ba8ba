"""The on-disk formats shared by checkpoints and savepoints: key-group files and manifests.

Everything is canonical CBOR (RFC 8949 core deterministic encoding through cbor2), never
pickle. A *key-group file* holds the entries of one (operator, key group), column-wise::

    {"format": 1, "kind": "full" | "delta", "operator": str, "key_group": int,
     "epoch": int, "base": int | None,
     "states": {state name: [[key bytes, ...], [value bytes or null, ...]]}}

A full file's values are never null; a delta's null value deletes its key. ``base`` is the
epoch a delta applies to. Keys and values are the bytes of ``KeyGroupStore.export_entries``
(``encode_key`` / ``encode_value``), so the format does not depend on LMDB.

A *manifest* names everything a checkpoint (or savepoint) consists of; see ``Manifest``. Its
file is ``{"format": 1, "manifest": <canonical CBOR of the body>, "xxh3_128": <checksum of
those bytes>}``, so a torn or altered manifest is detected like any other file.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import cbor2

from ._exceptions import CheckpointCorruptError
from ._files import checksum
from ._specs import (
    AggregatingStateSpec,
    ListStateSpec,
    MapStateSpec,
    ReducingStateSpec,
    StateSpec,
    ValueStateSpec,
)

__all__ = (
    "FORMAT",
    "FileRecord",
    "GroupRecord",
    "Manifest",
    "apply_file",
    "declare_operators",
    "decode_group_file",
    "describe_specs",
    "encode_group_file",
)

#: The version of every format in this module; readers refuse other versions.
FORMAT = 1

_KINDS = {
    ValueStateSpec: "value",
    ListStateSpec: "list",
    MapStateSpec: "map",
    ReducingStateSpec: "reducing",
    AggregatingStateSpec: "aggregating",
}


def describe_specs(specs: Iterable[StateSpec]) -> list[dict[str, str]]:
    """Describe state specs as plain data for a manifest: ``[{"name": ..., "kind": ...}]``.

    ``kind`` is one of ``value``, ``list``, ``map``, ``reducing``, ``aggregating``. Functions
    and defaults are code, not data, so they are not part of it.
    """
    return [{"name": spec.name, "kind": _KINDS[type(spec)]} for spec in specs]


def declare_operators(
    operators: Mapping[str, Sequence[StateSpec] | Sequence[Mapping[str, str]]],
) -> dict[str, list[dict[str, str]]]:
    """Return per operator its states as plain data, from specs or already-plain data."""
    declared: dict[str, list[dict[str, str]]] = {}
    for operator, states in operators.items():
        if states and isinstance(states[0], Mapping):
            plain = cast("Sequence[Mapping[str, str]]", states)
            declared[operator] = [dict(state) for state in plain]
        else:
            declared[operator] = describe_specs(cast("Sequence[StateSpec]", states))
    return declared


def _dumps(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def _loads(data: bytes, what: str) -> Any:
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise CheckpointCorruptError(f"{what}: not valid CBOR ({exc})", path=what) from exc


def encode_group_file(
    kind: str,
    operator: str,
    key_group: int,
    epoch: int,
    base: int | None,
    states: Mapping[str, tuple[Sequence[bytes], Sequence[bytes | None]]],
) -> bytes:
    """Encode one key-group file (see the module docstring)."""
    return _dumps(
        {
            "format": FORMAT,
            "kind": kind,
            "operator": operator,
            "key_group": key_group,
            "epoch": epoch,
            "base": base,
            "states": {name: [list(keys), list(values)] for name, (keys, values) in states.items()},
        }
    )


def decode_group_file(data: bytes, path: str) -> dict[str, Any]:
    """Decode a key-group file; ``path`` names it in errors.

    Raises:
        CheckpointCorruptError: Not a key-group file of this format.
    """
    decoded = _loads(data, path)
    if not isinstance(decoded, dict) or decoded.get("format") != FORMAT:
        raise CheckpointCorruptError(f"{path}: not a key-group file of format {FORMAT}", path=path)
    return decoded


def apply_file(entries: dict[tuple[str, bytes], bytes], decoded: Mapping[str, Any]) -> None:
    """Apply a decoded key-group file to ``entries``: a full replaces them, a delta patches."""
    if decoded["kind"] == "full":
        entries.clear()
    for name, (keys, values) in decoded["states"].items():
        for key, value in zip(keys, values, strict=True):
            if value is None:
                entries.pop((name, key), None)
            else:
                entries[(name, key)] = value


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One key-group file as a manifest lists it.

    Attributes:
        path: The file's name relative to the store's root.
        kind: ``"full"`` or ``"delta"``.
        epoch: The epoch whose state (full) or changes (delta) it holds.
        base: For a delta, the epoch it applies to; None for a full.
        checksum: XXH3-128 of the file's bytes, hex (see ``checksum``).
        size: The file's size in bytes.
        entries: How many entries (deletions included) it holds.
    """

    path: str
    kind: str
    epoch: int
    base: int | None
    checksum: str
    size: int
    entries: int

    def to_data(self) -> dict[str, Any]:
        """Return the record as plain CBOR-able data."""
        return {
            "path": self.path,
            "kind": self.kind,
            "epoch": self.epoch,
            "base": self.base,
            "xxh3_128": self.checksum,
            "size": self.size,
            "entries": self.entries,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> FileRecord:
        """Rebuild a record from ``to_data``'s output."""
        return cls(
            data["path"],
            data["kind"],
            data["epoch"],
            data["base"],
            data["xxh3_128"],
            data["size"],
            data["entries"],
        )


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """How to rebuild one (operator, key group) at ``epoch``: apply ``chain`` in order.

    The chain is a full file then deltas, or deltas alone (applied to an empty state); an
    empty chain means the key group has no state. A key-group actor gets one from the
    checkpoint store's ``write_delta``/``write_full`` and sends it (``to_data()``, plain
    CBOR-able data) to the coordinator in its acknowledgement.
    """

    operator: str
    key_group: int
    epoch: int
    chain: tuple[FileRecord, ...]

    @property
    def size(self) -> int:
        """The bytes of every file in the chain."""
        return sum(record.size for record in self.chain)

    def to_data(self) -> dict[str, Any]:
        """Return the record as plain CBOR-able data."""
        return {
            "operator": self.operator,
            "key_group": self.key_group,
            "epoch": self.epoch,
            "chain": [record.to_data() for record in self.chain],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> GroupRecord:
        """Rebuild a record from ``to_data``'s output."""
        return cls(
            data["operator"],
            data["key_group"],
            data["epoch"],
            tuple(FileRecord.from_data(record) for record in data["chain"]),
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything one checkpoint or savepoint consists of.

    Attributes:
        epoch: The checkpoint's epoch.
        num_key_groups: The key-group count every key was hashed into.
        operators: Per operator, its declared states (``describe_specs``).
        groups: Per (operator, key group), the chain of files that rebuilds it.
        positions: Source split positions: opaque CBOR-able data from the runtime.
        layout: The key-group layout (e.g. placement): opaque CBOR-able data.
        created: Unix time the manifest was made.
        kind: ``"checkpoint"`` or ``"savepoint"``.
        format: The format version (``FORMAT``).
        counters: The job's counters at this checkpoint: opaque CBOR-able data from the
            runtime (records read and written up to it, each counted once). None: not
            recorded (a manifest written before they were).
    """

    epoch: int
    num_key_groups: int
    operators: Mapping[str, Sequence[Mapping[str, str]]]
    groups: Mapping[tuple[str, int], GroupRecord]
    positions: Any = None
    layout: Any = None
    created: float = field(default_factory=time.time)
    kind: str = "checkpoint"
    format: int = FORMAT
    counters: Any = None

    def files(self) -> Iterator[FileRecord]:
        """Every file the manifest references, once each."""
        seen: set[str] = set()
        for group in self.groups.values():
            for record in group.chain:
                if record.path not in seen:
                    seen.add(record.path)
                    yield record

    def group(self, operator: str, key_group: int) -> GroupRecord:
        """Return the record of ``(operator, key_group)``.

        Raises:
            KeyError: The manifest has no such key group.
        """
        try:
            return self.groups[(operator, key_group)]
        except KeyError:
            raise KeyError(
                f"checkpoint {self.epoch} has no key group {operator}/kg-{key_group:05d}"
            ) from None

    def encode(self) -> bytes:
        """Encode as a manifest file (see the module docstring)."""
        body = _dumps(
            {
                "format": self.format,
                "kind": self.kind,
                "epoch": self.epoch,
                "created": self.created,
                "num_key_groups": self.num_key_groups,
                "operators": {op: list(states) for op, states in self.operators.items()},
                "positions": self.positions,
                "layout": self.layout,
                "counters": self.counters,
                "groups": [
                    group.to_data()
                    for _key, group in sorted(self.groups.items(), key=lambda item: item[0])
                ],
            }
        )
        return _dumps({"format": FORMAT, "manifest": body, "xxh3_128": checksum(body)})

    @classmethod
    def decode(cls, data: bytes, path: str) -> Manifest:
        """Decode a manifest file; ``path`` names it in errors.

        Raises:
            CheckpointCorruptError: Torn, altered, or of another format.
        """
        outer = _loads(data, path)
        if not isinstance(outer, dict) or outer.get("format") != FORMAT:
            raise CheckpointCorruptError(f"{path}: not a manifest of format {FORMAT}", path=path)
        body = outer.get("manifest")
        if not isinstance(body, bytes) or checksum(body) != outer.get("xxh3_128"):
            raise CheckpointCorruptError(f"{path}: manifest checksum mismatch", path=path)
        fields = _loads(body, path)
        groups = {}
        for group_data in fields["groups"]:
            group = GroupRecord.from_data(group_data)
            groups[(group.operator, group.key_group)] = group
        return cls(
            epoch=fields["epoch"],
            num_key_groups=fields["num_key_groups"],
            operators=fields["operators"],
            groups=groups,
            positions=fields["positions"],
            layout=fields["layout"],
            created=fields["created"],
            kind=fields["kind"],
            format=fields["format"],
            # An optional field of the same format: absent from older manifests.
            counters=fields.get("counters"),
        )
