"""A running job, seen from its driver: checkpoint it, savepoint it, kill a worker, stop it.

One :class:`JobControl` per attempt of a job (see ``_recovery``); scenario timelines act
through it (``_timeline``), and so will a job handle.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from shoal.actors import Ref
from shoal.storage import CheckpointStore, Manifest, savepoint_from_checkpoint

from ._load import KeyGroupLoad, LoadMonitor
from ._messages import ReleaseEnds, StopSources
from ._policies import PlacementPolicy, RebalanceRecord
from ._rescale import RescaleRecord
from ._statedir import under_state_dir
from ._supervisor import JobSupervisor

__all__ = ("JobControl", "write_savepoint_of")


def write_savepoint_of(store: CheckpointStore, epoch: int, url: str) -> Manifest:
    """Materialize completed checkpoint ``epoch`` of ``store`` as a savepoint at ``url``."""
    return savepoint_from_checkpoint(store, store.read_manifest(epoch), url)


class JobControl:
    """What can be done to one running attempt of a job."""

    def __init__(
        self,
        *,
        job: Ref,
        supervisor: JobSupervisor,
        store: CheckpointStore | None,
        reports: Callable[[], Awaitable[list[dict[str, Any]]]],
        kill: Callable[[int], None] | None,
        state_dir: Path,
    ) -> None:
        self.job = job
        self.supervisor = supervisor
        self.store = store
        self._reports = reports
        self._kill = kill
        self.state_dir = state_dir
        #: Per-key-group load between two calls of :meth:`loads` (counters restart per attempt).
        self.load_monitor = LoadMonitor(len(supervisor.placement.group_owner))

    @property
    def controllers(self) -> list[Ref]:
        """The active workers' controllers."""
        return self.supervisor.controllers

    @property
    def workers(self) -> int:
        """How many workers the job runs on now."""
        return len(self.supervisor.members)

    async def rescale(self, workers: int) -> RescaleRecord:
        """Scale the running job to ``workers`` workers, moving key groups and splits live
        (see ``_rescale.py``); return once every move is done."""
        before = await self.records_in()
        record = await self.supervisor.rescale(workers)
        record = dataclasses.replace(record, records=await self.records_in() - before)
        assert self.supervisor.rescaler is not None
        done = self.supervisor.rescaler.scaling.rescales
        if done and done[-1].seconds == record.seconds:  # it was recorded (not a no-op)
            done[-1] = record
        return record

    async def loads(self) -> tuple[KeyGroupLoad, ...]:
        """Every key group's load since the previous call (or since this attempt started)."""
        return self.load_monitor.measure(await self._reports())

    async def rebalance(
        self,
        policy: PlacementPolicy | None = None,
        *,
        loads: tuple[KeyGroupLoad, ...] | None = None,
    ) -> RebalanceRecord:
        """Move key groups to where ``policy`` (default ``BalanceLoad``: the hottest away from
        the most loaded worker, fewest moves) wants them given ``loads`` (default: measured
        now, over the window since the last reading), with the same workers; return once
        every move is done (see ``_policies.py``). The next reading starts after it."""
        if self.supervisor.rescaler is None:
            raise RuntimeError("this job cannot move key groups")
        if loads is None:
            loads = await self.loads()
        record = await self.supervisor.rescaler.rebalance(self.supervisor, loads, policy)
        await self.loads()  # the moves' own window is not a load reading
        return record

    async def records_in(self) -> int:
        """Records the sources of this attempt have read so far."""
        reports = await self._reports()
        if self.supervisor.rescaler is not None:  # and what retired workers had read
            reports = [*reports, *self.supervisor.rescaler.retired_reports]
        return sum(int(report["records_in"]) for report in reports)

    async def checkpoint(self) -> int:
        """Take a checkpoint now and wait until it completes; return its epoch.

        Raises:
            CheckpointError: it (and two retries) failed.
        """
        return await self.supervisor.take_checkpoint(self.job)

    async def start_checkpoint(self) -> int | None:
        """Start a checkpoint (barriers injected) and return its epoch without waiting; None
        once the job has drained."""
        return await self.supervisor.start_checkpoint(self.job)

    def resolve(self, path: str | os.PathLike[str]) -> str:
        """A savepoint path: URLs and absolute paths as given, others under the state dir."""
        return under_state_dir(path, self.state_dir)

    async def savepoint(self, path: str | os.PathLike[str]) -> Manifest:
        """Take a checkpoint and write it as a self-contained savepoint at ``path``."""
        store = self.store
        if store is None:
            raise RuntimeError("a savepoint needs checkpoints on (checkpoint_interval)")
        epoch = await self.checkpoint()
        url = self.resolve(path)
        return await anyio.to_thread.run_sync(write_savepoint_of, store, epoch, url)

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker process ``index`` (a real ``kill -9``)."""
        if self._kill is None:
            raise RuntimeError(
                "kill_worker needs worker processes; this job runs its workers in one loop"
            )
        members = sorted(self.supervisor.members)
        if index not in members:
            raise ValueError(f"no worker {index}: the job's workers are {members}")
        self._kill(index)

    async def release_ends(self) -> None:
        """No timeline step is left: splits that read all their input may end (see
        ``_timeline.py``)."""
        for controller in list(self.supervisor.members.values()):
            await controller.ask(ReleaseEnds())

    async def stop(self) -> None:
        """End every split now: what was read drains, a final checkpoint is taken, the job
        ends."""
        for controller in self.controllers:
            await controller.ask(StopSources())
