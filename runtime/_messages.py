"""The runtime's actor messages: small immutable records, one module for all of them.

Data travels in batches (one :class:`Data` per source batch and key group, never one message per
record). Control records (:class:`EndOfStream`; checkpoint barriers and handoff markers later)
travel in-band through the same mailboxes, so their order relative to data is preserved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from shoal.storage import EpochDelta, StoreSnapshot

from ._columns import (
    decode_column,
    decode_keys,
    decode_records,
    encode_column,
    encode_int_column,
    encode_keys,
    encode_records,
)

__all__ = (
    "Admit",
    "ReleaseEnds",
    "SplitHeld",
    "PreCopy",
    "StateChunk",
    "FlushChannel",
    "GroupHandoff",
    "HandoffMarker",
    "MoveOut",
    "MovedIn",
    "PlacementUpdate",
    "PrepareMoves",
    "Retire",
    "SendMarkers",
    "Throttle",
    "SplitHandoff",
    "StartHandoffs",
    "Barrier",
    "BarrierAck",
    "Broadcast",
    "Credit",
    "Data",
    "EndOfStream",
    "Finish",
    "Gathered",
    "InjectBarrier",
    "SnapshotDrained",
    "WriteSnapshot",
    "Drained",
    "Pull",
    "QueryState",
    "InjectFailure",
    "TimersDue",
    "ReturnCredits",
    "Shipment",
    "StartSources",
    "TriggerCheckpoint",
    "StopSources",
    "Watermark",
)


@dataclass(frozen=True, slots=True)
class Data:
    """A batch of keyed records for one key-group actor.

    ``keys``, ``values`` and ``offsets`` are parallel columns; ``offsets`` are the records'
    source positions in ``split`` (what a dead letter names). ``channel`` names the upstream
    sender (a split, or an upstream key-group actor): barriers are aligned per channel.
    ``timestamps`` is the records' event-time column in a flow with event time, else None.
    """

    channel: str
    split: str
    keys: list[Any]
    values: list[Any]
    offsets: list[int]
    timestamps: list[Any] | None = None

    def to_wire(self) -> list[Any]:
        return [
            self.channel,
            self.split,
            encode_keys(self.keys),
            encode_records(self.values),
            encode_int_column(self.offsets),
            None if self.timestamps is None else encode_column(self.timestamps),
        ]

    @classmethod
    def from_wire(cls, data: list[Any]) -> Data:
        channel, split, keys, values, offsets, stamps = data
        return cls(
            channel,
            split,
            decode_keys(keys),
            decode_records(values),
            decode_column(offsets),
            None if stamps is None else decode_column(stamps),
        )


@dataclass(frozen=True, slots=True)
class Shipment:
    """Records for several key groups of one keyed stage, bound for one worker process.

    One shipment per (source batch, destination worker) instead of one message per key group:
    the columns of all the destination's groups are concatenated in ``groups`` order, and
    ``counts`` says how many records each group has. The receiving worker's exchange actor slices
    them back into one :class:`Data` per key group, and hands ``sender`` a :class:`Credit`.
    """

    sender: int
    stage: int
    channel: str
    split: str
    groups: list[int]
    counts: list[int]
    keys: list[Any]
    values: list[Any]
    offsets: list[int]
    timestamps: list[Any] | None = None

    def to_wire(self) -> list[Any]:
        return [
            self.sender,
            self.stage,
            self.channel,
            self.split,
            self.groups,
            self.counts,
            encode_keys(self.keys),
            encode_records(self.values),
            encode_int_column(self.offsets),
            None if self.timestamps is None else encode_column(self.timestamps),
        ]

    @classmethod
    def from_wire(cls, data: list[Any]) -> Shipment:
        sender, stage, channel, split, groups, counts, keys, values, offsets, stamps = data
        return cls(
            sender,
            stage,
            channel,
            split,
            groups,
            counts,
            decode_keys(keys),
            decode_records(values),
            decode_column(offsets),
            None if stamps is None else decode_column(stamps),
        )


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A control message for several key groups of one stage on the receiving worker.

    Travels through the same exchange as :class:`Shipment`, so it never overtakes data, and
    takes a credit like one.
    """

    sender: int
    stage: int
    groups: list[int]
    message: Any


@dataclass(frozen=True, slots=True)
class Credit:
    """Exchange -> sending worker: ``count`` more messages of ``stage`` may be sent to ``worker``.

    Sent once the exchange has delivered that many of the sender's :class:`Shipment` or
    :class:`Broadcast` messages into its key groups' mailboxes (see ``_credits.py``).
    """

    stage: int
    worker: int
    count: int


@dataclass(frozen=True, slots=True)
class ReturnCredits:
    """An exchange's idle continuation: hand back the credits it has collected."""


@dataclass(frozen=True, slots=True)
class Barrier:
    """Checkpoint barrier ``epoch`` on ``channel``, in band with the channel's data.

    What the channel sent before it belongs to epoch ``epoch``; what it sends after, to the
    next. A key-group actor aligns barriers over its input channels (``_alignment.py``).
    ``base`` is the newest checkpoint completed when this one was triggered: a key group may
    forget how to roll back to anything older.
    """

    epoch: int
    channel: str
    base: int = 0


@dataclass(frozen=True, slots=True)
class TriggerCheckpoint:
    """Driver -> job supervisor (ask): start the next checkpoint now.

    Answers its epoch, or ``None`` when a checkpoint is still in flight (one at a time), or
    when the job has drained and ``final`` is not set (``final``: the checkpoint of a drained
    job, which records every split's end and every key group's final state). A ``periodic``
    one (the interval's) is skipped while a rescale moves key groups: it would hold up every
    placement version behind it.
    """

    final: bool = False
    periodic: bool = False


@dataclass(frozen=True, slots=True)
class InjectBarrier:
    """Coordinator -> worker controller -> source actors: take checkpoint ``epoch`` now.

    A source actor takes it between two batches: it records its split's position and sends
    :class:`Barrier` downstream on its channel.
    """

    epoch: int
    base: int = 0


@dataclass(frozen=True, slots=True)
class BarrierAck:
    """Actor -> coordinator: this actor's part of checkpoint ``epoch`` is done (or failed).

    Sources send their split's position (``positions``: split -> position, ``None`` for a
    split not read yet); key-group actors send what their snapshot wrote (``stats``).
    ``error`` is set when the part failed (alignment over its bound, a failed flush): the
    coordinator then aborts the checkpoint.
    """

    epoch: int
    actor: str
    worker: int
    positions: dict[str, Any]
    stats: dict[str, Any]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotDrained:
    """Coordinator -> a drained key-group actor: take your part of checkpoint ``epoch``.

    A drained key group takes no more barriers (its channels have ended) but every checkpoint
    must still record it: its state is final, so it commits it as ``epoch`` and writes its
    file like any other key group. ``base`` is as in :class:`Barrier`.
    """

    epoch: int
    base: int = 0


@dataclass(eq=False, slots=True)
class WriteSnapshot:
    """Key-group actor -> its worker's checkpoint writer (same worker, never encoded).

    The key group has committed ``epoch`` locally; the writer writes its checkpoint file off
    the event loop (``delta`` when the store's plan allows, else the full ``snapshot``), closes
    ``snapshot``, acks the coordinator with the file's record, and sets ``done``.

    Attributes:
        epoch: The checkpoint.
        base: The newest completed checkpoint (0: none); ``delta.since == base`` or
            ``delta`` is None.
        actor: The key-group actor's name (the ack's sender).
        worker: Its worker.
        delta: The changes since ``base``, or None when only a full can be written.
        snapshot: The committed state at ``epoch`` (an open ``StoreSnapshot``).
        stats: The key group's figures for the ack (pause_s, alignment_s, entries, ...).
        done: Set once the snapshot is closed (written, failed or dropped at shutdown).
    """

    epoch: int
    base: int
    actor: str
    worker: int
    delta: EpochDelta | None
    snapshot: StoreSnapshot
    stats: dict[str, Any]
    done: anyio.Event = field(default_factory=anyio.Event)
    started: bool = False


@dataclass(frozen=True, slots=True)
class Watermark:
    """Event time on ``channel`` reached ``timestamp``: no later record on it is older.

    In band with the channel's data, like :class:`Barrier`. ``idle`` marks a split that read
    nothing for its idle timeout: it does not hold the combined watermark back until it sends a
    watermark that is not idle (see ``_watermarks.py``).
    """

    channel: str
    timestamp: float
    idle: bool = False


@dataclass(frozen=True, slots=True)
class TimersDue:
    """The clock passed a key group's earliest processing-time timer (a local wake-up, sent by
    the key group's own :class:`~._time.Wakeup`; see ``_timers.py``)."""


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """No more records will arrive on ``channel``. ``stopped``: because the job was stopped
    from outside (Ctrl-C, ``stop()``), not because its input ended: event time does not move
    to +inf for it (windows and timers waiting for more of its records do not fire)."""

    channel: str
    stopped: bool = False


@dataclass(frozen=True, slots=True)
class QueryState:
    """Ask a key-group actor for ``key``'s value in its ``state`` (an interactive query,
    answered between batches; see ``_query.py``)."""

    state: str
    key: Any


@dataclass(frozen=True, slots=True)
class InjectFailure:
    """Fail the actor that receives it now (``shoal.testing``'s fault injection: a key-group
    actor or a worker's controller raises ``InjectedFault(reason)``)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Pull:
    """A source actor's idle continuation: read and route the next batch."""


@dataclass(frozen=True, slots=True)
class Gathered:
    """Sink items (column-encoded) or dead letters shipped to the driver's gathering actor.

    ``epoch``: the checkpoint epoch the items are output of (a transactional sink stages them
    under it; 0 when the job has no checkpoints). ``sink``: which of the flow's sinks they are
    for (a flow with several: see ``_sinks_fan.py``).
    """

    kind: str
    items: list[Any]
    epoch: int = 0
    sink: int = 0

    def to_wire(self) -> list[Any]:
        return [self.kind, encode_records(self.items), self.epoch, self.sink]

    @classmethod
    def from_wire(cls, data: list[Any]) -> Gathered:
        return cls(data[0], decode_records(data[1]), data[2], data[3])


@dataclass(frozen=True, slots=True)
class PreCommitSink:
    """Job supervisor -> worker controller (ask): make every output of epochs <= ``epoch``
    durable in the transactional sink's partition (phase one; before the manifest)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class SinkPreCommitted:
    """Worker controller -> job supervisor: its partition pre-committed ``epoch`` (or failed:
    ``error``). A message, not an ask's reply: the supervisor never waits inside a message
    for a worker (its socket reader could be blocked on the supervisor's full mailbox)."""

    epoch: int
    worker: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CommitSink:
    """Job supervisor -> worker controller: checkpoint ``epoch`` completed; publish every
    output of epochs <= ``epoch`` (phase two; idempotent)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class SplitHeld:
    """A source actor -> the job supervisor: ``split`` has read all its input and holds its
    end of stream back, because a timeline step is still to come (see ``_timeline.py``)."""

    split: str


@dataclass(frozen=True)
class ReleaseEnds:
    """Driver -> worker controller: the timeline has no step left; splits that read all their
    input may end now (and later ones end as soon as they do)."""


@dataclass(frozen=True, slots=True)
class Drained:
    """An actor of the flow's last stage has drained every input channel.

    The last stage is the last keyed operator's key-group actors, or, in a flow without a keyed
    operator, the source actors (one per split).
    """

    actor: str
    worker: int


@dataclass(frozen=True, slots=True)
class StartSources:
    """Driver -> worker controller: open the worker's splits and start pulling."""


@dataclass(frozen=True, slots=True)
class StopSources:
    """Driver -> worker controller: end every split now (a stop, not the end of its input:
    see :class:`EndOfStream`).

    What was already read drains through the job and its state is flushed; this is how an
    unbounded job is stopped.
    """


@dataclass(frozen=True, slots=True)
class Finish:
    """Driver -> worker controller: every key group is done; close sinks and report."""


# -- live migration (see _moves.py for the protocol) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Admit:
    """Job supervisor -> worker controller (ask): the mesh's workers are now ``workers`` (new
    ones are admitted; retired ones are no longer peers)."""

    workers: list[int]


@dataclass(frozen=True, slots=True)
class PrepareMoves:
    """Job supervisor -> a new owner's controller (ask): spawn the successors of ``groups``
    (every keyed stage's actor of each), waiting for their handoff; answered once they exist,
    before any sender is told to route to them."""

    version: int
    groups: list[int]


@dataclass(frozen=True, slots=True)
class PlacementUpdate:
    """Job supervisor -> every worker controller (ask): placement ``version``.

    ``groups`` and ``splits`` are ``[item, source, target]`` moves. A worker routes by the new
    table from then on, tells its moving actors :class:`MoveOut`, and has every sender it hosts
    owe a :class:`HandoffMarker` to each moved key group's old owner.
    """

    version: int
    groups: list[list[int]]
    splits: list[list[Any]]


@dataclass(frozen=True, slots=True)
class StartHandoffs:
    """Job supervisor -> every worker controller (ask), once every worker applied placement
    ``version``: tell the actors leaving this worker to hand over."""

    version: int


@dataclass(frozen=True, slots=True)
class MoveOut:
    """Worker controller -> a moving key-group or source actor: hand over to ``target`` once
    everything before the move is done."""

    version: int
    target: int


@dataclass(frozen=True, slots=True)
class SendMarkers:
    """Worker controller -> a sender (source or key-group actor): send the handoff markers
    owed for placement ``version`` now, even if there is no data to send."""

    version: int


@dataclass(frozen=True, slots=True)
class HandoffMarker:
    """In band, sender -> a moving key group's old owner: ``channel`` sends this key group
    nothing more here (its later records go to the new owner)."""

    channel: str
    version: int


@dataclass(frozen=True, slots=True)
class FlushChannel:
    """A moving sender -> an exchange (ask, credited): answered once every message ``sender``'s
    worker sent the exchange before it is in its key groups' mailboxes, so what the sender's
    successor sends next cannot overtake it."""

    sender: int


@dataclass(frozen=True, slots=True)
class Throttle:
    """A successor -> every worker's handoff receiver (urgent): hold what your senders route
    to key group ``group`` of keyed stage ``stage`` (``held``), or deliver it now, in order (the
    successor has taken the key group over). ``version``: the placement version of the move
    (a worker that has not applied it yet routes nothing to the successor: it holds from when
    it applies it). See ``_holding.py``."""

    stage: int
    group: int
    held: bool
    version: int


@dataclass(frozen=True, slots=True)
class GroupHandoff:
    """Old owner's key-group actor -> new owner's controller: the actor's state (its store is
    committed and closed: the environment changes owner), ``paused_at`` its clock when it
    stopped processing."""

    version: int
    actor: str
    source: int
    state: dict[str, Any]
    paused_at: float


@dataclass(frozen=True, slots=True)
class PreCopy:
    """Job supervisor -> the old owner's shipper (workers with state directories of their
    own): copy these key groups' environments to their new owners now, while they run.
    ``groups``: ``[key group, new owner]`` pairs. Answered with the actors pre-copied and the
    bytes sent (see ``_ship.py``)."""

    version: int
    groups: list[list[int]]


@dataclass(frozen=True, slots=True)
class StateChunk:
    """A shipper -> the new owner's shipment receiver: ``data`` goes at ``offset`` of the
    copy of ``operator``'s ``key_group`` (offset 0 starts a new copy; asked, one at a time)."""

    operator: str
    key_group: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SplitHandoff:
    """Old owner's source actor -> new owner's controller: reopen ``split`` from ``state``."""

    version: int
    split: str
    source: int
    state: dict[str, Any]
    paused_at: float


@dataclass(frozen=True, slots=True)
class MovedIn:
    """New owner -> job supervisor: ``name`` (a key-group actor or a split) of placement
    ``version`` runs on ``target`` now; ``pause_s``: from when the old owner stopped
    processing it to when the new one started; ``held_records``: what the successor queued
    meanwhile (a key group's records that waited for the move); ``bytes``: its environment's
    size, or what was shipped (pre-copy and tail) between state directories of their own, of
    which ``tail_bytes`` went during the pause; ``phases``: where a key group's pause went
    (see :class:`~shoal.runtime.MoveRecord`)."""

    version: int
    kind: str
    name: str
    source: int
    target: int
    pause_s: float
    bytes: int
    held_records: int = 0  # what the successor queued before the handoff (records)
    tail_bytes: int = 0  # shipped: what changed after the pre-copy (sent during the pause)
    phases: dict[str, float] | None = None  # seconds by phase (a key group's move)


@dataclass(frozen=True, slots=True)
class Retire:
    """Job supervisor -> a retiring worker's controller (ask): it hosts nothing any more;
    close its sinks and answer its final report."""
