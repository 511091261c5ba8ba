"""shoal.runtime: the streaming engine built from the actor kernel and the state store.

The dataflow API (:class:`Flow`), sources and sinks, key groups, key-group actors, the job
driver (:func:`run_job`), scenarios and the command line.
"""

from __future__ import annotations

from ._checkpoints import CheckpointStatistics as CheckpointStatistics
from ._checkpoints import CompletedCheckpoint as CompletedCheckpoint
from ._clickstream import ClickstreamSource as ClickstreamSource
from ._clickstream import clickstream_oracle as clickstream_oracle
from ._dataflow import ConnectedKeyedStream as ConnectedKeyedStream
from ._dataflow import ConnectedStreams as ConnectedStreams
from ._dataflow import Flow as Flow
from ._dataflow import KeyedStream as KeyedStream
from ._dataflow import Stream as Stream
from ._dataflow import WindowedStream as WindowedStream
from ._exceptions import InputClosedError as InputClosedError
from ._exceptions import JobError as JobError
from ._exceptions import JobStoppedError as JobStoppedError
from ._exceptions import LateRecordError as LateRecordError
from ._exceptions import ScenarioError as ScenarioError
from ._exceptions import StateDirectoryInUseError as StateDirectoryInUseError
from ._exceptions import UnknownOperatorError as UnknownOperatorError
from ._exceptions import UnreadOutputError as UnreadOutputError
from ._exceptions import WorkerFailedError as WorkerFailedError
from ._exceptions import WorkerLostError as WorkerLostError
from ._faults import FAULT_POINTS as FAULT_POINTS
from ._faults import Fault as Fault
from ._faults import InjectedFault as InjectedFault
from ._handle import Job as Job
from ._handle import open_job as open_job
from ._handle import start_job as start_job
from ._job import JobResult as JobResult
from ._job import Progress as Progress
from ._job import run_job as run_job
from ._jsonl import JsonlSource as JsonlSource
from ._keys import DEFAULT_KEY_GROUPS as DEFAULT_KEY_GROUPS
from ._keys import key_group_of as key_group_of
from ._keys import key_hash as key_hash
from ._keys import key_partition as key_partition
from ._load import HotKey as HotKey
from ._load import KeyGroupLoad as KeyGroupLoad
from ._logging import configure_logging as configure_logging
from ._metrics import JobCollector as JobCollector
from ._metrics import serve_metrics as serve_metrics
from ._operators import ProcessContext as ProcessContext
from ._outputs import OutputTag as OutputTag
from ._policies import AutoRebalance as AutoRebalance
from ._policies import BalanceLoad as BalanceLoad
from ._policies import PlacementPolicy as PlacementPolicy
from ._policies import RebalanceRecord as RebalanceRecord
from ._push_source import PushSource as PushSource
from ._result import ResumedFrom as ResumedFrom
from ._run import run as run
from ._scenario import Check as Check
from ._scenario import Scenario as Scenario
from ._sinks import CallbackSink as CallbackSink
from ._sinks import CollectingSink as CollectingSink
from ._sinks import CountingSink as CountingSink
from ._sinks import DeadLetter as DeadLetter
from ._sinks import DeadLetterSink as DeadLetterSink
from ._sinks import JsonlSink as JsonlSink
from ._sinks import Sink as Sink
from ._sinks import SinkPartition as SinkPartition
from ._sources import AsyncIterableSource as AsyncIterableSource
from ._sources import IterableSource as IterableSource
from ._sources import Source as Source
from ._sources import SourceBatch as SourceBatch
from ._sources import SourceContext as SourceContext
from ._sources import SourceError as SourceError
from ._sources import SplitReader as SplitReader
from ._statistics import JobStatistics as JobStatistics
from ._statistics import WorkerLoad as WorkerLoad
from ._time import Clock as Clock
from ._time import ManualClock as ManualClock
from ._time import SystemClock as SystemClock
from ._timers import Timers as Timers
from ._txn_sink import SinkRecovery as SinkRecovery
from ._txn_sink import TransactionalJsonlSink as TransactionalJsonlSink
from ._txn_sink import TransactionalPartition as TransactionalPartition
from ._watermarks import BoundedOutOfOrderness as BoundedOutOfOrderness
from ._watermarks import Monotonous as Monotonous
from ._watermarks import WatermarkGenerator as WatermarkGenerator
from ._watermarks import WatermarkStrategy as WatermarkStrategy
from ._windows import Session as Session
from ._windows import Sliding as Sliding
from ._windows import Tumbling as Tumbling

__all__ = (
    # dataflow
    "Flow",
    "Stream",
    "KeyedStream",
    "ConnectedStreams",
    "ConnectedKeyedStream",
    "WindowedStream",
    "ProcessContext",
    "OutputTag",
    # event time, timers and windows
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
    # running
    "run",
    "run_job",
    "open_job",
    "start_job",
    "Job",
    "JobStatistics",
    "WorkerLoad",
    "CompletedCheckpoint",
    "JobResult",
    "ResumedFrom",
    "CheckpointStatistics",
    "FAULT_POINTS",
    "Fault",
    "InjectedFault",
    "Progress",
    # placement and load
    "PlacementPolicy",
    "BalanceLoad",
    "AutoRebalance",
    "RebalanceRecord",
    "KeyGroupLoad",
    "HotKey",
    # scenarios
    "Scenario",
    "Check",
    # sources
    "Source",
    "SplitReader",
    "SourceBatch",
    "SourceContext",
    "SourceError",
    "IterableSource",
    "AsyncIterableSource",
    "PushSource",
    "JsonlSource",
    "ClickstreamSource",
    "clickstream_oracle",
    # sinks
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
    # key groups
    "DEFAULT_KEY_GROUPS",
    "key_hash",
    "key_group_of",
    "key_partition",
    # operations
    "configure_logging",
    "JobCollector",
    "serve_metrics",
    # errors
    "JobError",
    "JobStoppedError",
    "InputClosedError",
    "UnknownOperatorError",
    "LateRecordError",
    "UnreadOutputError",
    "StateDirectoryInUseError",
    "WorkerFailedError",
    "WorkerLostError",
    "ScenarioError",
)
