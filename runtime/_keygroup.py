"""The key-group actor: the only owner of one (keyed operator, key group) state, its store and
its runner; aligns checkpoint barriers and commits epochs."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from shoal.actors import Actor
from shoal.actors._cell import TURN_S
from shoal.actors._log import get_logger
from shoal.storage import (
    EpochDelta,
    KeyGroupStore,
    RollbackError,
    ShippedTail,
    load_savepoint_group,
    shipping,
    take_tail,
)

from ._alignment import BarrierAlignment
from ._faults import InjectedFault
from ._load import GroupLoad
from ._messages import (
    Barrier,
    BarrierAck,
    Data,
    Drained,
    EndOfStream,
    GroupHandoff,
    HandoffMarker,
    InjectFailure,
    MovedIn,
    MoveOut,
    QueryState,
    SendMarkers,
    SnapshotDrained,
    Throttle,
    TimersDue,
    Watermark,
    WriteSnapshot,
)
from ._moves import Laps, flush_downstream, paused_now, pay_markers, sync_driver
from ._names import (
    JOB_ACTOR,
    checkpoint_writer_name,
    handoffs_name,
)
from ._operators import KeyedRunner
from ._plan import actor_name
from ._query import answer_query
from ._ship import ship_copy, shipping_backend
from ._timers import KeyedTime, tell_soon

if TYPE_CHECKING:
    from ._worker import WorkerEnv

__all__ = (
    "FLUSH_EVERY_RECORDS",
    "STATE_SAMPLE_EVERY",
    "KeyGroupActor",
)

# A key-group actor flushes its dirty state to its store at least this often (in records) and at
# end of stream. Checkpoint barriers will make the flush barrier-aligned; until then this bounds
# the memory a long unbounded run holds in dirty entries.
FLUSH_EVERY_RECORDS = 250_000
# Every this many batches, a key-group actor times one state read for the metrics.
STATE_SAMPLE_EVERY = 64


class _Wake:
    """A successor's wake-up: its handoff has arrived (see take_over)."""


class KeyGroupActor(Actor):
    """The only owner of one (keyed operator, key group) state: its store and its runner.

    ``arriving``: the placement version this actor is the successor of a moving key group in
    (None: it starts owning the key group). An arriving actor opens nothing: it queues what it
    receives, outside its mailbox, until the old owner's :class:`GroupHandoff` is in.
    """

    def __init__(
        self, env: WorkerEnv, stage: int, key_group: int, arriving: int | None = None
    ) -> None:
        self.env = env
        # Live migration (see _moves.py). Arriving: what came before the handoff, in order.
        self.arriving = arriving
        self.queued: deque[Any] = deque()
        self.queued_records = 0
        self.queued_max = 0
        self.handoff: GroupHandoff | None = None
        self.moved_in: MovedIn | None = None  # prepared by take_over, sent in the next turn
        self.arrived_at = 0.0  # when the old owner's handoff reached take_over (paused_now)
        self.takeover_error: Exception | None = None
        self.throttling = False  # it asked the senders to hold its records (_holding.py)
        # Leaving: (version, target) once told MoveOut; the channels whose marker came in.
        self.leaving: tuple[int, int] | None = None
        self.marked: set[str] = set()
        self.marked_version = 0
        self.stage = env.plan.stages[stage]
        self.key_group = key_group
        # Records held for the next epoch while a barrier aligns: at most this many batches'
        # worth (a few mailboxes), so a stalled channel cannot make a key group hoard memory.
        self.alignment = BarrierAlignment(
            set(env.plan.channels_into(stage)), max_held=4 * env.mailbox_size * env.batch_size
        )
        self.store: KeyGroupStore | None = None
        self.runner: KeyedRunner | None = None
        self.time: KeyedTime | None = None  # its watermark and timers (see _timers.py)
        self.unflushed = 0
        self.batches = 0
        self.drained = False
        # An input ended by a stop from outside: this key group's own end says so too.
        self.stopped_inputs = False
        # The newest completed checkpoint this key group has heard of (via barriers).
        self.base = 0
        # The checkpoint what it emits now is output of: its next barrier's.
        self.epoch_out = env.first_epoch()
        # Its snapshot at the writer, not closed yet (closed before the store, in on_stop).
        self.writing: WriteSnapshot | None = None
        # Set while a copy of its environment is taken for shipping (see _ship.py); the
        # bytes of the copy shipped.
        self.copying: anyio.Event | None = None
        self.shipped = 0
        self._delta: EpochDelta | None = None  # the last flush_epoch's, for the writer
        op = self.stage.operator
        self.sample_state = op.states[0].name if op is not None and op.states else None
        self.log = get_logger("shoal.keygroup").bind(
            worker=env.index,
            actor=actor_name(self.stage.name, key_group),
            operator=self.stage.name,
            key_group=key_group,
        )
        # Records processed and a sample of the keys (see _load.py): read by worker reports.
        self.load = GroupLoad(self.log.info)  # info: the driver warns once (_load.py)

    async def on_start(self) -> None:
        if self.arriving is not None:
            self.env.arrivals[self.name] = self
            return  # opens the store when the old owner hands it over
        op = self.stage.operator
        assert op is not None
        self.store = self.env.backend.open_store(op.name, self.key_group, op.states)
        if self.env.restoring:
            self._restore()
        # After the restore: the timers' queues are rebuilt from the restored store.
        channels = self.env.plan.channels_into(self.stage.index)
        self._start_runner(channels)
        self.env.key_groups[self.name] = self

    def _start_runner(self, channels: Any) -> None:
        op = self.stage.operator
        assert op is not None
        assert self.store is not None
        self.time = KeyedTime.for_operator(channels, self.env.clock, self.store, op.states)
        self.runner = KeyedRunner(op, self.store, self.key_group, self.time)
        self.time.wake(tell_soon(self.ref, TimersDue()))  # processing-time timers, no record

    def _restore(self) -> None:
        """Bring the store back to the checkpoint being recovered from, in one transaction:
        from its own LMDB when its committed epoch is the checkpoint's (or rolls back to it),
        else from the checkpoint's files (verified as they are read)."""
        env = self.env
        store = self.store
        assert store is not None
        env.faults.hit("keygroup.restore")
        started = time.perf_counter()
        manifest = env.restore_from
        if env.restore_savepoint is not None:
            assert manifest is not None
            entries = (
                load_savepoint_group(
                    env.restore_savepoint, manifest, store.operator, store.key_group
                )
                if (store.operator, store.key_group) in manifest.groups
                else []  # a savepoint holds only key groups with state
            )
            store.restore(entries, epoch=manifest.epoch, check=False)
            path = "savepoint"
            self.base = 0  # the savepoint is not in the checkpoint store: the next file is full
        else:
            assert env.checkpoint_store is not None
            path = env.checkpoint_store.restore_store(store, manifest, local=True)
            self.base = 0 if manifest is None else manifest.epoch
        seconds = time.perf_counter() - started
        env.restores[path] = env.restores.get(path, 0) + 1
        env.restore_s = max(env.restore_s, seconds)
        stats = store.statistics()
        env.metrics.state_size[(self.stage.name, self.key_group)] = (stats.entries, stats.bytes)
        self.log.debug("key group restored", epoch=self.base, path=path, seconds=seconds)

    async def on_stop(self) -> None:
        self.env.key_groups.pop(self.name, None)
        if self.env.arrivals.get(self.name) is self:
            del self.env.arrivals[self.name]
        if self.time is not None:
            self.time.close()
        try:
            if self.writing is not None:
                # The writer closes it (written, or dropped when the writer stops first).
                await self.writing.done.wait()
            if self.copying is not None:
                await self.copying.wait()  # a shipping copy reads the environment
        finally:
            # Even when the wait is cancelled (the stop deadline): a store left open would
            # refuse the next attempt of the job (StoreBusyError).
            self._close_store()

    def _close_store(self) -> None:
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
        if type(message) is QueryState:  # an interactive query (see _query.py)
            return await answer_query(self, message)
        if type(message) is InjectFailure:  # shoal.testing: crash this key group now
            raise InjectedFault(message.reason)
        if self.arriving is not None:
            if self.handoff is None:
                self._queue(message)
                return None
            await self._take_over()
        await self._dispatch(message)
        if self.leaving is not None and self.marked >= self.alignment.open_channels:
            await self._leave()
        return None

    async def _dispatch(self, message: Any) -> None:
        kind = type(message)
        if kind is SnapshotDrained:
            await self._snapshot_drained(message)
        elif kind is HandoffMarker:
            if message.version > self.marked_version:
                self.marked_version, self.marked = message.version, set()
            if message.version == self.marked_version:
                self.marked.add(message.channel)
            # else: a stale marker (forwarded after an earlier move): nothing to do
        elif kind is MoveOut:
            self.leaving = (message.version, message.target)
            if self.store is not None:
                # Write the dirty state back now, while the key group still runs: the flush
                # in the pause (_leave) then writes only what its last records changed.
                self._flush()
            if message.version > self.marked_version:
                self.marked_version, self.marked = message.version, set()
        elif kind is SendMarkers:
            await pay_markers(self.env, self.name)
        elif kind is _Wake:
            pass
        elif kind is TimersDue:  # the clock passed a processing-time timer (see _timers.py)
            if not self.drained:
                await self._advance(None)
        else:
            await self._accept(message)

    # -- live migration (see _moves.py) ------------------------------------------------------

    def _queue(self, message: Any) -> None:
        """Arriving: keep ``message`` for after the handoff (never block the mailbox: the
        worker's exchange delivers every key group's records through it)."""
        if type(message) is _Wake:
            return
        self.queued.append(message)
        if type(message) is Data:
            self.queued_records += len(message.keys)
            self.queued_max = max(self.queued_max, self.queued_records)
            if not self.throttling and self.queued_records > self.env.holds.limit:
                self._throttle(True)  # backpressure on this key group's senders alone

    def _throttle(self, held: bool) -> None:
        """Ask every worker to hold (or to release) what it routes to this key group (see
        ``_holding.py``)."""
        self.throttling = held
        env = self.env
        assert self.arriving is not None
        message = Throttle(self.stage.index, self.key_group, held, self.arriving)
        for worker in env.peers:
            env.kernel.ref(handoffs_name(worker)).tell_urgent(message)

    def take_over(self, handoff: GroupHandoff) -> None:
        """The old owner's handoff is in: take the key group over at once, in the caller's turn
        (the handoff receiver's urgent handler: see ``_worker.py``), not behind the batches
        of every actor ahead of this one on the loop. What fails here fails this actor in its
        own turn. Then wake up: :meth:`_take_over` reports and replays the queue."""
        self.handoff = handoff
        self.arrived_at = paused_now()
        try:
            self._open_handed(handoff)
        except Exception as exc:
            self.takeover_error = exc
        if self.throttling:
            self._throttle(False)
        with contextlib.suppress(anyio.WouldBlock):  # full: its next message wakes it
            self.ref.tell_nowait(_Wake())

    def _open_handed(self, handoff: GroupHandoff) -> None:
        """Open the store the old owner closed and take its state (synchronous: no await)."""
        assert self.arriving is not None
        env = self.env
        state = handoff.state
        op = self.stage.operator
        assert op is not None
        if env.faults:
            env.faults.hit("keygroup.takeover")
        if "tail" in state:  # shipped from another state directory (see _ship.py)
            backend = shipping_backend(env)
            backend.install(
                op.name, self.key_group, op.states, ShippedTail.from_data(state["tail"])
            )
        self.store = env.backend.open_store(op.name, self.key_group, op.states)
        self.alignment.restore(state["alignment"])
        self._start_runner(sorted(self.alignment.open_channels))
        assert self.time is not None
        self.time.combiner.restore(state["watermarks"])
        self.drained = bool(state["drained"])
        self.stopped_inputs = bool(state.get("stopped_inputs", False))
        self.base = int(state["base"])
        self.epoch_out = int(state["epoch_out"])
        env.emitted[self.name] = env.emitted.get(self.name, 0) + int(state.get("emitted", 0))
        self.marked_version = handoff.version
        stats = self.store.statistics()
        env.metrics.state_size[(self.stage.name, self.key_group)] = (stats.entries, stats.bytes)
        env.key_groups[self.name] = self
        opened = paused_now()
        phases = dict(state.get("phases", {}))
        phases["transit"] = self.arrived_at - float(state.get("sent_at", self.arrived_at))
        phases["open"] = opened - self.arrived_at
        self.moved_in = MovedIn(
            self.arriving,
            "group",
            self.name,
            handoff.source,
            env.index,
            opened - handoff.paused_at,  # the pause ends here: the store is open
            stats.bytes if "tail" not in state else int(state["bytes"]),
            0,
            int(state.get("tail_bytes", 0)),
            phases,
        )

    async def _take_over(self) -> None:
        """Report the move done, then handle what was queued for it (first turn after the
        handoff: :meth:`take_over` opened the store)."""
        if self.takeover_error is not None:
            raise self.takeover_error
        moved_in = self.moved_in
        assert moved_in is not None
        self.arriving, self.handoff, self.moved_in = None, None, None
        await self.env.kernel.ref(JOB_ACTOR).tell(
            dataclasses.replace(moved_in, held_records=self.queued_max)
        )
        queued, self.queued = self.queued, deque()
        self.queued_records = 0
        # What waited for the move, in turns like the kernel's (fair turns): another
        # successor's takeover on this worker waits a turn, not this whole backlog.
        clock = time.perf_counter
        turn = clock()
        while queued:
            await self._dispatch(queued.popleft())
            if queued and clock() - turn > TURN_S:
                await anyio.lowlevel.checkpoint()
                turn = clock()

    async def _leave(self) -> None:
        """Every open channel has sent its marker: hand the key group to its new owner."""
        assert self.leaving is not None
        version, target = self.leaving
        env = self.env
        paused_at = paused_now()
        lap = Laps(paused_at)
        await pay_markers(env, self.name)  # as a sender to the next stage
        for downstream in self.stage.downstream:
            await flush_downstream(env, downstream)
        if self.stage.sinks:
            await sync_driver(env)
        lap("downstream")
        if self.writing is not None and not self.writing.done.is_set():
            await self.writing.done.wait()  # its snapshot reads the environment
        lap("file_write")
        store = self.store
        assert store is not None
        assert self.time is not None
        # A plain flush: undo-logged once checkpoints run, so recovery still rolls back to
        # the last completed checkpoint; the successor's next epoch commit includes it.
        self._flush()
        lap("flush")
        size = store.statistics().bytes
        tail = None
        if env.ship_state:  # the successor has a state directory of its own (see _ship.py)
            if not shipping(store):  # not pre-copied: the whole environment goes now
                self.shipped = await ship_copy(env, self, target)
            tail = take_tail(store)
            size = self.shipped + tail.size
            lap("ship")
        self.store = None
        store.close()  # releases the environment's fence for the successor
        lap("close")
        self.time.close()  # its wake-ups: the successor arms its own
        env.key_groups.pop(self.name, None)
        env.metrics.state_size.pop((self.stage.name, self.key_group), None)
        state = {
            "alignment": self.alignment.to_data(),
            "watermarks": self.time.combiner.to_data(),
            "drained": self.drained,
            "stopped_inputs": self.stopped_inputs,
            "base": self.base,
            "epoch_out": self.epoch_out,
            "bytes": size,
            "emitted": env.emitted.pop(self.name, 0),  # its checkpoint acks count on from it
        }
        if tail is not None:
            state["tail"] = tail.to_data()
            state["tail_bytes"] = tail.size
        if env.faults:
            env.faults.hit("keygroup.handoff")
        state["phases"] = lap.phases
        state["sent_at"] = paused_now()
        # Urgent: ahead of the data buffered for that worker, taken by its handoff receiver
        # as soon as it arrives (nothing the successor queues depends on its order).
        env.kernel.ref(handoffs_name(target)).tell_urgent(
            GroupHandoff(version, self.name, env.index, state, paused_at)
        )
        self.leaving = None
        self.hand_off(target)
        if tail is not None:  # the successor has it all: this copy would only go stale
            backend = shipping_backend(env)
            await anyio.to_thread.run_sync(backend.remove, store.operator, store.key_group)

    async def _accept(self, message: Any) -> None:
        """Hold ``message`` for the next epoch if its channel already delivered the barrier
        being aligned (aborting that epoch past the bound), else handle it."""
        alignment = self.alignment
        if alignment.epoch is not None and alignment.must_hold(message.channel):
            records = len(message.keys) if type(message) is Data else 0
            if not alignment.hold(message, records):
                await self._abort_alignment()
            return
        await self._handle(message)

    async def _handle(self, message: Any) -> None:
        kind = type(message)
        if kind is Data:
            await self._data(message)
        elif kind is Barrier:
            verdict = self.alignment.barrier(message.channel, message.epoch, time.perf_counter())
            self.base = max(self.base, message.base)
            if verdict == "aligned":
                await self._snapshot()
            elif verdict == "waiting" and self.env.faults:
                self.env.faults.hit("keygroup.aligning")
        elif kind is Watermark:
            assert self.time is not None
            mark = self.time.combiner.update(message.channel, message.timestamp, message.idle)
            if mark is not None:
                await self._advance(mark)
        elif kind is EndOfStream:
            assert self.time is not None
            # The last one: +inf, unless the job was stopped (then time stays where it was).
            mark = self.time.combiner.end(message.channel, stopped=message.stopped)
            self.stopped_inputs = self.stopped_inputs or message.stopped
            if mark is not None:
                await self._advance(mark)
            if self.alignment.end(message.channel):
                await self._snapshot()
            if not self.alignment.open_channels:
                await self._end()
        else:
            raise TypeError(f"key-group actor got an unexpected message {message!r}")

    async def _advance(self, watermark: float | None) -> None:
        """Fire the timers due (event time at ``watermark``, None: only processing time) and
        pass the watermark on to the next keyed stage, behind what they emitted."""
        runner = self.runner
        assert runner is not None
        env = self.env
        if runner.is_async:
            values, offsets, stamps = await runner.fire_timers_async(watermark, self.name, env.dead)
        else:
            values, offsets, stamps = runner.fire_timers(watermark, self.name, env.dead)
        await env.emit(
            self.stage,
            self.name,
            self.name,
            values,
            offsets,
            self.epoch_out,
            stamps,
            runner.take_sides(),
        )
        if watermark is not None:
            await env.broadcast_down(self.stage, Watermark(self.name, watermark))

    async def _snapshot(self) -> None:
        """Every open channel delivered the barrier: commit the epoch, ack, pass it on, and
        release what was held for the next epoch."""
        alignment = self.alignment
        epoch = alignment.epoch
        assert epoch is not None
        env = self.env
        aligned_s = time.perf_counter() - alignment.started_at
        self.epoch_out = epoch + 1
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
        await env.broadcast_down(self.stage, Barrier(epoch, self.name, self.base))
        held = alignment.finish()
        while held:  # in arrival order; a barrier among them may start the next alignment
            await self._accept(held.popleft())

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
        if env.faults:
            env.faults.hit("keygroup.committed")
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
        stats["records_out"] = env.emitted.get(self.name, 0)  # this attempt's, to the barrier
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
        try:
            await env.kernel.ref(checkpoint_writer_name(env.index)).tell(job)
        except BaseException:
            # The writer has stopped (the worker is going down): nobody else will close it.
            env.pending_snapshots.discard(job)
            job.snapshot.close()
            job.done.set()
            raise

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
        self.load.observe(data.keys)
        if self.sample_state is not None and self.batches % STATE_SAMPLE_EVERY == 1:
            # A real read of this batch's first key, timed; reading per record would cost
            # more than the reads themselves (~0.1 µs on a cache hit).
            assert self.store is not None
            started = time.perf_counter()
            self.store.get(self.sample_state, data.keys[0])
            env.metrics.observe_state_access(time.perf_counter() - started)
        store = self.store
        assert store is not None
        started = time.perf_counter()
        if runner.is_async:
            values, offsets, stamps = await runner.run_async(
                data.keys, data.values, data.offsets, data.split, env.dead, data.timestamps
            )
        else:
            # The batch's cache misses share one LMDB read transaction.
            store.hold_reads()
            try:
                values, offsets, stamps = runner.run(
                    data.keys, data.values, data.offsets, data.split, env.dead, data.timestamps
                )
            finally:
                store.release_reads()
        env.metrics.observe_operator(
            runner.operator, count, len(values), time.perf_counter() - started
        )
        self.unflushed += count
        # What the batch loaded and changed goes into the budget's running totals.
        store.report_usage()
        if env.faults:
            env.faults.hit("keygroup.batch")
        if self.unflushed >= FLUSH_EVERY_RECORDS and not env.checkpoints:
            self._flush()
        elif env.budget is not None and env.budget.dirty_over():
            # The worker's unflushed changes alone are over its state memory: write them
            # back now (a plain flush: undo-logged once checkpoints run, so the epoch's
            # commit still reads its delta; see shoal.storage's _budget.py).
            self._flush()
        elif env.budget is not None and env.budget.over():
            # Over it with what batches loaded since the last checkpoint: this key group
            # gives up its share from its clean entries now, not at its next flush.
            env.budget.trim(store)
        await env.emit(
            self.stage,
            self.name,
            data.split,
            values,
            offsets,
            self.epoch_out,
            stamps,
            runner.take_sides(),
        )
        if self.time is not None and self.time.timers is not None:
            await self._advance(None)  # processing-time timers the clock has passed

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
        await self.env.end_stage(self.stage, self.name, stopped=self.stopped_inputs)
        # Every key group says so (not only the last stage's): a drained key group takes no
        # more barriers, and the checkpoint coordinator stops waiting for it.
        await self.env.kernel.ref(JOB_ACTOR).tell(Drained(self.name, self.env.index))
