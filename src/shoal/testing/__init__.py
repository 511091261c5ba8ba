"""shoal.testing: test stateful stream logic deterministically, with no broker and no waiting.

* :class:`VirtualClock`: processing time that moves only when told, or (installed in an asyncio
  loop with ``autojump=True``) jumps to the next deadline whenever every task is blocked;
  :func:`run_virtual` runs a coroutine function in a fresh loop with one installed.
* :class:`KeyedHarness`: one keyed operator (a process function, a window, a reduce ...) on the
  real runner, store and timers: push records, move the watermark and the clock, read and set
  state, list timers, snapshot and restore, repartition into workers.
* :func:`assert_matches_reference`: per-key results against a reference function, with the
  first differing keys in the assertion message.
* :func:`open_test_job`: a whole job in this loop (workers in the loop, a temporary state
  directory, checkpoints on, virtual time on asyncio), with the output so far
  (``job.output``) and faults injected while it runs (``crash_key_group``, ``kill_worker``,
  ``fail_next_checkpoint``, ``corrupt_next_checkpoint``, ``migrate``).
* :class:`ScriptedSource`: records and in-band markers (:class:`Pause`, :class:`CrashHere`,
  :class:`EndOfStream`) in one script per split.
* ``shoal.testing.strategies``: hypothesis strategies for rescale and fault schedules (needs
  ``hypothesis``, in the ``test`` extra).

The pytest plugin (``shoal.pytest_plugin``, registered by entry point) adds the fixtures
``virtual_clock``, ``keyed_harness``, ``shoal_state_dir`` and ``shoal_test_job``. See
docs/guides/testing.md.
"""

from __future__ import annotations

from shoal.runtime._exceptions import HarnessError as HarnessError
from shoal.runtime._exceptions import VirtualClockError as VirtualClockError
from shoal.runtime._harness import Emitted as Emitted
from shoal.runtime._harness import KeyedHarness as KeyedHarness
from shoal.runtime._harness import Timer as Timer
from shoal.runtime._oracle import KeyDifference as KeyDifference
from shoal.runtime._oracle import assert_matches_reference as assert_matches_reference
from shoal.runtime._oracle import per_key_differences as per_key_differences
from shoal.runtime._scripted_source import CrashHere as CrashHere
from shoal.runtime._scripted_source import EndOfStream as EndOfStream
from shoal.runtime._scripted_source import Pause as Pause
from shoal.runtime._scripted_source import ScriptedSource as ScriptedSource
from shoal.runtime._test_job import CorruptedCheckpoint as CorruptedCheckpoint
from shoal.runtime._test_job import MoveKeyGroup as MoveKeyGroup
from shoal.runtime._test_job import Recovery as Recovery
from shoal.runtime._test_job import TestJob as TestJob
from shoal.runtime._test_job import open_test_job as open_test_job
from shoal.runtime._virtual_clock import VirtualClock as VirtualClock
from shoal.runtime._virtual_clock import run_virtual as run_virtual

__all__ = (
    "VirtualClock",
    "run_virtual",
    "KeyedHarness",
    "Emitted",
    "Timer",
    "open_test_job",
    "TestJob",
    "Recovery",
    "CorruptedCheckpoint",
    "MoveKeyGroup",
    "ScriptedSource",
    "Pause",
    "CrashHere",
    "EndOfStream",
    "assert_matches_reference",
    "per_key_differences",
    "KeyDifference",
    "VirtualClockError",
    "HarnessError",
)
