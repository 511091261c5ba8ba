"""Savepoints: a self-contained, canonical copy of a job's state, independent of LMDB.

A savepoint is a directory (or fsspec URL) holding one full key-group file per (operator, key
group) that has state, and a manifest written last::

    manifest.cbor                           the Manifest (kind "savepoint"), checksummed
    <operator>/kg-<key group:05d>.cbor      a full key-group file (see shoal.storage._manifest)

It needs nothing else to be read: no delta chain, no other checkpoint. A loader reads it by
(operator, key group) whatever worker count wrote it, so a job can resume from it with any
number of workers; ``rewrite`` changes ``num_key_groups`` offline. The functions here are what
the ``shoal state`` commands wrap; the key hash is the runtime's, passed in as ``group_of``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._checkpoint import CheckpointStore, group_columns, load_chain, read_verified, write_group_file
from ._codec import decode_key, decode_value, encode_key, split_composite
from ._exceptions import CheckpointCorruptError, CheckpointError, CheckpointWriteError
from ._files import Location
from ._manifest import FileRecord, GroupRecord, Manifest, declare_operators, decode_group_file
from ._specs import StateSpec

__all__ = (
    "GroupInfo",
    "SavepointInfo",
    "VerifyReport",
    "inspect_savepoint",
    "load_savepoint_group",
    "read_savepoint",
    "rewrite_savepoint",
    "savepoint_from_checkpoint",
    "verify_checkpoints",
    "verify_savepoint",
    "write_savepoint",
)

MANIFEST = "manifest.cbor"

Entries = Iterable[tuple[str, bytes, bytes]]


def _file_name(operator: str, key_group: int) -> str:
    return f"{operator}/kg-{key_group:05d}.cbor"


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """What one (operator, key group) of a savepoint holds.

    Attributes:
        operator: The operator.
        key_group: The key group.
        entries_by_state: ``(state, entries)`` for every declared state (a MapState counts
            one per map entry).
        bytes: The size of its file (0 without state).
    """

    operator: str
    key_group: int
    entries_by_state: tuple[tuple[str, int], ...]
    bytes: int

    @property
    def entries(self) -> int:
        """Entries over all states."""
        return sum(count for _state, count in self.entries_by_state)


@dataclass(frozen=True, slots=True)
class SavepointInfo:
    """What ``inspect_savepoint`` found.

    Attributes:
        epoch: The epoch the state is at.
        num_key_groups: The key-group count of its layout.
        operators: Per operator, its declared states (``{"name", "kind"}``).
        positions: The source positions it resumes from.
        groups: One ``GroupInfo`` per (operator, key group), sorted.
        values: With ``key=``: ``{(operator, state): value}`` of that key, decoded (a MapState
            gives a dict of its entries); states without a value are left out.
    """

    epoch: int
    num_key_groups: int
    operators: Mapping[str, Sequence[Mapping[str, str]]]
    positions: Any
    groups: tuple[GroupInfo, ...]
    values: Mapping[tuple[str, str], Any]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify_savepoint`` checked.

    Attributes:
        ok: Every file is present with its recorded size and checksum.
        files: Files checked.
        bytes: Their bytes.
        problems: One message per bad file (or a bad manifest), naming it.
    """

    ok: bool
    files: int
    bytes: int
    problems: tuple[str, ...]


def write_savepoint(
    url: str | os.PathLike[str],
    groups: Iterable[tuple[str, int, Entries]],
    *,
    epoch: int,
    num_key_groups: int,
    operators: Mapping[str, Sequence[StateSpec] | Sequence[Mapping[str, str]]],
    positions: Any = None,
    layout: Any = None,
    counters: Any = None,
    fs: Any = None,
) -> Manifest:
    """Write a savepoint from ``(operator, key group, entries)`` triples, manifest last.

    ``entries`` are as ``KeyGroupStore.export_entries`` (or ``StoreSnapshot.entries``, or
    ``CheckpointStore.load_group``) gives them. Every key group of every operator in
    ``operators`` must be given once, also those without state.

    Raises:
        CheckpointError: ``url`` already holds a savepoint, or a key group is missing,
            repeated or of an undeclared operator.
        CheckpointWriteError: The filesystem failed; everything written is removed.
    """
    location = Location(url, fs=fs)
    if location.exists(MANIFEST):
        raise CheckpointError(
            f"{location.url} already holds a savepoint; choose another path or delete it"
        )
    declared = declare_operators(operators)
    written: list[str] = []
    try:
        records = _write_groups(location, groups, epoch, num_key_groups, declared, written)
        manifest = Manifest(
            epoch=epoch,
            num_key_groups=num_key_groups,
            operators=declared,
            groups=records,
            positions=positions,
            layout=layout,
            kind="savepoint",
            counters=counters,
        )
        try:
            location.write(MANIFEST, manifest.encode(), atomic=True)
        except OSError as exc:
            raise CheckpointWriteError(
                f"cannot write {MANIFEST} under {location.url}: {exc}", path=MANIFEST
            ) from exc
    except BaseException:
        for name in written:
            location.delete(name)
        raise
    return manifest


def _write_groups(
    location: Location,
    groups: Iterable[tuple[str, int, Entries]],
    epoch: int,
    num_key_groups: int,
    declared: Mapping[str, object],
    written: list[str],
) -> dict[tuple[str, int], GroupRecord]:
    """Write each group's full file (appending names to ``written`` first); return records."""
    records: dict[tuple[str, int], GroupRecord] = {}
    for operator, key_group, entries in groups:
        where = f"{operator}/kg-{key_group:05d}"
        if operator not in declared:
            raise CheckpointError(f"key group {where} names an undeclared operator")
        if (operator, key_group) in records or not 0 <= key_group < num_key_groups:
            raise CheckpointError(
                f"key group {where} is given twice or outside 0..{num_key_groups - 1}"
            )
        columns, count = group_columns(entries)
        chain: tuple[FileRecord, ...] = ()
        if count:
            name = _file_name(operator, key_group)
            written.append(name)
            record = write_group_file(
                location,
                name,
                kind="full",
                operator=operator,
                key_group=key_group,
                epoch=epoch,
                base=None,
                columns=columns,
                entries=count,
            )
            chain = (record,)
        records[(operator, key_group)] = GroupRecord(operator, key_group, epoch, chain)
    missing = len(declared) * num_key_groups - len(records)
    if missing:
        raise CheckpointError(
            f"savepoint lacks {missing} key group(s); give every key group of every "
            "operator, also those without state"
        )
    return records


def savepoint_from_checkpoint(
    store: CheckpointStore,
    manifest: Manifest,
    url: str | os.PathLike[str],
    *,
    fs: Any = None,
) -> Manifest:
    """Materialize a completed checkpoint (full + deltas) as a savepoint at ``url``.

    Raises:
        CheckpointCorruptError: A checkpoint file fails its checksum (named).
        CheckpointError, CheckpointWriteError: As ``write_savepoint``.
    """
    return write_savepoint(
        url,
        (
            (operator, key_group, store.load_group(manifest, operator, key_group))
            for operator, key_group in sorted(manifest.groups)
        ),
        epoch=manifest.epoch,
        num_key_groups=manifest.num_key_groups,
        operators=manifest.operators,
        positions=manifest.positions,
        layout=manifest.layout,
        counters=manifest.counters,
        fs=fs,
    )


def read_savepoint(url: str | os.PathLike[str], *, fs: Any = None) -> Manifest:
    """Return the manifest of the savepoint at ``url``.

    Raises:
        CheckpointCorruptError: The manifest is missing, torn or altered.
    """
    location = Location(url, fs=fs)
    try:
        data = location.read(MANIFEST)
    except FileNotFoundError:
        raise CheckpointCorruptError(
            f"{MANIFEST}: missing; is {location.url} a savepoint?", path=MANIFEST
        ) from None
    return Manifest.decode(data, MANIFEST)


def load_savepoint_group(
    url: str | os.PathLike[str],
    manifest: Manifest,
    operator: str,
    key_group: int,
    *,
    fs: Any = None,
) -> list[tuple[str, bytes, bytes]]:
    """Return one key group's entries, verified, for ``KeyGroupStore.restore``.

    Raises:
        KeyError: The savepoint has no such key group (its ``num_key_groups`` differs from
            the job's: ``rewrite_savepoint`` first).
        CheckpointCorruptError: Its file fails its checksum (named).
    """
    chain = manifest.group(operator, key_group).chain
    return load_chain(Location(url, fs=fs), operator, key_group, chain)


def verify_savepoint(url: str | os.PathLike[str], *, fs: Any = None) -> VerifyReport:
    """Check the manifest and every file's size and checksum; never raises for bad files."""
    location = Location(url, fs=fs)
    try:
        manifest = read_savepoint(url, fs=fs)
    except CheckpointCorruptError as exc:
        return VerifyReport(False, 0, 0, (str(exc),))
    problems = []
    files = size = 0
    for record in manifest.files():
        files += 1
        size += record.size
        try:
            read_verified(location, record)
        except CheckpointCorruptError as exc:
            problems.append(str(exc))
    return VerifyReport(not problems, files, size, tuple(problems))


def verify_checkpoints(url: str | os.PathLike[str], *, fs: Any = None) -> dict[int, VerifyReport]:
    """Check every checkpoint of the checkpoint directory at ``url`` that has a manifest:
    the manifest's own checksum, then every file it references (size and checksum).

    A file shared by several checkpoints (a full and the deltas on top of it) is read once
    and reported under each checkpoint that references it: each report says whether that
    checkpoint can be restored. Files of checkpoints that never completed (no manifest) carry
    no checksum to check and are not read. Never raises for bad files.

    Returns:
        epoch -> its report, oldest first (empty: the directory has no manifest).
    """
    store = CheckpointStore(url, fs=fs)
    seen: dict[str, str | None] = {}  # path -> its problem (None: good)
    reports: dict[int, VerifyReport] = {}
    for epoch in store.epochs():
        try:
            manifest = store.read_manifest(epoch)
        except CheckpointCorruptError as exc:
            reports[epoch] = VerifyReport(False, 0, 0, (str(exc),))
            continue
        problems = []
        files = size = 0
        for record in manifest.files():
            files += 1
            size += record.size
            if record.path not in seen:
                try:
                    read_verified(store.location, record)
                except CheckpointCorruptError as exc:
                    seen[record.path] = str(exc)
                else:
                    seen[record.path] = None
            problem = seen[record.path]
            if problem is not None:
                problems.append(problem)
        reports[epoch] = VerifyReport(not problems, files, size, tuple(problems))
    return reports


def _map_states(manifest: Manifest, operator: str) -> set[str]:
    return {state["name"] for state in manifest.operators[operator] if state["kind"] == "map"}


def inspect_savepoint(
    url: str | os.PathLike[str],
    *,
    key: Any = None,
    group_of: Callable[[bytes, int], int] | None = None,
    fs: Any = None,
) -> SavepointInfo:
    """List what a savepoint holds, and the values of one key if ``key`` is given.

    Reads (and verifies) every file to count entries per state.

    Args:
        key: A key as a Python value (encoded with ``encode_key``); its value in every
            state of every operator is looked up.
        group_of: The runtime's ``(key bytes, num_key_groups) -> key group``; given, only
            the key's group is searched for ``key`` (else every group is).

    Raises:
        CheckpointCorruptError: The manifest or a file fails its checksum (named).
        InvalidKeyError: ``key`` is not a valid key.
    """
    location = Location(url, fs=fs)
    manifest = read_savepoint(url, fs=fs)
    wanted = None if key is None else encode_key(key)
    target = (
        None if wanted is None or group_of is None else group_of(wanted, manifest.num_key_groups)
    )
    infos = []
    values: dict[tuple[str, str], Any] = {}
    for (operator, key_group), group in sorted(manifest.groups.items()):
        counts: Counter[str] = Counter()
        maps = _map_states(manifest, operator)
        for record in group.chain:
            decoded = decode_group_file(read_verified(location, record), record.path)
            for state, (keys, state_values) in decoded["states"].items():
                counts[state] += len(keys)
                if wanted is None or (target is not None and target != key_group):
                    continue
                for raw_key, raw_value in zip(keys, state_values, strict=True):
                    if state in maps:
                        head, tail = split_composite(raw_key)
                        if head == wanted:
                            found = values.setdefault((operator, state), {})
                            found[decode_key(tail)] = decode_value(raw_value)
                    elif raw_key == wanted:
                        values[(operator, state)] = decode_value(raw_value)
        by_state = tuple(
            (state["name"], counts[state["name"]]) for state in manifest.operators[operator]
        )
        infos.append(GroupInfo(operator, key_group, by_state, group.size))
    return SavepointInfo(
        manifest.epoch,
        manifest.num_key_groups,
        manifest.operators,
        manifest.positions,
        tuple(infos),
        values,
    )


def rewrite_savepoint(
    url: str | os.PathLike[str],
    out: str | os.PathLike[str],
    num_key_groups: int,
    group_of: Callable[[bytes, int], int],
    *,
    fs: Any = None,
    out_fs: Any = None,
) -> Manifest:
    """Rehash every key of the savepoint at ``url`` into ``num_key_groups`` groups at ``out``.

    Each entry goes to ``group_of(encode_key(key), num_key_groups)`` (for a MapState entry,
    the key's part of the composite key), so the runtime's key hash stays the runtime's. The
    layout (placement) is dropped: it described the old key groups. Holds the whole state in
    memory (an offline tool).

    Raises:
        ValueError: ``num_key_groups`` is not an int >= 1, or ``group_of`` returned a group
            outside ``0..num_key_groups - 1``.
        CheckpointCorruptError: A file fails its checksum (named); nothing is written.
        CheckpointError, CheckpointWriteError: As ``write_savepoint``.
    """
    if type(num_key_groups) is not int or num_key_groups < 1:
        raise ValueError(f"num_key_groups must be an int >= 1; got {num_key_groups!r}")
    manifest = read_savepoint(url, fs=fs)
    location = Location(url, fs=fs)
    buckets: dict[tuple[str, int], list[tuple[str, bytes, bytes]]] = {}
    for (operator, key_group), group in sorted(manifest.groups.items()):
        maps = _map_states(manifest, operator)
        for state, raw_key, raw_value in load_chain(location, operator, key_group, group.chain):
            head = split_composite(raw_key)[0] if state in maps else raw_key
            new_group = group_of(head, num_key_groups)
            if type(new_group) is not int or not 0 <= new_group < num_key_groups:
                raise ValueError(
                    f"group_of returned {new_group!r} for a key; it must return an int in "
                    f"0..{num_key_groups - 1}"
                )
            buckets.setdefault((operator, new_group), []).append((state, raw_key, raw_value))
    return write_savepoint(
        out,
        (
            (operator, key_group, sorted(buckets.get((operator, key_group), ())))
            for operator in manifest.operators
            for key_group in range(num_key_groups)
        ),
        epoch=manifest.epoch,
        num_key_groups=num_key_groups,
        operators=manifest.operators,
        positions=manifest.positions,
        layout=None,
        counters=manifest.counters,
        fs=out_fs,
    )
