"""Compile a :class:`Flow` into stages, and place key groups and splits on workers.

Stage 0 is the source stage (its splits run inside the workers); stage ``i >= 1`` is the
``i``-th keyed operator, one actor per key group. A flow with several inputs has one source
stage per input (:attr:`Plan.source_stages`): the input's own chain, the tag a connect adds,
then the chain after the merge; each split runs its input's. Each stage ends either in the
next keyed operator's exchange (``next_key_fn``) or in the sink. Every worker process compiles
the same flow description into the same plan, so actor names and placement agree without a
message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.storage import describe_specs

from ._dataflow import (
    AsyncFilterOp,
    AsyncMapOp,
    EventTime,
    FilterOp,
    FlatMapOp,
    Flow,
    KeyedOp,
    MapOp,
    SinkOp,
)
from ._joins import Tag
from ._sinks import Sink

__all__ = ("Plan", "Stage", "actor_name", "compile_plan", "place_key_groups", "place_splits")

StatelessOp = MapOp | FilterOp | FlatMapOp | AsyncMapOp | AsyncFilterOp


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage: an optional keyed operator, then stateless operators, then an exit."""

    index: int
    operator: KeyedOp | None
    chain: tuple[StatelessOp, ...]
    next_key_fn: Callable[[Any], Any] | None
    next_operator: str | None
    #: The chain holds an ``async def`` map or filter (run by ``_async_ops.py``).
    async_chain: bool = False

    @property
    def name(self) -> str:
        return self.operator.name if self.operator is not None else "source"


@dataclass(frozen=True, slots=True)
class Plan:
    """A flow compiled for execution."""

    flow: Flow
    stages: tuple[Stage, ...]
    sink: Sink
    splits: tuple[str, ...]
    #: Per input (in the flow's order): its source stage and event time.
    source_stages: tuple[Stage, ...] = ()
    input_times: tuple[EventTime | None, ...] = ()
    #: The input index of every split (absent: input 0).
    split_inputs: dict[str, int] | None = None

    def source_stage(self, split: str) -> Stage:
        """The source stage ``split`` runs: its input's."""
        if not self.source_stages:
            return self.stages[0]
        index = 0 if self.split_inputs is None else self.split_inputs.get(split, 0)
        return self.source_stages[index]

    def event_time_of(self, split: str) -> EventTime | None:
        """``split``'s input's event time (None: no timestamps)."""
        if not self.input_times:
            return self.flow.event_time
        index = 0 if self.split_inputs is None else self.split_inputs.get(split, 0)
        return self.input_times[index]

    @property
    def num_key_groups(self) -> int:
        return self.flow.num_key_groups

    @property
    def keyed_stages(self) -> tuple[Stage, ...]:
        return self.stages[1:]

    @property
    def transactional(self) -> bool:
        """The sink is transactional: it stages output per checkpoint epoch and publishes it
        when the checkpoint completes (``_txn_sink.py``); the engine drives its phases."""
        return bool(getattr(self.sink, "transactional", False))

    def key_group_actors(self) -> tuple[str, ...]:
        """The actor name of every key group of every keyed operator."""
        return tuple(
            actor_name(stage.name, group)
            for stage in self.keyed_stages
            for group in range(self.num_key_groups)
        )

    def state_declarations(self) -> dict[str, list[dict[str, str]]]:
        """Per keyed operator, its states as plain data (``describe_specs``: name and kind),
        as checkpoint and savepoint manifests record them."""
        return {
            stage.operator.name: describe_specs(stage.operator.states)
            for stage in self.keyed_stages
            if stage.operator is not None
        }

    def channels_into(self, stage: int) -> tuple[str, ...]:
        """The upstream channel names feeding every key-group actor of ``stage`` (>= 1)."""
        if stage == 1:
            return self.splits
        upstream = self.stages[stage - 1].name
        return tuple(actor_name(upstream, group) for group in range(self.num_key_groups))


def actor_name(operator: str, key_group: int) -> str:
    """The actor name of ``operator``'s key group ``key_group``."""
    return f"{operator}#{key_group}"


def compile_plan(flow: Flow) -> Plan:
    """Compile ``flow`` (which must have a source and end in a sink)."""
    flow.validate()
    ops = flow.operations
    stages: list[Stage] = []
    current: KeyedOp | None = None
    chain: list[StatelessOp] = []
    sink: Sink | None = None
    for op in ops:
        if isinstance(op, MapOp | FilterOp | FlatMapOp | AsyncMapOp | AsyncFilterOp):
            chain.append(op)
        elif isinstance(op, SinkOp):
            sink = op.sink
        else:
            stages.append(_stage(len(stages), current, chain, op.key_fn, op.name))
            current, chain = op, []
    stages.append(_stage(len(stages), current, chain, None, None))
    assert sink is not None
    splits = tuple(flow.get_source().splits())
    if not splits:
        raise ValueError(f"the source of flow {flow.name!r} has no splits")
    if len(set(splits)) != len(splits):
        raise ValueError(f"the source of flow {flow.name!r} returned duplicate split ids")
    inputs = flow.inputs
    if len(inputs) == 1:
        return Plan(flow, tuple(stages), sink, splits)
    first = stages[0]
    source_stages = []
    split_inputs: dict[str, int] = {}
    for index, item in enumerate(inputs):
        own: list[StatelessOp] = list(item.chain)
        if item.tag is not None:
            own.append(MapOp(Tag(item.tag), name="connect"))
        source_stages.append(
            _stage(0, None, [*own, *first.chain], first.next_key_fn, first.next_operator)
        )
        for split in item.source.splits():
            split_inputs[f"{item.name}/{split}"] = index
    return Plan(
        flow,
        tuple(stages),
        sink,
        splits,
        tuple(source_stages),
        tuple(item.time for item in inputs),
        split_inputs,
    )


def _stage(
    index: int,
    operator: KeyedOp | None,
    chain: list[StatelessOp],
    next_key_fn: Callable[[Any], Any] | None,
    next_operator: str | None,
) -> Stage:
    is_async = any(isinstance(op, AsyncMapOp | AsyncFilterOp) for op in chain)
    return Stage(index, operator, tuple(chain), next_key_fn, next_operator, is_async)


def place_key_groups(num_key_groups: int, workers: int) -> list[int]:
    """Contiguous, balanced ranges: no worker owns more than ceil(groups / workers)."""
    return [group * workers // num_key_groups for group in range(num_key_groups)]


def place_splits(splits: Sequence[str], workers: int) -> list[int]:
    """Round-robin: split ``i`` runs on worker ``i % workers``."""
    return [index % workers for index in range(len(splits))]
