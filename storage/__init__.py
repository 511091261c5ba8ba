"""shoal.storage: keyed state on disk, one LMDB environment per (operator, key group).

Declare states with specs, open a store per key group from a backend, set ``store.key``,
use the handles in ``store.states``, and ``flush()`` at each checkpoint barrier::

    backend = LmdbBackend("/var/lib/shoal")
    with backend.open_store("clicks", 7, [ValueStateSpec("count", default=0)]) as store:
        store.key = "alice"
        store.states.count.update(store.states.count.value() + 1)
        store.flush(meta={"epoch": 1})

For checkpoints, ``flush_epoch(n)`` commits epoch n with an undo record and returns its delta,
which a ``CheckpointStore`` (a directory or any fsspec URL) writes as one file; the coordinator
commits the checkpoint's manifest. ``rollback_to``, ``restore`` and ``load_group`` bring state
back; savepoints are a portable, full copy (``write_savepoint``, ``inspect_savepoint``, ...).

This layer knows nothing of actors or the runtime. Everything on disk is CBOR, never pickle.
"""

from __future__ import annotations

from ._backend import LmdbBackend as LmdbBackend
from ._backend import MemoryBackend as MemoryBackend
from ._backend import StateBackend as StateBackend
from ._budget import DEFAULT_STATE_MEMORY as DEFAULT_STATE_MEMORY
from ._budget import CacheBudget as CacheBudget
from ._checkpoint import CheckpointStore as CheckpointStore
from ._codec import check_key as check_key
from ._codec import check_keys as check_keys
from ._codec import decode_key as decode_key
from ._codec import decode_value as decode_value
from ._codec import encode_key as encode_key
from ._codec import encode_keys as encode_keys
from ._codec import encode_value as encode_value
from ._exceptions import CheckpointCorruptError as CheckpointCorruptError
from ._exceptions import CheckpointError as CheckpointError
from ._exceptions import CheckpointWriteError as CheckpointWriteError
from ._exceptions import DecodeError as DecodeError
from ._exceptions import DuplicateStateError as DuplicateStateError
from ._exceptions import EncodeError as EncodeError
from ._exceptions import InvalidKeyError as InvalidKeyError
from ._exceptions import InvalidNameError as InvalidNameError
from ._exceptions import RollbackError as RollbackError
from ._exceptions import StateEncodeError as StateEncodeError
from ._exceptions import StorageError as StorageError
from ._exceptions import StoreBusyError as StoreBusyError
from ._exceptions import StoreClosedError as StoreClosedError
from ._exceptions import StoreDirtyError as StoreDirtyError
from ._exceptions import UnknownStateError as UnknownStateError
from ._handles import AggregatingState as AggregatingState
from ._handles import ListState as ListState
from ._handles import MapState as MapState
from ._handles import ReducingState as ReducingState
from ._handles import ValueState as ValueState
from ._manifest import FileRecord as FileRecord
from ._manifest import GroupRecord as GroupRecord
from ._manifest import Manifest as Manifest
from ._manifest import describe_specs as describe_specs
from ._savepoint import GroupInfo as GroupInfo
from ._savepoint import SavepointInfo as SavepointInfo
from ._savepoint import VerifyReport as VerifyReport
from ._savepoint import inspect_savepoint as inspect_savepoint
from ._savepoint import load_savepoint_group as load_savepoint_group
from ._savepoint import read_savepoint as read_savepoint
from ._savepoint import rewrite_savepoint as rewrite_savepoint
from ._savepoint import savepoint_from_checkpoint as savepoint_from_checkpoint
from ._savepoint import verify_checkpoints as verify_checkpoints
from ._savepoint import verify_savepoint as verify_savepoint
from ._savepoint import write_savepoint as write_savepoint
from ._shipping import ShippedTail as ShippedTail
from ._shipping import begin_shipping as begin_shipping
from ._shipping import copy_environment as copy_environment
from ._shipping import end_shipping as end_shipping
from ._shipping import shipping as shipping
from ._shipping import take_tail as take_tail
from ._snapshot import EpochDelta as EpochDelta
from ._snapshot import StateChanges as StateChanges
from ._snapshot import StoreSnapshot as StoreSnapshot
from ._specs import AggregatingStateSpec as AggregatingStateSpec
from ._specs import ListStateSpec as ListStateSpec
from ._specs import MapStateSpec as MapStateSpec
from ._specs import ReducingStateSpec as ReducingStateSpec
from ._specs import StateSpec as StateSpec
from ._specs import StateTtl as StateTtl
from ._specs import ValueStateSpec as ValueStateSpec
from ._store import KeyGroupStatistics as KeyGroupStatistics
from ._store import KeyGroupStore as KeyGroupStore

__all__ = (
    # declaring state
    "ValueStateSpec",
    "ListStateSpec",
    "MapStateSpec",
    "ReducingStateSpec",
    "AggregatingStateSpec",
    "StateSpec",
    "StateTtl",
    # backends and stores
    "StateBackend",
    "LmdbBackend",
    "MemoryBackend",
    "KeyGroupStore",
    "KeyGroupStatistics",
    "CacheBudget",
    "DEFAULT_STATE_MEMORY",
    # epochs and checkpoints
    "EpochDelta",
    "StateChanges",
    "StoreSnapshot",
    "CheckpointStore",
    "Manifest",
    "GroupRecord",
    "FileRecord",
    "describe_specs",
    # savepoints
    "write_savepoint",
    "savepoint_from_checkpoint",
    "read_savepoint",
    "load_savepoint_group",
    "inspect_savepoint",
    "verify_checkpoints",
    "verify_savepoint",
    "rewrite_savepoint",
    "SavepointInfo",
    "GroupInfo",
    "VerifyReport",
    # shipping a key group to another state directory
    "ShippedTail",
    "begin_shipping",
    "copy_environment",
    "take_tail",
    "end_shipping",
    "shipping",
    # handles
    "ValueState",
    "ListState",
    "MapState",
    "ReducingState",
    "AggregatingState",
    # codec (the key encoding is part of the savepoint format)
    "encode_key",
    "encode_keys",
    "decode_key",
    "check_key",
    "check_keys",
    "encode_value",
    "decode_value",
    # errors
    "StorageError",
    "InvalidKeyError",
    "InvalidNameError",
    "DuplicateStateError",
    "UnknownStateError",
    "StoreClosedError",
    "StoreBusyError",
    "StoreDirtyError",
    "RollbackError",
    "CheckpointError",
    "CheckpointCorruptError",
    "CheckpointWriteError",
    "EncodeError",
    "StateEncodeError",
    "DecodeError",
)
