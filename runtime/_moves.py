"""Live migration, the worker side: how a key group (or a split) changes worker while every
other key group keeps running.

The job supervisor changes placement one *version* at a time (a few moves each, see
``_rescale.py``):

1. ``PrepareMoves(v)`` to each new owner: it spawns the successor of every moving key-group
   actor, *arriving*: it keeps what it receives in a queue of its own, outside its mailbox, so
   the worker's exchange never waits on it (that would stall every other key group there).
2. ``PlacementUpdate(v)`` to every worker: it routes by the new table from now on, and every
   sender it hosts (source actors for the first keyed stage, key-group actors for the next)
   *owes* a :class:`HandoffMarker` to each moved key group's old owner. A sender pays what it
   owes before it sends anything else (so the marker follows everything it sent the old owner
   and precedes what it sends the new one), and when told :class:`SendMarkers` (an idle
   sender). Every worker answers once it has applied the update.
3. ``StartHandoffs(v)`` to every worker: each moving actor is told :class:`MoveOut`. The old
   owner goes on processing until every input channel still open has delivered its marker
   (or ended): everything sent to it before the move is then processed. It pays its own
   markers, makes sure its own earlier output is delivered (:class:`FlushChannel` through every
   downstream exchange: its successor's output cannot overtake it), commits its store with a
   plain flush (undo-logged, so a crash still rolls back to the last checkpoint) and closes it
   (the environment's ownership fence is released), then sends its successor a
   :class:`GroupHandoff`: barrier alignment in progress (and the records it holds), open
   channels, watermarks, epoch counters. On one host nothing is copied: the successor opens
   the same LMDB environment. The old actor then hands off (``Actor.hand_off``): anything
   that still reaches it is forwarded.
4. The successor opens the store, takes the state over, handles its queue in arrival order
   and tells the supervisor :class:`MovedIn`; the version is complete when every move is in.

A source split moves the same way, without a successor waiting: its actor stops between two
batches, pays its markers, flushes its downstream, and the new owner opens the split at the
handed-over position.

Checkpoints and moves do not overlap: the supervisor starts a version only when no checkpoint
is in flight and triggers no checkpoint while a version is in flight. The alignment state
travels anyway, so a barrier of an aborted checkpoint still in a channel cannot wedge a
successor.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio

from ._messages import (
    Broadcast,
    FlushChannel,
    HandoffMarker,
    MoveOut,
    PlacementUpdate,
    SendMarkers,
)
from ._names import JOB_ACTOR, handoffs_name, source_actor_name
from ._plan import actor_name

if TYPE_CHECKING:
    from ._worker import WorkerEnv

__all__ = (
    "Laps",
    "apply_update",
    "flush_downstream",
    "pay_markers",
    "start_handoffs",
    "sync_driver",
)


def apply_update(env: WorkerEnv, update: PlacementUpdate) -> list[tuple[str, int]]:
    """Route by ``update``'s table from now on; record the markers every sender here owes.

    Returns the senders to nudge (:class:`SendMarkers`), as (actor name, version) pairs.
    """
    version = update.version
    env.placement_version = version
    env.holds.applied(version)
    moved = [(int(group), int(source), int(target)) for group, source, target in update.groups]
    directory = env.kernel.directory
    for group, source, target in moved:
        env.group_owner[group] = target
        for stage in env.plan.keyed_stages:
            directory.place(actor_name(stage.name, group), target)
            if source == env.index:
                env.departing.append((actor_name(stage.name, group), target))
    index = {split: i for i, split in enumerate(env.plan.splits)}
    for split, source, target in update.splits:
        env.split_owner[index[split]] = int(target)
        directory.place(source_actor_name(split), int(target))
        if int(source) == env.index:
            env.departing.append((source_actor_name(split), int(target)))
    for target in {target for _, target in env.departing}:
        # The handoffs go on the urgent lane to the new owner's worker: open it while the
        # markers come in, not when the first key group leaves.
        env.kernel.ref(handoffs_name(target)).prepare_urgent()
    nudge: list[tuple[str, int]] = []
    if not moved:
        return nudge
    plan = env.plan
    for stage in plan.keyed_stages:
        owed = [(stage.index, group, source) for group, source, _target in moved]
        inputs, keyed = plan.senders_into(stage.index)
        senders = [
            (split, source_actor_name(split))
            for split in env.sources
            if plan.input_of(split) in inputs
        ]
        upstream = {plan.stages[index].name for index in keyed}
        senders += [(name, name) for name in env.key_groups if name.rpartition("#")[0] in upstream]
        for channel, name in senders:
            env.owed.setdefault(channel, []).extend(owed)
            nudge.append((name, version))
    return nudge


def nudge_senders(env: WorkerEnv, nudge: list[tuple[str, int]]) -> None:
    """Tell each sender here to pay its markers. Never waits for mailbox room (``tell_urgent``,
    on this worker: into the mailbox now, else as soon as there is room): a sender with a full
    mailbox may be waiting on a held key group whose move waits for this worker's controller."""
    for name, version in nudge:
        ref = env.kernel.ref(name)
        if ref.is_local:
            ref.tell_urgent(SendMarkers(version))


def start_handoffs(env: WorkerEnv, version: int) -> None:
    """Tell every actor leaving this worker in ``version`` to hand over, without waiting for
    mailbox room (as :func:`nudge_senders`): one leaving actor blocked on a held key group must
    not keep the next one, maybe that key group's old owner, from hearing it."""
    departing, env.departing = env.departing, []
    for name, target in departing:
        env.kernel.ref(name).tell_urgent(MoveOut(version, target))


async def pay_markers(env: WorkerEnv, channel: str) -> None:
    """Send the markers ``channel`` owes: one per moved key group, to its old owner, in band
    (local groups straight to their actor, others through the old owner's exchange)."""
    owed = env.owed.pop(channel, None)
    if not owed:
        return
    marker = HandoffMarker(channel, env.placement_version)
    remote: dict[tuple[int, int], list[int]] = {}
    for stage, group, owner in owed:
        if owner == env.index:
            ref = env.kernel.ref(actor_name(env.plan.stages[stage].name, group))
            if ref.is_local:
                await ref.tell(marker)
            # else: the old owner handed over already (the channel was closed there)
        else:
            remote.setdefault((stage, owner), []).append(group)
    for (stage, owner), groups in remote.items():
        await env.credits.acquire(stage, owner)
        await env.exchange(owner, stage).tell(Broadcast(env.index, stage, groups, marker))


async def flush_downstream(env: WorkerEnv, stage: int) -> None:
    """Wait until everything this worker sent to ``stage``'s exchanges elsewhere is in its key
    groups' mailboxes (a credited :class:`FlushChannel` through each): what a moving sender's
    successor sends next cannot overtake it. What this worker holds for a moving key group
    of ``stage`` (``_holding.py``) is delivered first."""
    if env.holds:
        await env.holds.drain(stage)
    others = [worker for worker in env.peers if worker != env.index]

    async def flush(worker: int) -> None:
        await env.credits.acquire(stage, worker)
        await env.exchange(worker, stage).ask(FlushChannel(env.index))

    async with anyio.create_task_group() as tg:
        for worker in others:
            tg.start_soon(flush, worker)


async def sync_driver(env: WorkerEnv) -> None:
    """Wait until the driver has taken everything this worker gathered to it so far."""
    if env.sink is None:
        await env.kernel.ref(JOB_ACTOR).ask("sync")


def paused_now() -> float:
    """The clock a move's pause is measured with: system-wide monotonic (the old and the new
    owner may be different processes on this host)."""
    return time.perf_counter()


class Laps:
    """Where a move's pause goes: ``lap(name)`` records the time since the previous lap (or
    since ``start``) as phase ``name`` (seconds, :func:`paused_now`'s clock)."""

    __slots__ = ("_last", "phases")

    def __init__(self, start: float) -> None:
        self._last = start
        self.phases: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = paused_now()
        self.phases[name] = now - self._last
        self._last = now


def handoff_extra(state: dict[str, Any]) -> int:
    return int(state.get("bytes", 0))
