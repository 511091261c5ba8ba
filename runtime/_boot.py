"""The bootstrap a worker process runs: rebuild the flow, open state, spawn the worker's actors."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from shoal.actors import ActorStartError, BootstrapError, Worker, register_message
from shoal.storage import (
    DEFAULT_STATE_MEMORY,
    CheckpointCorruptError,
    CheckpointStore,
    LmdbBackend,
    read_savepoint,
)

from ._faults import Fault, Faults
from ._loader import load_flow
from ._logging import configure_logging
from ._messages import (
    Admit,
    Barrier,
    BarrierAck,
    Broadcast,
    CommitSink,
    Credit,
    Data,
    Drained,
    EndOfStream,
    Finish,
    FlushChannel,
    Gathered,
    GroupHandoff,
    HandoffMarker,
    InjectBarrier,
    InjectFailure,
    MovedIn,
    MoveOut,
    PlacementUpdate,
    PreCommitSink,
    PreCopy,
    PrepareMoves,
    Pull,
    QueryState,
    ReleaseEnds,
    Retire,
    ReturnCredits,
    SendMarkers,
    Shipment,
    SinkPreCommitted,
    SnapshotDrained,
    SplitHandoff,
    SplitHeld,
    StartHandoffs,
    StartSources,
    StateChunk,
    StopSources,
    Throttle,
    Watermark,
)
from ._placement import Placement, split_homes
from ._plan import compile_plan
from ._statedir import hold_as_worker
from ._worker import WorkerEnv, place_directory, start_worker

__all__ = ("bootstrap", "register_runtime_messages", "tune_gc")

# Young-generation GC threshold in worker processes (CPython's default is 700); see tune_gc.
_GC_THRESHOLD = 200_000

_MESSAGES = (
    (Data, "shoal.Data"),
    (Shipment, "shoal.Shipment"),
    (Broadcast, "shoal.Broadcast"),
    (Barrier, "shoal.Barrier"),
    (BarrierAck, "shoal.BarrierAck"),
    (InjectBarrier, "shoal.InjectBarrier"),
    (SnapshotDrained, "shoal.SnapshotDrained"),
    (Credit, "shoal.Credit"),
    (ReturnCredits, "shoal.ReturnCredits"),
    (EndOfStream, "shoal.EndOfStream"),
    (Watermark, "shoal.Watermark"),
    (Gathered, "shoal.Gathered"),
    (PreCommitSink, "shoal.PreCommitSink"),
    (SinkPreCommitted, "shoal.SinkPreCommitted"),
    (CommitSink, "shoal.CommitSink"),
    (Drained, "shoal.Drained"),
    (Pull, "shoal.Pull"),
    (QueryState, "shoal.QueryState"),
    (InjectFailure, "shoal.InjectFailure"),
    (StartSources, "shoal.StartSources"),
    (StopSources, "shoal.StopSources"),
    (Finish, "shoal.Finish"),
    (Admit, "shoal.Admit"),
    (PrepareMoves, "shoal.PrepareMoves"),
    (PlacementUpdate, "shoal.PlacementUpdate"),
    (MoveOut, "shoal.MoveOut"),
    (SendMarkers, "shoal.SendMarkers"),
    (Throttle, "shoal.Throttle"),
    (HandoffMarker, "shoal.HandoffMarker"),
    (FlushChannel, "shoal.FlushChannel"),
    (GroupHandoff, "shoal.GroupHandoff"),
    (SplitHandoff, "shoal.SplitHandoff"),
    (MovedIn, "shoal.MovedIn"),
    (Retire, "shoal.Retire"),
    (StartHandoffs, "shoal.StartHandoffs"),
    (PreCopy, "shoal.PreCopy"),
    (SplitHeld, "shoal.SplitHeld"),
    (ReleaseEnds, "shoal.ReleaseEnds"),
    (StateChunk, "shoal.StateChunk"),
)


def register_runtime_messages() -> None:
    """Teach the kernel's codec the runtime's messages (idempotent)."""
    for cls, tag in _MESSAGES:
        register_message(cls, tag)


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a streaming worker process.

    Batches allocate many short-lived tuples and lists, none of them cyclic; at CPython's default
    threshold (700) the collector runs every few hundred records and its older generations keep
    re-walking the long-lived state caches. Objects that exist after start-up are frozen out of
    collection, and young collections happen every 200k allocations instead: short-lived batch
    objects then mostly die before a collection would have to visit them (measured on the
    keyed-count benchmark, one worker: 627k events/s at 50k, 741k at 200k, 722k at 1M). Only worker
    processes do this: an embedding host's collector is left alone.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD, 20, 100)


async def bootstrap(worker: Worker, args: dict[str, Any]) -> None:
    """Entry point of a worker process (see ``shoal.actors.open_worker_process``)."""
    configure_logging(args.get("log_format", "console"), args.get("log_level", "warning"))
    hold_as_worker(Path(args["state_dir"]))
    register_runtime_messages()
    flow = load_flow(args["flow"], args.get("params"))
    plan = compile_plan(flow)
    index, workers = int(args["index"]), int(args["workers"])
    placement = (
        Placement.from_data(args["placement"])
        if args.get("placement") is not None
        else Placement.initial(plan.num_key_groups, len(plan.splits), workers, split_homes(plan))
    )
    peers = [int(p) for p in args.get("peers", placement.workers)]
    store = CheckpointStore(args["checkpoint_dir"]) if args.get("checkpoint_dir") else None
    restore_epoch = args.get("restore_epoch")
    savepoint = args.get("restore_savepoint")
    if restore_epoch is not None and store is None and savepoint is None:
        raise ValueError("a worker told to restore a checkpoint was given no checkpoint_dir")
    attempt = int(args.get("attempt", 0))
    env = WorkerEnv(
        plan=plan,
        index=index,
        workers=workers,
        driver=int(args["driver"]),
        kernel=worker,
        backend=LmdbBackend(
            args.get("state_root", args["state_dir"]),
            state_memory=args.get("state_memory", DEFAULT_STATE_MEMORY),
        ),
        group_owner=list(placement.group_owner),
        split_owner=list(placement.split_owner),
        batch_size=int(args["batch_size"]),
        mailbox_size=int(args["mailbox_size"]),
        move_hold_records=args.get("move_hold_records"),
        checkpoints=bool(args.get("checkpoints", False)),
        checkpoint_store=store,
        restoring=bool(args.get("restoring", False)),
        restore_from=(
            read_savepoint(savepoint)
            if savepoint is not None
            else None
            if restore_epoch is None or store is None
            else store.read_manifest(restore_epoch)
        ),
        restore_savepoint=savepoint,
        faults=Faults(
            [Fault.from_data(f) for f in args.get("faults", ())],
            worker=index,
            attempt=attempt,
            in_process=True,
        ),
        sink=None if plan.sink.gather else plan.sink.open_partition(index, max(peers) + 1),
        dead_sink=None,
        peers=peers,
        placement_version=placement.version,
        ship_state=bool(args.get("ship_state", False)),
        hold_ends=bool(args.get("hold_ends", False)),
    )
    place_directory(worker, plan, placement.group_owner, env.driver, peers, placement.split_owner)
    worker.parent = env.driver  # the driver gone, the job is over: its teardown is no news
    try:
        await start_worker(env)
    except ActorStartError as exc:
        if _corrupt_checkpoint(exc):
            # The driver names the damaged file and restarts from an older checkpoint (one
            # line); this worker's traceback would only repeat it.
            raise BootstrapError(str(exc)) from exc
        raise
    if args.get("tune_gc", True):
        tune_gc()


def _corrupt_checkpoint(exc: BaseException) -> bool:
    """A checkpoint file failing its checksum caused ``exc`` (a key group's restore)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, CheckpointCorruptError):
            return True
        cause = cause.__cause__
    return False
