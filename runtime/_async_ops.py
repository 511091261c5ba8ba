"""``async def`` user functions: map, filter and keyed process functions that await.

A batch is still the unit: the actor (or the source) hands a whole batch over and waits for
it, so everything that follows the batch in its mailbox — the next batch, a checkpoint
barrier, a watermark, a timer, a handoff marker — waits for every record before it. Within
the batch the calls overlap:

* **map / filter**: up to ``concurrency`` calls at once (a fixed set of worker tasks pulling
  the next record), results in input order (Flink's *ordered* async I/O). A call that raises
  is a dead letter, the others go on.
* **process** (keyed): a key's records run one after the other, in arrival order; up to
  ``concurrency`` keys at once. The key group has one store whose *current key* handles read
  and write, so each record's coroutine is driven by :class:`_InKey`, which sets the store's
  key every time the coroutine resumes: ``ctx.state`` is that record's key's across every
  ``await`` (and so are ``ctx.key`` and ``ctx.timers``). Each key's task has its own
  :class:`ProcessContext` (``emit``, ``timestamp``). What the records emit leaves in input
  order, with their offsets and timestamps, as for a plain function.

Timers of an async operator fire in timestamp order, one ``on_timer`` at a time (a plain
``on_timer`` is called as it is).

Per-key order and "non-record events wait for the records before them" are the guarantees
Flink 2.x's asynchronous state execution keeps; here they follow from the batch boundary,
without a per-record epoch manager.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from itertools import compress
from typing import TYPE_CHECKING, Any

import anyio

from ._dataflow import AsyncFilterOp, AsyncMapOp, FilterOp, FlatMapOp, MapOp, ProcessOp

if TYPE_CHECKING:
    from shoal.storage import KeyGroupStore

    from ._operators import DeadLetters, ProcessContext

__all__ = ("apply_chain_async", "in_key", "run_keys_async")

ChainOp = MapOp | FilterOp | FlatMapOp | AsyncMapOp | AsyncFilterOp


class _InKey:
    """Await ``coro`` with ``store.key = key`` whenever it runs (between its awaits other
    keys' coroutines run on the same store)."""

    __slots__ = ("_coro", "_key", "_store")

    def __init__(self, coro: Coroutine[Any, Any, Any], store: KeyGroupStore, key: Any) -> None:
        self._coro = coro
        self._store = store
        self._key = key

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, store, key = self._coro, self._store, self._key
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            store.key = key
            try:
                yielded = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as stop:
                return stop.value
            try:
                sent, thrown = (yield yielded), None
            except BaseException as exc:  # cancellation included: the coroutine sees it
                sent, thrown = None, exc


def in_key(result: Any, store: KeyGroupStore, key: Any, what: str) -> Awaitable[Any]:
    """What to await for one call of an async user function (``result``) of ``key``."""
    if inspect.iscoroutine(result):
        return _InKey(result, store, key)
    raise TypeError(
        f"{what} must return an awaitable (an async def function); got {type(result).__name__}"
    )


async def _call_all(
    fn: Callable[[Any], Awaitable[Any]], values: list[Any], concurrency: int
) -> tuple[list[Any], list[tuple[int, Exception]]]:
    """``[await fn(v) for v in values]``, ``concurrency`` at a time, in order; the calls
    that raised as ``(index, error)`` (their results are left None)."""
    results: list[Any] = [None] * len(values)
    failed: list[tuple[int, Exception]] = []
    pending = iter(enumerate(values))

    async def worker() -> None:
        for index, value in pending:  # shared: each worker takes the next record
            try:
                results[index] = await fn(value)
            except Exception as exc:
                failed.append((index, exc))

    async with anyio.create_task_group() as tg:
        for _ in range(min(concurrency, len(values))):
            tg.start_soon(worker)
    failed.sort(key=lambda item: item[0])
    return results, failed


async def apply_chain_async(
    chain: tuple[ChainOp, ...],
    values: list[Any],
    offsets: list[int],
    timestamps: list[Any] | None,
    split: str,
    dead: DeadLetters,
) -> tuple[list[Any], list[int], list[Any] | None]:
    """Run a stateless chain with async operators in it over one batch (the plain operators
    as :func:`apply_chain` runs them)."""
    from ._operators import apply_chain, apply_chain_timed  # it imports this module

    for op in chain:
        if not values:
            break
        if type(op) is AsyncMapOp or type(op) is AsyncFilterOp:
            results, failed = await _call_all(op.fn, values, op.concurrency)
            keep = [True] * len(values)
            for index, exc in failed:
                dead.add(op.name, exc, split, offsets[index], values[index])
                keep[index] = False
            if type(op) is AsyncFilterOp:
                keep = [k and bool(r) for k, r in zip(keep, results, strict=True)]
            else:
                values = results
            if not all(keep):
                values = list(compress(values, keep))
                offsets = list(compress(offsets, keep))
                if timestamps is not None:
                    timestamps = list(compress(timestamps, keep))
        elif timestamps is None:
            values, offsets = apply_chain((op,), values, offsets, split, dead)
        else:
            values, offsets, timestamps = apply_chain_timed(
                (op,),
                values,
                offsets,
                timestamps,
                split,
                dead,
            )
    return values, offsets, timestamps


async def run_keys_async(
    op: ProcessOp,
    store: KeyGroupStore,
    contexts: Iterator[ProcessContext],
    keys: list[Any],
    values: list[Any],
    offsets: list[int],
    split: str,
    dead: DeadLetters,
    timestamps: list[Any] | None,
) -> tuple[list[Any], list[int], list[Any] | None]:
    """Run an async process function over one batch: per key in order, keys concurrently
    (see the module docstring); return what it emitted, in input order."""
    assert op.concurrency is not None
    by_key: dict[Any, list[int]] = {}
    for index, key in enumerate(keys):
        found = by_key.get(key)
        if found is None:
            by_key[key] = [index]
        else:
            found.append(index)
    emitted: list[list[Any] | None] = [None] * len(keys)
    stamps = timestamps if timestamps is not None else [None] * len(keys)
    fn = op.fn
    pending = iter(by_key.items())

    async def worker(ctx: ProcessContext) -> None:
        for key, indexes in pending:  # shared: each worker takes the next key
            for index in indexes:
                out: list[Any] = []
                ctx.emit = out.append
                ctx.timestamp = stamps[index]
                value = values[index]
                store.key = key
                try:
                    await in_key(fn(key, value, ctx), store, key, f"process function {op.name}")
                except Exception as exc:
                    dead.add(op.name, exc, split, offsets[index], value, key)
                if out:
                    emitted[index] = out

    async with anyio.create_task_group() as tg:
        for _ in range(min(op.concurrency, len(by_key))):
            tg.start_soon(worker, next(contexts))
    out_values: list[Any] = []
    out_offsets: list[int] = []
    out_stamps: list[Any] | None = None if timestamps is None else []
    for index, items in enumerate(emitted):
        if items:
            out_values.extend(items)
            out_offsets.extend([offsets[index]] * len(items))
            if out_stamps is not None:
                out_stamps.extend([stamps[index]] * len(items))
    return out_values, out_offsets, out_stamps
