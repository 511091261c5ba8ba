"""The window runner's batch path (a batch none of whose windows fired is added whole; the
count fold tallied per (window, key)) against its record-by-record path and a brute-force
oracle: random out-of-order batches, random watermark steps, allowed lateness, flushes and
restarts of the runner from its store (the firing index is rebuilt from the windows stored)."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.runtime._operators import DeadLetters, KeyedRunner
from shoal.runtime._plan import compile_plan
from shoal.runtime._time import ManualClock
from shoal.runtime._timers import KeyedTime
from shoal.runtime._windows import WINDOWS_STATE
from shoal.storage import KeyGroupStore, LmdbBackend, MemoryBackend, StateBackend

from shoal import CollectingSink, Flow, IterableSource, Sliding, Tumbling

ASSIGNERS = {
    "tumbling": (10, 10),
    "sliding": (10, 5),  # the slide divides the size: the count's columns
    "sliding_odd": (10, 4),  # it does not: every fold record by record within the batch
}
FOLDS = ("count", "aggregate", "reduce", "process")
Record = tuple[Any, int, int]  # (key, timestamp, value)


def window_op(kind: str, fold: str, lateness: int, *, columnar: bool) -> Any:
    size, slide = ASSIGNERS[kind]
    flow = Flow("f")
    keyed = flow.source(IterableSource([1]), timestamps=lambda r: r[1]).key_by(lambda r: r[0])
    windowed = keyed.window(
        Tumbling(size) if size == slide else Sliding(size, slide), allowed_lateness=lateness
    )
    if fold == "count":
        stream = windowed.count(name="w")
    elif fold == "aggregate":
        stream = windowed.aggregate(_zero, _add_value, name="w")
    elif fold == "reduce":
        stream = windowed.reduce(_larger, name="w")
    else:
        stream = windowed.process(_values, name="w")
    stream.sink(CollectingSink())
    op = compile_plan(flow).stages[1].operator
    return dataclasses.replace(op, window=dataclasses.replace(op.window, columnar=columnar))


def _zero() -> int:
    return 0


def _add_value(acc: int, record: Record) -> int:
    if record[2] == 13:
        raise ValueError("13 is unlucky")
    return acc + record[2]


def _larger(a: Record, b: Record) -> Record:
    return b if (b[2], b[1]) > (a[2], a[1]) else a


def _values(key: Any, window: tuple[int, int], records: list[Any]) -> list[int]:
    return sorted(record[2] for record in records)


class Runner:
    """A window runner on a store of its own, restartable from that store."""

    def __init__(self, backend: StateBackend, name: str, op: Any) -> None:
        self.backend = backend
        self.name = name
        self.op = op
        self.watermark = -math.inf
        self.store: KeyGroupStore = backend.open_store(name, 0, op.states)
        self.dead = DeadLetters(0)
        self.out: list[tuple[Any, int, Any]] = []
        self._start()

    def _start(self) -> None:
        self.time = KeyedTime.for_operator(("c",), ManualClock(), self.store, self.op.states)
        if self.watermark > -math.inf:  # a successor takes over the watermark (a migration)
            self.time.combiner.update("c", self.watermark)
        self.runner = KeyedRunner(self.op, self.store, 0, self.time)

    def push(self, batch: list[Record], offset: int) -> None:
        offsets = list(range(offset, offset + len(batch)))
        keys = [record[0] for record in batch]
        stamps = [record[1] for record in batch]
        values, out_offsets, out_stamps = self.runner.run(
            keys, batch, offsets, "s", self.dead, stamps
        )
        assert out_stamps is not None
        self.out.extend(zip(values, out_offsets, out_stamps, strict=True))

    def advance(self, watermark: float) -> None:
        self.watermark = watermark
        self.time.combiner.update("c", watermark)
        values, offsets, stamps = self.runner.fire_timers(watermark, "s", self.dead)
        self.out.extend(zip(values, offsets, stamps, strict=True))

    def restart(self) -> None:
        self.store.flush()
        self.store.close()
        self.store = self.backend.open_store(self.name, 0, self.op.states)
        self._start()


def oracle(
    steps: list[tuple[list[Record], float]], kind: str, fold: str, lateness: int
) -> tuple[dict[tuple[Any, int, int], Any], set[int]]:
    """Each window's final value and the offsets of the late records (and of the records the
    fold refuses), from the input and the watermark in force when each batch arrived."""
    size, slide = ASSIGNERS[kind]
    members: dict[tuple[Any, int, int], list[Record]] = defaultdict(list)
    late: set[int] = set()
    watermark = -math.inf
    offset = 0
    for batch, next_mark in steps:
        for record in batch:
            key, ts, value = record
            starts = list(range(ts - ts % slide, ts - size, -slide))
            is_late = min(starts) + size + lateness <= watermark
            if is_late or (fold == "aggregate" and value == 13):  # late, or refused by add
                late.add(offset)
            else:
                for start in starts:
                    members[(key, start, start + size)].append(record)
            offset += 1
        watermark = max(watermark, next_mark)
    final: dict[tuple[Any, int, int], Any] = {}
    for window, records in members.items():
        if fold == "count":
            final[window] = len(records)
        elif fold == "aggregate":
            final[window] = sum(record[2] for record in records)
        elif fold == "reduce":
            final[window] = max(records, key=lambda r: (r[2], r[1]))
        else:
            final[window] = sorted(record[2] for record in records)
    return final, late


def _plain(value: Any) -> Any:
    """A reduce's accumulator (a record) comes back from the store as a list (CBOR)."""
    return list(value) if type(value) is tuple else value


RECORDS = st.tuples(
    st.one_of(st.integers(0, 4), st.sampled_from(["a", "b"])),
    st.integers(0, 80),
    st.integers(0, 20),
)
# A batch in time order half of the time (as a split's batch of in-order input arrives): the
# count then takes a slice of the batch per window.
BATCHES = st.one_of(
    st.lists(RECORDS, max_size=25),
    st.lists(RECORDS, max_size=25).map(lambda batch: sorted(batch, key=lambda r: r[1])),
)
STEPS = st.lists(
    st.tuples(BATCHES, st.integers(-5, 90), st.booleans()),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    kind=st.sampled_from(sorted(ASSIGNERS)),
    fold=st.sampled_from(FOLDS),
    lateness=st.sampled_from([0, 7]),
    steps=STEPS,
    lmdb=st.booleans(),
)
def test_the_batch_path_equals_the_record_path_and_the_oracle(
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    fold: str,
    lateness: int,
    steps: list[tuple[list[Record], int, bool]],
    lmdb: bool,
) -> None:
    backend: StateBackend = LmdbBackend(tmp_path_factory.mktemp("w")) if lmdb else MemoryBackend()
    runners = [
        Runner(backend, name, window_op(kind, fold, lateness, columnar=columnar))
        for name, columnar in (("batch", True), ("records", False))
    ]
    try:
        offset = 0
        for batch, mark, restart in steps:
            for runner in runners:
                runner.push(batch, offset)
                if mark > runner.watermark:
                    runner.advance(mark)
                if restart:
                    runner.restart()
            offset += len(batch)
        for runner in runners:
            runner.advance(math.inf)
        batched, records = runners
        assert batched.out == records.out
        letters = [(d.operator, d.error_type, d.offset) for d in batched.dead.take()]
        assert letters == [(d.operator, d.error_type, d.offset) for d in records.dead.take()]
        final, late = oracle([(b, m) for b, m, _r in steps], kind, fold, lateness)
        assert {offset for _op, _type, offset in letters} == late
        last: dict[tuple[Any, int, int], Any] = {}
        for (key, start, end, value), _offset, stamp in batched.out:
            assert stamp == end - 1
            last[(key, start, end)] = _plain(value)
        assert last == {window: _plain(value) for window, value in final.items()}
        for runner in runners:  # every window fired and dropped: no state left
            runner.store.flush()
            assert dict(runner.store.items(WINDOWS_STATE)) == {}
    finally:
        for runner in runners:
            runner.store.close()


def test_a_batch_of_one_window_counts_in_one_pass(tmp_path: Path) -> None:
    """The common case of the benchmark: a batch inside one tumbling window, some keys new,
    one already counting; firing emits each key's count once, stamped with the last instant."""
    runner = Runner(LmdbBackend(tmp_path), "w", window_op("tumbling", "count", 0, columnar=True))
    runner.push([("a", 1, 0), ("b", 2, 0), ("a", 3, 0)], 0)
    runner.push([("a", 4, 0), ("c", 9, 0)], 3)
    runner.restart()
    runner.advance(10)
    assert runner.out == [
        (("a", 0, 10, 3), -1, 9),
        (("b", 0, 10, 1), -1, 9),
        (("c", 0, 10, 1), -1, 9),
    ]
    runner.store.close()


@pytest.mark.parametrize("columnar", [True, False])
def test_a_window_kept_after_firing_fires_again_after_a_restore_lost_the_watermark(
    tmp_path: Path, columnar: bool
) -> None:
    """After a restore the key group's watermark starts again from -inf; a record for a window
    that fired before (kept for allowed lateness) still fires it again at once with every
    record, never as a new window holding the late record alone."""
    op = window_op("tumbling", "count", 5, columnar=columnar)
    runner = Runner(LmdbBackend(tmp_path), "w", op)
    runner.push([("a", 1, 0), ("a", 2, 0)], 0)
    runner.advance(10)
    runner.watermark = -math.inf  # a restore, not a migration: the watermark is not carried
    runner.restart()
    runner.push([("a", 3, 0)], 2)
    runner.advance(20)  # past 10 + 5: the window is dropped, nothing fires again
    assert [value for value, _offset, _stamp in runner.out] == [("a", 0, 10, 2), ("a", 0, 10, 3)]
    runner.store.flush()
    assert dict(runner.store.items(WINDOWS_STATE)) == {}
    runner.store.close()


def _small(acc: int) -> int:
    if acc > 10:
        raise ValueError(f"{acc} is too big")
    return acc


def test_a_raising_result_sends_the_windows_accumulator_to_the_dead_letters(
    tmp_path: Path,
) -> None:
    flow = Flow("f")
    keyed = flow.source(IterableSource([1]), timestamps=lambda r: r[1]).key_by(lambda r: r[0])
    keyed.window(Tumbling(10)).aggregate(_zero, _add_value, _small, name="w").sink(CollectingSink())
    runner = Runner(LmdbBackend(tmp_path), "w", compile_plan(flow).stages[1].operator)
    runner.push([("a", 1, 4), ("b", 2, 20), ("a", 3, 5)], 0)
    runner.advance(10)
    assert runner.out == [(("a", 0, 10, 9), -1, 9)]
    (letter,) = runner.dead.take()
    assert (letter.operator, letter.error, letter.key, letter.record) == (
        "w",
        "20 is too big",
        "b",
        20,
    )
    runner.store.close()
