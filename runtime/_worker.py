"""One worker's shared state (:class:`WorkerEnv`), its controller, and how its actors start.

The actors themselves live in their own modules: ``_source_actor.py`` (reads a split),
``_keygroup.py`` (owns a key group's state), ``_exchange.py`` (records and credits between
workers), ``_checkpoint_io.py`` (checkpoint files); ``_names.py`` names them all.

A worker hosts the splits assigned to it and the key groups it owns. A source actor reads its
split batch by batch (an idle continuation, so control messages interleave with reading), runs
the stateless chain, keys and routes the batch, and tells each key group's actor one
:class:`Data` message. A key-group actor owns its store (one LMDB environment), runs the keyed
operator and passes its output on: to the next keyed operator's exchange, or to the sink.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
from shoal.actors import Actor, PeerLostError, Ref, Worker
from shoal.actors._log import get_logger
from shoal.storage import (
    CacheBudget,
    CheckpointStore,
    Manifest,
    StateBackend,
)

from ._async_ops import apply_chain_async
from ._checkpoint_io import CheckpointWriter
from ._credits import DEFAULT_WINDOW, MAX_WORKERS, Credits, exchange_mailbox_size
from ._exceptions import UnreadOutputError
from ._exchange import ExchangeActor, FlowControlActor
from ._faults import Faults, InjectedFault
from ._holding import Holds
from ._keygroup import KeyGroupActor
from ._keys import KeyGroupRouter
from ._load import group_reports
from ._messages import (
    Admit,
    Broadcast,
    CommitSink,
    Data,
    EndOfStream,
    Finish,
    Gathered,
    GroupHandoff,
    InjectBarrier,
    InjectFailure,
    MovedIn,
    PlacementUpdate,
    PreCommitSink,
    PrepareMoves,
    ReleaseEnds,
    Retire,
    Shipment,
    SinkPreCommitted,
    SplitHandoff,
    StartHandoffs,
    StartSources,
    StopSources,
    Throttle,
    WriteSnapshot,
)
from ._metrics import WorkerMetrics
from ._moves import apply_update, nudge_senders, paused_now, pay_markers, start_handoffs
from ._names import (
    JOB_ACTOR,
    checkpoint_writer_name,
    controller_name,
    exchange_name,
    flow_control_name,
    handoffs_name,
    shipments_name,
    shipper_name,
    source_actor_name,
)
from ._operators import (
    DeadLetters,
    apply_chain,
    apply_chain_timed,
    key_and_route,
    key_and_route_timed,
)
from ._outputs import split_sides
from ._plan import Outlet, Plan, Stage, actor_name
from ._ship import ShipmentReceiver, Shipper
from ._sinks import DeadLetter, SinkPartition
from ._source_actor import SourceActor
from ._source_host import SourceHost, source_host_name
from ._sources import SourceContext
from ._time import Clock, SystemClock

__all__ = (
    "WorkerController",
    "WorkerEnv",
    "admit",
    "letters_from_json",
    "place_directory",
    "place_workers",
    "start_worker",
)


@dataclass(slots=True)
class WorkerEnv:
    """Everything the actors of one worker share. Built once per worker by the bootstrap."""

    plan: Plan
    index: int
    workers: int
    driver: int
    kernel: Worker
    backend: StateBackend
    group_owner: list[int]
    split_owner: list[int]
    batch_size: int
    mailbox_size: int
    # Records a moving key group's successor queues before its senders hold (None: 4
    # mailboxes of batches; see ``_holding.py``).
    move_hold_records: int | None = None
    sink: SinkPartition | None = None  # None: sink items are gathered by the driver
    dead_sink: SinkPartition | None = None  # None: dead letters are gathered by the driver
    credit_window: int = DEFAULT_WINDOW
    # Checkpoints on: key groups flush only at barriers and at end of stream (never mid-epoch).
    checkpoints: bool = False
    # Where key groups write their checkpoint files (None: checkpoints are only committed
    # locally, nothing is written to a store).
    checkpoint_store: CheckpointStore | None = None
    # Recovering: every key group is brought back to ``restore_from`` (None: no checkpoint had
    # completed, so to empty state) and every split reopens at its position there.
    restoring: bool = False
    restore_from: Manifest | None = None
    # ``restore_from`` is the manifest of this savepoint (None: of a checkpoint in the store).
    restore_savepoint: str | None = None
    # Faults scheduled for this worker in this attempt (tests and soak runs; see _faults.py).
    faults: Faults = field(default_factory=Faults)
    # Snapshots handed to the checkpoint writer and not closed yet (see CheckpointWriter).
    pending_snapshots: set[WriteSnapshot] = field(init=False, default_factory=set)
    # Records each actor (by its channel name) gave the sink in this attempt: its checkpoint
    # ack reports it, so a manifest counts every output once (Manifest.counters).
    emitted: dict[str, int] = field(init=False, default_factory=dict)
    # Processing time, for processing-time timers and idle splits (see _time.py).
    clock: Clock = field(default_factory=SystemClock)
    # The active worker ids (the mesh's members but the driver); None: 0..workers-1.
    peers: list[int] = field(default_factory=list)
    # The placement table's version this worker routes by (see _moves.py).
    placement_version: int = 0
    # Whether retiring closes the sink partitions (False: the run closes them at the end).
    close_sinks: bool = True
    # Each worker has a state directory of its own: a key group that moves is shipped
    # (pre-copy, then the changes since; see _ship.py) instead of reopened in place.
    ship_state: bool = False
    # A timeline step is still to come: a split that read all its input holds its end of
    # stream back until the driver releases it (ReleaseEnds), so the job cannot drain first.
    hold_ends: bool = False
    # Live migration (see _moves.py): markers each sender channel here still owes, as
    # (stage, key group, old owner); the actors leaving in the version being applied; this
    # worker's running key-group actors by name, and the successors waiting for a handoff.
    owed: dict[str, list[tuple[int, int, int]]] = field(init=False, default_factory=dict)
    departing: list[tuple[str, int]] = field(init=False, default_factory=list)
    key_groups: dict[str, KeyGroupActor] = field(init=False, default_factory=dict)
    arrivals: dict[str, KeyGroupActor] = field(init=False, default_factory=dict)
    dead: DeadLetters = field(init=False)
    credits: Credits = field(init=False)
    metrics: WorkerMetrics = field(init=False)
    router: KeyGroupRouter = field(init=False)
    holds: Holds = field(init=False)  # what senders here hold for moving key groups
    _targets: dict[int, list[Ref]] = field(init=False, default_factory=dict)
    sources: dict[str, SourceActor] = field(init=False, default_factory=dict)
    transactional: bool = field(init=False, default=False)
    # Set by StopSources, which may arrive before StartSources: sources started later end at once.
    stopping: bool = field(init=False, default=False)
    source_host: SourceHost | None = field(init=False, default=None)  # set by start_worker
    # How key groups came back when restoring: "local" / "rolled back" / "restored" / "empty".
    restores: dict[str, int] = field(init=False, default_factory=dict)
    restore_s: float = field(init=False, default=0.0)  # the slowest key group's restore

    def __post_init__(self) -> None:
        # A transactional sink stages output per checkpoint epoch and publishes it when the
        # checkpoint completes (see _txn_sink.py).
        self.transactional = self.plan.transactional
        self.dead = DeadLetters(self.index)
        self.metrics = WorkerMetrics(self.index)
        self.router = KeyGroupRouter(self.plan.num_key_groups)
        # A successor asks for backpressure past as many records as a barrier alignment
        # holds (a few mailboxes' worth), and a worker holds as many per key group.
        hold = self.move_hold_records or 4 * self.mailbox_size * self.batch_size
        self.holds = Holds(hold, self._deliver_group)
        self.credits = Credits(self.credit_window, wait_lost=self._wait_lost)
        if not self.peers:
            self.peers = list(range(self.workers))

    async def _wait_lost(self, worker: int) -> BaseException:
        await self.kernel.wait_peer_lost(worker)
        return PeerLostError(f"worker {worker} was lost while worker {self.index} sent to it")

    @property
    def budget(self) -> CacheBudget | None:
        """The worker's state memory budget (its backend's), if it has one."""
        budget = getattr(self.backend, "budget", None)
        return budget if isinstance(budget, CacheBudget) else None

    def targets(self, stage: int) -> list[Ref]:
        """Refs of every key-group actor of ``stage``, indexed by key group (cached)."""
        refs = self._targets.get(stage)
        if refs is None:
            name = self.plan.stages[stage].name
            refs = [
                self.kernel.ref(actor_name(name, group))
                for group in range(self.plan.num_key_groups)
            ]
            self._targets[stage] = refs
        return refs

    def first_epoch(self) -> int:
        """The epoch of the output produced before this start's first barrier."""
        manifest = self.restore_from if self.restoring else None
        return 1 if manifest is None else manifest.epoch + 1

    def start_position(self, split: str) -> Any:
        """Where ``split`` starts: its position in the checkpoint being restored, else None
        (its beginning)."""
        if not self.restoring or self.restore_from is None:
            return None
        positions = self.restore_from.positions or {}
        return positions.get(split)

    def owned_groups(self) -> list[int]:
        return [g for g, owner in enumerate(self.group_owner) if owner == self.index]

    def owned_splits(self) -> list[str]:
        return [
            s
            for s, owner in zip(self.plan.splits, self.split_owner, strict=True)
            if owner == self.index
        ]

    async def emit(
        self,
        stage: Stage,
        channel: str,
        split: str,
        values: list[Any],
        offsets: list[int],
        epoch: int = 0,
        timestamps: list[Any] | None = None,
        sides: bool = False,
    ) -> None:
        """Pass one batch that left ``stage``'s operator through its outlets (``_plan.py``):
        each outlet's chain, then a keyed stage's exchange, a sink, or its forks; a side
        output's values through that side's outlets.

        ``epoch``: the checkpoint the batch is output of (the emitting actor's next barrier).
        ``timestamps``: the records' event time, a column carried along, or None.
        ``sides``: the batch holds side-output values (``ctx.output``) to take out first.
        """
        if self.owed:  # a placement change: the old owners hear first that this is all
            await pay_markers(self, channel)
        if values:
            outlets = stage.outlets
            if sides:
                (values, offsets, timestamps), by_tag = split_sides(values, offsets, timestamps)
                for tag, (side_values, side_offsets, side_stamps) in by_tag.items():
                    side = stage.side(tag)
                    if side is None:
                        self._unread(
                            stage, f"side output {tag!r}", side_values, side_offsets, split
                        )
                        continue
                    for outlet in side:
                        await self._outlet(
                            outlet, channel, split, side_values, side_offsets, epoch, side_stamps
                        )
            if values and not outlets:
                self._unread(stage, "main output", values, offsets, split)
                values = []
            for outlet in outlets:
                await self._outlet(outlet, channel, split, values, offsets, epoch, timestamps)
        if self.dead.pending:
            await self.ship_dead_letters()

    def _unread(
        self, stage: Stage, what: str, values: list[Any], offsets: list[Any], split: str
    ) -> None:
        """Values sent to an output nothing reads: dead letters, never dropped silently."""
        hint = (
            "its stream is only read for its side outputs: sink it too, or emit nothing"
            if what == "main output"
            else "read a side output with stream.side_output(OutputTag(name))"
        )
        error = UnreadOutputError(
            f"{stage.name!r} sent a value to its {what}, which nothing reads ({hint})"
        )
        for value, offset in zip(values, offsets, strict=True):
            self.dead.add(stage.name, error, split, offset, value, None)

    async def _outlet(
        self,
        outlet: Outlet,
        channel: str,
        split: str,
        values: list[Any],
        offsets: list[int],
        epoch: int,
        timestamps: list[Any] | None,
    ) -> None:
        """One outlet: its chain (on its own copy of the batch: apply_chain never changes the
        lists it is given), then where it leads."""
        if outlet.async_chain:
            values, offsets, timestamps = await apply_chain_async(
                outlet.chain, values, offsets, timestamps, split, self.dead
            )
        elif outlet.chain:
            if timestamps is None:
                values, offsets = apply_chain(outlet.chain, values, offsets, split, self.dead)
            else:
                values, offsets, timestamps = apply_chain_timed(
                    outlet.chain, values, offsets, timestamps, split, self.dead
                )
        if not values:
            return
        if outlet.forks:
            for fork in outlet.forks:
                await self._outlet(fork, channel, split, values, offsets, epoch, timestamps)
        elif outlet.stage is not None:
            assert outlet.operator is not None
            assert outlet.key_fn is not None
            routed: dict[int, tuple[list[Any], ...]]
            if timestamps is None:
                routed = key_and_route(  # type: ignore[assignment]
                    outlet.operator, outlet.key_fn, self.router, values, offsets, split, self.dead
                )
            else:
                routed = key_and_route_timed(  # type: ignore[assignment]
                    outlet.operator,
                    outlet.key_fn,
                    self.router,
                    values,
                    offsets,
                    timestamps,
                    split,
                    self.dead,
                )
            await self._send(outlet.stage, channel, split, routed)
        else:
            assert outlet.sink is not None
            await self._write_sink(outlet.sink, channel, values, epoch)

    async def _write_sink(self, index: int, channel: str, values: list[Any], epoch: int) -> None:
        """Write ``values`` to the flow's ``index``-th sink (one ``[index, values]`` group for
        a flow with several sinks: see ``_sinks_fan.py``)."""
        self.metrics.records_out += len(values)
        self.emitted[channel] = self.emitted.get(channel, 0) + len(values)
        if self.sink is None:
            await self.kernel.ref(JOB_ACTOR).tell(Gathered("sink", values, epoch, index))
            return
        items = [[index, values]] if len(self.plan.sinks) > 1 else values
        if self.transactional:
            await self.sink.write_epoch(epoch, items)  # type: ignore[attr-defined]
        else:
            await self.sink.write_batch(items)

    async def _send(
        self,
        stage: int,
        channel: str,
        split: str,
        routed: dict[int, tuple[list[Any], ...]],
    ) -> None:
        """Deliver routed groups: local groups straight to their actors, the rest in one
        :class:`Shipment` per destination worker. A group is ``(keys, values, offsets)``, or
        with a fourth column, the timestamps. A group held for a move (``_holding.py``) is
        queued instead; past the hold's limit this waits for its release, after the rest."""
        targets = self.targets(stage)
        owner = self.group_owner
        here = self.index
        holds = self.holds
        wait: anyio.Event | None = None
        remote: dict[int, list[int]] | None = None
        for group, columns in routed.items():
            if holds and holds.holding(stage, group):
                wait = holds.hold(stage, group, channel, split, columns) or wait
                continue
            worker = owner[group]
            if worker == here:
                await targets[group].tell(Data(channel, split, *columns))
            elif remote is None:
                remote = {worker: [group]}
            else:
                remote.setdefault(worker, []).append(group)
        if remote is not None:
            for worker, groups in remote.items():
                if len(groups) == 1:
                    columns = routed[groups[0]]
                    counts = [len(columns[0])]
                else:
                    columns = tuple([] for _ in routed[groups[0]])
                    counts = []
                    for group in groups:
                        for column, part in zip(columns, routed[group], strict=True):
                            column += part
                        counts.append(len(routed[group][0]))
                self.metrics.records_crossing += sum(counts)
                await self.credits.acquire(stage, worker)
                await self.exchange(worker, stage).tell(
                    Shipment(here, stage, channel, split, groups, counts, *columns)
                )
        if wait is not None:
            await wait.wait()

    async def _deliver_group(
        self, stage: int, channel: str, split: str, group: int, columns: tuple[list[Any], ...]
    ) -> None:
        """Deliver one group of records (held for a move) where its key group is now."""
        worker = self.group_owner[group]
        if worker == self.index:
            await self.targets(stage)[group].tell(Data(channel, split, *columns))
            return
        self.metrics.records_crossing += len(columns[0])
        await self.credits.acquire(stage, worker)
        await self.exchange(worker, stage).tell(
            Shipment(self.index, stage, channel, split, [group], [len(columns[0])], *columns)
        )

    def exchange(self, worker: int, stage: int) -> Ref:
        """``worker``'s exchange for keyed ``stage``: the door for that stage's records and
        control from other workers."""
        return self.kernel.ref(exchange_name(worker, stage))

    async def broadcast(self, stage: int, message: Any) -> None:
        """Send ``message`` (a barrier, watermark or end of stream of a channel) to every
        key-group actor of ``stage``, behind all data already sent, held data included."""
        if self.owed:  # a sender pays its markers before anything else it sends
            await pay_markers(self, message.channel)
        if self.holds:
            await self.holds.drain(stage)
        targets = self.targets(stage)
        remote: dict[int, list[int]] = {}
        for group, worker in enumerate(self.group_owner):
            if worker == self.index:
                await targets[group].tell(message)
            else:
                remote.setdefault(worker, []).append(group)
        for worker, groups in remote.items():
            await self.credits.acquire(stage, worker)
            await self.exchange(worker, stage).tell(Broadcast(self.index, stage, groups, message))

    async def broadcast_down(self, stage: Stage, message: Any) -> None:
        """:meth:`broadcast` ``message`` to every keyed stage ``stage`` sends to."""
        for downstream in stage.downstream:
            await self.broadcast(downstream, message)

    async def ship_dead_letters(self) -> None:
        letters = self.dead.take()
        if not letters:
            return
        self.metrics.dead_letters = self.dead.count
        if self.dead_sink is not None:
            await self.dead_sink.write_batch(list(letters))
        else:
            await self.kernel.ref(JOB_ACTOR).tell(
                Gathered("dead", [letter.to_json() for letter in letters])
            )

    async def end_stage(self, stage: Stage, channel: str, *, stopped: bool = False) -> None:
        """Tell everything downstream of ``stage`` that ``channel`` has ended (``stopped``: by
        a stop from outside, see :class:`EndOfStream`)."""
        if self.dead.pending:
            await self.ship_dead_letters()
        if self.owed:
            # Its end goes to the new owners: the old ones must hear it has nothing more.
            await pay_markers(self, channel)
        await self.broadcast_down(stage, EndOfStream(channel, stopped))

    def report(self) -> dict[str, Any]:
        """This worker's counters as a CBOR-able dict (see :meth:`WorkerMetrics.snapshot`)."""
        self.metrics.dead_letters = self.dead.count
        report = self.metrics.snapshot()
        depths = dict(self.kernel.statistics().mailbox_depths)
        report["mailbox_depth"] = sum(depths.values())
        report["groups"] = group_reports(self, depths)  # per key-group load (see _load.py)
        report["key_groups"] = len(self.owned_groups())
        credits = self.credits.statistics()  # senders held back by full remote exchanges
        report["credit_waits"] = credits.waits
        report["credit_wait_s"] = credits.waited_s
        report["restores"] = dict(self.restores)
        budget = self.budget
        report["state_cache_bytes"] = 0 if budget is None else budget.cached_bytes()
        report["state_cache_limit"] = None if budget is None else budget.limit
        report["state_cache_evicted"] = 0 if budget is None else budget.evicted
        report["state_cache_hits"] = 0 if budget is None else budget.hits
        report["state_cache_misses"] = 0 if budget is None else budget.misses
        report["restore_s"] = self.restore_s
        report["held_max"] = self.holds.max_held  # the most held for one moving key group
        return report


class HandoffReceiver(Actor):
    """Takes what other workers hand over to this one (see ``_moves.py``): a key group's
    state goes to its waiting successor; a split gets a source actor here."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env

    @staticmethod
    def urgent(env: WorkerEnv, message: Any) -> bool:
        """The urgent handler (``Worker.on_urgent``): a key group's handoff is taken over as
        soon as it arrives, in the reader's (or the old owner's) turn; anything else, or a
        handoff for no successor here, goes to the mailbox."""
        kind = type(message)
        if kind is GroupHandoff:
            successor = env.arrivals.pop(message.actor, None)
            if successor is not None:
                successor.take_over(message)
                return True
        elif kind is Throttle and message.held:
            env.holds.throttle(message, env.placement_version)
            return True
        return False  # a release (its queue is delivered in the receiver's turn), a split

    async def receive(self, message: Any) -> Any:
        env = self.env
        if type(message) is GroupHandoff:
            env.arrivals.pop(message.actor).take_over(message)
            return None
        if type(message) is Throttle:
            await env.holds.release(message)
            return None
        if type(message) is not SplitHandoff:
            raise TypeError(f"handoff receiver got an unexpected message {message!r}")
        await env.kernel.spawn(
            partial(SourceActor, env, message.split, handed=message.state),
            name=source_actor_name(message.split),
            mailbox_size=env.mailbox_size,
        )
        await env.kernel.ref(JOB_ACTOR).tell(
            MovedIn(
                message.version,
                "split",
                message.split,
                message.source,
                env.index,
                paused_now() - message.paused_at,
                0,
            )
        )
        return None


class WorkerController(Actor):
    """The driver's handle on one worker: start its sources, report counters, finish."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env

    async def receive(self, message: Any) -> Any:
        env = self.env
        if type(message) is InjectFailure:  # shoal.testing: this worker fails now
            raise InjectedFault(message.reason)
        if type(message) is StartSources:
            env.metrics.cpu_at_start = time.process_time()
            for split in env.owned_splits():
                await env.kernel.spawn(
                    partial(SourceActor, env, split),
                    name=source_actor_name(split),
                    mailbox_size=env.mailbox_size,
                )
            return None
        if type(message) is InjectBarrier:
            for split in list(env.sources):
                await env.kernel.ref(source_actor_name(split)).tell(message)
            return None
        if type(message) is StopSources:
            env.stopping = True
            for source in list(env.sources.values()):
                source.request_stop()
            return None
        if type(message) is ReleaseEnds:
            env.hold_ends = False
            for source in list(env.sources.values()):
                source.release()
            return None
        if type(message) is Finish:
            if env.checkpoint_store is not None:
                # Every file write queued so far is done and acked before the job settles.
                await env.kernel.ref(checkpoint_writer_name(env.index)).ask("settle")
            await env.ship_dead_letters()
            for partition in (env.sink, env.dead_sink):
                if partition is not None:
                    await partition.aclose()
            return env.report()
        if type(message) is PreCommitSink:
            error = None
            if env.transactional and env.sink is not None:
                try:
                    await env.sink.pre_commit(message.epoch)  # type: ignore[attr-defined]
                except Exception as exc:  # its disk: the checkpoint fails, not the job
                    error = f"worker {env.index}: sink pre-commit: {type(exc).__name__}: {exc}"
            await env.kernel.ref(JOB_ACTOR).tell(SinkPreCommitted(message.epoch, env.index, error))
            return None
        if type(message) is CommitSink:
            if env.transactional and env.sink is not None:
                env.faults.hit("sink.commit")
                await env.sink.commit(message.epoch)  # type: ignore[attr-defined]
            return None
        if message == "report":
            return env.report()
        return await self._placement(message)

    async def _placement(self, message: Any) -> Any:
        """Membership and live migration (see ``_moves.py``)."""
        env = self.env
        kind = type(message)
        if kind is Admit:
            admit(env, message.workers)
        elif kind is PrepareMoves:
            for stage in env.plan.keyed_stages:
                for group in message.groups:
                    name = actor_name(stage.name, group)
                    await env.kernel.spawn(
                        partial(KeyGroupActor, env, stage.index, group, arriving=message.version),
                        name=name,
                        mailbox_size=env.mailbox_size,
                    )
        elif kind is PlacementUpdate:
            await env.holds.drain()  # the new version's markers follow what was held
            nudge_senders(env, apply_update(env, message))
        elif kind is StartHandoffs:
            start_handoffs(env, message.version)
        elif kind is Retire:
            return await self._retire()
        else:
            raise TypeError(f"worker controller got an unexpected message {message!r}")
        return None

    async def _retire(self) -> dict[str, Any]:
        """This worker hosts nothing any more: settle its files, close its sinks, report."""
        env = self.env
        if env.checkpoint_store is not None:
            await env.kernel.ref(checkpoint_writer_name(env.index)).ask("settle")
        await env.ship_dead_letters()
        if env.close_sinks:
            for partition in (env.sink, env.dead_sink):
                if partition is not None:
                    await partition.aclose()
        return env.report()


def place_directory(
    kernel: Worker,
    plan: Plan,
    group_owner: Sequence[int],
    driver: int,
    workers: Sequence[int],
    split_owner: Sequence[int] = (),
) -> None:
    """Fill a worker's directory: key-group and source actors, each worker's controller and
    exchanges, and the driver's job actor."""
    directory = kernel.directory
    for stage in plan.keyed_stages:
        for group, owner in enumerate(group_owner):
            directory.place(actor_name(stage.name, group), owner)
    for split, owner in zip(plan.splits, split_owner, strict=False):
        directory.place(source_actor_name(split), owner)
    place_workers(kernel, plan, workers)
    directory.place(JOB_ACTOR, driver)


def place_workers(kernel: Worker, plan: Plan, workers: Sequence[int]) -> None:
    """Place the per-worker actors of ``workers`` (controllers, exchanges) in the directory."""
    directory = kernel.directory
    for worker in workers:
        directory.place(controller_name(worker), worker)
        directory.place(handoffs_name(worker), worker)
        directory.place(shipper_name(worker), worker)
        directory.place(shipments_name(worker), worker)
        directory.place(flow_control_name(worker), worker)
        for stage in plan.keyed_stages:
            directory.place(exchange_name(worker, stage.index), worker)


def admit(env: WorkerEnv, workers: Sequence[int]) -> None:
    """The mesh's workers are now ``workers``: reach the new ones; the others are gone."""
    new = [int(w) for w in workers if int(w) not in env.peers and int(w) != env.index]
    env.kernel.admit(*new)
    place_workers(env.kernel, env.plan, new)
    env.peers = sorted({*(int(w) for w in workers), env.index})


async def start_worker(env: WorkerEnv) -> None:
    """Spawn this worker's key-group actors and its controller (sources start on request)."""
    kernel = env.kernel
    # First, so the kernel stops it last: after every source actor has closed its reader.
    host = env.source_host = SourceHost(
        env.plan.flow.get_source(),
        SourceContext(env.plan.flow.name, env.index, env.workers, tuple(env.owned_splits())),
    )
    await kernel.spawn(lambda: host, name=source_host_name(env.index))
    for stage in env.plan.keyed_stages:
        for group in env.owned_groups():
            await kernel.spawn(
                partial(KeyGroupActor, env, stage.index, group, arriving=None),
                name=actor_name(stage.name, group),
                mailbox_size=env.mailbox_size,
            )
    if env.checkpoint_store is not None:
        # Spawned after the key groups, so the kernel halts it first: it closes the snapshots
        # it will not write before their key groups close their stores. One message per key
        # group per checkpoint (one in flight), so its mailbox never makes a key group wait.
        await kernel.spawn(
            partial(
                CheckpointWriter,
                env.checkpoint_store,
                kernel.ref(JOB_ACTOR),
                env.pending_snapshots,
                env.faults,
            ),
            name=checkpoint_writer_name(env.index),
            mailbox_size=2 * len(env.plan.keyed_stages) * env.plan.num_key_groups + 2,
        )
    # Also with one worker: a rescale may add others, whose records come through here.
    # Room for every credit granted (so the socket reader never waits on an exchange) and
    # for the credit messages coming back (a handful per peer and stage at a time). Sized
    # for the most workers a job may have: a bound, not an allocation.
    room = exchange_mailbox_size(env.credit_window, MAX_WORKERS)
    for stage in env.plan.keyed_stages:
        await kernel.spawn(
            partial(ExchangeActor, env, stage.index),
            name=exchange_name(env.index, stage.index),
            mailbox_size=room,
        )
    if env.plan.keyed_stages:
        await kernel.spawn(
            partial(FlowControlActor, env),
            name=flow_control_name(env.index),
            mailbox_size=room * len(env.plan.keyed_stages),
        )
    await kernel.spawn(
        partial(HandoffReceiver, env),
        name=handoffs_name(env.index),
        # One message per key-group actor or split handed over: never a wait.
        mailbox_size=len(env.plan.keyed_stages) * env.plan.num_key_groups + len(env.plan.splits),
    )
    kernel.on_urgent(handoffs_name(env.index), partial(HandoffReceiver.urgent, env))
    if env.ship_state:
        await kernel.spawn(partial(Shipper, env), name=shipper_name(env.index))
        await kernel.spawn(partial(ShipmentReceiver, env), name=shipments_name(env.index))
    await kernel.spawn(lambda: WorkerController(env), name=controller_name(env.index))
    get_logger("shoal.worker").info(
        "worker started",
        worker=env.index,
        workers=env.workers,
        key_groups=len(env.owned_groups()),
        splits=len(env.owned_splits()),
    )


def letters_from_json(items: list[Any]) -> list[DeadLetter]:
    return [DeadLetter.from_json(item) for item in items]
