"""shoal: stateful stream processing on asyncio.

One import for users: the dataflow API, sources, sinks, state declarations, scenarios and the
job runner. The layers stay importable on their own: ``shoal.actors`` (the actor kernel),
``shoal.storage`` (keyed state on LMDB) and ``shoal.runtime`` (the streaming engine).

The names below are loaded on first use (PEP 562), so ``import shoal.actors`` or
``import shoal.storage`` does not drag in the other layers.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from shoal.runtime import DEFAULT_KEY_GROUPS as DEFAULT_KEY_GROUPS
    from shoal.runtime import FAULT_POINTS as FAULT_POINTS
    from shoal.runtime import AsyncIterableSource as AsyncIterableSource
    from shoal.runtime import AutoRebalance as AutoRebalance
    from shoal.runtime import BalanceLoad as BalanceLoad
    from shoal.runtime import BoundedOutOfOrderness as BoundedOutOfOrderness
    from shoal.runtime import CallbackSink as CallbackSink
    from shoal.runtime import Check as Check
    from shoal.runtime import CheckpointStatistics as CheckpointStatistics
    from shoal.runtime import ClickstreamSource as ClickstreamSource
    from shoal.runtime import Clock as Clock
    from shoal.runtime import CollectingSink as CollectingSink
    from shoal.runtime import CompletedCheckpoint as CompletedCheckpoint
    from shoal.runtime import ConnectedKeyedStream as ConnectedKeyedStream
    from shoal.runtime import ConnectedStreams as ConnectedStreams
    from shoal.runtime import CountingSink as CountingSink
    from shoal.runtime import DeadLetter as DeadLetter
    from shoal.runtime import DeadLetterSink as DeadLetterSink
    from shoal.runtime import Fault as Fault
    from shoal.runtime import Flow as Flow
    from shoal.runtime import HotKey as HotKey
    from shoal.runtime import InjectedFault as InjectedFault
    from shoal.runtime import InputClosedError as InputClosedError
    from shoal.runtime import IterableSource as IterableSource
    from shoal.runtime import Job as Job
    from shoal.runtime import JobCollector as JobCollector
    from shoal.runtime import JobError as JobError
    from shoal.runtime import JobResult as JobResult
    from shoal.runtime import JobStatistics as JobStatistics
    from shoal.runtime import JobStoppedError as JobStoppedError
    from shoal.runtime import JsonlSink as JsonlSink
    from shoal.runtime import JsonlSource as JsonlSource
    from shoal.runtime import KeyedStream as KeyedStream
    from shoal.runtime import KeyGroupLoad as KeyGroupLoad
    from shoal.runtime import LateRecordError as LateRecordError
    from shoal.runtime import ManualClock as ManualClock
    from shoal.runtime import Monotonous as Monotonous
    from shoal.runtime import OutputTag as OutputTag
    from shoal.runtime import PlacementPolicy as PlacementPolicy
    from shoal.runtime import ProcessContext as ProcessContext
    from shoal.runtime import Progress as Progress
    from shoal.runtime import PushSource as PushSource
    from shoal.runtime import RebalanceRecord as RebalanceRecord
    from shoal.runtime import ResumedFrom as ResumedFrom
    from shoal.runtime import Scenario as Scenario
    from shoal.runtime import ScenarioError as ScenarioError
    from shoal.runtime import Session as Session
    from shoal.runtime import Sink as Sink
    from shoal.runtime import SinkPartition as SinkPartition
    from shoal.runtime import SinkRecovery as SinkRecovery
    from shoal.runtime import Sliding as Sliding
    from shoal.runtime import Source as Source
    from shoal.runtime import SourceBatch as SourceBatch
    from shoal.runtime import SourceContext as SourceContext
    from shoal.runtime import SourceError as SourceError
    from shoal.runtime import SplitReader as SplitReader
    from shoal.runtime import StateDirectoryInUseError as StateDirectoryInUseError
    from shoal.runtime import Stream as Stream
    from shoal.runtime import SystemClock as SystemClock
    from shoal.runtime import Timers as Timers
    from shoal.runtime import TransactionalJsonlSink as TransactionalJsonlSink
    from shoal.runtime import TransactionalPartition as TransactionalPartition
    from shoal.runtime import Tumbling as Tumbling
    from shoal.runtime import UnknownOperatorError as UnknownOperatorError
    from shoal.runtime import UnreadOutputError as UnreadOutputError
    from shoal.runtime import WatermarkGenerator as WatermarkGenerator
    from shoal.runtime import WatermarkStrategy as WatermarkStrategy
    from shoal.runtime import WindowedStream as WindowedStream
    from shoal.runtime import WorkerFailedError as WorkerFailedError
    from shoal.runtime import WorkerLoad as WorkerLoad
    from shoal.runtime import WorkerLostError as WorkerLostError
    from shoal.runtime import clickstream_oracle as clickstream_oracle
    from shoal.runtime import configure_logging as configure_logging
    from shoal.runtime import key_group_of as key_group_of
    from shoal.runtime import key_hash as key_hash
    from shoal.runtime import key_partition as key_partition
    from shoal.runtime import open_job as open_job
    from shoal.runtime import run as run
    from shoal.runtime import run_job as run_job
    from shoal.runtime import serve_metrics as serve_metrics
    from shoal.runtime import start_job as start_job
    from shoal.storage import AggregatingStateSpec as AggregatingStateSpec
    from shoal.storage import ListStateSpec as ListStateSpec
    from shoal.storage import MapStateSpec as MapStateSpec
    from shoal.storage import ReducingStateSpec as ReducingStateSpec
    from shoal.storage import StateSpec as StateSpec
    from shoal.storage import StateTtl as StateTtl
    from shoal.storage import UnknownStateError as UnknownStateError
    from shoal.storage import ValueStateSpec as ValueStateSpec

__version__ = "0.1.0"

# public name -> the layer that defines it
_HOME: dict[str, str] = {
    "Flow": "shoal.runtime",
    "Stream": "shoal.runtime",
    "KeyedStream": "shoal.runtime",
    "ConnectedStreams": "shoal.runtime",
    "ConnectedKeyedStream": "shoal.runtime",
    "ProcessContext": "shoal.runtime",
    "OutputTag": "shoal.runtime",
    "run": "shoal.runtime",
    "run_job": "shoal.runtime",
    "start_job": "shoal.runtime",
    "open_job": "shoal.runtime",
    "JobStatistics": "shoal.runtime",
    "WorkerLoad": "shoal.runtime",
    "CompletedCheckpoint": "shoal.runtime",
    "PushSource": "shoal.runtime",
    "JobStoppedError": "shoal.runtime",
    "InputClosedError": "shoal.runtime",
    "UnknownOperatorError": "shoal.runtime",
    "UnknownStateError": "shoal.storage",
    "Job": "shoal.runtime",
    "JobResult": "shoal.runtime",
    "ResumedFrom": "shoal.runtime",
    "CheckpointStatistics": "shoal.runtime",
    "FAULT_POINTS": "shoal.runtime",
    "Fault": "shoal.runtime",
    "InjectedFault": "shoal.runtime",
    "Progress": "shoal.runtime",
    "AutoRebalance": "shoal.runtime",
    "BalanceLoad": "shoal.runtime",
    "PlacementPolicy": "shoal.runtime",
    "RebalanceRecord": "shoal.runtime",
    "KeyGroupLoad": "shoal.runtime",
    "HotKey": "shoal.runtime",
    "Scenario": "shoal.runtime",
    "Check": "shoal.runtime",
    "Source": "shoal.runtime",
    "SplitReader": "shoal.runtime",
    "SourceBatch": "shoal.runtime",
    "SourceContext": "shoal.runtime",
    "SourceError": "shoal.runtime",
    "IterableSource": "shoal.runtime",
    "AsyncIterableSource": "shoal.runtime",
    "JsonlSource": "shoal.runtime",
    "ClickstreamSource": "shoal.runtime",
    "clickstream_oracle": "shoal.runtime",
    "Sink": "shoal.runtime",
    "SinkPartition": "shoal.runtime",
    "CollectingSink": "shoal.runtime",
    "CallbackSink": "shoal.runtime",
    "JsonlSink": "shoal.runtime",
    "TransactionalJsonlSink": "shoal.runtime",
    "TransactionalPartition": "shoal.runtime",
    "SinkRecovery": "shoal.runtime",
    "CountingSink": "shoal.runtime",
    "DeadLetter": "shoal.runtime",
    "DeadLetterSink": "shoal.runtime",
    "DEFAULT_KEY_GROUPS": "shoal.runtime",
    "key_hash": "shoal.runtime",
    "key_group_of": "shoal.runtime",
    "key_partition": "shoal.runtime",
    "configure_logging": "shoal.runtime",
    "JobCollector": "shoal.runtime",
    "serve_metrics": "shoal.runtime",
    "JobError": "shoal.runtime",
    "StateDirectoryInUseError": "shoal.runtime",
    "WorkerFailedError": "shoal.runtime",
    "WorkerLostError": "shoal.runtime",
    "ScenarioError": "shoal.runtime",
    "WindowedStream": "shoal.runtime",
    "BoundedOutOfOrderness": "shoal.runtime",
    "Monotonous": "shoal.runtime",
    "WatermarkStrategy": "shoal.runtime",
    "WatermarkGenerator": "shoal.runtime",
    "Timers": "shoal.runtime",
    "Tumbling": "shoal.runtime",
    "Sliding": "shoal.runtime",
    "Session": "shoal.runtime",
    "Clock": "shoal.runtime",
    "SystemClock": "shoal.runtime",
    "ManualClock": "shoal.runtime",
    "LateRecordError": "shoal.runtime",
    "UnreadOutputError": "shoal.runtime",
    "StateSpec": "shoal.storage",
    "StateTtl": "shoal.storage",
    "ValueStateSpec": "shoal.storage",
    "ListStateSpec": "shoal.storage",
    "MapStateSpec": "shoal.storage",
    "ReducingStateSpec": "shoal.storage",
    "AggregatingStateSpec": "shoal.storage",
}

__all__ = (
    "Flow",
    "Stream",
    "KeyedStream",
    "ConnectedStreams",
    "ConnectedKeyedStream",
    "ProcessContext",
    "OutputTag",
    "run",
    "run_job",
    "start_job",
    "open_job",
    "JobStatistics",
    "WorkerLoad",
    "CompletedCheckpoint",
    "PushSource",
    "JobStoppedError",
    "InputClosedError",
    "UnknownOperatorError",
    "UnknownStateError",
    "Job",
    "JobResult",
    "ResumedFrom",
    "CheckpointStatistics",
    "FAULT_POINTS",
    "Fault",
    "InjectedFault",
    "Progress",
    "AutoRebalance",
    "BalanceLoad",
    "PlacementPolicy",
    "RebalanceRecord",
    "KeyGroupLoad",
    "HotKey",
    "Scenario",
    "Check",
    "Source",
    "SplitReader",
    "SourceBatch",
    "SourceContext",
    "SourceError",
    "IterableSource",
    "AsyncIterableSource",
    "JsonlSource",
    "ClickstreamSource",
    "clickstream_oracle",
    "Sink",
    "SinkPartition",
    "CollectingSink",
    "CallbackSink",
    "JsonlSink",
    "TransactionalJsonlSink",
    "TransactionalPartition",
    "SinkRecovery",
    "CountingSink",
    "DeadLetter",
    "DeadLetterSink",
    "DEFAULT_KEY_GROUPS",
    "key_hash",
    "key_group_of",
    "key_partition",
    "configure_logging",
    "JobCollector",
    "serve_metrics",
    "JobError",
    "StateDirectoryInUseError",
    "WorkerFailedError",
    "WorkerLostError",
    "ScenarioError",
    "WindowedStream",
    "BoundedOutOfOrderness",
    "Monotonous",
    "WatermarkStrategy",
    "WatermarkGenerator",
    "Timers",
    "Tumbling",
    "Sliding",
    "Session",
    "Clock",
    "SystemClock",
    "ManualClock",
    "LateRecordError",
    "UnreadOutputError",
    "StateSpec",
    "StateTtl",
    "ValueStateSpec",
    "ListStateSpec",
    "MapStateSpec",
    "ReducingStateSpec",
    "AggregatingStateSpec",
)


def __getattr__(name: str) -> _typing.Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
