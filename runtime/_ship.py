"""Shipping a moving key group's state between workers that do not share a state directory
(``per_worker_state``; see ``_worker_state.py`` and ``shoal.storage``'s ``_shipping.py``).

On one host with a shared state directory a move copies nothing: the new owner opens the
environment the old owner closed (``_moves.py``). With a directory per worker, as on separate
hosts, the environment travels through the actor mesh, in two parts:

1. **Pre-copy**, before the placement version starts (the supervisor asks the old owner's
   :class:`Shipper` with :class:`PreCopy`): for each moving key-group actor, its store starts a
   journal, a compacted copy is written off the event loop (one LMDB read transaction: the key
   group keeps processing meanwhile) and streamed in :data:`CHUNK_BYTES` chunks to the new
   owner's :class:`ShipmentReceiver`, one ask at a time (so a large copy never floods the
   link the data uses, and two workers shipping to each other never wait on each other: the
   receiver only writes files).
2. **Cutover**, in the old owner's handoff (``KeyGroupActor._leave``): after its last flush it
   takes the *tail* — the current value of every entry changed since the copy, read from the
   journal — and sends it inside the :class:`GroupHandoff`. The successor installs copy plus
   tail (one transaction, then a rename) and opens the store. The pause pays for the tail,
   not for the state. A key group that was not pre-copied (it started after the pre-copy, or
   the pre-copy failed) is copied whole at cutover, the same way.

The old owner deletes its environment after the handoff is sent. A crash anywhere in between
is recovered like any other: half-shipped copies are dropped before the next attempt and the
key group comes back from its local copy (if the epoch fits) or the checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from shoal.actors import Actor
from shoal.storage import LmdbBackend, begin_shipping, copy_environment, end_shipping, shipping

from ._messages import PreCopy, StateChunk
from ._names import shipments_name
from ._plan import actor_name

if TYPE_CHECKING:
    from ._keygroup import KeyGroupActor
    from ._worker import WorkerEnv

__all__ = ("CHUNK_BYTES", "ShipmentReceiver", "Shipper", "ship_copy", "shipping_backend")

#: Bytes per chunk of a shipped copy: large enough that a 100 MB copy is a few dozen asks,
#: small enough that a chunk does not hold the link for long (~1 ms on loopback).
CHUNK_BYTES = 1 << 20


def shipping_backend(env: WorkerEnv) -> LmdbBackend:
    backend = env.backend
    if not isinstance(backend, LmdbBackend):
        raise TypeError(f"shipping state needs LMDB; this worker's backend is {backend!r}")
    return backend


async def ship_copy(env: WorkerEnv, actor: KeyGroupActor, target: int) -> int:
    """Start ``actor``'s journal, copy its environment and stream the copy to worker
    ``target``; return the bytes sent. The actor goes on processing meanwhile (its store is
    only read, by one LMDB transaction in a worker thread)."""
    store = actor.store
    assert store is not None
    backend = shipping_backend(env)
    if shipping(store):
        end_shipping(store)  # an earlier pre-copy whose move was called off
    begin_shipping(store)
    out = backend.outgoing_path(store.operator, store.key_group)
    shutil.rmtree(out, ignore_errors=True)
    done = actor.copying = anyio.Event()
    try:
        # Shielded: the store must not close under the copy's read transaction (on_stop
        # waits for ``copying``).
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(copy_environment, store, out)
    finally:
        done.set()
        actor.copying = None
    receiver = env.kernel.ref(shipments_name(target))
    sent = 0
    try:
        with (out / "data.mdb").open("rb") as file:
            while True:
                data = await anyio.to_thread.run_sync(file.read, CHUNK_BYTES)
                await receiver.ask(StateChunk(store.operator, store.key_group, sent, data))
                sent += len(data)
                if env.faults:
                    env.faults.hit("keygroup.ship")
                if len(data) < CHUNK_BYTES:
                    break
    finally:
        shutil.rmtree(out, ignore_errors=True)
        with contextlib.suppress(OSError):  # the operator's folder, if nothing else is in it
            out.parent.rmdir()
    return sent


class Shipper(Actor):
    """Pre-copies the key groups leaving this worker (one :class:`PreCopy` at a time)."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env

    async def receive(self, message: Any) -> Any:
        if type(message) is not PreCopy:
            raise TypeError(f"shipper got an unexpected message {message!r}")
        env = self.env
        copied: list[str] = []
        sent = 0
        for group, target in message.groups:
            for stage in env.plan.keyed_stages:
                name = actor_name(stage.name, int(group))
                actor = env.key_groups.get(name)
                if actor is None or actor.store is None or actor.leaving is not None:
                    continue  # not running here now: it ships whole at cutover, if at all
                actor.shipped = await ship_copy(env, actor, int(target))
                sent += actor.shipped
                copied.append(name)
        return {"copied": copied, "bytes": sent}


def _write_at(path: Path, offset: int, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if offset == 0 else 0)
    fd = os.open(path, flags, 0o644)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


class ShipmentReceiver(Actor):
    """Writes the copies shipped to this worker where its backend installs them from."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env

    async def receive(self, message: Any) -> Any:
        if type(message) is not StateChunk:
            raise TypeError(f"shipment receiver got an unexpected message {message!r}")
        incoming = shipping_backend(self.env).incoming_path(message.operator, message.key_group)
        if message.offset == 0:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(incoming)
            incoming.mkdir(parents=True)
        await anyio.to_thread.run_sync(
            _write_at, incoming / "data.mdb", message.offset, message.data
        )
        return None
