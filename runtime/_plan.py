"""Compile a :class:`Flow` into stages, and place key groups and splits on workers.

A flow is a graph (``_dataflow.py``): inputs, stateless operations, keyed operators, sinks,
merges (union / connect) and branches (a stream extended more than once: fan-out; a process
function's side outputs). The plan cuts it at the keyed operators: stage ``i >= 1`` is the
``i``-th keyed operator in the order the flow added them (a topological order), one actor per
key group; each input has a source stage (:attr:`Plan.source_stages`, its splits run inside the
workers). What a stage's operator emits leaves through its **outlets**, a small tree
(:class:`Outlet`): a chain of stateless operations run once, then a keyed stage's exchange, a
sink, or several outlets (a fork: each branch gets the chain's result). Side outputs have
outlets of their own (:attr:`Stage.sides`). A connect's tag is one more stateless operation on
the edge into it.

So a stage may send to several later stages and a stage may be fed by several earlier ones:
:meth:`Plan.channels_into` lists every channel feeding a stage (the splits of the inputs and
the key-group actors of the stages that send to it), and a key-group actor aligns barriers and
combines watermarks over all of them. Stages only ever send to later stages, so the credit
argument of ``_credits.py`` (the last stages always drain) still holds.

Every worker process compiles the same flow description into the same plan, so actor names and
placement agree without a message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
    _Node,
)
from ._joins import Tag
from ._sinks import Sink
from ._sinks_fan import fan_sinks

__all__ = (
    "Outlet",
    "Plan",
    "Stage",
    "actor_name",
    "compile_plan",
    "place_key_groups",
    "place_splits",
)

StatelessOp = MapOp | FilterOp | FlatMapOp | AsyncMapOp | AsyncFilterOp
_STATELESS = (MapOp, FilterOp, FlatMapOp, AsyncMapOp, AsyncFilterOp)


@dataclass(frozen=True, slots=True)
class Outlet:
    """Where part of a stage's output goes: through ``chain``, then into keyed stage
    ``stage`` (keyed by ``key_fn``), sink ``sink`` (an index into :attr:`Plan.sinks`), or each
    of ``forks``."""

    chain: tuple[StatelessOp, ...]
    stage: int | None = None
    key_fn: Callable[[Any], Any] | None = None
    operator: str | None = None
    sink: int | None = None
    forks: tuple[Outlet, ...] = ()
    #: The chain holds an ``async def`` map or filter (run by ``_async_ops.py``).
    async_chain: bool = False

    def walk(self) -> Iterator[Outlet]:
        yield self
        for fork in self.forks:
            yield from fork.walk()


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage: an optional keyed operator (None: an input's source stage) and where its
    output goes."""

    index: int
    operator: KeyedOp | None
    outlets: tuple[Outlet, ...]
    #: Per side-output tag its process function writes: where those values go.
    sides: tuple[tuple[str, tuple[Outlet, ...]], ...] = ()
    #: The keyed stages it sends to, and the sinks it writes (over every outlet).
    downstream: tuple[int, ...] = ()
    sinks: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return self.operator.name if self.operator is not None else "source"

    def side(self, tag: str) -> tuple[Outlet, ...] | None:
        for name, outlets in self.sides:
            if name == tag:
                return outlets
        return None


@dataclass(frozen=True, slots=True)
class Plan:
    """A flow compiled for execution."""

    flow: Flow
    stages: tuple[Stage, ...]
    #: The one sink the engine writes (with several, a fan over them: ``_sinks_fan.py``).
    sink: Sink
    splits: tuple[str, ...]
    #: Per input (in the flow's order): its source stage and event time.
    source_stages: tuple[Stage, ...] = ()
    input_times: tuple[EventTime | None, ...] = ()
    #: The input index of every split (absent: input 0).
    split_inputs: dict[str, int] | None = None
    #: The flow's sinks, in the order it added them (``Outlet.sink`` indexes them).
    sinks: tuple[Sink, ...] = ()
    #: The channels feeding each keyed stage (see :meth:`channels_into`).
    channels: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def input_of(self, split: str) -> int:
        """The index of the input ``split`` reads."""
        return 0 if self.split_inputs is None else self.split_inputs.get(split, 0)

    def source_stage(self, split: str) -> Stage:
        """The source stage ``split`` runs: its input's."""
        if not self.source_stages:
            return self.stages[0]
        return self.source_stages[self.input_of(split)]

    def event_time_of(self, split: str) -> EventTime | None:
        """``split``'s input's event time (None: no timestamps)."""
        if not self.input_times:
            return self.flow.event_time
        return self.input_times[self.input_of(split)]

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
        """The upstream channel names feeding every key-group actor of ``stage`` (>= 1): the
        splits of every input whose source stage sends to it, and the key-group actors of
        every keyed stage that does."""
        channels = self.channels.get(stage)
        if channels is not None:
            return channels
        if stage == 1:  # a plan built by hand (tests): linear
            return self.splits
        upstream = self.stages[stage - 1].name
        return tuple(actor_name(upstream, group) for group in range(self.num_key_groups))

    def senders_into(self, stage: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """What feeds ``stage``: the inputs (by index) whose source stage sends to it, and the
        keyed stages that do."""
        inputs = tuple(i for i, s in enumerate(self.source_stages) if stage in s.downstream)
        keyed = tuple(s.index for s in self.keyed_stages if stage in s.downstream)
        return inputs, keyed

    def drain_actors(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Whose end means the job's end: the inputs whose source stage writes a sink and the
        keyed stages that do (every branch ends in a sink, and a stage's end follows every
        stage before it)."""
        inputs = tuple(i for i, s in enumerate(self.source_stages) if s.sinks)
        keyed = tuple(s.index for s in self.keyed_stages if s.sinks)
        return inputs, keyed

    def splits_of(self, input_index: int) -> tuple[str, ...]:
        """The split ids of input ``input_index``."""
        if self.split_inputs is None:
            return self.splits
        return tuple(s for s in self.splits if self.split_inputs.get(s, 0) == input_index)


def actor_name(operator: str, key_group: int) -> str:
    """The actor name of ``operator``'s key group ``key_group``."""
    return f"{operator}#{key_group}"


class _Compiler:
    """Walks a flow's graph from each producer (an input or a keyed operator) to the next
    keyed operators and sinks."""

    def __init__(self, nodes: Sequence[_Node]) -> None:
        keyed = [
            n for n in nodes if n.op is not None and not isinstance(n.op, (*_STATELESS, SinkOp))
        ]
        self.stage_of = {id(n): i + 1 for i, n in enumerate(keyed)}
        sinks = [n for n in nodes if isinstance(n.op, SinkOp)]
        self.sink_of = {id(n): i for i, n in enumerate(sinks)}
        self.keyed = keyed

    def outlet(self, node: _Node, parent: _Node) -> Outlet:
        """The outlet into ``node`` from ``parent``: its chain until the next keyed operator,
        sink or fork."""
        chain: list[StatelessOp] = []
        while True:
            tag = next(t for p, t in zip(node.parents, node.tags, strict=True) if p is parent)
            if tag is not None:
                chain.append(MapOp(Tag(tag), name="connect"))
            op = node.op
            if isinstance(op, SinkOp):
                return self._made(chain, sink=self.sink_of[id(node)])
            if op is not None and not isinstance(op, _STATELESS):
                return self._made(
                    chain,
                    stage=self.stage_of[id(node)],
                    key_fn=op.key_fn,
                    operator=op.name,
                )
            if op is not None:
                chain.append(op)
            if len(node.children) == 1:
                parent, node = node, node.children[0]
                continue
            forks = tuple(self.outlet(child, node) for child in node.children)
            return self._made(chain, forks=forks)

    @staticmethod
    def _made(chain: list[StatelessOp], **where: Any) -> Outlet:
        is_async = any(isinstance(op, AsyncMapOp | AsyncFilterOp) for op in chain)
        return Outlet(tuple(chain), async_chain=is_async, **where)

    def stage(self, index: int, node: _Node) -> Stage:
        """The stage whose producer is ``node`` (an input's, or a keyed operator's)."""
        outlets = tuple(self.outlet(c, node) for c in node.children if c.select is None)
        sides: dict[str, list[Outlet]] = {}
        for side in node.children:
            if side.select is not None:
                into = sides.setdefault(side.select, [])
                into.extend(self.outlet(c, side) for c in side.children)
        side_outlets = tuple((tag, tuple(found)) for tag, found in sides.items())
        every = [o for top in outlets for o in top.walk()]
        every += [o for _tag, found in side_outlets for top in found for o in top.walk()]
        downstream = tuple(sorted({o.stage for o in every if o.stage is not None}))
        sinks = tuple(sorted({o.sink for o in every if o.sink is not None}))
        op = None if node.op is None else node.op
        assert op is None or not isinstance(op, (*_STATELESS, SinkOp))
        return Stage(index, op, outlets, side_outlets, downstream, sinks)


def compile_plan(flow: Flow) -> Plan:
    """Compile ``flow`` (which must have a source and every branch of which ends in a sink)."""
    flow.validate()
    nodes, input_nodes = flow.graph()
    compiler = _Compiler(nodes)
    source_stages = tuple(compiler.stage(0, node) for node in input_nodes)
    keyed = tuple(compiler.stage(i + 1, node) for i, node in enumerate(compiler.keyed))
    stages = (source_stages[0], *keyed)
    splits = tuple(flow.get_source().splits())
    if not splits:
        raise ValueError(f"the source of flow {flow.name!r} has no splits")
    if len(set(splits)) != len(splits):
        raise ValueError(f"the source of flow {flow.name!r} returned duplicate split ids")
    inputs = flow.inputs
    split_inputs: dict[str, int] | None = None
    if len(inputs) > 1:
        split_inputs = {}
        for index, item in enumerate(inputs):
            for split in item.source.splits():
                split_inputs[f"{item.name}/{split}"] = index
    sinks = flow.sinks
    plan = Plan(
        flow,
        stages,
        fan_sinks(sinks, flow.name),
        splits,
        source_stages,
        tuple(item.time for item in inputs),
        split_inputs,
        sinks,
    )
    for stage in keyed:
        senders, upstream = plan.senders_into(stage.index)
        channels = [split for i in senders for split in plan.splits_of(i)]
        channels += [
            actor_name(stages[k].name, group)
            for k in upstream
            for group in range(flow.num_key_groups)
        ]
        plan.channels[stage.index] = tuple(channels)
    return plan


def place_key_groups(num_key_groups: int, workers: int) -> list[int]:
    """Contiguous, balanced ranges: no worker owns more than ceil(groups / workers)."""
    return [group * workers // num_key_groups for group in range(num_key_groups)]


def place_splits(splits: Sequence[str], workers: int) -> list[int]:
    """Round-robin: split ``i`` runs on worker ``i % workers``."""
    return [index % workers for index in range(len(splits))]
