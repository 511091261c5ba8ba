"""A running job as an object: ``async with open_job(flow, ...) as job`` (embedding a job in
an asyncio or anyio program: pushing records, querying state, rescaling, checkpoints,
savepoints, statistics, stopping).

:func:`run_job` runs a job to its end; :func:`open_job` runs the same job in a task of the
caller's event loop and hands back a :class:`Job` to act on it while it runs::

    async with open_job(flow, checkpoint_interval=1.0) as job:
        offset = await job.send({"user": "ada"})     # into the flow's PushSource
        count = await job.query("per_user", "value", "ada")
        await job.rescale(4)          # live: key groups move, the others keep running
        epoch = await job.checkpoint()
        stats = await job.statistics()
        await job.stop()              # input closed, what was read drains, final checkpoint
    result = job.result               # the JobResult, once the block is left

It runs in the host's running loop (no private loop, no thread), touches nothing global (no
logging set-up, no signal handlers, no event-loop policy), and leaves nothing behind when the
block is left: every task, worker process, socket, LMDB environment and temporary directory of
the job is gone. Leaving the block normally stops the job (as :meth:`Job.stop`) and waits for
its end; leaving it by an exception, or cancelling the host's scope around it, aborts the job
(no final checkpoint; worker processes get SIGTERM). A method called while the job restarts
after a failure waits for the new attempt; once the job has ended, every method that acts on it
raises :class:`JobStoppedError`. ``start_job`` is the same function under its earlier name.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ._checkpoints import CompletedCheckpoint
from ._control import JobControl
from ._dataflow import Flow
from ._exceptions import JobError, JobStoppedError
from ._load import KeyGroupLoad
from ._policies import PlacementPolicy, RebalanceRecord
from ._push_source import PushSource
from ._query import ask_query, check_query
from ._rescale import RescaleRecord
from ._result import JobResult
from ._statistics import JobStatistics, job_statistics

__all__ = ("Job", "open_job", "start_job")

ABORTED = "the job was aborted (its block was left by an error or cancelled): it has no result"

OnCheckpoint = Callable[[CompletedCheckpoint], Awaitable[None]]


class Job:
    """A job started by :func:`open_job`: act on it while it runs."""

    def __init__(self) -> None:
        self._control: JobControl | None = None
        self._attached = anyio.Event()
        self._switched = anyio.Event()  # set (and replaced) when an attempt starts or ends
        self._stop = anyio.Event()
        self._ended = anyio.Event()
        self._result: JobResult | None = None
        self._error: BaseException | None = None
        self._push: PushSource | None = None
        self._push_checked = False
        self._started_at = anyio.current_time()
        # The newest checkpoint the follower has handled (PushSource trimmed, on_checkpoint
        # returned), and an event set (and replaced) each time it moves on.
        self._followed = 0
        self._followed_event = anyio.Event()

    def _attach(self, control: JobControl | None) -> None:
        """An attempt started (``control``) or ended (None)."""
        self._control = control
        if control is not None:
            self._attached.set()
            if not self._push_checked:
                assert control.supervisor.rescaler is not None
                source = control.supervisor.rescaler.plan.flow.get_source()
                self._push = source if isinstance(source, PushSource) else None
                self._push_checked = True
        elif self._attached.is_set():
            self._attached = anyio.Event()
        event, self._switched = self._switched, anyio.Event()
        event.set()

    async def _current(self) -> JobControl:
        while self._control is None:
            if self._ended.is_set():
                raise JobStoppedError("the job has ended")
            await self._attached.wait()  # an attempt runs, or the job ended (set then too)
        return self._control

    async def _changed(self, control: JobControl, event: anyio.Event) -> None:
        """Wait for ``event`` (a placement or checkpoint change of ``control``'s attempt), or
        for that attempt to end."""
        if self._control is not control:
            return
        switched = self._switched
        async with anyio.create_task_group() as tg:

            async def first(waiter: Callable[[], Awaitable[Any]]) -> None:
                await waiter()
                tg.cancel_scope.cancel()

            tg.start_soon(first, event.wait)
            tg.start_soon(first, switched.wait)

    @property
    def running(self) -> bool:
        """Whether the job has not ended yet."""
        return not self._ended.is_set()

    @property
    def result(self) -> JobResult:
        """The job's result once it has ended.

        Raises:
            RuntimeError: it is still running.
            JobStoppedError: it was aborted (its block left by an error, or cancelled).
            JobError: it failed (the failure is chained).
        """
        if not self._ended.is_set():
            raise RuntimeError("the job is still running: await job.wait() first")
        if isinstance(self._error, JobStoppedError):
            raise JobStoppedError(str(self._error))
        if self._error is not None:
            raise JobError(f"the job failed: {self._error}") from self._error
        assert self._result is not None
        return self._result

    async def wait(self) -> JobResult:
        """Wait for the job's end; return its result (see :attr:`result`)."""
        await self._ended.wait()
        return self.result

    # -- pushing records --------------------------------------------------------------------

    async def _source(self) -> PushSource:
        await self._current()
        if self._push is None:
            assert self._control is not None
            assert self._control.supervisor.rescaler is not None
            flow = self._control.supervisor.rescaler.plan.flow
            raise TypeError(
                f"job.send needs a flow that reads a PushSource; flow {flow.name!r} reads "
                f"{flow.get_source()!r} (declare flow.source(PushSource(...)))"
            )
        return self._push

    async def send(self, record: Any) -> int:
        """Push ``record`` into the flow's :class:`PushSource`; wait while its buffer is full.
        Return the record's offset. A record ``send`` returned for is processed (also when
        the job is stopped next); see the PushSource contract for crashes.

        Raises:
            JobStoppedError: the job has ended or is stopping (the record is not in the job).
            InputClosedError: :meth:`close_input` was called (a JobStoppedError too).
            TypeError: the flow's source is not a PushSource.
        """
        return await (await self._source()).send(record)

    async def send_many(self, records: Iterable[Any]) -> range:
        """Push ``records`` in order (as :meth:`send`, each waiting for room); return their
        offsets."""
        return await (await self._source()).send_many(records)

    async def close_input(self) -> None:
        """End the flow's PushSource: what was sent is processed, then the job drains, takes
        its final checkpoint and ends (await :meth:`wait` for the result)."""
        (await self._source()).close_input()

    async def wait_processed(self) -> int:
        """Wait until every record sent before the call is in the keyed state (what a
        :meth:`query` reads next): the PushSource has read them, then a checkpoint is taken,
        whose barrier follows them through every key group. Return that checkpoint's epoch.
        Needs checkpoints on (``checkpoint_interval``).

        Raises:
            JobStoppedError: the job ended first.
            RuntimeError: checkpoints are off.
        """
        source = await self._source()
        upto = source.next_offset
        while source.read_offset < upto:
            if self._ended.is_set():
                raise JobStoppedError("the job has ended")
            await source.wait_changed()
        return await self.checkpoint()

    # -- queries and figures ------------------------------------------------------------------

    async def query(self, operator: str, state: str, key: Any, default: Any = None) -> Any:
        """``key``'s value in ``state`` of keyed operator ``operator``, read by the key-group
        actor that owns it, between two of its batches (see ``_query.py``): a state it went
        through, also during a live migration (the ask follows the key group). ``default``
        when the key has no value.

        Raises:
            UnknownOperatorError: the flow has no keyed operator ``operator``.
            UnknownStateError: the operator declares no state ``state``.
            TypeError: ``key`` is not a valid key.
            JobStoppedError: the job has ended.
        """
        while True:
            control = await self._current()
            assert control.supervisor.rescaler is not None
            name = check_query(control.supervisor.rescaler.plan, operator, state, key)
            answer = await ask_query(control, name, state, key, self._changed)
            if answer is not None:
                return answer[1] if answer[0] == "value" else default

    async def statistics(self) -> JobStatistics:
        """The job's figures now (a frozen :class:`JobStatistics`). A coroutine: with worker
        processes the counters live in the workers, and reading them is a message each."""
        control = await self._current()
        reports = await control._reports()
        return job_statistics(control, reports, anyio.current_time() - self._started_at)

    # -- acting on the job ---------------------------------------------------------------------

    async def rescale(self, workers: int) -> RescaleRecord:
        """Scale the running job to ``workers`` workers, live; return once every move is done."""
        return await (await self._current()).rescale(workers)

    async def rebalance(self, policy: PlacementPolicy | None = None) -> RebalanceRecord:
        """Move key groups by their load since the last reading (``policy``: default
        ``BalanceLoad``, the hottest off the busiest worker with the fewest moves), same
        workers, live; return once every move is done (see ``_policies.py``)."""
        return await (await self._current()).rebalance(policy)

    async def loads(self) -> tuple[KeyGroupLoad, ...]:
        """Every key group's load since the previous reading (this attempt's)."""
        return await (await self._current()).loads()

    async def checkpoint(self) -> int:
        """Take a checkpoint now and wait until it completes (and ``on_checkpoint`` has
        returned for it); return its epoch."""
        epoch = await (await self._current()).checkpoint()
        while self._followed < epoch and not self._ended.is_set():
            await self._followed_event.wait()
        return epoch

    async def savepoint(self, path: str | os.PathLike[str]) -> Any:
        """Take a checkpoint and write it as a savepoint at ``path`` (relative: under the
        state directory); return its manifest."""
        return await (await self._current()).savepoint(path)

    async def status(self) -> dict[str, Any]:
        """Workers, placement version and records read so far."""
        control = await self._current()
        placement = control.supervisor.placement
        return {
            "workers": control.workers,
            "worker_ids": list(placement.workers),
            "placement_version": placement.version,
            "records_in": await control.records_in(),
        }

    async def stop(self) -> None:
        """Stop the job and wait for its end: a PushSource takes no more records (sends
        raise :class:`JobStoppedError`) but what it accepted is processed, every other split
        ends where it is, what was read drains, and a final checkpoint is taken (with
        checkpoints on). Idempotent."""
        if self._push is not None:
            self._push.close(JobStoppedError("the job is stopping: it takes no more records"))
        self._stop.set()
        await self._ended.wait()


def _check_async(fn: object, what: str) -> None:
    """Refuse a callback that is not an async function (its result would not be awaited).

    Raises:
        TypeError: ``fn`` is not an ``async def`` function (or an object whose ``__call__``
            is one).
    """
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        return
    shown = getattr(fn, "__qualname__", None) or type(fn).__name__
    raise TypeError(
        f"{what} must be an async function (async def ...); got {shown}, which is not: "
        "define it with async def, or wrap it in one"
    )


async def _follow_checkpoints(job: Job, on_checkpoint: OnCheckpoint | None) -> None:
    """For every checkpoint that completes: trim the PushSource to its position, then call
    ``on_checkpoint`` (in order, one at a time), until the job has ended and its final
    checkpoint was followed too."""
    seen = 0

    async def follow(completed: list[CompletedCheckpoint]) -> None:
        nonlocal seen
        for done in completed:
            if done.epoch <= seen:
                continue
            seen = done.epoch
            push = job._push
            if push is not None:
                push.committed(done.positions.get(push.splits()[0]))
            if on_checkpoint is not None:
                await on_checkpoint(done)
            job._followed = done.epoch
            event, job._followed_event = job._followed_event, anyio.Event()
            event.set()

    coordinator = None
    while True:
        try:
            control = await job._current()
        except JobStoppedError:
            if coordinator is not None:  # the same object across attempts: the final ones
                await follow(list(coordinator.completed))
            return
        coordinator = control.supervisor.coordinator
        if coordinator is None:
            return  # checkpoints are off
        event = control.supervisor.checkpointed
        await follow(list(coordinator.completed))
        await job._changed(control, event)


@asynccontextmanager
async def open_job(
    flow: Flow | str,
    *,
    on_checkpoint: OnCheckpoint | None = None,
    **options: Any,
) -> AsyncIterator[Job]:
    """Start ``flow`` in this event loop (as :func:`run_job` would, with the same keyword
    arguments) and yield its :class:`Job` once it runs. See the module docstring.

    Args:
        flow: as :func:`run_job`'s. A flow reading a :class:`PushSource` needs workers in
            this loop (``processes=False``, the default for one worker).
        on_checkpoint: ``async def on_checkpoint(done: CompletedCheckpoint)``, awaited after
            each checkpoint completes (in order; ``done.positions`` has the PushSource's
            offset covered): where a caller trims its own log of sent records. An exception
            it raises aborts the job and comes out of the ``async with``.
        **options: :func:`run_job`'s keyword arguments, except ``stop`` (use
            :meth:`Job.stop`) and ``on_control``.

    Raises:
        TypeError: ``stop=``; an ``on_checkpoint`` that is not an async function; a
            PushSource with worker processes.
        ValueError / TypeError: what :func:`run_job` refuses, raised here as itself.
    """
    from ._job import run_job  # _job imports this module's siblings: import late

    if "stop" in options:
        raise TypeError("open_job stops the job itself: use job.stop() instead of stop=")
    if "on_control" in options:
        raise TypeError("open_job follows the job's attempts itself: on_control is not taken")
    unknown = sorted(set(options) - set(inspect.signature(run_job).parameters) - {"flow"})
    if unknown:
        raise TypeError(
            f"open_job() got an unexpected keyword argument {unknown[0]!r} (it takes "
            "on_checkpoint and run_job's keyword arguments)"
        )
    if on_checkpoint is not None:
        _check_async(on_checkpoint, "on_checkpoint")
    if isinstance(flow, Flow):
        source = flow.get_source()
        if isinstance(source, PushSource):
            # Before anything reads it: keep what was read until a checkpoint covers it.
            source.retain = options.get("checkpoint_interval") is not None
    job = Job()

    async def run() -> None:
        try:
            job._result = await run_job(flow, stop=job._stop, on_control=job._attach, **options)
        except Exception as exc:
            job._error = exc
        except BaseException:
            job._error = JobStoppedError(ABORTED)
            raise
        finally:
            job._control = None
            if job._push is not None:
                job._push.close(JobStoppedError("the job has ended: it takes no more records"))
            job._ended.set()
            job._attached.set()  # wakes whoever waits for an attempt: there is none now
            event, job._switched = job._switched, anyio.Event()
            event.set()

    refused: BaseException | None = None
    body: BaseException | None = None
    failed: list[BaseException] = []

    async def follower() -> None:
        try:
            await _follow_checkpoints(job, on_checkpoint)
        except Exception as exc:  # on_checkpoint raised: abort the job, raise it as itself
            failed.append(exc)
            tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await job._attached.wait()  # it runs (or it ended: bad arguments fail here)
        if job._ended.is_set() and isinstance(job._error, ValueError | TypeError):
            refused = job._error
        else:
            if job._push is not None and not isinstance(flow, Flow):
                job._push.retain = options.get("checkpoint_interval") is not None
            tg.start_soon(follower)
            if job._push is not None:
                # The block starts once the split is open: next_offset is then where this
                # run's offsets go on from (a resumed run: the checkpoint's position).
                await job._push.wait_opened()
            try:
                yield job
            except BaseException as exc:
                body = exc  # raised below as itself, not in an exception group
                tg.cancel_scope.cancel()  # leaving by an error aborts the job
            else:
                await job.stop()
    if body is not None:
        raise body
    if failed:
        raise failed[0]
    if refused is not None:
        raise refused  # out of the task group: as itself, not in an exception group


#: The earlier name of :func:`open_job` (the same function).
start_job = open_job
