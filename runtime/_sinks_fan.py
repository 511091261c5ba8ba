"""Several sinks in one flow, written through one sink the engine knows.

The engine writes one sink per job: one partition per worker, or one on the driver for a
gathering sink, and for a transactional sink the epoch, pre-commit and commit phases
(``_txn_sink.py``). A flow with several sinks (fan-out, side outputs) is run through a
:class:`FanSink` over them: an item the engine hands it is one **group** ``[index, values]``
(a whole batch for the flow's ``index``-th sink), so a batch costs one list, not one wrapper
per record, also on its way to the driver. Each phase goes to every sink in turn, so each keeps
its own guarantee: transactional sinks still publish exactly the output of completed
checkpoints.

Every sink of one flow must gather, or none; and be transactional, or none: the engine drives
one kind of partition per job. A flow mixing them is refused when it is compiled, naming them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._sinks import Sink, SinkPartition

__all__ = ("FanPartition", "FanSink", "fan_sinks")


def _kinds(sinks: Sequence[Sink], attribute: str) -> tuple[list[str], list[str]]:
    yes = [repr(s) for s in sinks if getattr(s, attribute, False)]
    no = [repr(s) for s in sinks if not getattr(s, attribute, False)]
    return yes, no


def fan_sinks(sinks: Sequence[Sink], flow: str) -> Sink:
    """The one sink the engine writes for ``sinks`` (the flow's, at least one)."""
    if len(sinks) == 1:
        return sinks[0]
    gather, spread = _kinds(sinks, "gather")
    if gather and spread:
        raise ValueError(
            f"the sinks of flow {flow!r} must all gather their output to the driver, or none: "
            f"{', '.join(gather)} gather(s), {', '.join(spread)} do(es) not (pass gather= to "
            "the sinks that take it)"
        )
    txn, plain = _kinds(sinks, "transactional")
    if txn and plain:
        raise ValueError(
            f"the sinks of flow {flow!r} must all be transactional, or none: {', '.join(txn)} "
            f"is/are, {', '.join(plain)} is/are not"
        )
    return FanSink(tuple(sinks), gather=bool(gather), transactional=bool(txn))


class FanSink:
    """One sink over a flow's several sinks (see the module docstring)."""

    def __init__(self, sinks: tuple[Sink, ...], *, gather: bool, transactional: bool) -> None:
        self.sinks = sinks
        self.gather = gather
        self.transactional = transactional

    def __repr__(self) -> str:
        return f"FanSink({', '.join(repr(s) for s in self.sinks)})"

    def open_partition(self, worker: int, workers: int) -> FanPartition:
        return FanPartition([sink.open_partition(worker, workers) for sink in self.sinks])

    def recover(self, committed: int | None) -> list[Any]:
        """Each transactional sink's recovery (see ``TransactionalJsonlSink.recover``)."""
        return [sink.recover(committed) for sink in self.sinks]  # type: ignore[attr-defined]


class FanPartition:
    """One partition of each sink; items are ``[index, values]`` groups."""

    __slots__ = ("_parts",)

    def __init__(self, parts: list[SinkPartition]) -> None:
        self._parts = parts

    async def write_batch(self, items: list[Any]) -> None:
        for index, values in items:
            await self._parts[index].write_batch(values)

    async def write_epoch(self, epoch: int, items: list[Any]) -> None:
        for index, values in items:
            await self._parts[index].write_epoch(epoch, values)

    async def pre_commit(self, epoch: int) -> None:
        for part in self._parts:
            await part.pre_commit(epoch)  # type: ignore[attr-defined]

    async def commit(self, epoch: int) -> None:
        for part in self._parts:
            await part.commit(epoch)  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        errors: list[BaseException] = []
        for part in self._parts:
            try:
                await part.aclose()
            except Exception as exc:  # close the others first; then say what failed
                errors.append(exc)
        if errors:
            raise errors[0]
