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
from ._plan import Plan
from ._rescale import MoveRecord, RescaleRecord
from ._sinks import DeadLetter, DeadLetterSink, Sink

__all__ = ("JobResult", "Progress", "TemporaryState")


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

    @property
    def events_per_s(self) -> float:
        return self.records_in / self.elapsed_s if self.elapsed_s > 0 else 0.0


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
    records_in: int
    records_out: int
    dead_letters: int
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
        """Source records per second of processing (start of reading to last key group done)."""
        return self.records_in / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def flow(self) -> Flow:
        return self.plan.flow

    @property
    def sink(self) -> Sink:
        """The sink of the driver's copy of the flow (a gathering sink holds the output here)."""
        return self.plan.sink

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
