"""The checkpoint store: incremental key-group files and manifests, local or on any fsspec URL.

Layout under the root (a directory, or an fsspec URL such as ``s3://bucket/job``)::

    manifests/<epoch:020d>.manifest                      one per completed checkpoint
    data/<epoch:020d>/<operator>/kg-<key group:05d>.full    a full materialization
    data/<epoch:020d>/<operator>/kg-<key group:05d>.delta   the changes since the base epoch

Protocol (the runtime's side; every call is synchronous and may run in a worker thread):

1. At barrier ``n`` a key-group actor commits locally with ``delta = store.flush_epoch(n)``,
   then, off the event loop, writes its file with the checkpoint store: ``write_delta(n,
   delta, base)`` when ``plan(op, kg, base) == "delta"`` (``base`` is the latest completed
   checkpoint's epoch, which the barrier carries), else ``write_full(n, op, kg,
   snapshot.entries())`` from a ``store.snapshot()`` taken right after the flush. Either
   returns a ``GroupRecord``, plain data (``to_data()``) to send to the coordinator in the ack.
2. With every ack in, the coordinator calls ``commit(n, records, ...)``: it checks that every
   (operator, key group) is there, writes the manifest last and atomically, and applies
   retention. If a write or the commit fails, the checkpoint is not complete: ``abort(n)``
   removes its files (``commit`` does so itself when the manifest cannot be written).
3. On recovery: ``latest_complete()`` finds the newest checkpoint whose files all verify
   (falling back over corrupt ones), and ``restore_store(store, manifest)`` brings each key
   group there: from its own LMDB when it can (same epoch, or an undo log reaching back),
   else from ``load_group(manifest, op, kg)``, the checkpoint's files.
4. When checkpoint ``n`` completes, each key group calls ``store.prune_undo(n)``.

Files are only ever created whole and never modified, so several processes may write the files
of one checkpoint at once; only the coordinator writes manifests and deletes files.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import cbor2

from ._exceptions import CheckpointCorruptError, CheckpointError, CheckpointWriteError
from ._files import Location, checksum
from ._manifest import (
    FileRecord,
    GroupRecord,
    Manifest,
    apply_file,
    declare_operators,
    decode_group_file,
    encode_group_file,
)
from ._snapshot import EpochDelta
from ._specs import StateSpec
from ._store import KeyGroupStore

__all__ = ("CheckpointStore", "group_columns", "load_chain", "read_verified", "write_group_file")

_MANIFESTS = "manifests"
_SUFFIX = ".manifest"

Columns = dict[str, tuple[list[bytes], list[bytes | None]]]


def _epoch_dir(epoch: int) -> str:
    return f"data/{epoch:020d}"


def group_columns(entries: Iterable[tuple[str, bytes, bytes | None]]) -> tuple[Columns, int]:
    columns: Columns = {}
    count = 0
    for state, key, value in entries:
        try:
            keys, values = columns[state]
        except KeyError:
            keys, values = columns[state] = ([], [])
        keys.append(bytes(key))
        values.append(None if value is None else bytes(value))
        count += 1
    return columns, count


def write_group_file(
    location: Location,
    name: str,
    *,
    kind: str,
    operator: str,
    key_group: int,
    epoch: int,
    base: int | None,
    columns: Columns,
    entries: int,
) -> FileRecord:
    """Encode and write one key-group file; return its record (checksum and size).

    Raises:
        CheckpointWriteError: The filesystem failed; no partial file is left behind.
    """
    data = encode_group_file(kind, operator, key_group, epoch, base, columns)
    try:
        location.write(name, data)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CheckpointWriteError(
            f"cannot write {name} under {location.url}: {reason}", path=name
        ) from exc
    return FileRecord(name, kind, epoch, base, checksum(data), len(data), entries)


def read_verified(location: Location, record: FileRecord) -> bytes:
    """Read a file and check its size and checksum against its record.

    Raises:
        CheckpointCorruptError: Missing, truncated or altered; the message names the file.
    """
    name = record.path
    try:
        data = location.read(name)
    except FileNotFoundError:
        raise CheckpointCorruptError(f"{name}: missing", path=name) from None
    if len(data) != record.size:
        raise CheckpointCorruptError(
            f"{name}: {len(data)} bytes, the manifest says {record.size} (truncated?)", path=name
        )
    if checksum(data) != record.checksum:
        raise CheckpointCorruptError(f"{name}: checksum mismatch", path=name)
    return data


def load_chain(
    location: Location, operator: str, key_group: int, chain: Sequence[FileRecord]
) -> list[tuple[str, bytes, bytes]]:
    """Rebuild one key group's entries from its chain: verified, then applied in order.

    Returns ``(state, key bytes, value bytes)`` sorted by state then key, ready for
    ``KeyGroupStore.restore``. Nothing is returned unless every file verified.

    Raises:
        CheckpointCorruptError: A file is missing, altered, or not of this key group.
    """
    entries: dict[tuple[str, bytes], bytes] = {}
    for record in chain:
        decoded = decode_group_file(read_verified(location, record), record.path)
        if (decoded["operator"], decoded["key_group"], decoded["kind"]) != (
            operator,
            key_group,
            record.kind,
        ):
            raise CheckpointCorruptError(
                f"{record.path}: holds {decoded['operator']}/kg-{decoded['key_group']:05d} "
                f"({decoded['kind']}), not {operator}/kg-{key_group:05d} ({record.kind})",
                path=record.path,
            )
        apply_file(entries, decoded)
    return [(state, key, value) for (state, key), value in sorted(entries.items())]


class CheckpointStore:
    """Completed checkpoints of one job, in a directory or under any fsspec URL.

    Thread-safe: key-group actors may write their files from worker threads at once.

    Args:
        url: A local directory or an fsspec URL (``memory://...``, ``s3://...``).
        fs: A filesystem to use instead of the URL's (then ``url`` is a path on it).
        sync: Fsync files on a local filesystem (see ``Location``).
        full_every: A key group writes a full materialization at least every this many
            checkpoints in which it changed: its delta chain holds at most
            ``full_every - 1`` deltas, which bounds recovery reads.
        max_delta_ratio: A key group also writes a full when the bytes of the deltas in its
            chain exceed this times the bytes of its last full.
        retain: Completed checkpoints kept; older manifests, and files no kept manifest
            references, are deleted after each commit.
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        fs: Any = None,
        sync: bool = True,
        full_every: int = 8,
        max_delta_ratio: float = 1.0,
        retain: int = 3,
    ) -> None:
        if type(full_every) is not int or full_every < 1:
            raise ValueError(f"full_every must be an int >= 1; got {full_every!r}")
        if type(retain) is not int or retain < 1:
            raise ValueError(f"retain must be an int >= 1; got {retain!r}")
        if not max_delta_ratio > 0:
            raise ValueError(f"max_delta_ratio must be > 0; got {max_delta_ratio!r}")
        self.location = Location(url, fs=fs, sync=sync)
        self.full_every = full_every
        self.max_delta_ratio = max_delta_ratio
        self.retain = retain
        self._lock = threading.Lock()
        self._manifests: dict[int, Manifest] = {}

    def __repr__(self) -> str:
        return f"CheckpointStore({self.location.url!r})"

    # Names.

    @staticmethod
    def manifest_name(epoch: int) -> str:
        """The relative name of checkpoint ``epoch``'s manifest."""
        return f"{_MANIFESTS}/{epoch:020d}{_SUFFIX}"

    @staticmethod
    def group_file_name(epoch: int, operator: str, key_group: int, kind: str) -> str:
        """The relative name of a key-group file."""
        return f"{_epoch_dir(epoch)}/{operator}/kg-{key_group:05d}.{kind}"

    # Reading manifests.

    def epochs(self) -> list[int]:
        """The epochs that have a manifest, oldest first (not verified)."""
        epochs = []
        for name in self.location.files(_MANIFESTS):
            stem = name.removeprefix(f"{_MANIFESTS}/").removesuffix(_SUFFIX)
            if stem != name and stem.isdigit():
                epochs.append(int(stem))
        return sorted(epochs)

    def read_manifest(self, epoch: int) -> Manifest:
        """Return checkpoint ``epoch``'s manifest (cached once read).

        Raises:
            CheckpointCorruptError: It is missing, torn or altered.
        """
        with self._lock:
            cached = self._manifests.get(epoch)
        if cached is not None:
            return cached
        name = self.manifest_name(epoch)
        try:
            data = self.location.read(name)
        except FileNotFoundError:
            raise CheckpointCorruptError(f"{name}: missing", path=name) from None
        manifest = Manifest.decode(data, name)
        with self._lock:
            self._manifests[epoch] = manifest
        return manifest

    def verify(self, manifest: Manifest) -> None:
        """Read every file ``manifest`` references and check its size and checksum.

        Raises:
            CheckpointCorruptError: The first bad file, named.
        """
        for record in manifest.files():
            read_verified(self.location, record)

    def latest_complete(
        self,
        *,
        verify: bool = True,
        on_skip: Callable[[int, CheckpointCorruptError], None] | None = None,
        exclude: Collection[int] = (),
    ) -> Manifest | None:
        """Return the newest checkpoint whose manifest and files all verify, or None.

        A checkpoint with a corrupt, truncated or missing file is skipped (reported to
        ``on_skip`` with the error naming the file) and the previous one is tried.

        Args:
            verify: Read every file and check its checksum. False checks only that each
                file exists with its recorded size (cheap; for the local fast path, where
                the files are read only if a key group must be restored from them).
            on_skip: Called with each skipped epoch and why.
            exclude: Epochs not to consider (e.g. found corrupt while restoring).
        """
        for epoch in reversed(self.epochs()):
            if epoch in exclude:
                continue
            try:
                manifest = self.read_manifest(epoch)
                if verify:
                    self.verify(manifest)
                else:
                    self._check_sizes(manifest)
            except CheckpointCorruptError as exc:
                if on_skip is not None:
                    on_skip(epoch, exc)
                continue
            return manifest
        return None

    def _check_sizes(self, manifest: Manifest) -> None:
        for record in manifest.files():
            try:
                size = self.location.size(record.path)
            except FileNotFoundError:
                raise CheckpointCorruptError(f"{record.path}: missing", path=record.path) from None
            if size != record.size:
                raise CheckpointCorruptError(
                    f"{record.path}: {size} bytes, the manifest says {record.size} (truncated?)",
                    path=record.path,
                )

    def load_group(
        self, manifest: Manifest, operator: str, key_group: int
    ) -> list[tuple[str, bytes, bytes]]:
        """Rebuild ``(operator, key_group)`` at ``manifest.epoch``: its full, then deltas.

        Every file is verified as it is read; nothing is returned unless all verify, so a
        restore is never fed half a checkpoint.

        Returns:
            ``(state, key bytes, value bytes)`` sorted by state then key.

        Raises:
            KeyError: The manifest has no such key group.
            CheckpointCorruptError: A file is missing or altered (named); recover from an
                older checkpoint (``latest_complete`` skips this one once it is detected).
        """
        chain = manifest.group(operator, key_group).chain
        return load_chain(self.location, operator, key_group, chain)

    def restore_store(
        self, store: KeyGroupStore, manifest: Manifest | None, *, local: bool = True
    ) -> str:
        """Bring ``store`` to ``manifest``'s checkpoint, locally when it provably can.

        The recovery decision for one key group, in one write transaction whichever path:

        * ``"local"``: the store's committed epoch is the checkpoint's (unflushed changes,
          and plain flushes after it, are undone);
        * ``"rolled back"``: it committed later epochs and its undo log reaches back to the
          checkpoint (``rollback_to``);
        * ``"restored"``: otherwise, from the checkpoint's files (``load_group`` +
          ``restore``), also when ``local=False`` (e.g. after a machine crash, when unsynced
          local commits are suspect);
        * ``"empty"``: no checkpoint completed (``manifest`` is None): all state dropped.

        Returns:
            Which path was taken.

        Raises:
            KeyError: The manifest has no such key group.
            CheckpointCorruptError: A file fails its checksum (named); the store is unchanged.
        """
        if manifest is None:
            store.restore([], epoch=0)
            return "empty"
        epoch = store.epoch or 0
        floor = store.undo_floor
        if local and epoch == manifest.epoch:
            store.rollback_to(epoch)
            return "local"
        if local and epoch > manifest.epoch and floor is not None and floor <= manifest.epoch:
            store.rollback_to(manifest.epoch)
            return "rolled back"
        entries = self.load_group(manifest, store.operator, store.key_group)
        store.restore(entries, epoch=manifest.epoch, check=False)
        return "restored"

    # Writing key-group files (any process, any thread).

    def plan(self, operator: str, key_group: int, base_epoch: int | None) -> str:
        """Return ``"delta"`` or ``"full"``: what key group should write on top of the base.

        A delta needs a base checkpoint holding this key group's chain; the chain must start
        with a full and hold fewer than ``full_every - 1`` deltas, whose bytes must stay
        within ``max_delta_ratio`` times the full's.
        """
        if base_epoch is None:
            return "full"
        group = self.read_manifest(base_epoch).groups.get((operator, key_group))
        if group is None or not group.chain or group.chain[0].kind != "full":
            return "full"
        deltas = group.chain[1:]
        if len(deltas) + 1 >= self.full_every:
            return "full"
        if sum(record.size for record in deltas) > self.max_delta_ratio * group.chain[0].size:
            return "full"
        return "delta"

    def write_delta(self, epoch: int, delta: EpochDelta, base_epoch: int) -> GroupRecord:
        """Write ``delta`` as checkpoint ``epoch``'s file of its key group.

        An empty delta writes no file: the key group's chain stays the base's.

        Args:
            epoch: The checkpoint being written (``delta.epoch``).
            delta: From ``KeyGroupStore.flush_epoch`` (or ``delta_since(base_epoch)``).
            base_epoch: The latest completed checkpoint; ``delta.since`` must equal it.

        Raises:
            CheckpointError: The delta does not apply to the base (write a full instead).
            CheckpointWriteError: The filesystem failed; no partial file is left.
        """
        where = f"{delta.operator}/kg-{delta.key_group:05d}"
        if delta.epoch != epoch:
            raise CheckpointError(f"delta of {where} is of epoch {delta.epoch}, not {epoch}")
        if delta.since != base_epoch:
            raise CheckpointError(
                f"delta of {where} is since epoch {delta.since}, but the base checkpoint is "
                f"{base_epoch}; write store.delta_since({base_epoch}) or a full instead"
            )
        group = self.read_manifest(base_epoch).groups.get((delta.operator, delta.key_group))
        if group is None:
            raise CheckpointError(
                f"checkpoint {base_epoch} has no key group {where}; write a full instead"
            )
        if delta.empty:
            return GroupRecord(delta.operator, delta.key_group, epoch, group.chain)
        columns, count = group_columns(delta.entries())
        record = write_group_file(
            self.location,
            self.group_file_name(epoch, delta.operator, delta.key_group, "delta"),
            kind="delta",
            operator=delta.operator,
            key_group=delta.key_group,
            epoch=epoch,
            base=base_epoch,
            columns=columns,
            entries=count,
        )
        return GroupRecord(delta.operator, delta.key_group, epoch, (*group.chain, record))

    def write_full(
        self,
        epoch: int,
        operator: str,
        key_group: int,
        entries: Iterable[tuple[str, bytes, bytes]],
    ) -> GroupRecord:
        """Write the whole state of a key group (e.g. ``StoreSnapshot.entries()``).

        A key group without entries writes no file (its chain is empty).

        Raises:
            CheckpointWriteError: The filesystem failed; no partial file is left.
        """
        columns, count = group_columns(entries)
        if not count:
            return GroupRecord(operator, key_group, epoch, ())
        record = write_group_file(
            self.location,
            self.group_file_name(epoch, operator, key_group, "full"),
            kind="full",
            operator=operator,
            key_group=key_group,
            epoch=epoch,
            base=None,
            columns=columns,
            entries=count,
        )
        return GroupRecord(operator, key_group, epoch, (record,))

    # Completing checkpoints (the coordinator).

    def commit(
        self,
        epoch: int,
        groups: Iterable[GroupRecord],
        *,
        num_key_groups: int,
        operators: Mapping[str, Sequence[StateSpec] | Sequence[Mapping[str, str]]],
        positions: Any = None,
        layout: Any = None,
        counters: Any = None,
    ) -> Manifest:
        """Complete checkpoint ``epoch``: write its manifest last and atomically.

        Then apply retention (failures to delete are left for the next commit).

        Args:
            epoch: The checkpoint; greater than every existing one.
            groups: One record per (operator, key group): every key group of every operator
                in ``operators`` must be there.
            num_key_groups: The job's key-group count.
            operators: Per keyed operator, its state specs (or ``describe_specs`` of them).
            positions: Source split positions at the barrier (CBOR-able).
            layout: The key-group layout, e.g. placement (CBOR-able).
            counters: The job's counters at the barrier (CBOR-able; see ``Manifest``).

        Raises:
            CheckpointError: Records are missing, duplicated or of another epoch, or the
                epoch is not above the latest; nothing is written.
            CheckpointWriteError: The manifest could not be written: no manifest is left,
                the checkpoint's files are removed and the previous checkpoint stays the
                latest.
        """
        existing = self.epochs()
        if existing and epoch <= existing[-1]:
            raise CheckpointError(
                f"checkpoint {epoch} is not above the latest completed one ({existing[-1]})"
            )
        declared = declare_operators(operators)
        by_group: dict[tuple[str, int], GroupRecord] = {}
        for group in groups:
            where = f"{group.operator}/kg-{group.key_group:05d}"
            if group.epoch != epoch:
                raise CheckpointError(f"record of {where} is of epoch {group.epoch}, not {epoch}")
            if group.operator not in declared:
                raise CheckpointError(f"record of {where} names an undeclared operator")
            if (group.operator, group.key_group) in by_group:
                raise CheckpointError(f"record of {where} is given twice")
            by_group[(group.operator, group.key_group)] = group
        missing = [
            f"{operator}/kg-{key_group:05d}"
            for operator in declared
            for key_group in range(num_key_groups)
            if (operator, key_group) not in by_group
        ]
        if missing or len(by_group) != len(declared) * num_key_groups:
            raise CheckpointError(
                f"checkpoint {epoch} lacks {len(missing)} key group(s), first "
                f"{missing[0] if missing else '?'}; every key group of every operator "
                "must be written before the commit"
            )
        manifest = Manifest(
            epoch=epoch,
            num_key_groups=num_key_groups,
            operators=declared,
            groups=by_group,
            positions=positions,
            layout=layout,
            counters=counters,
        )
        name = self.manifest_name(epoch)
        try:
            encoded = manifest.encode()
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {epoch}: positions and layout must be CBOR-encodable ({exc})"
            ) from exc
        try:
            self.location.write(name, encoded, atomic=True)
        except OSError as exc:
            self.abort(epoch)
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise CheckpointWriteError(
                f"cannot write {name} under {self.location.url}: {reason}", path=name
            ) from exc
        with self._lock:
            self._manifests[epoch] = manifest
        with contextlib.suppress(OSError):
            # Retried after the next commit; the checkpoint itself is complete.
            self.collect_garbage()
        return manifest

    def abort(self, epoch: int) -> None:
        """Remove the files of checkpoint ``epoch``, which will not complete.

        Raises:
            CheckpointError: The checkpoint is complete (it has a manifest).
        """
        if self.location.exists(self.manifest_name(epoch)):
            raise CheckpointError(f"checkpoint {epoch} is complete; it cannot be aborted")
        self.location.delete_tree(_epoch_dir(epoch))

    def discard_incomplete(self) -> list[int]:
        """Remove the files of every checkpoint above the newest manifest: checkpoints that
        never completed. Only while nothing writes to the store (a job restarting after a
        failure: the writers of those files are gone).

        Returns:
            The epochs whose files were removed.
        """
        newest = max(self.epochs(), default=0)
        removed = []
        for name in self.location.files("data"):
            epoch_part = name.split("/")[1]
            if epoch_part.isdigit() and int(epoch_part) > newest:
                removed.append(int(epoch_part))
        for epoch in sorted(set(removed)):
            self.location.delete_tree(_epoch_dir(epoch))
        return sorted(set(removed))

    def collect_garbage(self) -> list[str]:
        """Apply retention: keep the newest ``retain`` readable manifests and their files.

        Deletes older (and unreadable) manifests, then every data file no kept manifest
        references, including files of aborted checkpoints, up to the newest kept epoch
        (files of checkpoints still being written are left alone). A delta chain's base
        files are referenced by the manifests that use them, so they stay.

        Returns:
            The relative names deleted.
        """
        kept: list[Manifest] = []
        deleted: list[str] = []
        for epoch in reversed(self.epochs()):
            if len(kept) < self.retain:
                try:
                    kept.append(self.read_manifest(epoch))
                    continue
                except CheckpointCorruptError:
                    pass
            name = self.manifest_name(epoch)
            self.location.delete(name)
            deleted.append(name)
            with self._lock:
                self._manifests.pop(epoch, None)
        for name in self.location.files(_MANIFESTS):
            if ".tmp-" in name:  # left by a crash inside an atomic write
                self.location.delete(name)
                deleted.append(name)
        if not kept:
            return deleted
        newest = kept[0].epoch
        referenced = {record.path for manifest in kept for record in manifest.files()}
        by_epoch: dict[str, list[str]] = {}
        for name in self.location.files("data"):
            epoch_part = name.split("/")[1]
            if epoch_part.isdigit() and int(epoch_part) <= newest:
                by_epoch.setdefault(epoch_part, []).append(name)
        for epoch_part, names in by_epoch.items():
            doomed = [name for name in names if name not in referenced]
            if len(doomed) == len(names):
                self.location.delete_tree(f"data/{epoch_part}")
            else:
                for name in doomed:
                    self.location.delete(name)
            deleted.extend(doomed)
        return deleted
