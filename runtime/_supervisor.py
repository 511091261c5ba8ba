"""The job supervisor: the driver-side actor that watches a running job.

It owns the placement table (key group -> worker), learns when every key group of the last
operator has drained, and writes what workers gather to the driver (sink items of a gathering
sink, dead letters). Rescaling and recovery (later releases) extend this actor: the placement
table is already its state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
from shoal.actors import Actor, PeerLostError, Ref
from shoal.actors._log import get_logger
from shoal.storage import CheckpointError, CheckpointStore

from ._checkpoint_io import abort_checkpoint, commit_checkpoint
from ._checkpoints import CheckpointCoordinator, CompletedCheckpoint, ReadyCheckpoint
from ._messages import (
    BarrierAck,
    CommitSink,
    Drained,
    Gathered,
    InjectBarrier,
    MovedIn,
    PlacementUpdate,
    PreCommitSink,
    SinkPreCommitted,
    SnapshotDrained,
    SplitHeld,
    TriggerCheckpoint,
)
from ._placement import Placement
from ._rescale import Rescaler, RescaleRecord, driver_directory_moves
from ._sinks import DeadLetter, SinkPartition

__all__ = ("CheckpointTarget", "JobSupervisor")

log = get_logger("shoal.job")


@dataclass(frozen=True, slots=True)
class CheckpointTarget:
    """Where and what the supervisor commits: the store and the manifest's job description.

    Attributes:
        store: The job's checkpoint store.
        num_key_groups: The job's key-group count.
        operators: Per keyed operator, its states as plain data (``describe_specs``).
        key_groups: Key-group actor name -> its ref (to ask drained ones for their part).
    """

    store: CheckpointStore
    num_key_groups: int
    operators: Mapping[str, Sequence[Mapping[str, str]]]
    key_groups: Mapping[str, Ref]


async def _on_loop(fn: Callable[[], Any]) -> Any:
    """Run a short blocking call on the event loop, after giving the loop a turn."""
    await anyio.lowlevel.checkpoint()
    return fn()


class JobSupervisor(Actor):
    """Tracks completion and writes gathered output. One per job, on the driver."""

    def __init__(
        self,
        *,
        expected: set[str],
        group_owner: list[int],
        sink: SinkPartition | None,
        dead_sink: SinkPartition,
        coordinator: CheckpointCoordinator | None = None,
        controllers: Sequence[Ref] = (),
        target: CheckpointTarget | None = None,
        transactional: bool = False,
        rescaler: Rescaler | None = None,
        directory: Any = None,
        fanned: bool = False,
    ) -> None:
        self.coordinator = coordinator
        #: The flow has several sinks: ``sink`` is a fan over them (see _sinks_fan.py).
        self.fanned = fanned
        #: Placement, membership and live migration (None: this job cannot rescale).
        self.rescaler = rescaler
        self._directory = directory  # the driver's: follows every placement update
        #: The sink is transactional: each checkpoint pre-commits it before the manifest and
        #: commits it after (two-phase; see _txn_sink.py).
        self.transactional = transactional
        # A checkpoint whose sink partitions are pre-committing: (it, workers still to answer,
        # when its commit started).
        self._precommitting: tuple[ReadyCheckpoint, set[int], float] | None = None
        self.target = target
        #: Set by ``shoal.testing`` (``fail_next_checkpoint``): the next manifest write fails
        #: with this reason, as a full disk would (the checkpoint is aborted, the job goes on).
        self.fail_next_manifest: str | None = None
        #: Active worker id -> its controller (shared with the rescaler, which changes it).
        self.members: dict[int, Ref] = (
            rescaler.members if rescaler is not None else dict(enumerate(controllers))
        )
        #: Set once every worker has spawned its source actors (checkpoints start then).
        self.sources_started = anyio.Event()
        #: Set (and replaced) each time a checkpoint completes.
        self.checkpointed = anyio.Event()
        #: Set (and replaced) each time a checkpoint starts, completes or is aborted.
        self.checkpoint_changed = anyio.Event()
        self.expected = set(expected)
        self._group_owner = list(group_owner)
        self.sink = sink
        self.dead_sink = dead_sink
        self.done: set[str] = set()
        self.finished = anyio.Event()
        #: Splits that read all their input and hold their end back for a timeline step;
        #: ``all_held`` is set once every split does (the timeline then knows no more input
        #: will come: see _timeline.py).
        self.held: set[str] = set()
        self.all_held = anyio.Event()
        self._splits = 0 if rescaler is None else len(rescaler.plan.splits)
        #: Set once the drained job's final checkpoint is taken (or checkpoints are off): from
        #: then on, workers exiting is the job's end, not a failure.
        self.ended = anyio.Event()

    async def receive(self, message: Any) -> Any:
        try:
            return await self._receive(message)
        except PeerLostError as exc:
            # A worker is gone (its process died): telling it anything fails. The attempt's
            # watch reports the loss with its cause, and the job restarts; the supervisor
            # itself must not fail (a failed driver actor fails the job).
            log.debug(
                "supervisor: a worker was lost", message=type(message).__name__, error=str(exc)
            )
            return None

    async def _receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Gathered:
            if message.kind == "sink":
                assert self.sink is not None, (
                    "a worker gathered sink items for a non-gathering sink"
                )
                items = message.items
                if self.fanned:
                    items = [[message.sink, items]]
                if self.transactional:
                    await self.sink.write_epoch(message.epoch, items)  # type: ignore[attr-defined]
                else:
                    await self.sink.write_batch(items)
            else:
                letters = [DeadLetter.from_json(item) for item in message.items]
                await self.dead_sink.write_batch(letters)
        elif kind is BarrierAck:
            if self.coordinator is not None:
                await self._ack(self.coordinator, message)
                self._changed()
        elif kind is SinkPreCommitted:
            await self._sink_precommitted(message)
            self._changed()
        elif kind is SplitHeld:
            self.held.add(message.split)
            if self._splits and len(self.held) >= self._splits:
                self.all_held.set()
        elif kind is Drained:
            self.done.add(message.actor)
            if self.coordinator is not None and self.coordinator.drain(message.actor):
                await self._ask_drained([message.actor])
            if self.done >= self.expected:
                self.finished.set()
            self._changed()
        elif kind is TriggerCheckpoint:
            epoch = await self._trigger(final=message.final, periodic=message.periodic)
            self._changed()
            return epoch
        elif kind is MovedIn:
            assert self.rescaler is not None
            self.rescaler.moved_in(message)
        elif message == "sync":
            return None  # everything a worker sent before is handled
        elif message == "settle":
            await self._settle()
        elif message == "placement":
            return list(self.placement.group_owner)
        else:
            raise TypeError(f"job supervisor got an unexpected message {message!r}")
        return None

    @property
    def controllers(self) -> list[Ref]:
        """The active workers' controllers."""
        return list(self.members.values())

    @property
    def placement(self) -> Placement:
        """The placement table in force."""
        if self.rescaler is not None:
            return self.rescaler.placement
        return Placement(0, tuple(self.members), tuple(self._group_owner), ())

    @property
    def moving(self) -> bool:
        return self.rescaler is not None and self.rescaler.moving

    async def handing_off(self, since: int) -> None:
        """Return once more than ``since`` placement versions have started their handoffs
        (a timeline's kill in the middle of a rescale)."""
        rescaler = self.rescaler
        assert rescaler is not None
        while rescaler.handoffs <= since:
            await rescaler.handoff_started.wait()

    def follow(self, update: PlacementUpdate) -> None:
        """The driver's directory follows placement ``update`` (its refs to key groups)."""
        if self._directory is not None and self.rescaler is not None:
            for name, worker in driver_directory_moves(update, self.rescaler.plan):
                self._directory.place(name, worker)

    def changed(self) -> None:
        self._changed()

    async def wait_no_checkpoint(self) -> None:
        """Return once no checkpoint is in flight (a placement version may start then)."""
        coordinator = self.coordinator
        while coordinator is not None and coordinator.pending is not None:
            await self.checkpoint_changed.wait()

    async def rescale(self, workers: int) -> RescaleRecord:
        """Scale the running job to ``workers`` workers (see ``_rescale.py``). Runs beside the
        actor, on the driver."""
        if self.rescaler is None:
            raise RuntimeError("this job cannot rescale")
        return await self.rescaler.rescale(self, workers)

    def _layout(self) -> dict[str, Any]:
        placement = self.placement
        return {"workers": len(placement.workers), "group_owner": list(placement.group_owner)}

    def _base(self) -> int:
        assert self.coordinator is not None
        return self.coordinator.base

    def _changed(self) -> None:
        event, self.checkpoint_changed = self.checkpoint_changed, anyio.Event()
        event.set()

    async def _trigger(self, *, final: bool = False, periodic: bool = False) -> int | None:
        coordinator = self.coordinator
        if coordinator is None:
            raise RuntimeError(
                "checkpoints are off for this job (checkpoint_interval=None): start it with "
                "checkpoint_interval=SECONDS (open_job, run_job; shoal run checkpoints by default)"
            )
        expired = coordinator.expire()
        if expired is not None:
            await self._remove_files(expired)
        if (self.finished.is_set() and not final) or self.moving:
            return None  # a placement version in flight: no barrier may cross a moving channel
        if periodic and self.rescaler is not None and self.rescaler.rescaling:
            return None  # a rescale goes first (it is short); explicit checkpoints wait for it
        epoch = coordinator.begin()
        if epoch is not None:
            base = self._base()
            for controller in self.controllers:
                await controller.tell(InjectBarrier(epoch, base))
            await self._ask_drained(coordinator.owing())
        return epoch

    async def _ask_drained(self, actors: Sequence[str]) -> None:
        """Ask drained key groups for their part of the checkpoint in flight."""
        coordinator = self.coordinator
        if self.target is None or coordinator is None or coordinator.in_progress is None:
            return
        message = SnapshotDrained(coordinator.in_progress, self._base())
        coordinator.asked(actors)
        for actor in actors:
            await self.target.key_groups[actor].tell(message)

    async def _ack(self, coordinator: CheckpointCoordinator, ack: BarrierAck) -> None:
        epoch = coordinator.in_progress
        ready = coordinator.ack(ack)
        if ready is not None:
            await self._commit(coordinator, ready)
        elif epoch is not None and coordinator.in_progress is None:
            await self._remove_files(epoch)  # a part failed: the checkpoint was aborted

    async def _commit(self, coordinator: CheckpointCoordinator, ready: ReadyCheckpoint) -> None:
        """Write the manifest off the event loop; the checkpoint completes only once it is.

        The supervisor's mailbox waits meanwhile (a few ms on a local disk): acks of the next
        checkpoint cannot arrive before it is triggered, and that waits for this one.
        """
        started = time.perf_counter()
        if self.transactional and self.sink is None:
            # Phase one on every worker's partition; each answers with SinkPreCommitted, and
            # the last answer writes the manifest (_sink_precommitted).
            self._precommitting = (ready, set(self.members), started)
            for controller in self.controllers:
                await controller.tell(PreCommitSink(ready.epoch))
            return
        if self.transactional:
            assert self.sink is not None
            try:  # the gathering sink's one partition, here on the driver
                await self.sink.pre_commit(ready.epoch)  # type: ignore[attr-defined]
            except Exception as exc:  # its disk: the checkpoint fails, not the job
                coordinator.abort(f"sink pre-commit failed: {type(exc).__name__}: {exc}")
                await self._remove_files(ready.epoch)
                return
        await self._write_manifest(coordinator, ready, started)

    async def _sink_precommitted(self, message: SinkPreCommitted) -> None:
        coordinator = self.coordinator
        waiting = self._precommitting
        if coordinator is None or waiting is None or waiting[0].epoch != message.epoch:
            return
        ready, workers, started = waiting
        if message.error is not None:
            self._precommitting = None
            coordinator.abort(f"sink pre-commit failed: {message.error}")
            await self._remove_files(ready.epoch)
            return
        workers.discard(message.worker)
        if not workers:
            self._precommitting = None
            await self._write_manifest(coordinator, ready, started)

    async def _write_manifest(
        self, coordinator: CheckpointCoordinator, ready: ReadyCheckpoint, started: float
    ) -> None:
        target = self.target
        if target is not None:
            try:
                self._fail_if_asked()
                # The manifest is small (a few hundred bytes a key group): written on the loop,
                # like small key-group files (see LOOP_WRITE_ENTRIES in _checkpoint_io.py).
                await _on_loop(
                    lambda: commit_checkpoint(
                        target.store,
                        ready.epoch,
                        ready.records(),
                        num_key_groups=target.num_key_groups,
                        operators=target.operators,
                        positions=ready.positions,
                        layout=self._layout(),
                        counters=coordinator.counters(ready),
                    )
                )
            except (CheckpointError, OSError) as exc:
                coordinator.abort(f"manifest not written: {exc}")
                await self._remove_files(ready.epoch)
                return
        done = coordinator.committed(ready.epoch, manifest_s=time.perf_counter() - started)
        if self.transactional and done is not None:
            await self._commit_sink(done.epoch)
        self._completed(done)

    def _fail_if_asked(self) -> None:
        """``shoal.testing``'s ``fail_next_checkpoint``: this manifest write fails."""
        if self.fail_next_manifest is not None:
            reason, self.fail_next_manifest = self.fail_next_manifest, None
            raise CheckpointError(reason)

    async def _commit_sink(self, epoch: int) -> None:
        """Phase two, after the manifest: publish. A partition that does not get here (its
        worker died) is published by ``recover`` before the next attempt starts."""
        try:
            if self.sink is not None:
                await self.sink.commit(epoch)  # type: ignore[attr-defined]
            else:
                for controller in self.controllers:
                    await controller.tell(CommitSink(epoch))
        except PeerLostError as exc:
            log.info("sink commit left to recovery", epoch=epoch, error=str(exc))

    async def _remove_files(self, epoch: int) -> None:
        if self.target is not None:
            target = self.target
            # A few files: on the loop (a thread pays a GIL convoy against a busy loop, and
            # the supervisor, which triggers the next checkpoint, would wait for it).
            await _on_loop(lambda: abort_checkpoint(target.store, epoch))

    async def _settle(self) -> None:
        """The job has ended: a checkpoint still collecting acks is abandoned (its files are
        removed; it is not counted as failed)."""
        coordinator = self.coordinator
        if coordinator is None:
            return
        epoch = coordinator.abort("the job ended before every part acked", failed=False)
        if epoch is not None:
            await self._remove_files(epoch)

    async def take_checkpoint(self, job: Ref, *, final: bool = False, tries: int = 3) -> int:
        """Take a checkpoint now (after the one in flight) and wait for it; ``final``: the
        checkpoint of a drained job (every split at its end, every key group's final state).
        Runs beside the actor (it asks it), on the driver.

        Returns:
            The epoch of the checkpoint that completed.

        Raises:
            CheckpointError: ``tries`` checkpoints in a row did not complete.
        """
        for _ in range(tries):
            epoch = await self.start_checkpoint(job, final=final)
            if epoch is None:
                raise CheckpointError("the job has drained: only its final checkpoint is left")
            coordinator = self.coordinator
            assert coordinator is not None
            while coordinator.in_progress == epoch:
                await self.checkpoint_changed.wait()
            last = coordinator.last_completed
            if last is not None and last.epoch == epoch:
                return last.epoch
        raise CheckpointError(f"{tries} checkpoints in a row failed (see the log for why)")

    async def start_checkpoint(self, job: Ref, *, final: bool = False) -> int | None:
        """Start a checkpoint now (after the one in flight) and return its epoch at once;
        None once the job has drained (then only ``final`` starts one)."""
        coordinator = self.coordinator
        if coordinator is None:
            raise RuntimeError(
                "checkpoints are off for this job (checkpoint_interval=None): start it with "
                "checkpoint_interval=SECONDS (open_job, run_job; shoal run checkpoints by default)"
            )
        while True:
            while coordinator.pending is not None or self.moving:
                await self.checkpoint_changed.wait()
            if self.finished.is_set() and not final:
                return None
            epoch = await job.ask(TriggerCheckpoint(final=final))
            if epoch is not None:
                return int(epoch)

    def _completed(self, done: CompletedCheckpoint | None) -> None:
        if done is not None:
            event, self.checkpointed = self.checkpointed, anyio.Event()
            event.set()
