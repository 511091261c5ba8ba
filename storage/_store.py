"""KeyGroupStore: all declared state of one (operator, key group), over one engine."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from ._budget import ENTRY_OVERHEAD, CacheBudget
from ._codec import check_key, decode_key, decode_value, encode_key, encode_value, split_composite
from ._engine import (
    _TAGS_END,
    FLOOR_KEY,
    PUT,
    Change,
    Engine,
    Op,
    Puts,
    UndoLog,
    decode_undo,
    tag_bytes,
)
from ._exceptions import (
    DecodeError,
    EncodeError,
    InvalidNameError,
    RollbackError,
    StoreClosedError,
    StoreDirtyError,
    UnknownStateError,
)
from ._handles import ABSENT, MapState, StateHandle, make_handle
from ._snapshot import EpochDelta, StateChanges, StoreSnapshot
from ._specs import StateSpec
from ._ttl import TtlHandle, make_ttl_handle

__all__ = ("INTERNAL_DBS", "META_DB", "UNDO_DB", "KeyGroupStatistics", "KeyGroupStore")

#: The internal database holding meta entries (e.g. the checkpoint epoch).
META_DB = "__meta__"
#: The internal database holding the undo log (see ``KeyGroupStore.flush_epoch``).
UNDO_DB = "__undo__"
#: Every internal database, opened next to the declared states.
INTERNAL_DBS = (META_DB, UNDO_DB)

_EPOCH = encode_key("epoch")


def _check_epoch(epoch: object, what: str = "epoch") -> int:
    if type(epoch) is not int or epoch < 0:
        raise ValueError(f"{what} must be an int >= 0; got {epoch!r}")
    return epoch


@dataclass(frozen=True, slots=True)
class KeyGroupStatistics:
    """A snapshot of one store's size.

    Attributes:
        operator: The operator name.
        key_group: The key group.
        entries: Committed entries over all states (a MapState counts one per map entry).
        entries_by_state: ``(state name, committed entries)`` pairs in declaration order.
        bytes: LMDB pages in use times the page size (memory backend: encoded key and value
            bytes, meta included).
        dirty: Entries changed since the last flush.
        cached: Entries held in the in-memory cache (a MapState also counts one per key).
        expired: Entries of TTL states removed because they expired, since the store opened.
        hits: Reads answered from the cache since this store object opened (0 for a store
            reopened after a job, as ``JobResult.key_group_statistics`` does: a job's figures
            are its workers' ``state_cache_hits`` in ``JobResult.reports``).
        misses: Reads that went to the engine (LMDB) since this store object opened (as
            ``hits``).
    """

    operator: str
    key_group: int
    entries: int
    entries_by_state: tuple[tuple[str, int], ...]
    bytes: int
    dirty: int
    cached: int
    expired: int = 0
    hits: int = 0
    misses: int = 0


class _States:
    """Attribute access to a store's handles: ``store.states.clicks``."""

    def __init__(self, handles: Mapping[str, StateHandle]) -> None:
        self.__dict__.update(handles)

    def __getattr__(self, name: str) -> Any:
        # Only reached when the name is not a declared state.
        declared = ", ".join(sorted(self.__dict__)) or "no states"
        raise AttributeError(f"unknown state {name!r}; declared: {declared}")

    def __dir__(self) -> list[str]:
        return sorted(self.__dict__)


class KeyGroupStore:
    """All declared state of one (operator, key group).

    Returned already open by ``StateBackend.open_store``; use it as a context manager (or call
    ``close()``) to release the environment. The runtime sets ``store.key`` before calling
    user code; the handles in ``store.states`` then read and write that key's state in memory.
    ``flush()`` makes every change durable in one atomic write; nothing else writes, and
    ``close()`` does not flush.

    A store is not thread-safe: one owner (a key-group actor) uses it at a time, possibly
    through a worker thread (``anyio.to_thread``) for a flush. What it hands out for a
    checkpoint (an ``EpochDelta``, a ``StoreSnapshot``) may be used from another thread while
    the owner goes on.

    Attributes:
        operator: The operator name (a directory name under the backend's root).
        key_group: The key group this store holds.
        key: The current key; a plain attribute so setting it per record is cheap.
        states: The handles, as attributes named after the states.
    """

    __slots__ = (
        "__weakref__",
        "_budget",
        "_cache_limit",
        "_charged_cached",
        "_charged_dirty",
        "_closed",
        "_engine",
        "_entry_bytes",
        "_epoch",
        "_floor",
        "_handles",
        "_hits",
        "_misses",
        "_on_close",
        "_partial",
        "_ttl_handles",
        "event_time",
        "key",
        "key_group",
        "operator",
        "processing_time",
        "states",
    )

    def __init__(
        self,
        operator: str,
        key_group: int,
        specs: Sequence[StateSpec],
        engine: Engine,
        *,
        cache_limit: int,
        on_close: Callable[[], None] | None = None,
        budget: CacheBudget | None = None,
    ) -> None:
        """Build a store over an open engine (backends do this; users call ``open_store``)."""
        self.operator = operator
        self.key_group = key_group
        self.key: Any = None
        self._engine = engine
        self._cache_limit = cache_limit
        # The backend's memory budget (see _budget.py), and what one cached entry is
        # estimated to cost there: its encoded size (a moving average over flushes) plus the
        # Python objects' overhead.
        self._budget = budget
        self._entry_bytes = 64.0
        # What this store last reported to the budget (see ``report_usage``), and its reads.
        self._charged_cached = 0
        self._charged_dirty = 0
        self._hits = 0
        self._misses = 0
        self._on_close = on_close
        self._closed = False
        self._handles: dict[str, StateHandle] = {
            spec.name: (
                make_handle(self, engine, spec)
                if getattr(spec, "ttl", None) is None
                else make_ttl_handle(self, engine, spec)
            )
            for spec in specs
        }
        self._ttl_handles: tuple[TtlHandle, ...] = tuple(
            cast("TtlHandle", handle)
            for handle in self._handles.values()
            if hasattr(handle, "_cleanup")
        )
        #: "Now" for processing-time TTL states (the runtime passes its clock's ``now``).
        self.processing_time: Callable[[], float] = time.time
        #: "Now" for event-time TTL states (the runtime passes the key group's event time;
        #: until then nothing expires).
        self.event_time: Callable[[], float] = _never
        self.states: Any = _States(self._handles)
        self._epoch: int | None = None
        self._floor: int | None = None
        self._partial = False
        self._load_epoch()

    def _load_epoch(self) -> None:
        """Read the committed epoch and the undo log's floor into plain attributes."""
        raw = self._engine.get(META_DB, _EPOCH)
        epoch = None if raw is None else decode_value(raw)
        self._epoch = epoch if type(epoch) is int else None
        raw = self._engine.get(UNDO_DB, FLOOR_KEY)
        self._floor = None if raw is None else int.from_bytes(raw, "big")
        # Undo records above the committed epoch come from plain flushes after it: the next
        # flush_epoch must then read its delta from the log rather than from its own write.
        above = tag_bytes((self._epoch or 0) + 1)
        self._partial = self._floor is not None and self._engine.any_in(UNDO_DB, above, _TAGS_END)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<KeyGroupStore {self.operator}/kg-{self.key_group:05d} {state}>"

    def __enter__(self) -> KeyGroupStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(
                f"store {self.operator}/kg-{self.key_group:05d} is closed; open it again"
            )

    def _handle(self, name: str) -> StateHandle:
        try:
            return self._handles[name]
        except (KeyError, TypeError):
            declared = ", ".join(self._handles) or "no states"
            raise UnknownStateError(
                f"unknown state {name!r}; this store declares: {declared}"
            ) from None

    @property
    def path(self) -> Path | None:
        """The LMDB environment directory (None for the memory backend); valid after close."""
        return self._engine.path

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    def state(self, name: str) -> Any:
        """Return the handle of the state declared as ``name``.

        Raises:
            UnknownStateError: No state of that name is declared (a ``KeyError``).
        """
        self._check_open()
        return self._handle(name)

    def flush(self, meta: Mapping[str, Any] | None = None) -> int:
        """Write every unflushed change, and ``meta``, in one atomic write transaction.

        After a crash either all of it is committed or none of it is, so a meta entry such as
        the checkpoint epoch always describes exactly the state committed with it. When the
        cache then holds more than ``cache_limit`` entries, the oldest-loaded (now clean)
        entries are evicted until it holds half of that.

        Once ``flush_epoch`` has started the undo log, a plain flush also records what it
        overwrites (tagged with the epoch in progress, or with ``meta["epoch"]`` if given), so
        ``rollback_to`` still works; checkpointing runtimes should flush with ``flush_epoch``.

        Args:
            meta: Entries for the meta database, readable with ``read_meta``.

        Returns:
            The number of entries put or deleted (meta entries included); 0 without a write.

        Raises:
            EncodeError: A value cannot be encoded; nothing is written and the changes stay
                unflushed.
        """
        self._check_open()
        ops, puts = self._gather(meta)
        if not ops and not puts:
            return 0
        epoch = meta.get("epoch") if meta else None
        if type(epoch) is not int:
            epoch = None
        if self._floor is None:
            written = self._engine.write(ops, puts)
        else:
            tag = (self._epoch or 0) + 1 if epoch is None else epoch
            written, changes = self._engine.write_logged(ops, puts, UndoLog(UNDO_DB, tag, None))
            if epoch is None and changes:
                self._partial = True
        if epoch is not None:
            self._epoch = epoch
            self._partial = False
        self._flushed()
        return written

    def _gather(self, meta: Mapping[str, Any] | None) -> tuple[list[Op], list[Puts]]:
        ops: list[Op] = []
        puts: list[Puts] = []
        for handle in self._handles.values():
            handle._collect(ops, puts)
        if self._budget is not None and puts:
            # What an entry costs encoded, from what this flush writes (C-level sums).
            count = sum(len(keys) for _db, keys, _values in puts)
            size = sum(sum(map(len, keys)) + sum(map(len, values)) for _db, keys, values in puts)
            if count:
                self._entry_bytes = 0.8 * self._entry_bytes + 0.2 * (size / count)
        if meta:
            for name, value in meta.items():
                if not isinstance(name, str) or not name:
                    raise InvalidNameError(f"meta name must be a non-empty str; got {name!r}")
                try:
                    ops.append((PUT, META_DB, encode_key(name), encode_value(value)))
                except EncodeError as exc:
                    raise EncodeError(f"meta {name!r}: {exc}") from exc
        return ops, puts

    def _flushed(self) -> None:
        for handle in self._handles.values():
            handle._flushed()
        self._evict_if_needed()
        self.report_usage()
        if self._budget is not None:
            self._budget.after_flush(self)

    def report_usage(self) -> None:
        """Report this store's estimated cached and dirty bytes, and its reads since the last
        report, to the backend's budget (the budget keeps running totals; see _budget.py).

        The store reports by itself when it flushes, evicts, drops its state or closes; its
        owner calls this after a batch of work, so the totals include what the batch loaded
        and changed (a few ``len()`` calls per declared state).
        """
        hits = misses = 0
        for handle in self._handles.values():
            hits += handle._hits
            misses += handle._misses
            handle._hits = handle._misses = 0
        self._hits += hits
        self._misses += misses
        budget = self._budget
        if budget is None:
            return
        budget.hits += hits
        budget.misses += misses
        cached = self.cached_bytes()
        dirty = self.dirty_bytes()
        budget.charge(cached - self._charged_cached, dirty - self._charged_dirty)
        self._charged_cached = cached
        self._charged_dirty = dirty

    def hold_reads(self) -> None:
        """Read what misses the cache through one LMDB read transaction, opened at the first
        miss, until ``release_reads`` (the runtime holds one per batch: a transaction per
        key costs ~1 µs more). A flush ends it; the next miss opens a new one."""
        self._engine.hold_reads()

    def release_reads(self) -> None:
        """End what ``hold_reads`` began (call before pausing for long: an open read
        transaction keeps LMDB from reusing the pages later writes free)."""
        self._engine.release_reads()

    def _per_entry(self) -> float:
        return ENTRY_OVERHEAD + self._entry_bytes

    def cached_bytes(self) -> int:
        """The estimated bytes of this store's cached entries (see ``_budget.py``)."""
        if self._closed:
            return 0
        count = sum(handle._cached_count() for handle in self._handles.values())
        return int(count * self._per_entry())

    def dirty_bytes(self) -> int:
        """The estimated bytes of this store's unflushed entries."""
        if self._closed:
            return 0
        count = sum(handle._dirty_count() for handle in self._handles.values())
        return int(count * self._per_entry())

    def evict_bytes(self, size: int) -> int:
        """Evict about ``size`` bytes' worth of clean cached entries, oldest-loaded first
        (never an unflushed change: right after a flush every entry is clean, between
        flushes the dirty ones stay); return how many went."""
        self._check_open()
        counts = [(handle, handle._cached_count()) for handle in self._handles.values()]
        total = sum(count for _, count in counts)
        clean = total - sum(handle._dirty_count() for handle in self._handles.values())
        entries = min(clean, math.ceil(size / self._per_entry()))
        if entries <= 0:
            return 0
        for handle, count in counts:
            if count:
                handle._evict(math.ceil(count * entries / total))
        self.report_usage()
        return total - sum(handle._cached_count() for handle in self._handles.values())

    def cleanup_expired(self, budget: int | None = None) -> int:
        """Remove expired entries of the TTL states: the cached ones that are due, then up to
        ``budget`` committed entries per state from where the last call stopped, wrapping
        around (None: all of them). Removals are written by the next flush.

        Call it regularly (the runtime does, once per batch, with a budget proportional to the
        batch's records) and every committed entry is visited again and again at a bounded
        cost per record, so a state whose keys come and go stays bounded.

        Returns:
            The number of entries removed.
        """
        self._check_open()
        return sum(handle._cleanup(budget) for handle in self._ttl_handles)

    @property
    def epoch(self) -> int | None:
        """The committed epoch (``read_meta("epoch")``), or None if none was committed."""
        self._check_open()
        return self._epoch

    @property
    def undo_floor(self) -> int | None:
        """The lowest epoch ``rollback_to`` can reach, or None while there is no undo log."""
        self._check_open()
        return self._floor

    def flush_epoch(self, epoch: int, meta: Mapping[str, Any] | None = None) -> EpochDelta:
        """Commit every unflushed change as epoch ``epoch``; return the epoch's delta.

        One atomic write transaction holds the changes, ``meta``, the meta entry
        ``"epoch": epoch`` and an undo record: the previous value (or absence) of every entry
        it changes, tagged ``epoch``, so that ``rollback_to(epoch - 1)`` can bring the state
        back locally if checkpoint ``epoch`` never completes. The first ``flush_epoch`` of a
        store starts its undo log (the state committed before it is the log's floor); call
        ``prune_undo`` when a checkpoint completes, or the log grows with every epoch.

        Costs over ``flush``: one C-level lookup per changed entry (to read what it
        overwrites) and the undo record's CBOR encoding (see docs/benchmarks.md).

        Args:
            epoch: The epoch being committed; greater than the committed epoch.
            meta: More meta entries, committed in the same transaction.

        Returns:
            The entries changed since the previously committed epoch (``delta.since``),
            taken from the write itself. If plain ``flush`` calls wrote since that epoch, the
            delta is read back from the undo log instead, so it is complete either way.

        Raises:
            ValueError: ``epoch`` is not an int greater than the committed epoch.
            EncodeError: A value cannot be encoded; nothing is written.
        """
        self._check_open()
        since = self._epoch or 0
        if type(epoch) is not int or epoch <= since:
            raise ValueError(
                f"epoch must be an int greater than the committed epoch {since}; got {epoch!r}"
            )
        ops, puts = self._gather({**(meta or {}), "epoch": epoch})
        floor = since if self._floor is None else None
        _written, changes = self._engine.write_logged(ops, puts, UndoLog(UNDO_DB, epoch, floor))
        if floor is not None:
            self._floor = floor
        self._epoch = epoch
        self._flushed()
        if self._partial:
            self._partial = False
            return self.delta_since(since)
        return EpochDelta(self.operator, self.key_group, epoch, since, _state_changes(changes))

    def delta_since(self, epoch: int) -> EpochDelta:
        """Return every committed state entry changed after ``epoch``, read from the undo log.

        For a checkpoint whose base is older than the previous epoch (say checkpoint n-1
        failed, so n must carry n-1's changes as well). Reads in one read transaction.

        Raises:
            RollbackError: The undo log does not reach back to ``epoch``.
        """
        self._check_open()
        self._check_reachable(_check_epoch(epoch), "delta_since")
        start = tag_bytes(epoch + 1)
        changed: dict[str, set[bytes]] = {}
        with self.snapshot() as snap:
            for record_key, record in snap._snapshot.scan(UNDO_DB):
                if start <= record_key < _TAGS_END:
                    for db, keys, _previous in decode_undo(record):
                        if db in self._handles:
                            changed.setdefault(db, set()).update(keys)
            changes = []
            for db in sorted(changed):
                keys = sorted(changed[db])
                values = [snap._snapshot.get(db, key) for key in keys]
                changes.append(StateChanges(db, keys, values))
        return EpochDelta(self.operator, self.key_group, self._epoch or 0, epoch, tuple(changes))

    def _check_reachable(self, epoch: int, what: str) -> None:
        current = self._epoch or 0
        if epoch > current:
            raise RollbackError(
                f"{what}({epoch}): store {self.operator}/kg-{self.key_group:05d} is at epoch "
                f"{current}; an epoch above it cannot be reached"
            )
        if epoch == current:
            return
        if self._floor is None or epoch < self._floor:
            reach = "no undo log" if self._floor is None else f"an undo log from {self._floor}"
            raise RollbackError(
                f"{what}({epoch}): store {self.operator}/kg-{self.key_group:05d} has {reach}; "
                "restore it from a checkpoint instead"
            )

    def rollback_to(self, epoch: int) -> int:
        """Bring the committed state back to epoch ``epoch`` in one write transaction.

        Applies the undo records tagged above ``epoch``, newest first, removes them and sets
        the meta entry ``"epoch"`` to ``epoch``: the local fast path of recovery when this key
        group committed an epoch whose checkpoint never completed. Unflushed changes are
        dropped. Meta entries written by the undone flushes are undone too.

        Returns:
            The number of undo records applied (0 when already at ``epoch``).

        Raises:
            RollbackError: ``epoch`` is above the committed epoch or below ``undo_floor``
                (restore from the checkpoint store instead).
        """
        self._check_open()
        self._check_reachable(_check_epoch(epoch), "rollback_to")
        for handle in self._handles.values():
            handle._reset()
        if epoch == (self._epoch or 0) and not self._partial:
            self.report_usage()
            return 0
        undone = self._engine.rollback(
            UNDO_DB, epoch, [(PUT, META_DB, _EPOCH, encode_value(epoch))]
        )
        self._epoch = epoch
        self._partial = False
        for handle in self._handles.values():
            handle._reset()
        self.report_usage()
        return undone

    def prune_undo(self, upto_epoch: int) -> int:
        """Forget the undo records of epochs up to ``upto_epoch`` (a completed checkpoint).

        Afterwards ``rollback_to`` reaches back to ``upto_epoch`` and no further. One write
        transaction; a store without an undo log is left alone.

        Returns:
            The number of undo records removed.

        Raises:
            ValueError: ``upto_epoch`` is above the committed epoch.
        """
        self._check_open()
        _check_epoch(upto_epoch, "upto_epoch")
        current = self._epoch or 0
        if upto_epoch > current:
            raise ValueError(
                f"upto_epoch {upto_epoch} is above the committed epoch {current}; prune only "
                "up to a checkpoint this store has committed"
            )
        if self._floor is None:
            return 0
        floor = max(self._floor, upto_epoch)
        removed = self._engine.prune(UNDO_DB, upto_epoch, floor)
        self._floor = floor
        return removed

    def snapshot(self) -> StoreSnapshot:
        """Return a consistent read-only view of the committed state, for another thread.

        Unflushed changes are not in it. See ``StoreSnapshot`` for what it costs to keep open.
        """
        self._check_open()
        return StoreSnapshot(
            self.operator, self.key_group, self._epoch, list(self._handles), self._engine.snapshot()
        )

    def _evict_if_needed(self) -> None:
        counts = [(handle, handle._cached_count()) for handle in self._handles.values()]
        total = sum(count for _, count in counts)
        if total <= self._cache_limit:
            return
        excess = total - self._cache_limit // 2
        for handle, count in counts:
            handle._evict(math.ceil(count * excess / total))

    def read_meta(self, name: str, default: Any = None) -> Any:
        """Return the committed meta entry ``name``, or ``default`` if none was flushed."""
        self._check_open()
        raw = self._engine.get(META_DB, encode_key(name))
        return default if raw is None else decode_value(raw)

    def get(self, state: str, key: Any, default: Any = None) -> Any:
        """Return ``key``'s current value in ``state`` (unflushed changes included).

        Leaves ``store.key`` and the cache untouched: meant for queries and checks. A
        ListState gives a list, a MapState a dict of its entries, an AggregatingState
        ``result(acc)``; a key with no value gives ``default``.

        Raises:
            UnknownStateError: ``state`` is not declared.
            InvalidKeyError: ``key`` is not a valid key.
        """
        self._check_open()
        handle = self._handle(state)
        check_key(key)
        value = handle._read(key)
        return default if value is ABSENT else value

    def items(self, state: str) -> Iterator[tuple[Any, Any]]:
        """Iterate ``(key, value)`` over every key of ``state`` in encoded-key order.

        Committed entries are merged with unflushed changes; values are as ``get`` gives them.
        Changing the state while iterating gives an unspecified mix of old and new values.

        Raises:
            UnknownStateError: ``state`` is not declared.
        """
        self._check_open()
        return self._handle(state)._iter_items()

    def export_entries(self) -> Iterator[tuple[str, bytes, bytes]]:
        """Iterate the committed entries as ``(state name, key bytes, value bytes)``.

        Unflushed changes and meta entries are not included (flush first to include changes).
        The order is deterministic: by state name, then by key bytes. Key bytes are
        ``encode_key(key)``, or ``encode_key(key) + encode_key(map_key)`` for a MapState;
        value bytes are ``encode_value(value)``. The format is independent of LMDB, so it
        can be shipped to another host or written to a savepoint.

        All of it is read in one read transaction (a consistent snapshot, whatever is flushed
        meanwhile), held until the iterator is exhausted or closed.
        """
        self._check_open()
        return self._export()

    def _export(self) -> Iterator[tuple[str, bytes, bytes]]:
        # Taken at the first next(), so an iterator never started holds no transaction.
        with self.snapshot() as snapshot:
            yield from snapshot.entries()

    def _check_entries(
        self, entries: Iterable[tuple[str, bytes, bytes]], check: bool
    ) -> dict[str, tuple[list[bytes], list[bytes]]]:
        """Group entries by state as (keys, values) columns, checking names and encodings."""
        columns: dict[str, tuple[list[bytes], list[bytes]]] = {}
        for name, raw_key, raw_value in entries:
            try:
                keys, values = columns[name]
            except KeyError:
                self._handle(name)
                keys, values = columns[name] = ([], [])
            key_bytes, value_bytes = bytes(raw_key), bytes(raw_value)
            if check:
                if isinstance(self._handles[name], MapState):
                    head, tail = split_composite(key_bytes)
                    decode_key(head)
                    if not tail:
                        raise DecodeError(f"state {name!r}: map entry key lacks a map key")
                    decode_key(tail)
                else:
                    decode_key(key_bytes)
                decode_value(value_bytes)
            keys.append(key_bytes)
            values.append(value_bytes)
        return columns

    def import_entries(self, entries: Iterable[tuple[str, bytes, bytes]]) -> int:
        """Write entries made by ``export_entries`` in one atomic transaction.

        Each entry replaces the committed value of its key; other keys are kept. With an undo
        log, what they overwrite is logged as a plain ``flush`` would log it.

        Returns:
            The number of entries written.

        Raises:
            StoreDirtyError: The store has unflushed changes (flush or clear_all first).
            UnknownStateError: An entry names a state this store does not declare.
            DecodeError: An entry's key or value bytes are not a valid encoding; nothing is
                written.
        """
        self._check_open()
        if any(handle._dirty_count() for handle in self._handles.values()):
            raise StoreDirtyError("import_entries needs a store without unflushed changes")
        ops: list[Op] = []
        for name, (keys, values) in self._check_entries(entries, True).items():
            ops.extend((PUT, name, key, value) for key, value in zip(keys, values, strict=True))
        if not ops:
            return 0
        if self._floor is None:
            written = self._engine.write(ops)
        else:
            undo = UndoLog(UNDO_DB, (self._epoch or 0) + 1, None)
            written, changes = self._engine.write_logged(ops, (), undo)
            self._partial = self._partial or bool(changes)
        for handle in self._handles.values():
            handle._reset()  # the caches were clean; drop them rather than patch them
        self.report_usage()
        return written

    def restore(
        self,
        entries: Iterable[tuple[str, bytes, bytes]],
        *,
        epoch: int,
        meta: Mapping[str, Any] | None = None,
        check: bool = True,
    ) -> int:
        """Replace everything with ``entries`` at epoch ``epoch``, in one write transaction.

        Every state, meta entry and undo record is dropped, the entries are written, and the
        meta entries ``meta`` and ``"epoch": epoch`` are set, all atomically: after a crash
        the store holds either its old state or exactly the restored one with its epoch.
        The undo log restarts with ``epoch`` as its floor. Unflushed changes are dropped.

        Args:
            entries: ``(state, key bytes, value bytes)`` as ``export_entries`` gives them
                (any order; a key given twice keeps its last value).
            epoch: The epoch the entries are the state of (the checkpoint's epoch).
            meta: More meta entries to set.
            check: Decode every key and value first. Pass False only for bytes whose checksum
                was verified (a checkpoint file): it skips ~1 µs per entry.

        Returns:
            The number of entries written (meta entries included).

        Raises:
            ValueError: ``epoch`` is not an int >= 0.
            UnknownStateError: An entry names a state this store does not declare.
            DecodeError: With ``check``, bytes are not a valid encoding; nothing changes.
        """
        self._check_open()
        _check_epoch(epoch)
        columns = self._check_entries(entries, check)
        puts: list[Puts] = [(name, keys, values) for name, (keys, values) in columns.items()]
        ops: list[Op] = [(PUT, META_DB, _EPOCH, encode_value(epoch))]
        for name, value in (meta or {}).items():
            if name == "epoch":
                continue
            if not isinstance(name, str) or not name:
                raise InvalidNameError(f"meta name must be a non-empty str; got {name!r}")
            ops.append((PUT, META_DB, encode_key(name), encode_value(value)))
        ops.append((PUT, UNDO_DB, FLOOR_KEY, tag_bytes(epoch)))
        if any(len(set(keys)) != len(keys) for _name, keys, _values in puts):
            # putmulti wants distinct keys per batch: keep each key's last value.
            puts = [(name, *_last_wins(keys, values)) for name, keys, values in puts]
        written, _changes = self._engine.write_logged(ops, puts, None, clear=True)
        for handle in self._handles.values():
            handle._reset()
        self.report_usage()
        self._epoch = epoch
        self._floor = epoch
        self._partial = False
        return written

    def clear_all(self) -> None:
        """Delete every state, meta and undo entry, committed and unflushed, atomically."""
        self._check_open()
        self._engine.drop_all()
        for handle in self._handles.values():
            handle._reset()
        self.report_usage()
        self._load_epoch()

    def statistics(self) -> KeyGroupStatistics:
        """Return the store's entry counts, size, dirty and cached entries."""
        self._check_open()
        by_state = tuple((name, self._engine.count(name)) for name in self._handles)
        return KeyGroupStatistics(
            operator=self.operator,
            key_group=self.key_group,
            entries=sum(count for _, count in by_state),
            entries_by_state=by_state,
            bytes=self._engine.size_bytes(),
            dirty=sum(handle._dirty_count() for handle in self._handles.values()),
            cached=sum(handle._cached_count() for handle in self._handles.values()),
            expired=sum(handle.expired for handle in self._ttl_handles),
            hits=self._hits + sum(handle._hits for handle in self._handles.values()),
            misses=self._misses + sum(handle._misses for handle in self._handles.values()),
        )

    def close(self) -> None:
        """Close the environment without flushing; idempotent.

        Unflushed changes are dropped. Afterwards every method and every handle method raises
        ``StoreClosedError``, and the environment can be opened again (by this or another
        backend on the same root).
        """
        if self._closed:
            return
        self.report_usage()  # its reads
        self._closed = True
        if self._budget is not None:  # and its bytes: none from now on
            self._budget.charge(-self._charged_cached, -self._charged_dirty)
            self._charged_cached = self._charged_dirty = 0
        for handle in self._handles.values():
            handle._close()
        try:
            self._engine.close()
        finally:
            if self._on_close is not None:
                self._on_close()


def _never() -> float:
    return -math.inf


def _last_wins(keys: list[bytes], values: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    merged = dict(zip(keys, values, strict=True))
    return list(merged), list(merged.values())


def _state_changes(changes: list[Change]) -> tuple[StateChanges, ...]:
    return tuple(
        StateChanges(change.db, change.keys, change.values)
        for change in changes
        if change.db not in INTERNAL_DBS
    )
