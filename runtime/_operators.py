"""Batch execution of operators: stateless chains and keyed operator runners.

Everything here works on parallel columns (values and their source offsets) for one batch.
User code that raises never stops the batch: the record goes to the dead-letter list with the
error and its position, the rest of the batch goes on. The fast paths
(``list.extend(map(fn, ...))``) cost one C-level loop, and every user function runs exactly once
per record, also in a batch in which some record raised (the loop resumes after the failing
record; nothing is redone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import compress
from operator import itemgetter
from typing import Any

from shoal.storage import KeyGroupStore

from ._dataflow import (
    AggregateOp,
    CountOp,
    FilterOp,
    FlatMapOp,
    KeyedOp,
    MapOp,
    ProcessOp,
    ReduceOp,
)
from ._keys import KeyGroupRouter
from ._sinks import DeadLetter

__all__ = ("DeadLetters", "KeyedRunner", "ProcessContext", "apply_chain", "key_and_route")

StatelessOp = MapOp | FilterOp | FlatMapOp
Routed = dict[int, tuple[list[Any], list[Any], list[int]]]


class DeadLetters:
    """Collects a worker's dead letters until they are shipped to the dead-letter sink."""

    __slots__ = ("count", "pending", "worker")

    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.pending: list[DeadLetter] = []
        self.count = 0

    def add(
        self,
        operator: str,
        exc: BaseException,
        split: str,
        offset: int,
        record: Any,
        key: Any = None,
    ) -> None:
        self.count += 1
        self.pending.append(
            DeadLetter(
                operator=operator,
                error_type=type(exc).__name__,
                error=str(exc),
                split=split,
                offset=offset,
                record=record,
                key=key,
                worker=self.worker,
            )
        )

    def add_source_error(self, error: Any, split: str) -> None:
        """A record the source could not decode (a :class:`SourceError`)."""
        self.count += 1
        self.pending.append(
            DeadLetter.from_source_error(error, operator="source", split=split, worker=self.worker)
        )

    def take(self) -> list[DeadLetter]:
        letters, self.pending = self.pending, []
        return letters


def _apply_once(
    fn: Callable[[Any], Any], values: list[Any]
) -> tuple[list[Any], list[tuple[int, Exception]] | None]:
    """Return ``[fn(v) for v in values]`` without the records whose call raised.

    Every record's call happens exactly once (user code may count or have side effects): the
    C-level ``list.extend(map(fn, it))`` keeps what it appended before ``fn`` raised, and the
    shared iterator ``it`` has consumed exactly the failing record, so the loop notes that
    record and carries on with the next one. Returns the results and the ``(index, error)`` of
    every record that failed (None when none did, the common case).
    """
    results: list[Any] = []
    failed: list[tuple[int, Exception]] | None = None
    it = iter(values)
    while True:
        try:
            results.extend(map(fn, it))
        except Exception as exc:
            if failed is None:
                failed = []
            failed.append((len(results) + len(failed), exc))
        else:
            return results, failed


def _drop_failed(
    name: str,
    failed: list[tuple[int, Exception]],
    values: list[Any],
    offsets: list[int],
    split: str,
    dead: DeadLetters,
) -> tuple[list[Any], list[int]]:
    """Dead-letter the failed records (in input order) and return the others' columns."""
    for index, exc in failed:
        dead.add(name, exc, split, offsets[index], values[index])
    keep = _kept(failed, len(values))
    return list(compress(values, keep)), list(compress(offsets, keep))


def _kept(failed: list[tuple[int, Exception]], count: int) -> list[bool]:
    """A mask of the ``count`` records that did not fail."""
    keep = [True] * count
    for index, _exc in failed:
        keep[index] = False
    return keep


def _flat_map(
    op: FlatMapOp, values: list[Any], offsets: list[int], split: str, dead: DeadLetters
) -> tuple[list[Any], list[int]]:
    out_values: list[Any] = []
    out_offsets: list[int] = []
    fn = op.fn
    for value, offset in zip(values, offsets, strict=True):
        try:
            items = list(fn(value))
        except Exception as exc:
            dead.add(op.name, exc, split, offset, value)
            continue
        out_values.extend(items)
        out_offsets.extend([offset] * len(items))
    return out_values, out_offsets


def apply_chain(
    chain: Sequence[StatelessOp],
    values: list[Any],
    offsets: list[int],
    split: str,
    dead: DeadLetters,
) -> tuple[list[Any], list[int]]:
    """Run stateless operators over one batch; failed records become dead letters."""
    for op in chain:
        if not values:
            break
        if type(op) is MapOp:
            results, failed = _apply_once(op.fn, values)
            if failed is not None:
                offsets = _drop_failed(op.name, failed, values, offsets, split, dead)[1]
            values = results
        elif type(op) is FilterOp:
            mask, failed = _apply_once(op.fn, values)
            if failed is not None:
                values, offsets = _drop_failed(op.name, failed, values, offsets, split, dead)
            if not all(mask):
                values = list(compress(values, mask))
                offsets = list(compress(offsets, mask))
        else:
            assert type(op) is FlatMapOp
            values, offsets = _flat_map(op, values, offsets, split, dead)
    return values, offsets


def key_and_route(
    operator: str,
    key_fn: Callable[[Any], Any],
    router: KeyGroupRouter,
    values: list[Any],
    offsets: list[int],
    split: str,
    dead: DeadLetters,
) -> Routed:
    """Key every record with ``key_fn`` and split the batch per key group.

    A key function that raises, or returns something that is not a valid key, sends that
    record to the dead letters (operator ``<operator>.key_by``).
    """
    where = f"{operator}.key_by"
    keys, failed = _apply_once(key_fn, values)
    if failed is None:
        try:
            return router.route(keys, values, offsets)
        except TypeError:
            failed = []
    raised = _kept(failed, len(values))  # False where the key function raised
    if failed:
        # Line the keys up with the records again: a record whose key function raised has none.
        found = iter(keys)
        keys = [next(found) if ok else None for ok in raised]
    # Some key function raised or some key is not a valid key: find the invalid keys without
    # calling key_fn again, then dead-letter every failed record in input order.
    for index, key in enumerate(keys):
        if raised[index]:
            try:
                router.group_of(key)
            except TypeError as exc:
                failed.append((index, exc))
    failed.sort(key=itemgetter(0))
    keep = _kept(failed, len(keys))
    values, offsets = _drop_failed(where, failed, values, offsets, split, dead)
    return router.route(list(compress(keys, keep)), values, offsets)


class ProcessContext:
    """What a process function sees besides the key and the value.

    Attributes:
        state: the declared states by name (``ctx.state.clicks``), scoped to the current key.
        emit: ``ctx.emit(x)`` sends ``x`` downstream; it inherits the current record's source
            position (what a dead letter downstream would name).
        key_group: the key group this actor owns.
        operator: the operator's name.
    """

    __slots__ = ("_store", "emit", "key_group", "operator", "state")

    def __init__(self, operator: str, key_group: int, store: KeyGroupStore) -> None:
        self.operator = operator
        self.key_group = key_group
        self._store = store
        self.state = store.states
        self.emit: Callable[[Any], None] = _no_output

    @property
    def key(self) -> Any:
        """The current key."""
        return self._store.key


def _no_output(_value: Any) -> None:
    raise RuntimeError("ctx.emit is only valid while the process function runs")


class KeyedRunner:
    """Runs one keyed operator over batches for one key group, on that group's store.

    A record whose user function raises goes to the dead letters; whatever state changes and
    emits the call made before raising are kept (no per-record rollback). Storing a value whose
    type CBOR cannot encode raises ``StateEncodeError`` at that write, so such a record is a
    dead letter too; something unencodable nested inside a list, tuple or dict is only found
    when the state is flushed, and fails the job with a ``StateEncodeError`` naming the
    operator, key group, state, key and type (see ``shoal.storage``).
    """

    __slots__ = ("_ctx", "_op", "_store", "_value", "operator")

    def __init__(self, op: KeyedOp, store: KeyGroupStore, key_group: int) -> None:
        self._op = op
        self._store = store
        self.operator = op.name
        self._ctx = ProcessContext(op.name, key_group, store)
        self._value = None if isinstance(op, ProcessOp) else store.state("value")

    def run(
        self,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        split: str,
        dead: DeadLetters,
    ) -> tuple[list[Any], list[int]]:
        """Apply the operator to one batch; return the emitted values and their offsets."""
        op = self._op
        if type(op) is ProcessOp:
            return self._run_process(op, keys, values, offsets, split, dead)
        if type(op) is ReduceOp:
            return self._run_reduce(op, keys, values, offsets, split, dead)
        if type(op) is CountOp:
            return self._run_count(keys, offsets)
        assert type(op) is AggregateOp
        return self._run_aggregate(op, keys, values, offsets, split, dead)

    def _run_process(
        self,
        op: ProcessOp,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        split: str,
        dead: DeadLetters,
    ) -> tuple[list[Any], list[int]]:
        store = self._store
        ctx = self._ctx
        fn = op.fn
        out_values: list[Any] = []
        out_offsets: list[int] = []
        # emit is the list's own append (no Python-level call); offsets are caught up after
        # each record, which costs two len() calls instead of a method call per emit.
        ctx.emit = out_values.append
        try:
            for key, value, offset in zip(keys, values, offsets, strict=True):
                store.key = key
                try:
                    fn(key, value, ctx)
                except Exception as exc:
                    dead.add(op.name, exc, split, offset, value, key)
                behind = len(out_values) - len(out_offsets)
                if behind:
                    if behind == 1:
                        out_offsets.append(offset)
                    else:
                        out_offsets.extend([offset] * behind)
        finally:
            ctx.emit = _no_output
        return out_values, out_offsets

    def _run_reduce(
        self,
        op: ReduceOp,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        split: str,
        dead: DeadLetters,
    ) -> tuple[list[Any], list[int]]:
        store = self._store
        state = self._value
        assert state is not None
        get = state.value
        put = state.update
        fn = op.fn
        out_values: list[Any] = []
        out_offsets: list[int] = []
        emit = out_values.append
        for key, value, offset in zip(keys, values, offsets, strict=True):
            store.key = key
            acc = get()
            try:
                acc = value if acc is None else fn(acc, value)
                put(acc)  # raises StateEncodeError for a value CBOR cannot encode
            except Exception as exc:
                dead.add(op.name, exc, split, offset, value, key)
                continue
            emit((key, acc))
            out_offsets.append(offset)
        return out_values, out_offsets

    def _run_count(self, keys: list[Any], offsets: list[int]) -> tuple[list[Any], list[int]]:
        # count() cannot fail on a valid key, so it needs no per-record error handling.
        store = self._store
        state = self._value
        assert state is not None
        get = state.value
        put = state.update
        out_values: list[Any] = []
        emit = out_values.append
        for key in keys:
            store.key = key
            n = get() + 1
            put(n)
            emit((key, n))
        return out_values, list(offsets)

    def _run_aggregate(
        self,
        op: AggregateOp,
        keys: list[Any],
        values: list[Any],
        offsets: list[int],
        split: str,
        dead: DeadLetters,
    ) -> tuple[list[Any], list[int]]:
        store = self._store
        state = self._value
        assert state is not None
        get = state.value
        put = state.update
        create, add, result = op.create, op.add, op.result
        out_values: list[Any] = []
        out_offsets: list[int] = []
        emit = out_values.append
        for key, value, offset in zip(keys, values, offsets, strict=True):
            store.key = key
            acc = get()
            try:
                acc = add(create() if acc is None else acc, value)
                out = result(acc)
                put(acc)  # raises StateEncodeError for a value CBOR cannot encode
            except Exception as exc:
                dead.add(op.name, exc, split, offset, value, key)
                continue
            emit((key, out))
            out_offsets.append(offset)
        return out_values, out_offsets
