"""Scenario timelines: actions on a running job at record counts or times.

A timeline is a list of steps::

    timeline = [
        at(kill_worker(1), records=200_000),             # kill -9 worker process 1
        at(kill_worker(0, during_checkpoint=True), records=400_000),
        at(checkpoint(), seconds=3.0),
        at(stop(savepoint="before-rescale"), records=600_000),
        resume(workers=3, savepoint="before-rescale"),   # a new run, three workers
    ]

``at(action, records=N)`` fires once the job's sources have read ``N`` records (counting
records read again after a recovery), ``at(action, seconds=S)`` once ``S`` seconds have passed
since the run's sources started; steps fire in order. ``resume(...)`` ends a run's steps: the
job is run again from its state directory (``resume=True``), optionally from a savepoint and
with another worker count, and the steps after it act on that run.

Actions: ``rebalance()`` moves the hottest key groups off the most loaded workers (same
workers; ``rebalance(policy)``: where a :class:`PlacementPolicy` says) and waits until it is
done; ``rescale(n)`` scales the running job to ``n`` workers, live, and waits until it is
done (``kill_worker=i``: SIGKILL worker ``i`` while the first key groups are handed over);
``checkpoint()`` takes one and waits for it; ``kill_worker(i)`` sends SIGKILL to
worker process ``i`` (``during_checkpoint=True``: right after a checkpoint's barriers are
injected, so it dies with the checkpoint in flight); ``savepoint(path)`` takes a checkpoint
and writes it as a savepoint; ``stop(savepoint=None)`` ends every split (what was read drains,
a final checkpoint is taken) and optionally writes that checkpoint as a savepoint. Relative
savepoint paths are under the state directory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
from shoal.actors import PeerLostError
from shoal.actors._log import get_logger

from ._control import JobControl
from ._policies import PlacementPolicy

__all__ = (
    "At",
    "Checkpoint",
    "KillWorker",
    "Rebalance",
    "Rescale",
    "Resume",
    "Savepoint",
    "Stop",
    "TimelineRunner",
    "at",
    "checkpoint",
    "kill_worker",
    "rebalance",
    "rescale",
    "resume",
    "savepoint",
    "split_timeline",
    "stop",
)

log = get_logger("shoal.timeline")

# How often a records trigger reads the workers' counters.
_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Take a checkpoint and wait until it completes."""


@dataclass(frozen=True, slots=True)
class KillWorker:
    """SIGKILL worker process ``worker`` (with a checkpoint in flight: ``during_checkpoint``)."""

    worker: int
    during_checkpoint: bool = False


@dataclass(frozen=True, slots=True)
class Savepoint:
    """Take a checkpoint and write it as a savepoint at ``path``."""

    path: str


@dataclass(frozen=True, slots=True)
class Stop:
    """End every split (drain, final checkpoint); write that checkpoint as ``savepoint``."""

    savepoint: str | None = None


@dataclass(frozen=True, slots=True)
class Rescale:
    """Scale the running job to ``workers`` workers, live, and wait until it is done; with
    ``kill_worker``: SIGKILL that worker once the first key groups are being handed over (the
    job then recovers from its last checkpoint, at the new size)."""

    workers: int
    kill_worker: int | None = None


@dataclass(frozen=True, slots=True)
class Rebalance:
    """Move key groups where ``policy`` (default ``BalanceLoad``) wants them given their load
    since the previous reading, with the same workers, and wait until it is done."""

    policy: PlacementPolicy | None = None


Action = Checkpoint | KillWorker | Savepoint | Stop | Rescale | Rebalance


@dataclass(frozen=True, slots=True)
class At:
    """Run ``action`` once ``records`` records were read, or ``seconds`` have passed."""

    action: Action
    records: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(
            self.action, Checkpoint | KillWorker | Savepoint | Stop | Rescale | Rebalance
        ):
            raise TypeError(
                "at(...) takes an action: checkpoint(), kill_worker(i), savepoint(path), "
                f"rescale(n), rebalance() or stop(); got {self.action!r}"
            )
        if (self.records is None) == (self.seconds is None):
            raise ValueError("at(...) needs exactly one of records=N or seconds=S")
        if self.records is not None and (type(self.records) is not int or self.records < 0):
            raise ValueError(f"at(records=...) must be an int >= 0; got {self.records!r}")
        if self.seconds is not None and (
            isinstance(self.seconds, bool)
            or not isinstance(self.seconds, int | float)
            or self.seconds < 0
        ):
            raise ValueError(f"at(seconds=...) must be a number >= 0; got {self.seconds!r}")


@dataclass(frozen=True, slots=True)
class Resume:
    """Run the job again from its state directory (after the previous run ended)."""

    workers: int | None = None
    savepoint: str | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and (type(self.workers) is not int or self.workers < 1):
            raise ValueError(f"resume(workers=...) must be a positive int; got {self.workers!r}")


Step = At | Resume


def checkpoint() -> Checkpoint:
    return Checkpoint()


def kill_worker(worker: int, *, during_checkpoint: bool = False) -> KillWorker:
    if type(worker) is not int or worker < 0:
        raise ValueError(f"kill_worker takes a worker index >= 0; got {worker!r}")
    return KillWorker(worker, during_checkpoint)


def rescale(workers: int, *, kill_worker: int | None = None) -> Rescale:
    if type(workers) is not int or workers < 1:
        raise ValueError(f"rescale takes a worker count >= 1; got {workers!r}")
    if kill_worker is not None and (type(kill_worker) is not int or kill_worker < 0):
        raise ValueError(f"rescale(kill_worker=...) takes a worker id >= 0; got {kill_worker!r}")
    return Rescale(workers, kill_worker)


def rebalance(policy: PlacementPolicy | None = None) -> Rebalance:
    if policy is not None and not isinstance(policy, PlacementPolicy):
        raise TypeError(
            "rebalance takes a placement policy (an object with a place(placement, loads, "
            f"workers) method) or None; got {policy!r}"
        )
    return Rebalance(policy)


def savepoint(path: str) -> Savepoint:
    if not isinstance(path, str) or not path:
        raise ValueError(f"savepoint takes a path or URL; got {path!r}")
    return Savepoint(path)


def stop(*, savepoint: str | None = None) -> Stop:
    return Stop(savepoint)


def at(action: Action, *, records: int | None = None, seconds: float | None = None) -> At:
    return At(action, records, seconds)


def resume(*, workers: int | None = None, savepoint: str | None = None) -> Resume:
    return Resume(workers, savepoint)


def split_timeline(steps: Sequence[Step]) -> list[tuple[Resume | None, list[At]]]:
    """The runs a timeline makes: ``(how the run starts, its steps)``; the first run's start is
    None (a fresh run), each later one a :class:`Resume`.

    Raises:
        TypeError: a step is neither ``at(...)`` nor ``resume(...)``.
        ValueError: a ``resume`` follows a run that does not end with ``stop()``.
    """
    runs: list[tuple[Resume | None, list[At]]] = [(None, [])]
    for step in steps:
        if isinstance(step, Resume):
            previous = runs[-1][1]
            if not previous or not isinstance(previous[-1].action, Stop):
                raise ValueError(
                    "resume(...) must follow a run that ends with at(stop(), ...): a run "
                    "resumes once the one before it has stopped"
                )
            runs.append((step, []))
        elif isinstance(step, At):
            runs[-1][1].append(step)
        else:
            raise TypeError(f"a timeline holds at(...) and resume(...) steps; got {step!r}")
    return runs


#: Seconds a timeline step may still run once every input is read and held (see
#: ``TimelineRunner.release_when_stuck``): generous, a rescale of a large state under load
#: takes tens of seconds.
HOLD_GRACE_S = 120.0


class TimelineRunner:
    """Runs one run's steps, across that run's attempts (a recovery does not repeat a step)."""

    def __init__(self, steps: Sequence[At]) -> None:
        self.steps = list(steps)
        self.done = 0
        self.records_before = 0  # read by earlier attempts
        self._seen = 0
        self._started: float | None = None
        #: Where a ``stop(savepoint=...)`` writes the final checkpoint (set by the run).
        self.stop_savepoint: str | None = None
        #: Why a step failed (the job was then stopped; the run raises it).
        self.error: str | None = None
        #: The step being acted on; still set when the job's end cut it short.
        self.acting: At | None = None
        self.log: list[str] = []

    async def release_when_stuck(self, control: JobControl) -> None:
        """Once every input is read and held, give the step in progress :data:`HOLD_GRACE_S`
        to finish; then let the inputs end anyway (the job drains, and the run reports the
        step that did not finish): a step that hangs must not hang the job with it."""
        await control.supervisor.all_held.wait()
        await anyio.sleep(HOLD_GRACE_S)
        if self.pending:
            log.warning(
                "every input is read and a timeline step is still running; ending the job",
                step=str(self.acting or self.steps[min(self.done, len(self.steps) - 1)]),
                grace_s=HOLD_GRACE_S,
            )
            await control.release_ends()

    @property
    def pending(self) -> bool:
        """Whether a step is still to come (the job's inputs then hold their ends back: a
        split that read all its input waits for the steps, so the job cannot drain first)."""
        return self.done < len(self.steps) or self.acting is not None

    async def run(self, control: JobControl) -> None:
        """Fire the remaining steps in order against this attempt (a companion task), then
        let the inputs end (see :attr:`pending`)."""
        self.acting = None  # a step the last attempt's end interrupted (a kill) is over
        self.records_before += self._seen
        self._seen = 0
        if self._started is None:
            self._started = time.perf_counter()
        while self.done < len(self.steps):
            step = self.steps[self.done]
            await self._wait_for(step, control)
            if control.supervisor.finished.is_set():
                return  # the job has drained: too late for this step (the run reports it)
            self.done += 1  # before acting: a kill ends this attempt, and must not repeat
            self.acting = step
            try:
                await self._act(step.action, control)
            except (PeerLostError, anyio.get_cancelled_exc_class()):
                raise
            except Exception as exc:
                self.error = f"timeline step {step} failed: {type(exc).__name__}: {exc}"
                log.warning("timeline step failed; stopping the job", error=self.error)
                self.acting = None
                await control.stop()
                return
            self.acting = None
        await control.release_ends()

    async def _wait_for(self, step: At, control: JobControl) -> None:
        if step.seconds is not None:
            assert self._started is not None
            await anyio.sleep(max(0.0, self._started + step.seconds - time.perf_counter()))
            return
        assert step.records is not None
        while True:
            self._seen = await control.records_in()
            if self.records_before + self._seen >= step.records:
                return
            if control.supervisor.all_held.is_set():
                # Every split has read all its input and waits: this count is never reached.
                # Let the job end; the run then reports the step that did not run.
                await control.release_ends()
                await control.supervisor.finished.wait()
                return
            await anyio.sleep(_POLL_S)

    async def _rescale(self, action: Rescale, control: JobControl) -> None:
        if action.kill_worker is None:
            record = await control.rescale(action.workers)
            self.log.append(
                f"rescaled {record.workers_before} -> {record.workers_after} workers in"
                f" {record.seconds:.3f} s ({record.moves} moves)"
            )
            return
        victim = action.kill_worker

        async def rescale_until_killed() -> None:
            try:
                await control.rescale(action.workers)
            except Exception as exc:  # a consequence of the kill: the attempt's watch reports it
                log.debug("rescale ended by the kill", error=f"{type(exc).__name__}: {exc}")

        rescaler = control.supervisor.rescaler
        since = rescaler.handoffs if rescaler is not None else 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(rescale_until_killed)
            await control.supervisor.handing_off(since)
            control.kill_worker(victim)
        # Only reached if the rescale finished before the kill took effect.

    async def _act(self, action: Action, control: JobControl) -> None:
        read = self.records_before + self._seen
        self.log.append(f"{action} at {read} records")
        log.info("timeline action", action=str(action), records=read)
        if isinstance(action, Checkpoint):
            await control.checkpoint()
        elif isinstance(action, KillWorker):
            if action.during_checkpoint:
                await control.start_checkpoint()
            control.kill_worker(action.worker)
        elif isinstance(action, Savepoint):
            await control.savepoint(action.path)
        elif isinstance(action, Rescale):
            await self._rescale(action, control)
        elif isinstance(action, Rebalance):
            record = await control.rebalance(action.policy)
            self.log.append(f"rebalanced in {record.seconds:.3f} s ({len(record.moves)} moves)")
        else:
            self.stop_savepoint = action.savepoint
            await control.stop()
