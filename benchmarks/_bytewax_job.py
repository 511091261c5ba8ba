"""The Bytewax side of ``benchmarks/bytewax_compare.py``: one Bytewax process of one run.

Runs in Bytewax's own virtual environment (which has bytewax and numpy, not shoal), started by
the comparison script with a JSON configuration as its only argument; writes its results as
JSON to the configuration's ``result_path``. Not part of shoal and never imported by it or by
its tests.

The dataflow is the keyed running count of ``benchmarks/keyed_count.py`` written the way a
Bytewax user would: a ``FixedPartitionedSource`` with one partition per generator split
(resumable: its snapshot is the next global index), ``key_on`` the user, then one of

* ``stateful_map``: a mapper that adds one to the key's state and emits the new count per
  event (what a Bytewax user writes for a running count, and the counterpart of both shoal's
  ``count()`` and a shoal ``process`` function holding a ValueState);
* ``stateful_batch``: a ``StatefulBatchLogic`` that takes a key's whole batch of values at once
  and emits the running counts for it (Bytewax's lowest-level stateful operator, the closest it
  has to shoal's columnar ``count()``);
* ``count_final``: Bytewax's built-in count, which emits each key's count only at the end of
  the input (less output than the others: a reference, not the same job),

into a sink that counts what it receives and keeps each key's last count (``dict.update`` of
the batch, so the comparison script can check every key's final count against the oracle).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterable
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import bytewax.operators as op

# Run as a script, so its folder is on sys.path: the shared generator imports as a module.
from _clickstream_events import ClickstreamEvents, Event
from bytewax._bytewax import cli_main
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig

# First read by any source partition of this process (the clock starts there, as shoal's).
_FIRST_READ: list[float] = []
_SINKS: list[_CountingPartition] = []


class _ClickPartition(StatefulSourcePartition[Event, int]):
    def __init__(self, events: ClickstreamEvents, pos: int, end: int, batch: int) -> None:
        self._events = events
        self._pos = pos
        self._end = end
        self._batch = batch
        self._cached_k = -1
        self._cached: tuple[list[int], list[str]] = ([], [])

    def next_batch(self) -> list[Event]:
        if not _FIRST_READ:
            _FIRST_READ.append(time.monotonic())
        pos = self._pos
        if pos >= self._end:
            raise StopIteration
        stop = min(pos + self._batch, self._end)
        chunk = self._events.chunk
        values: list[Event] = []
        p = pos
        while p < stop:
            k = p // chunk
            if k != self._cached_k:
                self._cached = self._events.chunk_columns(k)
                self._cached_k = k
            users, pages = self._cached
            base = k * chunk
            a, b = p - base, min(stop, base + chunk) - base
            ts0 = 1_700_000_000_000 + p
            values.extend(zip(users[a:b], pages[a:b], range(ts0, ts0 + (b - a)), strict=False))
            p = base + b
        self._pos = stop
        return values

    def snapshot(self) -> int:
        return self._pos


class _ClickSource(FixedPartitionedSource[Event, int]):
    def __init__(self, events: ClickstreamEvents, splits: int, batch: int) -> None:
        self._events = events
        self._ranges = events.split_ranges(splits)
        self._batch = batch

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(len(self._ranges))]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ClickPartition:
        start, end = self._ranges[int(for_part)]
        pos = start if resume_state is None else resume_state
        return _ClickPartition(self._events, pos, end, self._batch)


class _CountingPartition(StatelessSinkPartition[tuple[str, int]]):
    def __init__(self) -> None:
        self.records = 0
        self.last: dict[str, int] = {}
        _SINKS.append(self)

    def write_batch(self, items: list[tuple[str, int]]) -> None:
        self.records += len(items)
        self.last.update(items)


class _CountingSink(DynamicSink[tuple[str, int]]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition()


def _running_count(state: int | None, _click: Event) -> tuple[int, int]:
    n = (state or 0) + 1
    return n, n


class _BatchCount(op.StatefulBatchLogic[Event, int, int]):
    def __init__(self, resume: int | None) -> None:
        self.n = resume or 0

    def on_batch(self, values: list[Event]) -> tuple[Iterable[int], bool]:
        n = self.n
        self.n = n + len(values)
        return range(n + 1, self.n + 1), op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> int:
        return self.n


def _user(click: Event) -> str:
    return str(click[0])


def build(cfg: dict[str, Any]) -> Dataflow:
    """The dataflow of one run (``cfg["op"]`` is one of the operators in the docstring)."""
    events = ClickstreamEvents(
        events=cfg["events"], users=cfg["keys"], zipf_s=cfg["zipf_s"], seed=cfg["seed"]
    )
    flow = Dataflow("keyed_count")
    clicks = op.input("clicks", flow, _ClickSource(events, cfg["splits"], cfg["batch_size"]))
    if cfg["op"] == "count_final":
        counts = op.count_final("counts", clicks, _user)
    else:
        keyed = op.key_on("user", clicks, _user)
        if cfg["op"] == "stateful_map":
            counts = op.stateful_map("counts", keyed, _running_count)
        elif cfg["op"] == "stateful_batch":
            counts = op.stateful_batch("counts", keyed, _BatchCount)
        else:
            raise ValueError(f"unknown op {cfg['op']!r}")
    op.output("out", counts, _CountingSink())
    return flow


def main(cfg: dict[str, Any]) -> None:
    flow = build(cfg)
    kwargs: dict[str, Any] = {"workers_per_process": 1}
    if cfg["addresses"]:
        kwargs["process_id"] = cfg["process_id"]
        kwargs["addresses"] = cfg["addresses"]
    if cfg["snapshot_interval"] is None:
        # What `python -m bytewax.run` does without recovery: 10 s epochs.
        kwargs["epoch_interval"] = timedelta(seconds=10)
    else:
        # With recovery, `bytewax.run` makes the epoch the snapshot interval.
        kwargs["epoch_interval"] = timedelta(seconds=cfg["snapshot_interval"])
        kwargs["recovery_config"] = RecoveryConfig(Path(cfg["recovery_dir"]), timedelta(0))
    started = time.monotonic()
    cli_main(flow, **kwargs)
    ended = time.monotonic()
    last: dict[str, int] = {}
    for sink in _SINKS:
        overlap = last.keys() & sink.last.keys()
        if overlap:
            raise AssertionError(f"keys counted by two workers: {sorted(overlap)[:5]}")
        last.update(sink.last)
    Path(cfg["result_path"]).write_text(
        json.dumps(
            {
                "process_id": cfg["process_id"],
                "started": started,
                "first_read": _FIRST_READ[0] if _FIRST_READ else ended,
                "ended": ended,
                "records_out": sum(sink.records for sink in _SINKS),
                "final": last,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "bytewax": metadata.version("bytewax"),
                "numpy": metadata.version("numpy"),
            }
        )
    )


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
