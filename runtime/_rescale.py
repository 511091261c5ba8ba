"""Rescaling, the supervisor side: start or retire workers and move key groups and splits
between them, one placement version at a time, while the job runs (the worker side of a move
is ``_moves.py``).

A rescale to ``n`` workers:

1. if ``n`` is larger, start the new workers (new ids, never reused), admit them into every
   worker's mesh, and start them (they own nothing yet);
2. compute the balanced table over the ``n`` workers with the fewest moves
   (:meth:`Placement.rescaled`), and apply its key-group moves in versions of at most
   ``max_moves`` moves (the pacing: that many key groups paused at once), then its split moves;
3. if ``n`` is smaller, retire the workers that own nothing any more: each settles its files,
   closes its sinks and reports its counters (kept for the job's result), then stops.

A version starts only when no checkpoint is in flight, and no checkpoint starts while one is
applied: barriers never cross a moving channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from shoal.actors import ActorStoppedError, PeerLostError, Ref
from shoal.actors._log import get_logger
from shoal.storage import CheckpointError

from ._credits import MAX_WORKERS
from ._messages import (
    Admit,
    MovedIn,
    PlacementUpdate,
    PreCopy,
    PrepareMoves,
    Retire,
    StartHandoffs,
    StartSources,
)
from ._names import source_actor_name
from ._placement import Move, Placement, split_homes
from ._plan import Plan, actor_name
from ._policies import BalanceLoad, PlacementPolicy, RebalanceRecord, plan_rebalance, predicted

if TYPE_CHECKING:
    from ._load import KeyGroupLoad
    from ._supervisor import JobSupervisor

__all__ = (
    "DEFAULT_MAX_MOVES",
    "MoveRecord",
    "RescaleError",
    "RescaleRecord",
    "Rescaler",
    "Scaling",
    "WorkerPool",
    "rescale_summary",
)


class RescaleError(RuntimeError):
    """A rescale that cannot go on (the job drained meanwhile); the job itself is fine."""


log = get_logger("shoal.rescale")

#: Key groups (or splits) moved at once by default: the pacing of a rescale.
DEFAULT_MAX_MOVES = 8


class WorkerPool(Protocol):
    """How a run mode starts and stops single workers (a process, or a kernel in this loop)."""

    async def start(self, ids: Sequence[int], placement: Placement) -> dict[int, Ref]:
        """Start workers ``ids`` routing by ``placement``; return their controllers."""
        ...

    async def stop(self, worker: int) -> None:
        """Stop retired worker ``worker`` (it hosts nothing and has reported)."""
        ...


@dataclass(frozen=True, slots=True)
class MoveRecord:
    """One completed move: what, from where to where, the pause, the state it carried (its
    environment's bytes, or what was shipped to a worker with a state directory of its own,
    ``tail_bytes`` of it during the pause) and the records its successor held until the
    handoff.

    ``phases`` (a key group's move; empty for a split) is where its pause went, in seconds,
    in order: ``downstream`` (the old owner's output delivered to the next stage or the
    driver), ``file_write`` (a checkpoint file write of its snapshot still running),
    ``flush`` (its store committed), ``ship`` (its tail shipped, between state directories of
    their own), ``close`` (the environment closed, its fence released), ``transit`` (the
    handoff from the old owner's worker to the new one's handler: the message, and the new
    owner's process and loop getting to it) and ``open`` (the store opened there)."""

    version: int
    kind: str
    name: str
    source: int
    target: int
    pause_s: float
    bytes: int
    held_records: int = 0
    tail_bytes: int = 0
    phases: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": self.kind,
            "name": self.name,
            "from": self.source,
            "to": self.target,
            "pause_ms": round(self.pause_s * 1000, 3),
            "bytes": self.bytes,
            "held_records": self.held_records,
            "tail_bytes": self.tail_bytes,
            "phases_ms": {name: round(s * 1000, 3) for name, s in self.phases.items()},
        }


@dataclass(frozen=True, slots=True)
class RescaleRecord:
    """One completed rescale (``records``: what the sources read meanwhile)."""

    workers_before: int
    workers_after: int
    seconds: float
    moves: int
    records: int = 0


def rescale_summary(
    migrations: Sequence[MoveRecord], rescales: Sequence[RescaleRecord]
) -> dict[str, Any]:
    """The summary fields of a job's rescales (``--json``): moves, their pauses (key-group
    moves: the processing pause of the key group that moved), each rescale's seconds, and the
    events per second read while rescales ran (None: no rescale)."""
    pauses = sorted(m.pause_s for m in migrations if m.kind == "group")
    seconds = sum(r.seconds for r in rescales)

    def at(quantile: float) -> float | None:
        if not pauses:
            return None
        return round(pauses[min(len(pauses) - 1, int(quantile * len(pauses)))] * 1000, 2)

    return {
        "migrations": len(migrations),
        "migration_pause_ms_p50": at(0.5),
        "migration_pause_ms_p99": at(0.99),
        "migration_pause_ms_max": at(1.0),
        "rescales": [round(r.seconds, 3) for r in rescales],
        "events_per_s_during_rescale": (
            round(sum(r.records for r in rescales) / seconds, 1) if seconds > 0 else None
        ),
    }


@dataclass
class Scaling:
    """A job's scale across its attempts: the worker count a restarted attempt starts with
    (a rescale changes it first, so a failure during a rescale restarts at the new size), and
    every move and rescale completed."""

    workers: int
    moves: list[MoveRecord] = field(default_factory=list)
    rescales: list[RescaleRecord] = field(default_factory=list)
    rebalances: list[RebalanceRecord] = field(default_factory=list)


@dataclass
class Rescaler:
    """The supervisor's rescaling state (one per attempt)."""

    plan: Plan
    placement: Placement
    members: dict[int, Ref]
    admit_driver: Callable[[Sequence[int]], None]
    scaling: Scaling
    max_moves: int = DEFAULT_MAX_MOVES
    pool: WorkerPool | None = None
    #: Each worker's shipper (None: the workers share a state directory and nothing is
    #: copied; see _ship.py).
    shipper: Callable[[int], Ref] | None = None
    retired_reports: list[dict[str, Any]] = field(default_factory=list)
    #: True while a placement version is applied (no checkpoint may start).
    moving: bool = False
    #: True while a rescale runs (periodic checkpoints are skipped meanwhile).
    rescaling: bool = False
    #: Placement versions whose handoffs have started, and an event set (and replaced) at
    #: each (a timeline's kill during a rescale waits for it).
    handoffs: int = 0
    handoff_started: anyio.Event = field(default_factory=anyio.Event)
    _expected: set[str] = field(default_factory=set)
    _moved: anyio.Event = field(default_factory=anyio.Event)
    _lock: anyio.Lock = field(default_factory=anyio.Lock)
    _next_id: int = 0

    def __post_init__(self) -> None:
        self._next_id = max(self.placement.workers, default=-1) + 1

    def moved_in(self, message: MovedIn) -> None:
        record = MoveRecord(
            message.version,
            message.kind,
            message.name,
            message.source,
            message.target,
            message.pause_s,
            message.bytes,
            message.held_records,
            message.tail_bytes,
            message.phases or {},
        )
        self.scaling.moves.append(record)
        log.info(
            "key group moved" if record.kind == "group" else "split moved",
            name=record.name,
            version=record.version,
            source=record.source,
            target=record.target,
            pause_ms=round(record.pause_s * 1000, 2),
            bytes=record.bytes,
            held_records=record.held_records,
        )
        self._expected.discard(message.name)
        if not self._expected:
            self._moved.set()

    async def rescale(self, supervisor: JobSupervisor, workers: int) -> RescaleRecord:
        """Scale the job to ``workers`` workers (see the module docstring)."""
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(
                f"rescale takes an int worker count (1 to {MAX_WORKERS}); got {workers!r}"
            )
        if workers < 1:
            raise ValueError(f"rescale needs a worker count >= 1; got {workers!r}")
        if workers > MAX_WORKERS:
            raise ValueError(f"rescale to {workers} workers: at most {MAX_WORKERS} are supported")
        async with self._lock:
            self.rescaling = True
            try:
                return await self._rescale(supervisor, workers)
            finally:
                self.rescaling = False

    async def _rescale(self, supervisor: JobSupervisor, workers: int) -> RescaleRecord:
        started = time.perf_counter()
        current = list(self.placement.workers)
        self.scaling.workers = workers  # a restart from here on starts at the new size
        if workers > len(current):
            if self.pool is None:
                raise RuntimeError("this job cannot start workers (no worker pool)")
            new = list(range(self._next_id, self._next_id + workers - len(current)))
            self._next_id += len(new)
            members = [*self.members, *new]
            await _each(self.members.values(), lambda c: c.ask(Admit(members)))
            self.admit_driver(new)
            started_refs = await self.pool.start(new, self.placement)
            self.members.update(started_refs)
            await _each(started_refs.values(), lambda c: c.ask(StartSources()))
            keep = current + new
        else:
            keep = current[:workers]
        self.placement = Placement(
            self.placement.version,
            tuple(sorted(set(self.placement.workers) | set(keep))),
            self.placement.group_owner,
            self.placement.split_owner,
        )
        target = self.placement.rescaled(keep, split_homes(self.plan))
        group_moves = self.placement.group_moves(target)
        split_moves = self.placement.split_moves(target, self.plan.splits)
        for chunk in _chunks(group_moves, self.max_moves):
            await self._apply(supervisor, chunk, [])
        for chunk in _chunks(split_moves, self.max_moves):
            await self._apply(supervisor, [], chunk)
        retiring = [w for w in current if w not in keep]
        if retiring and supervisor.coordinator is not None and supervisor.transactional:
            # What the retiring workers' sink partitions staged is published by a
            # checkpoint they take part in (their pre-commit and commit).
            try:
                await supervisor.take_checkpoint(supervisor.ref)
            except CheckpointError:
                # The job drained meanwhile: its final checkpoint (with every worker still
                # a member) publishes it all; the workers stop with the job.
                retiring = []
        await _each(retiring, self._retire)
        if retiring:
            members = list(self.members)
            await _each(self.members.values(), lambda c: c.ask(Admit(members)))
        self.placement = Placement(
            self.placement.version,
            tuple(sorted({*keep, *self.members})),
            self.placement.group_owner,
            self.placement.split_owner,
        )
        record = RescaleRecord(
            len(current),
            workers,
            time.perf_counter() - started,
            len(group_moves) + len(split_moves),
        )
        if record.moves or record.workers_before != record.workers_after:
            self.scaling.rescales.append(record)  # a rescale to the same size is no news
        return record

    async def rebalance(
        self,
        supervisor: JobSupervisor,
        loads: Sequence[KeyGroupLoad],
        policy: PlacementPolicy | None = None,
    ) -> RebalanceRecord:
        """Move key groups where ``policy`` (default ``BalanceLoad``) wants them given
        ``loads``, same workers, in placement versions of at most ``max_moves`` (see
        ``_policies.py``)."""
        if policy is not None and not callable(getattr(policy, "place", None)):
            raise TypeError(
                "rebalance takes a placement policy (an object with a place(placement, loads, "
                f"workers) method, e.g. BalanceLoad()) or None for the default; got {policy!r}"
            )
        async with self._lock:
            self.rescaling = True
            try:
                started = time.perf_counter()
                workers = sorted(self.members)
                placement = self.placement
                moves = plan_rebalance(placement, loads, workers, policy or BalanceLoad())
                for chunk in _chunks(moves, self.max_moves):
                    await self._apply(supervisor, chunk, [])
                before, after = predicted(placement, moves, loads, workers)
                record = RebalanceRecord(tuple(moves), time.perf_counter() - started, before, after)
                if moves:
                    self.scaling.rebalances.append(record)  # as a rescale: nothing moved, no news
                return record
            finally:
                self.rescaling = False

    async def _pre_copy(self, groups: Sequence[Move]) -> None:
        """Copy the moving key groups' environments to their new owners while they run
        (checkpoints may run meanwhile: the journal notes what they write)."""
        shipper = self.shipper
        assert shipper is not None
        by_source: dict[int, list[list[int]]] = {}
        for move in groups:
            by_source.setdefault(int(move.source), []).append([int(move.item), int(move.target)])
        version = self.placement.version + 1
        started = time.perf_counter()
        answers: list[dict[str, Any]] = []

        async def ask(item: tuple[int, list[list[int]]]) -> None:
            try:
                answers.append(await shipper(item[0]).ask(PreCopy(version, item[1])))
            except (PeerLostError, ActorStoppedError):
                raise
            except Exception as exc:
                # A shipper (or the receiver it writes to) fails its worker, and with it this
                # attempt: the move is over, as if the worker were lost (the attempt's own
                # watch names the cause; a restart recovers from the last checkpoint).
                raise PeerLostError(
                    f"worker {item[0]} failed while pre-copying key groups: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

        await _each(list(by_source.items()), ask)
        log.info(
            "key groups pre-copied",
            version=version,
            actors=sum(len(a["copied"]) for a in answers),
            bytes=sum(int(a["bytes"]) for a in answers),
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _retire(self, worker: int) -> None:
        controller = self.members.pop(worker)
        self.retired_reports.append(await controller.ask(Retire()))
        assert self.pool is not None
        await self.pool.stop(worker)

    async def _apply(
        self, supervisor: JobSupervisor, groups: Sequence[Move], splits: Sequence[Move]
    ) -> None:
        """Apply one placement version: ``groups`` and ``splits`` move (see ``_moves.py``).
        Nothing moves once the job has drained: its final checkpoint is being taken."""
        if self.shipper is not None and groups:
            await self._pre_copy(groups)
        await supervisor.wait_no_checkpoint()
        if supervisor.finished.is_set():
            raise RescaleError(
                "the job has drained (read all its input, or was stopped): nothing to move"
            )
        self.moving = True
        try:
            version = self.placement.version + 1
            by_target: dict[int, list[int]] = {}
            for move in groups:
                by_target.setdefault(move.target, []).append(int(move.item))
            await _each(
                list(by_target.items()),
                lambda item: self.members[item[0]].ask(PrepareMoves(version, item[1])),
            )
            expected = {
                actor_name(stage.name, int(move.item))
                for move in groups
                for stage in self.plan.keyed_stages
            } | {str(move.item) for move in splits}
            self._expected, self._moved = set(expected), anyio.Event()
            if not expected:
                self._moved.set()
            update = PlacementUpdate(
                version, [m.to_data() for m in groups], [m.to_data() for m in splits]
            )
            supervisor.follow(update)
            await _each(self.members.values(), lambda c: c.ask(update))
            await _each(self.members.values(), lambda c: c.ask(StartHandoffs(version)))
            self.handoffs += 1
            self.handoff_started.set()
            self.handoff_started = anyio.Event()
            await self._moved.wait()
            self.placement = self.placement.applied(groups, splits, self.plan.splits)
        finally:
            self.moving = False
            supervisor.changed()


def driver_directory_moves(update: PlacementUpdate, plan: Plan) -> list[tuple[str, int]]:
    """Actor names whose worker changes with ``update``, and the new worker."""
    names = [
        (actor_name(stage.name, int(group)), int(target))
        for group, _source, target in update.groups
        for stage in plan.keyed_stages
    ]
    names += [(source_actor_name(split), int(target)) for split, _source, target in update.splits]
    return names


def _chunks(moves: Sequence[Move], size: int) -> list[list[Move]]:
    return [list(moves[i : i + size]) for i in range(0, len(moves), size)]


async def _each(items: Any, fn: Callable[[Any], Coroutine[Any, Any, Any]]) -> None:
    """Run ``fn`` on every item at once; wait for all. The first error is raised as itself
    (a lost worker is a ``PeerLostError``, not a group of them)."""
    try:
        async with anyio.create_task_group() as tg:
            for item in list(items):
                tg.start_soon(fn, item)
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
