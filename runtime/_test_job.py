"""A whole job under test in one event loop, with faults injected while it runs.

``async with open_test_job(flow, workers=2) as job:`` runs ``flow`` as :func:`open_job` does,
set up for a test:

* every worker in this loop (``processes=False``), on a temporary state directory that is
  removed when the block is left (read ``job.result`` inside the block);
* checkpoints on (every virtual second by default; ``checkpoint_interval=None``: only when
  asked, ``await job.checkpoint()``), restarts at once (``restart_backoff=0``);
* on asyncio's own loop, virtual time: the :class:`VirtualClock` installed in the loop (the
  ``virtual_clock`` fixture's), else a new ``VirtualClock(autojump=True)`` installed for the
  block, is the loop's time and the job's processing time; on uvloop, which cannot take one,
  real time (``clock=`` overrides: a clock, or ``"system"``);
* ``job.output``: what a :class:`CollectingSink` has collected so far, readable while it runs.

Faults, each on the running job (see :class:`TestJob`): ``crash_key_group``, ``kill_worker``,
``fail_next_checkpoint``, ``corrupt_next_checkpoint``, and ``migrate`` (a key group moved now,
through a :class:`PlacementPolicy`, as ``job.rebalance`` moves them).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import fsspec  # type: ignore[import-untyped]
from shoal.storage import CheckpointStore

from ._checkpoints import CompletedCheckpoint
from ._control import JobControl
from ._dataflow import Flow
from ._exceptions import JobStoppedError, UnknownOperatorError, VirtualClockError
from ._handle import Job, open_job
from ._keys import key_group_of
from ._load import KeyGroupLoad
from ._messages import InjectFailure
from ._names import controller_name
from ._placement import Placement
from ._plan import actor_name
from ._policies import RebalanceRecord
from ._result import JobResult
from ._scripted_source import ScriptedSource
from ._sinks import CollectingSink
from ._statistics import JobStatistics
from ._supervisor import JobSupervisor
from ._time import Clock
from ._virtual_clock import VirtualClock

__all__ = (
    "CorruptedCheckpoint",
    "MoveKeyGroup",
    "Recovery",
    "TestJob",
    "open_test_job",
)

#: ``checkpoint_interval=None`` in a test job: checkpoints only when asked. The coordinator
#: needs an interval to exist at all; this one never comes in a test.
_ONLY_WHEN_ASKED_S = 10.0 * 365 * 86_400


@dataclass(frozen=True, slots=True)
class Recovery:
    """One restart of the job after a failure.

    Attributes:
        attempt: the attempt it started (1: the first restart).
        restored_epoch: the checkpoint it restored (0: none, from the beginning).
        newest_epoch: the newest checkpoint that had completed when it failed.
    """

    attempt: int
    restored_epoch: int
    newest_epoch: int

    @property
    def fell_back(self) -> bool:
        """Whether it restored an older checkpoint than the newest (which was unusable)."""
        return self.restored_epoch < self.newest_epoch


@dataclass(frozen=True, slots=True)
class CorruptedCheckpoint:
    """What ``corrupt_next_checkpoint`` damaged: checkpoint ``epoch``'s ``files`` (paths
    relative to the checkpoint directory), each cut to half its size."""

    epoch: int
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MoveKeyGroup:
    """A placement policy that moves one key group to one worker and leaves the rest."""

    key_group: int
    worker: int

    def place(
        self, placement: Placement, loads: Sequence[KeyGroupLoad], workers: Sequence[int]
    ) -> list[int]:
        owner = list(placement.group_owner)
        owner[self.key_group] = self.worker
        return owner


class TestJob:
    """A job started by :func:`open_test_job`: what :class:`Job` does, plus the output so far
    and fault injection. Every method raises :class:`JobStoppedError` once the job has ended.
    """

    __test__ = False  # not a pytest test class, whatever module imports it

    def __init__(self, job: Job, flow: Flow, clock: Clock | None, state_dir: Path) -> None:
        self._job = job
        self.flow = flow
        #: The job's processing-time clock (None: the system clock).
        self.clock = clock
        #: The job's temporary state directory (removed when the block is left).
        self.state_dir = state_dir
        #: Every restart after a failure, in order.
        self.recoveries: list[Recovery] = []
        #: What ``corrupt_next_checkpoint`` damaged, in order.
        self.corrupted: list[CorruptedCheckpoint] = []
        self._sink = _collecting_sink(flow)
        self._control: JobControl | None = None
        self._store: CheckpointStore | None = None
        self._attempts = 0
        self._changed = anyio.Event()  # set (and replaced) on each recovery and at the end
        self._fail_next: str | None = None
        self._corrupt_next = False

    # -- what Job does -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the job has not ended yet."""
        return self._job.running

    @property
    def result(self) -> JobResult:
        """The job's :class:`JobResult` once it has ended (see :attr:`Job.result`)."""
        return self._job.result

    async def wait(self) -> JobResult:
        """Wait for the job's end (a bounded source read to its end, or :meth:`stop`)."""
        return await self._job.wait()

    async def stop(self) -> None:
        """Stop the job: what was read drains, a final checkpoint is taken (as Job.stop)."""
        await self._job.stop()

    async def send(self, record: Any) -> int:
        """Push ``record`` into the flow's PushSource (as :meth:`Job.send`)."""
        return await self._job.send(record)

    async def query(self, operator: str, state: str, key: Any, default: Any = None) -> Any:
        """``key``'s value in ``state`` of ``operator``, from its owner (as :meth:`Job.query`)."""
        return await self._job.query(operator, state, key, default)

    async def statistics(self) -> JobStatistics:
        """The job's figures now (as :meth:`Job.statistics`)."""
        return await self._job.statistics()

    async def checkpoint(self) -> int:
        """Take a checkpoint now and wait for it (as :meth:`Job.checkpoint`); its epoch."""
        return await self._job.checkpoint()

    async def rescale(self, workers: int) -> Any:
        """Rescale to ``workers`` workers, live (as :meth:`Job.rescale`)."""
        return await self._job.rescale(workers)

    @property
    def output(self) -> list[Any]:
        """What the flow's :class:`CollectingSink` holds so far (a copy), readable while the
        job runs. A plain sink is at least once: records replayed after a recovery appear
        again (``dict.fromkeys(job.output)`` drops repeats of equal items).

        Raises:
            TypeError: the flow's sink is not a CollectingSink, or the flow has several sinks.
        """
        sinks = self.flow.sinks
        if len(sinks) > 1:
            raise TypeError(
                f"job.output reads the flow's one sink; flow {self.flow.name!r} has {len(sinks)} "
                "(read each CollectingSink's .items instead)"
            )
        if self._sink is None:
            raise TypeError(
                f"job.output reads a CollectingSink; flow {self.flow.name!r} writes to "
                f"a {type(_sink_of(self.flow)).__name__} (end the flow in "
                ".sink(CollectingSink()))"
            )
        return list(self._sink.items)

    def key_group_of(self, key: Any) -> int:
        """The key group ``key`` belongs to in this job."""
        return key_group_of(key, self.flow.num_key_groups)

    async def owner(self, key_group: int) -> int:
        """The worker that owns ``key_group`` now.

        Raises:
            ValueError: the job has no such key group.
        """
        control = await self._current()
        self._check_group(key_group)
        return control.supervisor.placement.group_owner[key_group]

    # -- faults --------------------------------------------------------------------------------

    async def crash_key_group(self, operator: str, key: Any) -> Recovery:
        """Fail the key-group actor of ``operator`` that owns ``key`` now (the message reaches
        it behind what its mailbox holds); the job restarts from the last completed
        checkpoint. Return once the restarted job runs.

        Raises:
            UnknownOperatorError: the flow has no keyed operator ``operator``.
            TypeError: ``key`` is not a valid key.
            JobStoppedError: the job has ended (or ended instead of recovering).
        """
        control = await self._current()
        declared = _keyed_operators(self.flow)
        if operator not in declared:
            known = ", ".join(repr(name) for name in declared) or "none"
            raise UnknownOperatorError(
                f"flow {self.flow.name!r} has no keyed operator {operator!r}; its keyed "
                f"operators are {known} (the name= given to count/reduce/process/window)"
            )
        group = self.key_group_of(key)
        reason = f"crash_key_group({operator!r}, {key!r}): key group {group} crashed"
        before = len(self.recoveries)
        await control.supervisor.worker.ref(actor_name(operator, group)).tell(InjectFailure(reason))
        return await self._recovered(before, reason)

    async def kill_worker(self, worker: int) -> Recovery:
        """Fail worker ``worker`` now (in one loop: its controller actor raises, and the
        worker goes down with it); the job restarts from the last completed checkpoint.
        Return once the restarted job runs.

        Raises:
            ValueError: the job has no worker ``worker``.
            JobStoppedError: the job has ended (or ended instead of recovering).
        """
        control = await self._current()
        members = sorted(control.supervisor.members)
        if type(worker) is not int or worker not in members:
            raise ValueError(f"no worker {worker!r}: the job's workers are {members}")
        reason = f"kill_worker({worker}): worker {worker} failed"
        before = len(self.recoveries)
        await control.supervisor.worker.ref(controller_name(worker)).tell(InjectFailure(reason))
        return await self._recovered(before, reason)

    def fail_next_checkpoint(self) -> None:
        """Make the next checkpoint fail (its manifest is not written, as on a full disk): it
        is aborted and counted in ``statistics().checkpoints_failed``, the job goes on, and
        ``job.checkpoint()`` tries again (it returns the next epoch).

        Raises:
            JobStoppedError: the job has ended.
        """
        self._check_running()
        self._fail_next = "fail_next_checkpoint(): the manifest write failed (injected)"
        if self._control is not None:
            self._control.supervisor.fail_next_manifest = self._fail_next

    def corrupt_next_checkpoint(self) -> None:
        """Damage the next checkpoint that completes, right after it completes: its own
        files are cut to half their size (:attr:`corrupted` lists them). A recovery then
        cannot use it (nor a later one built on those files): it falls back to an older
        checkpoint, logs "checkpoint skipped for recovery" naming the file, and its
        :class:`Recovery` says ``fell_back``.

        Raises:
            JobStoppedError: the job has ended.
        """
        self._check_running()
        self._corrupt_next = True

    async def migrate(self, key_group: int, to_worker: int) -> RebalanceRecord:
        """Move ``key_group`` (``job.key_group_of(key)`` for a key's) to worker
        ``to_worker`` now, live, through the :class:`MoveKeyGroup` placement policy; return
        the rebalance's record (no moves when it is there already).

        Raises:
            ValueError: the job has no such key group, or no such worker.
            JobStoppedError: the job has ended.
        """
        control = await self._current()
        self._check_group(key_group)
        members = sorted(control.supervisor.members)
        if type(to_worker) is not int or to_worker not in members:
            raise ValueError(f"no worker {to_worker!r}: the job's workers are {members}")
        return await control.rebalance(MoveKeyGroup(key_group, to_worker), loads=())

    # -- internals -----------------------------------------------------------------------------

    def _check_running(self) -> None:
        if not self._job.running:
            raise JobStoppedError("the job has ended")

    def _check_group(self, key_group: object) -> None:
        groups = self.flow.num_key_groups
        if type(key_group) is not int or not 0 <= key_group < groups:
            raise ValueError(
                f"the job has key groups 0..{groups - 1}; got {key_group!r} "
                "(job.key_group_of(key) gives a key's)"
            )

    async def _current(self) -> JobControl:
        self._check_running()
        return await self._job._current()

    async def _recovered(self, before: int, reason: str) -> Recovery:
        while len(self.recoveries) <= before:
            if not self._job.running:
                raise JobStoppedError(f"the job ended instead of recovering from {reason}")
            await self._changed.wait()
        return self.recoveries[before]

    def _wake(self) -> None:
        event, self._changed = self._changed, anyio.Event()
        event.set()

    async def _watch(self) -> None:
        """Follow the job's attempts: note each recovery, carry an armed checkpoint failure
        over to a restarted attempt."""
        job = self._job
        try:
            while True:
                try:
                    control = await job._current()
                except JobStoppedError:
                    return
                if control is not self._control:
                    self._attached(control)
                    started = control.supervisor.sources_started
                    await job._changed(control, started)  # its sources run, or it ended
                    if job._control is control and started.is_set():
                        self._running(control)
                await job._changed(control, anyio.Event())  # until this attempt ends
        finally:
            self._control = None
            self._wake()

    def _attached(self, control: JobControl) -> None:
        previous = self._control
        self._control = control
        self._store = control.store
        supervisor: JobSupervisor = control.supervisor
        if previous is not None and previous.supervisor.fail_next_manifest is None:
            self._fail_next = None  # it fired in the attempt that ended
        if self._fail_next is not None:
            supervisor.fail_next_manifest = self._fail_next
        self._attempts += 1

    def _running(self, control: JobControl) -> None:
        """A restarted attempt's sources run: the recovery is complete."""
        if self._attempts == 1:
            return
        coordinator = control.supervisor.coordinator
        assert coordinator is not None  # a test job always checkpoints
        newest = coordinator.last_completed
        self.recoveries.append(
            Recovery(
                attempt=self._attempts - 1,
                restored_epoch=coordinator.base,
                newest_epoch=0 if newest is None else newest.epoch,
            )
        )
        self._wake()

    async def _on_checkpoint(self, done: CompletedCheckpoint) -> None:
        if self._corrupt_next and self._store is not None:
            self._corrupt_next = False
            files = await anyio.to_thread.run_sync(_damage, self._store, done.epoch)
            self.corrupted.append(CorruptedCheckpoint(done.epoch, files))


def _damage(store: CheckpointStore, epoch: int) -> tuple[str, ...]:
    """Cut checkpoint ``epoch``'s own files (or, if it wrote none, every file it uses) to half
    their size: a recovery's size check then skips it."""
    records = list(store.read_manifest(epoch).files())
    own = [record for record in records if record.epoch == epoch] or records
    for record in own:
        data = store.location.read(record.path)
        store.location.write(record.path, data[: len(data) // 2])
    return tuple(record.path for record in own)


def _remove_memory_dir(root: str) -> None:
    """Remove ``memory://<root>`` and everything under it from fsspec's memory filesystem."""
    filesystem = fsspec.filesystem("memory")
    with suppress(FileNotFoundError):
        filesystem.rm(f"/{root}", recursive=True)
    with suppress(FileNotFoundError):
        filesystem.rmdir(f"/{root}")


def _sink_of(flow: Flow) -> Any:
    sinks = flow.sinks
    return sinks[-1] if sinks else None


def _collecting_sink(flow: Flow) -> CollectingSink | None:
    sink = _sink_of(flow)
    return sink if isinstance(sink, CollectingSink) else None


def _keyed_operators(flow: Flow) -> list[str]:
    return [op.name for op in flow.keyed_operators()]


def _install_virtual(clock: VirtualClock | None) -> tuple[VirtualClock | None, bool]:
    """The virtual clock for a test job in this loop, and whether it was installed here.

    ``clock`` None: the one installed in the running loop, else a new autojump one installed
    now; None when the loop cannot take one (uvloop, or no asyncio loop).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not an asyncio loop (trio): real time
        return clock, False
    installed = getattr(loop, "_shoal_virtual_clock", None)
    if clock is None and isinstance(installed, VirtualClock):
        return installed, False
    if clock is not None and (clock.installed or installed is not None):
        return clock, False  # installed already, or the loop has another: used as given
    chosen = VirtualClock(autojump=True) if clock is None else clock
    try:
        chosen.install(loop)
    except VirtualClockError:  # uvloop: a given clock works unininstalled, a new one is moot
        return clock, False
    return chosen, True


@asynccontextmanager
async def open_test_job(
    flow: Flow,
    *,
    workers: int = 1,
    clock: Clock | Literal["system"] | None = None,
    checkpoint_interval: float | None = 1.0,
    restart_backoff: float = 0.0,
    on_checkpoint: Callable[[CompletedCheckpoint], Awaitable[None]] | None = None,
    **options: Any,
) -> AsyncIterator[TestJob]:
    """Run ``flow`` for a test in this event loop and yield its :class:`TestJob` (see the
    module docstring). Leaving the block normally stops the job (drain, final checkpoint) and
    raises its :class:`JobError` if it failed; the state directory is removed either way.

    Args:
        flow: a :class:`Flow` object (a test builds it in the test).
        workers: workers, all in this loop.
        clock: None (default): virtual time where the loop can take it (see the module
            docstring); a :class:`Clock` (a ``VirtualClock`` is installed for the block if
            the loop has none); ``"system"``: real time.
        checkpoint_interval: seconds of (virtual) time between checkpoints; None: only when
            asked (``job.checkpoint()``).
        restart_backoff: seconds before a restart (default none).
        on_checkpoint: as :func:`open_job`'s.
        **options: other :func:`run_job` keyword arguments (``batch_size``, ``faults``,
            ``max_restarts``, ``backend``, ...), except ``processes`` and ``state_dir``.

    Raises:
        TypeError: ``flow`` is not a Flow object; ``processes=`` or ``state_dir=`` given.
        JobError: the job failed (when the block is left normally).
    """
    if not isinstance(flow, Flow):
        raise TypeError(
            f"open_test_job takes a Flow object (its workers run in this loop); "
            f"got {type(flow).__name__}"
        )
    for refused in ("processes", "state_dir"):
        if refused in options:
            raise TypeError(
                f"open_test_job runs every worker in this loop on a temporary state "
                f"directory: {refused}= is not taken (use run_job or open_job for that)"
            )
    source = flow.get_source()
    if isinstance(source, ScriptedSource):
        source.rearm()  # a new job: each CrashHere fires once in it
    installed_here = False
    job_clock: Clock | None
    if clock == "system":
        job_clock = None
    elif clock is None or isinstance(clock, VirtualClock):
        job_clock, installed_here = _install_virtual(clock)
    else:
        job_clock = clock
    state_dir = Path(tempfile.mkdtemp(prefix="shoal-test-job-"))
    # Checkpoints in fsspec's memory filesystem unless asked otherwise: no fsync per file, a
    # third of a checkpointing test's time on a local disk (see docs/guides/testing.md).
    memory_dir = None
    if "checkpoint_dir" not in options:
        memory_dir = f"memory://{state_dir.name}/checkpoints"
        options["checkpoint_dir"] = memory_dir
    handle: TestJob | None = None
    try:

        async def checkpointed(done: CompletedCheckpoint) -> None:
            assert handle is not None
            await handle._on_checkpoint(done)
            if on_checkpoint is not None:
                await on_checkpoint(done)

        body: BaseException | None = None
        async with open_job(
            flow,
            workers=workers,
            processes=False,
            state_dir=state_dir,
            clock=job_clock,
            checkpoint_interval=(
                _ONLY_WHEN_ASKED_S if checkpoint_interval is None else checkpoint_interval
            ),
            restart_backoff=restart_backoff,
            on_checkpoint=checkpointed,
            **options,
        ) as job:
            handle = TestJob(job, flow, job_clock, state_dir)
            if job._control is not None:  # the first attempt, before anything can fail it
                handle._attached(job._control)
            async with anyio.create_task_group() as tg:
                tg.start_soon(handle._watch)
                try:
                    yield handle
                except BaseException as exc:
                    body = exc  # raised below as itself, not in an exception group
                tg.cancel_scope.cancel()
            if body is not None:
                raise body
        if not job.running:
            result = job.result  # raises the job's JobError if it failed
            result.close()
    finally:
        if handle is not None and not handle.running:
            with suppress(Exception):
                handle.result.close()
        shutil.rmtree(state_dir, ignore_errors=True)
        if memory_dir is not None:
            _remove_memory_dir(state_dir.name)
        if installed_here and isinstance(job_clock, VirtualClock):
            job_clock.uninstall()
