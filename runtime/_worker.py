"""What runs inside one worker: source actors, key-group actors and the worker controller.

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
    CheckpointStore,
    EpochDelta,
    KeyGroupStore,
    RollbackError,
    StateBackend,
)

from ._alignment import BarrierAlignment
from ._checkpoint_io import CheckpointWriter
from ._credits import DEFAULT_WINDOW, Credits, exchange_mailbox_size
from ._keys import KeyGroupRouter
from ._messages import (
    Barrier,
    BarrierAck,
    Broadcast,
    Credit,
    Data,
    Drained,
    EndOfStream,
    Finish,
    Gathered,
    InjectBarrier,
    Pull,
    ReturnCredits,
    Shipment,
    SnapshotDrained,
    StartSources,
    StopSources,
    WriteSnapshot,
)
from ._metrics import WorkerMetrics
from ._operators import DeadLetters, KeyedRunner, apply_chain, key_and_route
from ._plan import Plan, Stage, actor_name
from ._sinks import DeadLetter, SinkPartition
from ._source_host import SourceHost, source_host_name
from ._sources import SourceContext, SplitReader, drain_reader

__all__ = (
    "JOB_ACTOR",
    "KeyGroupActor",
    "SourceActor",
    "WorkerController",
    "WorkerEnv",
    "controller_name",
    "place_directory",
)

JOB_ACTOR = "job"

# A key-group actor flushes its dirty state to its store at least this often (in records) and at
# end of stream. Checkpoint barriers will make the flush barrier-aligned; until then this bounds
# the memory a long unbounded run holds in dirty entries.
FLUSH_EVERY_RECORDS = 250_000
# Every this many batches, a key-group actor times one state read for the metrics.
STATE_SAMPLE_EVERY = 64


def controller_name(worker: int) -> str:
    return f"ctl:{worker}"


def source_actor_name(split: str) -> str:
    return f"src:{split}"


def exchange_name(worker: int, stage: int) -> str:
    """The exchange of keyed ``stage`` on ``worker``: one per stage, so stages never share one
    queue (see ``_credits.py``)."""
    return f"xchg:{worker}:{stage}"


def flow_control_name(worker: int) -> str:
    return f"credits:{worker}"


def checkpoint_writer_name(worker: int) -> str:
    return f"ckpt-writer:{worker}"


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
    sink: SinkPartition | None = None  # None: sink items are gathered by the driver
    dead_sink: SinkPartition | None = None  # None: dead letters are gathered by the driver
    credit_window: int = DEFAULT_WINDOW
    # Checkpoints on: key groups flush only at barriers and at end of stream (never mid-epoch).
    checkpoints: bool = False
    # Where key groups write their checkpoint files (None: checkpoints are only committed
    # locally, nothing is written to a store).
    checkpoint_store: CheckpointStore | None = None
    # Snapshots handed to the checkpoint writer and not closed yet (see CheckpointWriter).
    pending_snapshots: set[WriteSnapshot] = field(init=False, default_factory=set)
    dead: DeadLetters = field(init=False)
    credits: Credits = field(init=False)
    metrics: WorkerMetrics = field(init=False)
    router: KeyGroupRouter = field(init=False)
    _targets: dict[int, list[Ref]] = field(init=False, default_factory=dict)
    sources: dict[str, SourceActor] = field(init=False, default_factory=dict)
    # Set by StopSources, which may arrive before StartSources: sources started later end at once.
    stopping: bool = field(init=False, default=False)
    source_host: SourceHost | None = field(init=False, default=None)  # set by start_worker

    def __post_init__(self) -> None:
        self.dead = DeadLetters(self.index)
        self.metrics = WorkerMetrics(self.index)
        self.router = KeyGroupRouter(self.plan.num_key_groups)
        self.credits = Credits(self.credit_window, wait_lost=self._wait_lost)

    async def _wait_lost(self, worker: int) -> BaseException:
        await self.kernel.wait_peer_lost(worker)
        return PeerLostError(f"worker {worker} was lost while worker {self.index} sent to it")

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

    def owned_groups(self) -> list[int]:
        return [g for g, owner in enumerate(self.group_owner) if owner == self.index]

    def owned_splits(self) -> list[str]:
        return [
            s
            for s, owner in zip(self.plan.splits, self.split_owner, strict=True)
            if owner == self.index
        ]

    async def emit(
        self, stage: Stage, channel: str, split: str, values: list[Any], offsets: list[int]
    ) -> None:
        """Pass one batch that left ``stage``'s operator through its chain and exit."""
        if stage.chain:
            values, offsets = apply_chain(stage.chain, values, offsets, split, self.dead)
        if values:
            if stage.next_key_fn is not None:
                assert stage.next_operator is not None
                routed = key_and_route(
                    stage.next_operator,
                    stage.next_key_fn,
                    self.router,
                    values,
                    offsets,
                    split,
                    self.dead,
                )
                await self._send(stage.index + 1, channel, split, routed)
            else:
                self.metrics.records_out += len(values)
                if self.sink is not None:
                    await self.sink.write_batch(values)
                else:
                    await self.kernel.ref(JOB_ACTOR).tell(Gathered("sink", values))
        if self.dead.pending:
            await self.ship_dead_letters()

    async def _send(
        self,
        stage: int,
        channel: str,
        split: str,
        routed: dict[int, tuple[list[Any], list[Any], list[int]]],
    ) -> None:
        """Deliver routed groups: local groups straight to their actors, the rest in one
        :class:`Shipment` per destination worker."""
        targets = self.targets(stage)
        owner = self.group_owner
        here = self.index
        remote: dict[int, list[int]] | None = None
        for group, (keys, values, offsets) in routed.items():
            worker = owner[group]
            if worker == here:
                await targets[group].tell(Data(channel, split, keys, values, offsets))
            elif remote is None:
                remote = {worker: [group]}
            else:
                remote.setdefault(worker, []).append(group)
        if remote is None:
            return
        for worker, groups in remote.items():
            if len(groups) == 1:
                keys, values, offsets = routed[groups[0]]
                counts = [len(keys)]
            else:
                keys, values, offsets, counts = [], [], [], []
                for group in groups:
                    group_keys, group_values, group_offsets = routed[group]
                    keys += group_keys
                    values += group_values
                    offsets += group_offsets
                    counts.append(len(group_keys))
            await self.credits.acquire(stage, worker)
            await self.exchange(worker, stage).tell(
                Shipment(here, stage, channel, split, groups, counts, keys, values, offsets)
            )

    def exchange(self, worker: int, stage: int) -> Ref:
        """``worker``'s exchange for keyed ``stage``: the door for that stage's records and
        control from other workers."""
        return self.kernel.ref(exchange_name(worker, stage))

    async def broadcast(self, stage: int, message: Any) -> None:
        """Send ``message`` to every key-group actor of ``stage``, behind all data already sent."""
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

    async def end_stage(self, stage: Stage, channel: str) -> None:
        """Tell everything downstream of ``stage`` that ``channel`` has ended."""
        if self.dead.pending:
            await self.ship_dead_letters()
        if stage.next_key_fn is not None:
            await self.broadcast(stage.index + 1, EndOfStream(channel))

    def report(self) -> dict[str, Any]:
        """This worker's counters as a CBOR-able dict (see :meth:`WorkerMetrics.snapshot`)."""
        self.metrics.dead_letters = self.dead.count
        report = self.metrics.snapshot()
        report["mailbox_depth"] = sum(
            depth for _name, depth in self.kernel.statistics().mailbox_depths
        )
        report["key_groups"] = len(self.owned_groups())
        return report


class SourceActor(Actor):
    """Reads one split and feeds the first exchange."""

    def __init__(self, env: WorkerEnv, split: str) -> None:
        self.env = env
        self.split = split
        self.reader: SplitReader | None = None
        self.stage = env.plan.stages[0]
        self.stopping = False
        self.records = 0
        # The split's position after the last batch sent downstream (None: not read yet); a
        # barrier records it, and a restore reopens the split there.
        self.position: Any = None
        self.ended = False
        self._reading: anyio.CancelScope | None = None
        self.log = get_logger("shoal.source").bind(worker=env.index, split=split)

    async def on_start(self) -> None:
        host = self.env.source_host
        assert host is not None, "start_worker spawns the source host before any source"
        self.reader = host.open_split(self.split)
        self.env.sources[self.split] = self
        self.stopping = self.env.stopping
        self.continue_with(Pull())

    async def on_stop(self) -> None:
        self.env.sources.pop(self.split, None)
        if self.reader is not None:
            reader, self.reader = self.reader, None
            await reader.aclose()

    def request_stop(self) -> None:
        """End this split at the next opportunity, even while a read is waiting for data.

        A waiting read is cancelled; what the reader took before that is drained and processed
        (see ``_sources``: reads are cancel-safe), so every record handed out goes through.
        """
        self.stopping = True
        if self._reading is not None:
            self._reading.cancel()

    async def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is InjectBarrier:
            await self._barrier(message.epoch, message.base)
            return None
        if kind is not Pull:
            raise TypeError(f"source actor got an unexpected message {message!r}")
        if self.reader is None:
            return None
        env = self.env
        batch = None
        if not self.stopping:
            with anyio.CancelScope() as self._reading:
                batch = await self.reader.read_batch(env.batch_size)
            self._reading = None
        if batch is None and self.stopping:
            # Records a cancelled read had taken (a drained reader returns None).
            batch = drain_reader(self.reader)
        if batch is None:
            self.log.debug("split ended", stopped=self.stopping, records=self.records)
            self.ended = True
            await env.end_stage(self.stage, self.split)
            reader, self.reader = self.reader, None
            await reader.aclose()
            if self.stage.next_key_fn is None:  # no keyed operator: the sources are the last stage
                await env.kernel.ref(JOB_ACTOR).tell(Drained(self.name, env.index))
            return None
        env.metrics.records_in += len(batch.values)
        self.records += len(batch.values)
        for error in batch.errors:
            env.dead.add_source_error(error, self.split)
        await env.emit(self.stage, self.split, self.split, batch.values, batch.offsets)
        self.position = batch.position
        self.continue_with(Pull())
        return None

    async def _barrier(self, epoch: int, base: int) -> None:
        """Checkpoint ``epoch`` between two batches: record the position, pass the barrier on.

        An ended split has already sent its end of stream (its downstream channels are closed):
        it only reports its final position.
        """
        env = self.env
        if not self.ended and self.stage.next_key_fn is not None:
            await env.broadcast(self.stage.index + 1, Barrier(epoch, self.split, base))
        await env.kernel.ref(JOB_ACTOR).tell(
            BarrierAck(epoch, self.name, env.index, {self.split: self.position}, {})
        )


class KeyGroupActor(Actor):
    """The only owner of one (keyed operator, key group) state: its store and its runner."""

    def __init__(self, env: WorkerEnv, stage: int, key_group: int) -> None:
        self.env = env
        self.stage = env.plan.stages[stage]
        self.key_group = key_group
        # Records held for the next epoch while a barrier aligns: at most this many batches'
        # worth (a few mailboxes), so a stalled channel cannot make a key group hoard memory.
        self.alignment = BarrierAlignment(
            set(env.plan.channels_into(stage)), max_held=4 * env.mailbox_size * env.batch_size
        )
        self.store: KeyGroupStore | None = None
        self.runner: KeyedRunner | None = None
        self.unflushed = 0
        self.batches = 0
        self.drained = False
        # The newest completed checkpoint this key group has heard of (via barriers).
        self.base = 0
        # Its snapshot at the writer, not closed yet (closed before the store, in on_stop).
        self.writing: WriteSnapshot | None = None
        self._delta: EpochDelta | None = None  # the last flush_epoch's, for the writer
        op = self.stage.operator
        self.sample_state = op.states[0].name if op is not None and op.states else None
        self.log = get_logger("shoal.keygroup").bind(
            worker=env.index,
            actor=actor_name(self.stage.name, key_group),
            operator=self.stage.name,
            key_group=key_group,
        )

    async def on_start(self) -> None:
        op = self.stage.operator
        assert op is not None
        self.store = self.env.backend.open_store(op.name, self.key_group, op.states)
        self.runner = KeyedRunner(op, self.store, self.key_group)

    async def on_stop(self) -> None:
        if self.writing is not None:
            # The writer closes it (written, or dropped when the writer stops first).
            await self.writing.done.wait()
        if self.store is not None:
            store, self.store = self.store, None
            try:
                store.flush()
            except Exception as exc:
                # The kernel only logs what on_stop raises: a final flush that failed must fail
                # the worker (its `async with` raises ActorFailedError), hence the job.
                self._cell._escalate(exc, "failed its final flush")
            finally:
                store.close()

    async def receive(self, message: Any) -> Any:
        if type(message) is SnapshotDrained:
            await self._snapshot_drained(message)
            return None
        alignment = self.alignment
        if alignment.epoch is not None and alignment.must_hold(message.channel):
            records = len(message.keys) if type(message) is Data else 0
            if not alignment.hold(message, records):
                await self._abort_alignment()
            return None
        await self._handle(message)
        return None

    async def _handle(self, message: Any) -> None:
        kind = type(message)
        if kind is Data:
            await self._data(message)
        elif kind is Barrier:
            verdict = self.alignment.barrier(message.channel, message.epoch, time.perf_counter())
            self.base = max(self.base, message.base)
            if verdict == "aligned":
                await self._snapshot()
        elif kind is EndOfStream:
            if self.alignment.end(message.channel):
                await self._snapshot()
            if not self.alignment.open_channels:
                await self._end()
        else:
            raise TypeError(f"key-group actor got an unexpected message {message!r}")

    async def _snapshot(self) -> None:
        """Every open channel delivered the barrier: commit the epoch, ack, pass it on, and
        release what was held for the next epoch."""
        alignment = self.alignment
        epoch = alignment.epoch
        assert epoch is not None
        env = self.env
        aligned_s = time.perf_counter() - alignment.started_at
        if alignment.aborted:
            error = (
                f"{self.name}: alignment of checkpoint {epoch} held more than"
                f" {alignment.max_held} records; checkpoint aborted"
            )
            await env.kernel.ref(JOB_ACTOR).tell(
                BarrierAck(epoch, self.name, env.index, {}, {"alignment_s": aligned_s}, error)
            )
        else:
            await self._take_snapshot(epoch, {"alignment_s": aligned_s})
        if self.stage.next_key_fn is not None:
            await env.broadcast(self.stage.index + 1, Barrier(epoch, self.name, self.base))
        held = alignment.finish()
        while held:
            message = held.popleft()
            if alignment.epoch is not None and alignment.must_hold(message.channel):
                records = len(message.keys) if type(message) is Data else 0
                alignment.hold(message, records)
                continue
            await self._handle(message)

    async def _snapshot_drained(self, message: SnapshotDrained) -> None:
        """A drained key group's part of a checkpoint: its final state, committed as the epoch."""
        assert self.drained, "SnapshotDrained is sent only to key groups that reported Drained"
        assert self.store is not None
        if (self.store.epoch or 0) >= message.epoch:
            return  # it took its part at the barrier; its ack (from the writer) is on its way
        self.base = max(self.base, message.base)
        await self._take_snapshot(message.epoch, {"alignment_s": 0.0, "drained": True})

    async def _take_snapshot(self, epoch: int, stats: dict[str, Any]) -> None:
        """Commit ``epoch`` locally (the processing pause), then hand the file write to the
        worker's checkpoint writer, which acks; without a checkpoint store, ack at once."""
        env = self.env
        store = self.store
        assert store is not None
        started = time.perf_counter()
        written = self._commit_epoch(epoch)
        job: WriteSnapshot | None = None
        if env.checkpoint_store is not None:
            delta = self._delta
            if delta is not None and self.base > 0 and delta.since != self.base:
                # An earlier checkpoint failed: the file must carry every change since the
                # base. Read from the undo log (it reaches back to the base: pruned up to it).
                try:
                    delta = store.delta_since(self.base)
                except RollbackError:
                    delta = None  # the writer falls back to a full
            job = WriteSnapshot(
                epoch, self.base, self.name, env.index, delta, store.snapshot(), stats
            )
        self._delta = None
        stats.update(written=written, pause_s=time.perf_counter() - started)
        stats["entries"], stats["bytes"] = env.metrics.state_size[(self.stage.name, self.key_group)]
        if job is None:
            await env.kernel.ref(JOB_ACTOR).tell(BarrierAck(epoch, self.name, env.index, {}, stats))
            return
        if self.writing is not None and not self.writing.done.is_set():
            # The previous checkpoint's file is still being written (that checkpoint timed
            # out): one snapshot per key group at a time, so this one is not taken.
            job.snapshot.close()
            await env.kernel.ref(JOB_ACTOR).tell(
                BarrierAck(
                    epoch,
                    self.name,
                    env.index,
                    {},
                    stats,
                    f"{self.name}: checkpoint {epoch}: the previous file is still being written",
                )
            )
            return
        self.writing = job
        env.pending_snapshots.add(job)
        await env.kernel.ref(checkpoint_writer_name(env.index)).tell(job)

    async def _abort_alignment(self) -> None:
        self.log.warning(
            "checkpoint alignment over its bound; aborting the checkpoint",
            epoch=self.alignment.epoch,
            held_records=self.alignment.held_records,
        )
        self.alignment.abort()
        await self._snapshot()

    async def _data(self, data: Data) -> None:
        runner = self.runner
        assert runner is not None
        env = self.env
        count = len(data.keys)
        self.batches += 1
        if self.sample_state is not None and self.batches % STATE_SAMPLE_EVERY == 1:
            # A real read of this batch's first key, timed; reading per record would cost
            # more than the reads themselves (~0.1 µs on a cache hit).
            assert self.store is not None
            started = time.perf_counter()
            self.store.get(self.sample_state, data.keys[0])
            env.metrics.observe_state_access(time.perf_counter() - started)
        started = time.perf_counter()
        values, offsets = runner.run(data.keys, data.values, data.offsets, data.split, env.dead)
        env.metrics.observe_operator(
            runner.operator, count, len(values), time.perf_counter() - started
        )
        self.unflushed += count
        if self.unflushed >= FLUSH_EVERY_RECORDS and not env.checkpoints:
            self._flush()
        await env.emit(self.stage, self.name, data.split, values, offsets)

    def _flush(self, meta: dict[str, Any] | None = None) -> int:
        store = self.store
        assert store is not None
        started = time.perf_counter()
        written = store.flush(meta=meta)
        self.env.metrics.observe_flush(written, time.perf_counter() - started)
        self.unflushed = 0
        stats = store.statistics()
        self.env.metrics.state_size[(self.stage.name, self.key_group)] = (
            stats.entries,
            stats.bytes,
        )
        return written

    def _commit_epoch(self, epoch: int) -> int:
        """Commit epoch ``epoch`` (with an undo record, so it can be rolled back if the
        checkpoint never completes) and forget rollbacks older than the completed base."""
        store = self.store
        assert store is not None
        started = time.perf_counter()
        delta = store.flush_epoch(epoch)
        self._delta = delta
        if self.base > 0:
            store.prune_undo(self.base)
        self.env.metrics.observe_flush(len(delta), time.perf_counter() - started)
        self.unflushed = 0
        stats = store.statistics()
        self.env.metrics.state_size[(self.stage.name, self.key_group)] = (
            stats.entries,
            stats.bytes,
        )
        return len(delta)

    async def _end(self) -> None:
        if self.drained:  # an end of stream replayed from the held messages got here first
            return
        self.drained = True
        self._flush()
        entries, size = self.env.metrics.state_size[(self.stage.name, self.key_group)]
        self.log.debug("key group drained", entries=entries, bytes=size)
        await self.env.end_stage(self.stage, self.name)
        # Every key group says so (not only the last stage's): a drained key group takes no
        # more barriers, and the checkpoint coordinator stops waiting for it.
        await self.env.kernel.ref(JOB_ACTOR).tell(Drained(self.name, self.env.index))


class ExchangeActor(Actor):
    """A worker's door for one keyed stage's records and control from other workers.

    Slices each :class:`Shipment` into one :class:`Data` per key group and fans
    :class:`Broadcast` control messages out, in arrival order: per sending worker, data and
    control reach each key-group actor in the order they were sent. Each message delivered
    earns its sender a credit back (``_credits.py``); credits are returned in bulk when the
    mailbox runs empty, or every half window, whichever comes first.
    """

    def __init__(self, env: WorkerEnv, stage: int) -> None:
        self.env = env
        self.stage = stage
        self.owed: dict[int, int] = {}
        self.return_at = max(1, env.credit_window // 2)

    async def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Shipment:
            targets = self.env.targets(message.stage)
            keys, values, offsets = message.keys, message.values, message.offsets
            channel, split = message.channel, message.split
            start = 0
            for group, count in zip(message.groups, message.counts, strict=True):
                end = start + count
                await targets[group].tell(
                    Data(channel, split, keys[start:end], values[start:end], offsets[start:end])
                )
                start = end
            await self._owe(message.sender)
        elif kind is Broadcast:
            targets = self.env.targets(message.stage)
            for group in message.groups:
                await targets[group].tell(message.message)
            await self._owe(message.sender)
        elif kind is ReturnCredits:
            await self._return_credits()
        else:
            raise TypeError(f"exchange actor got an unexpected message {message!r}")
        return None

    async def _owe(self, sender: int) -> None:
        owed = self.owed.get(sender, 0) + 1
        self.owed[sender] = owed
        if owed >= self.return_at:
            await self._return_credits()
        else:
            self.continue_with(ReturnCredits())

    async def _return_credits(self) -> None:
        owed, self.owed = self.owed, {}
        env = self.env
        for sender, count in owed.items():
            await env.kernel.ref(flow_control_name(sender)).tell(
                Credit(self.stage, env.index, count)
            )


class FlowControlActor(Actor):
    """Takes the credits other workers' exchanges hand back to this worker's senders."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env

    async def receive(self, message: Any) -> Any:
        if type(message) is not Credit:
            raise TypeError(f"flow-control actor got an unexpected message {message!r}")
        self.env.credits.grant(message.stage, message.worker, message.count)
        return None


class WorkerController(Actor):
    """The driver's handle on one worker: start its sources, report counters, finish."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env

    async def receive(self, message: Any) -> Any:
        env = self.env
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
        if type(message) is Finish:
            if env.checkpoint_store is not None:
                # Every file write queued so far is done and acked before the job settles.
                await env.kernel.ref(checkpoint_writer_name(env.index)).ask("settle")
            await env.ship_dead_letters()
            for partition in (env.sink, env.dead_sink):
                if partition is not None:
                    await partition.aclose()
            return env.report()
        if message == "report":
            return env.report()
        raise TypeError(f"worker controller got an unexpected message {message!r}")


def place_directory(
    kernel: Worker, plan: Plan, group_owner: Sequence[int], driver: int, workers: int
) -> None:
    """Fill a worker's directory: key-group actors, controllers, and the driver's job actor."""
    directory = kernel.directory
    for stage in plan.keyed_stages:
        for group, owner in enumerate(group_owner):
            directory.place(actor_name(stage.name, group), owner)
    for worker in range(workers):
        directory.place(controller_name(worker), worker)
        directory.place(flow_control_name(worker), worker)
        for stage in plan.keyed_stages:
            directory.place(exchange_name(worker, stage.index), worker)
    directory.place(JOB_ACTOR, driver)


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
                partial(KeyGroupActor, env, stage.index, group),
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
            ),
            name=checkpoint_writer_name(env.index),
            mailbox_size=2 * len(env.plan.keyed_stages) * max(1, len(env.owned_groups())) + 2,
        )
    if env.workers > 1:
        # Room for every credit granted (so the socket reader never waits on an exchange) and
        # for the credit messages coming back (a handful per peer and stage at a time).
        room = exchange_mailbox_size(env.credit_window, env.workers)
        for stage in env.plan.keyed_stages:
            await kernel.spawn(
                partial(ExchangeActor, env, stage.index),
                name=exchange_name(env.index, stage.index),
                mailbox_size=room,
            )
        await kernel.spawn(
            partial(FlowControlActor, env),
            name=flow_control_name(env.index),
            mailbox_size=room * len(env.plan.keyed_stages),
        )
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
