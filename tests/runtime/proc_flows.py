"""Flows for the shutdown, failure and signal tests; importable by worker processes."""

from __future__ import annotations

from typing import Any

from shoal import (
    CallbackSink,
    ClickstreamSource,
    CollectingSink,
    CountingSink,
    Flow,
    IterableSource,
    ProcessContext,
    ValueStateSpec,
)


class _FailingPartition:
    async def write_batch(self, items: list[Any]) -> None:
        raise OSError("disk on fire")

    async def aclose(self) -> None:
        pass


class FailingSink:
    """A per-worker (non-gathering) sink whose every write raises OSError."""

    gather = False

    def open_partition(self, worker: int, workers: int) -> _FailingPartition:
        return _FailingPartition()


def failing_sink() -> Flow:
    flow = Flow("failing_sink", num_key_groups=4)
    flow.source(IterableSource(list(range(100)), splits=2)).key_by(lambda v: v % 7).count(
        name="n"
    ).sink(FailingSink())
    return flow


def _raise(_item: Any) -> None:
    raise OSError("driver sink on fire")


def failing_gathered_sink() -> Flow:
    """The sink raises in the driver, which gathers its items."""
    flow = Flow("failing_gathered_sink", num_key_groups=4)
    flow.source(IterableSource(list(range(100)), splits=2)).key_by(lambda v: v % 7).count(
        name="n"
    ).sink(CallbackSink(_raise, gather=True))
    return flow


class Opaque:
    """Nothing CBOR can encode."""


def _keep_opaque(key: int, value: int, ctx: ProcessContext) -> None:
    ctx.state.thing.update([Opaque()])  # inside a list: found by the flush, on the worker
    ctx.emit(value)


def unencodable_state() -> Flow:
    flow = Flow("unencodable", num_key_groups=4)
    flow.source(IterableSource(list(range(100)), splits=2)).key_by(lambda v: v % 7).process(
        _keep_opaque, states=[ValueStateSpec("thing")], name="keeper"
    ).sink(CollectingSink())
    return flow


def _user(click: tuple[int, str, int]) -> int:
    return click[0]


def long_clicks(events: int = 50_000_000) -> Flow:
    """A long job (minutes), to be stopped, cancelled or killed while it runs."""
    flow = Flow("long_clicks", num_key_groups=16)
    flow.source(ClickstreamSource(events=events, users=1000, seed=1, splits=4)).key_by(_user).count(
        name="n"
    ).sink(CountingSink())
    return flow
