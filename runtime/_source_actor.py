"""The source actor: reads one split batch by batch and feeds the first exchange; takes
checkpoint barriers between batches."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import anyio
from shoal.actors import Actor
from shoal.actors._log import get_logger

from ._messages import (
    Barrier,
    BarrierAck,
    Drained,
    InjectBarrier,
    MoveOut,
    Pull,
    SendMarkers,
    SplitHandoff,
    SplitHeld,
    Watermark,
)
from ._moves import flush_downstream, paused_now, pay_markers, sync_driver
from ._names import (
    JOB_ACTOR,
    handoffs_name,
)
from ._sources import SplitReader, drain_reader
from ._watermarks import SplitTime

if TYPE_CHECKING:
    from ._worker import WorkerEnv

__all__ = ("SourceActor",)


class SourceActor(Actor):
    """Reads one split and feeds the first exchange.

    ``handed``: the state of the split's previous actor on another worker (live migration:
    see ``_moves.py``); it reopens the split where that one stopped.
    """

    def __init__(self, env: WorkerEnv, split: str, handed: dict[str, Any] | None = None) -> None:
        self.env = env
        self.handed = handed
        self.split = split
        self.reader: SplitReader | None = None
        self.stage = env.plan.source_stage(split)  # its input's chain (see _plan.py)
        self.stopping = False
        self.records = 0
        # The split's position after the last batch sent downstream (None: not read yet); a
        # barrier records it, and a restore reopens the split there.
        self.position: Any = None
        self.ended = False
        # Read all its input, its end held back while a timeline step is to come (see
        # WorkerEnv.hold_ends): it reads nothing more and waits for release().
        self.held = False
        # The checkpoint what it emits now is output of (its next barrier's).
        self.epoch_out = env.first_epoch()
        self._reading: anyio.CancelScope | None = None
        time = env.plan.event_time_of(split)  # stamps the batches and makes the split's watermarks
        self.time = (
            None
            if time is None
            else SplitTime(split, time.timestamps, time.watermarks, time.idle_timeout, env.clock)
        )
        self.log = get_logger("shoal.source").bind(worker=env.index, split=split)

    async def on_start(self) -> None:
        host = self.env.source_host
        assert host is not None, "start_worker spawns the source host before any source"
        # After a failure, the split reopens where the checkpoint recovered from found it;
        # a barrier taken before the first batch records that same position.
        handed = self.handed
        if handed is None:
            self.position = self.env.start_position(self.split)
        else:
            self.position = handed["position"]
            self.ended = bool(handed["ended"])
            self.epoch_out = int(handed["epoch_out"])
            self.records = int(handed["records"])
            emitted = int(handed.get("emitted", 0))
            self.env.emitted[self.split] = self.env.emitted.get(self.split, 0) + emitted
        self.env.sources[self.split] = self
        self.stopping = self.env.stopping
        if not self.ended:
            await host.adopt()
            # A flow with several inputs: open this split's input here if it is not yet.
            open_input = getattr(host.source, "open_input_of", None)
            if open_input is not None:
                await open_input(self.split)
            self.reader = host.open_split(self.split, self.position)
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
        self.release()

    def release(self) -> None:
        """A held end may go now (ReleaseEnds, or a stop): read again, and end."""
        if self.held:
            self.held = False
            with contextlib.suppress(anyio.WouldBlock):  # full: a Pull is on its way anyway
                self.ref.tell_nowait(Pull())

    async def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is InjectBarrier:
            await self._barrier(message.epoch, message.base)
            return None
        if kind is SendMarkers:
            await pay_markers(self.env, self.split)
            return None
        if kind is MoveOut:
            await self._leave(message.version, message.target)
            return None
        if kind is not Pull:
            raise TypeError(f"source actor got an unexpected message {message!r}")
        if self.reader is None:
            return None
        env = self.env
        batch = None
        if not self.stopping:
            with anyio.CancelScope() as self._reading:
                if self.time is None:
                    batch = await self.reader.read_batch(env.batch_size)
                else:  # an idle split's watermark goes out while the read waits
                    batch = await self.time.read(self.reader, env.batch_size, self._send_mark)
            self._reading = None
        if batch is None and self.stopping:
            # Records a cancelled read had taken (a drained reader returns None).
            batch = drain_reader(self.reader)
        if batch is None and env.hold_ends and not self.stopping:
            # Its input is all read, but a timeline step is still to come: the job must not
            # drain before it. Barriers still pass (the mailbox is free); release() ends it.
            if not self.held:
                self.held = True
                await env.kernel.ref(JOB_ACTOR).tell(SplitHeld(self.split))
            return None
        if batch is None:
            self.log.debug("split ended", stopped=self.stopping, records=self.records)
            self.ended = True
            # Stopped from outside before its input ended (a held split had read it all).
            await env.end_stage(self.stage, self.split, stopped=self.stopping and not self.held)
            reader, self.reader = self.reader, None
            await reader.aclose()
            if self.stage.sinks:  # it writes a sink: the job's end waits for it (_attempt.py)
                await env.kernel.ref(JOB_ACTOR).tell(Drained(self.name, env.index))
            return None
        env.metrics.records_in += len(batch.values)
        self.records += len(batch.values)
        for error in batch.errors:
            env.dead.add_source_error(error, self.split)
        if self.time is None:
            await env.emit(
                self.stage, self.split, self.split, batch.values, batch.offsets, self.epoch_out
            )
        else:
            values, offsets, stamps = self.time.stamp(batch.values, batch.offsets, env.dead)
            await env.emit(
                self.stage, self.split, self.split, values, offsets, self.epoch_out, stamps
            )
            mark = self.time.after_batch(len(batch.values))
            if mark is not None:
                await self._send_mark(mark)
        self.position = batch.position
        if env.faults:
            env.faults.hit("source.batch")
        self.continue_with(Pull())
        return None

    async def _leave(self, version: int, target: int) -> None:
        """Hand the split to worker ``target`` between two batches (see ``_moves.py``)."""
        env = self.env
        paused_at = paused_now()
        await pay_markers(env, self.split)
        for downstream in self.stage.downstream:
            await flush_downstream(env, downstream)
        if self.stage.sinks:
            await sync_driver(env)
        if self.reader is not None:
            reader, self.reader = self.reader, None
            await reader.aclose()
        env.sources.pop(self.split, None)
        state = {
            "position": self.position,
            "ended": self.ended,
            "epoch_out": self.epoch_out,
            "records": self.records,
            "emitted": env.emitted.pop(self.split, 0),  # its checkpoint acks count on from it
        }
        if env.faults:
            env.faults.hit("source.handoff")
        # Urgent: not behind the data buffered for that worker (this split's output is
        # flushed already); the receiver spawns its source actor there.
        env.kernel.ref(handoffs_name(target)).tell_urgent(
            SplitHandoff(version, self.split, env.index, state, paused_at)
        )
        self.hand_off(target)

    async def _send_mark(self, mark: tuple[float, bool]) -> None:
        """Send the split's ``(watermark, idle)`` downstream, behind what it sent before."""
        await self.env.broadcast_down(self.stage, Watermark(self.split, *mark))

    async def _barrier(self, epoch: int, base: int) -> None:
        """Checkpoint ``epoch`` between two batches: record the position, pass the barrier on.

        An ended split has already sent its end of stream (its downstream channels are closed):
        it only reports its final position.
        """
        env = self.env
        self.epoch_out = epoch + 1
        if not self.ended:
            await env.broadcast_down(self.stage, Barrier(epoch, self.split, base))
        await env.kernel.ref(JOB_ACTOR).tell(
            BarrierAck(
                epoch,
                self.name,
                env.index,
                {self.split: self.position},
                # This attempt's counts up to the barrier (the coordinator adds the start's).
                {"records_in": self.records, "records_out": env.emitted.get(self.split, 0)},
            )
        )
