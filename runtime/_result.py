"""What a finished job returns (:class:`JobResult`) and what a running one reports
(:class:`Progress`)."""

from __future__ import annotations

import shutil
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from shoal.storage import (
    KeyGroupStatistics,
    StateBackend,
)

from ._checkpoints import CheckpointStatistics
from ._dataflow import Flow, KeyedOp
from ._load import KeyGroupLoad
from ._plan import Plan
from ._policies import RebalanceRecord
from ._rescale import MoveRecord, RescaleRecord
from ._sinks import DeadLetter, DeadLetterSink, Sink

__all__ = ("JobResult", "Progress", "ResumedFrom", "TemporaryState")


@dataclass(frozen=True, slots=True)
class Progress:
    """A running job's progress, passed to ``on_progress`` about twice a second."""

    elapsed_s: float
    records_in: int
    records_out: int
    dead_letters: int
    per_worker_in: tuple[int, ...]
    mailbox_depth: tuple[int, ...]
    reports: tuple[dict[str, Any], ...]
    #: The job's checkpoints so far (None: checkpoints are off).
    checkpoints: CheckpointStatistics | None = None
    #: Every key group's load since the previous progress record (records/s, state bytes,
    #: mailbox depth, hot keys), indexed by key group.
    key_groups: tuple[KeyGroupLoad, ...] = ()

    @property
    def events_per_s(self) -> float:
        return self.records_in / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ResumedFrom:
    """The checkpoint or savepoint a run started from (``JobResult.resumed_from``).

    Attributes:
        kind: ``"checkpoint"`` (``resume=True``: the earlier run's latest complete one) or
            ``"savepoint"`` (``from_savepoint=...``).
        path: The checkpoint directory or the savepoint.
        epoch: The checkpoint's epoch.
        created: When it was taken (Unix time).
        records_in: Source records the job had read when it was taken, each counted once
            (None: taken by a shoal that did not record it).
        records_out: Records the job had given its sink by then, each counted once (None:
            as above).
    """

    kind: str
    path: str
    epoch: int
    created: float
    records_in: int | None
    records_out: int | None


class TemporaryState:
    """A state directory shoal made for one run: removed by close(), at garbage collection of
    the result that holds it, or at interpreter exit, whichever comes first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(path), True)

    @property
    def removed(self) -> bool:
        return not self._finalizer.alive

    def remove(self) -> None:
        self._finalizer()


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a finished job did, and a way to read its final state.

    When the job ran without a ``state_dir``, its state lives in a temporary directory that
    this result owns: it stays readable (:meth:`read_state`) until the result is closed
    (:meth:`close`, or leaving ``with result:``), garbage-collected, or the interpreter exits,
    and is then removed. With a ``state_dir``, the state stays where the caller put it.
    """

    name: str
    workers: int
    processes: bool
    #: Source records the job has read, each counted once whatever attempt or run read it:
    #: those the checkpoint its last attempt started from had counted, plus what that
    #: attempt read. After a resume or a recovery it is the whole job's, not this run's.
    records_in: int
    #: Records the job has given its sink, counted the same way (an at-least-once sink may
    #: have received some twice across a recovery; they count once here).
    records_out: int
    dead_letters: int
    #: Seconds of the last attempt (a recovery starts the clock again).
    elapsed_s: float
    state_dir: Path | None
    plan: Plan
    reports: tuple[dict[str, Any], ...]
    dead_letter_sink: DeadLetterSink
    backend: StateBackend
    #: Checkpoints taken while the job ran (None: checkpoints were off). A checkpoint counts
    #: as completed once its manifest is written in ``checkpoint_dir``.
    checkpoints: CheckpointStatistics | None = None
    #: Where the checkpoints were written (a directory or fsspec URL; None: checkpoints off).
    checkpoint_dir: str | None = None
    #: One entry per recovery while the job ran: seconds from the failure being noticed to
    #: every worker processing again from the last completed checkpoint.
    recoveries: tuple[float, ...] = ()
    #: Every live move of a key group or split while the job ran (see ``rescale``), in order.
    migrations: tuple[MoveRecord, ...] = ()
    #: Every rescale while the job ran, in order.
    rescales: tuple[RescaleRecord, ...] = ()
    #: The checkpoint or savepoint this run started from (None: from the beginning, also a
    #: resume that found no complete checkpoint).
    resumed_from: ResumedFrom | None = None
    #: Source records the last attempt read itself (None: ``records_in``): what
    #: ``events_per_s`` divides by ``elapsed_s``.
    records_read: int | None = None
    #: Every rebalance while the job ran (``rebalance()``, or automatic), in order.
    rebalances: tuple[RebalanceRecord, ...] = ()
    _temporary: TemporaryState | None = field(default=None, repr=False, compare=False)

    def close(self) -> None:
        """Remove the temporary state directory, if the job made one (idempotent)."""
        if self._temporary is not None:
            self._temporary.remove()

    def __enter__(self) -> JobResult:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._temporary is not None and self._temporary.removed:
            raise RuntimeError(
                "this result's temporary state directory was removed by close(); read state "
                "before closing the result, or pass state_dir=... to keep the state"
            )

    @property
    def events_per_s(self) -> float:
        """Source records per second of processing (start of reading to last key group done)
        of the records this run's last attempt read (``records_read``)."""
        read = self.records_in if self.records_read is None else self.records_read
        return read / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def flow(self) -> Flow:
        return self.plan.flow

    @property
    def sink(self) -> Sink:
        """The sink of the driver's copy of the flow (a gathering sink holds the output here).
        With several sinks, a fan over them: read each one from :attr:`sinks`."""
        return self.plan.sink

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """The sinks of the driver's copy of the flow, in the order the flow added them (one
        per ``.sink(...)`` call): where each branch's gathered output is, also when the flow
        was built in worker processes from a flow file."""
        return self.plan.sinks

    @property
    def dead_letter_records(self) -> list[DeadLetter]:
        return list(self.dead_letter_sink.letters)

    def _operator(self, operator: str) -> KeyedOp:
        ops = {op.name: op for op in self.plan.flow.keyed_operators()}
        if operator not in ops:
            raise KeyError(f"no keyed operator {operator!r}; the flow has {sorted(ops)}")
        return ops[operator]

    def read_state(self, operator: str, state: str) -> dict[Any, Any]:
        """Every key's committed value of ``state`` of keyed ``operator``, over all key groups."""
        op = self._operator(operator)
        self._check_open()
        out: dict[Any, Any] = {}
        for group in range(self.plan.num_key_groups):
            with self.backend.open_store(op.name, group, op.states) as store:
                out.update(store.items(state))
        return out

    def key_group_statistics(self, operator: str) -> tuple[KeyGroupStatistics, ...]:
        """Entries and bytes of keyed ``operator``'s state, one record per key group."""
        op = self._operator(operator)
        self._check_open()
        stats = []
        for group in range(self.plan.num_key_groups):
            with self.backend.open_store(op.name, group, op.states) as store:
                stats.append(store.statistics())
        return tuple(stats)
