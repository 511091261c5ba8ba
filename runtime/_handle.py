"""A running job as an object: ``async with start_job(flow, ...) as job`` (the Python API of
rescaling, checkpoints, savepoints and stopping).

:func:`run_job` runs a job to its end; :func:`start_job` runs the same job in a task of the
caller's and hands back a :class:`Job` to act on it while it runs::

    async with start_job("flows.py:clicks", workers=2, checkpoint_interval=1.0) as job:
        await job.rescale(4)          # live: key groups move, the others keep running
        await job.rebalance()         # the hottest key groups off the busiest worker
        epoch = await job.checkpoint()
        await job.stop()              # every split ends; what was read drains
    result = job.result               # the JobResult, once the block is left

Leaving the block stops the job (as :meth:`Job.stop`) and waits for its end; leaving it by an
exception aborts the job. A method called while the job restarts after a failure waits for
the new attempt.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ._control import JobControl
from ._dataflow import Flow
from ._exceptions import JobError
from ._load import KeyGroupLoad
from ._policies import PlacementPolicy, RebalanceRecord
from ._rescale import RescaleRecord
from ._result import JobResult

__all__ = ("Job", "start_job")


class Job:
    """A job started by :func:`start_job`: act on it while it runs."""

    def __init__(self) -> None:
        self._control: JobControl | None = None
        self._attached = anyio.Event()
        self._stop = anyio.Event()
        self._ended = anyio.Event()
        self._result: JobResult | None = None
        self._error: BaseException | None = None

    def _attach(self, control: JobControl | None) -> None:
        """An attempt started (``control``) or ended (None)."""
        self._control = control
        if control is not None:
            self._attached.set()
        elif self._attached.is_set():
            self._attached = anyio.Event()

    async def _current(self) -> JobControl:
        while self._control is None:
            if self._ended.is_set():
                raise JobError("the job has ended")
            await self._attached.wait()  # an attempt runs, or the job ended (set then too)
        return self._control

    @property
    def running(self) -> bool:
        """Whether the job has not ended yet."""
        return not self._ended.is_set()

    @property
    def result(self) -> JobResult:
        """The job's result once it has ended.

        Raises:
            RuntimeError: it is still running.
            JobError: it failed (the failure is chained).
        """
        if not self._ended.is_set():
            raise RuntimeError("the job is still running: await job.wait() first")
        if self._error is not None:
            raise JobError(f"the job failed: {self._error}") from self._error
        assert self._result is not None
        return self._result

    async def wait(self) -> JobResult:
        """Wait for the job's end; return its result (see :attr:`result`)."""
        await self._ended.wait()
        return self.result

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
        """Take a checkpoint now and wait until it completes; return its epoch."""
        return await (await self._current()).checkpoint()

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
        """End every split now (what was read drains, a final checkpoint is taken) and wait
        for the job's end. Idempotent."""
        self._stop.set()
        await self._ended.wait()


@asynccontextmanager
async def start_job(flow: Flow | str, **options: Any) -> AsyncIterator[Job]:
    """Start ``flow`` (as :func:`run_job` would, with the same keyword arguments) and yield
    its :class:`Job` once it runs. See the module docstring."""
    from ._job import run_job  # _job imports this module's siblings: import late

    if "stop" in options:
        raise TypeError("start_job stops the job itself: use job.stop() instead of stop=")
    job = Job()

    async def run() -> None:
        try:
            job._result = await run_job(flow, stop=job._stop, on_control=job._attach, **options)
        except Exception as exc:
            job._error = exc
        finally:
            job._control = None
            job._ended.set()
            job._attached.set()  # wakes whoever waits for an attempt: there is none now

    refused: BaseException | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await job._attached.wait()  # it runs (or it ended: bad arguments fail here)
        if job._ended.is_set() and isinstance(job._error, ValueError | TypeError):
            refused = job._error
        else:
            try:
                yield job
            except BaseException:
                tg.cancel_scope.cancel()  # leaving by an error aborts the job
                raise
            await job.stop()
    if refused is not None:
        raise refused  # out of the task group: as itself, not in an exception group
