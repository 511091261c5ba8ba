"""The transactional JSON-lines sink: staging, two-phase commit, recovery at every crash point.

A simulated crash (:func:`crash`) is what ``kill -9`` leaves behind: bytes already written
stay (the page cache survives the process), the kernel closes the open files, and nothing else
runs (no ``aclose``, no flush). A crash *inside* a commit or a recover is simulated by making
the k-th rename or unlink of the sink raise (:func:`interrupted_after`). One test runs a real
process and SIGKILLs it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import txn_sink_child as child
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.runtime import _txn_sink
from shoal.runtime._sinks import Sink, SinkPartition
from shoal.runtime._txn_sink import (
    SinkRecovery,
    TransactionalJsonlSink,
    TransactionalPartition,
    file_name,
)

# How many random schedules the property test draws (per event loop); raise it for a soak run.
SCHEDULES = int(os.environ.get("SHOAL_TXN_SINK_SCHEDULES", "40"))


class SimulatedCrash(Exception):
    """Stands for the process dying at this instant."""


def crash(*partitions: TransactionalPartition) -> None:
    """Leave the partitions as ``kill -9`` would: their files closed by the kernel, no aclose."""
    for partition in partitions:
        for f in partition._open.values():
            f.close()  # unbuffered files: closing writes nothing more, as the kernel's close
        partition._open.clear()


@contextmanager
def interrupted_after(k: int) -> Iterator[list[int]]:
    """Make the sink's ``k``-th rename-or-unlink (0-based) raise :class:`SimulatedCrash`."""
    done = [0]
    real_replace, real_unlink = _txn_sink._replace, _txn_sink._unlink

    def wrap(fn: Any) -> Any:
        def op(*args: Any) -> None:
            if done[0] == k:
                raise SimulatedCrash(f"crash before file operation {k}")
            done[0] += 1
            fn(*args)

        return op

    _txn_sink._replace, _txn_sink._unlink = wrap(real_replace), wrap(real_unlink)
    try:
        yield done
    finally:
        _txn_sink._replace, _txn_sink._unlink = real_replace, real_unlink


def staged(sink: TransactionalJsonlSink) -> list[str]:
    return sorted(os.listdir(sink.staging))


def published(sink: TransactionalJsonlSink) -> list[str]:
    return [p.name for p in sink.published_files()]


# ---------------------------------------------------------------------------------------------
# the two phases


@pytest.mark.anyio
async def test_write_pre_commit_commit_round_trip_publishes_one_file_per_epoch(
    tmp_path: Path,
) -> None:
    sink = TransactionalJsonlSink(tmp_path / "out")
    assert isinstance(sink, Sink)
    assert sink.transactional is True
    assert sink.gather is False
    part = sink.open_partition(0, 2)
    assert isinstance(part, SinkPartition)
    await part.write_epoch(1, [{"a": 1, "t": (1, "x")}, "été"])
    await part.write_epoch(1, [3])
    assert sink.read() == []
    assert staged(sink) == ["epoch-0000000001-p0000of0002.jsonl"]
    await part.pre_commit(1)
    assert sink.read() == []  # durable, not visible
    await part.commit(1)
    assert sink.read() == [{"a": 1, "t": [1, "x"]}, "été", 3]
    assert published(sink) == ["epoch-0000000001-p0000of0002.jsonl"]
    assert staged(sink) == []
    text = (tmp_path / "out" / "epoch-0000000001-p0000of0002.jsonl").read_text("utf-8")
    assert text == '{"a":1,"t":[1,"x"]}\n"été"\n3\n'  # JsonlSink's encoding
    await part.aclose()


@pytest.mark.anyio
async def test_interleaved_epochs_stage_into_their_own_files_in_arrival_order(
    tmp_path: Path,
) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    part = sink.open_partition(0, 1)
    await part.write_epoch(4, [1])
    await part.write_epoch(5, [10])  # a key group already passed barrier 4
    await part.write_epoch(4, [2])
    await part.write_epoch(5, [11])
    assert part.open_epochs == [4, 5]
    await part.pre_commit(4)
    assert part.open_epochs == [5]
    assert part.pending_epochs == [4]
    await part.write_epoch(5, [12])
    await part.commit(4)
    assert sink.read() == [1, 2]
    await part.pre_commit(5)
    await part.commit(5)
    assert sink.read() == [1, 2, 10, 11, 12]
    await part.aclose()


@pytest.mark.anyio
async def test_writes_and_commits_meanwhile_a_pre_commit_waits_on_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pre_commit(1) is held inside its thread; meanwhile the loop goes on: epoch 2 is written,
    # epoch 1 is refused, and commit(1) and a second pre_commit(1) wait for the first to end.
    entered, release = threading.Event(), threading.Event()
    real = _txn_sink._make_durable

    def held(files: list[Any], staging: Path) -> None:
        entered.set()
        release.wait()
        real(files, staging)

    monkeypatch.setattr(_txn_sink, "_make_durable", held)
    sink = TransactionalJsonlSink(tmp_path)
    part = sink.open_partition(0, 1)
    await part.write_epoch(1, ["a"])
    order: list[str] = []

    async def run(name: str, call: Any) -> None:
        await call
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "pre_commit", part.pre_commit(1))
        await anyio.to_thread.run_sync(entered.wait)
        with pytest.raises(RuntimeError, match=r"^TransactionalJsonlSink.write_epoch: epoch 1 "):
            await part.write_epoch(1, ["late"])
        await part.write_epoch(2, ["b"])
        tg.start_soon(run, "commit", part.commit(1))
        tg.start_soon(run, "pre_commit again", part.pre_commit(1))
        await anyio.lowlevel.checkpoint()
        assert order == []
        release.set()
    assert order[0] == "pre_commit"
    assert sorted(order) == ["commit", "pre_commit", "pre_commit again"]
    assert sink.read() == ["a"]
    assert part.open_epochs == [2]
    await part.aclose()


@pytest.mark.anyio
async def test_an_empty_epoch_makes_no_file(tmp_path: Path) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    part = sink.open_partition(0, 1)
    await part.write_epoch(1, [])
    assert staged(sink) == []
    await part.pre_commit(1)
    await part.commit(1)
    assert published(sink) == []
    assert sink.read() == []
    await part.aclose()


@pytest.mark.anyio
async def test_one_commit_publishes_every_pre_committed_epoch_up_to_it_in_epoch_order(
    tmp_path: Path,
) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    part = sink.open_partition(0, 1)
    for epoch in (1, 2, 3):
        await part.write_epoch(epoch, [epoch])
        await part.pre_commit(epoch)  # checkpoints 1 and 2 failed after the pre-commit
    await part.commit(3)
    assert sink.read() == [1, 2, 3]
    assert [p.name for p in sink.published_files()] == [file_name(e, 0, 1) for e in (1, 2, 3)]
    await part.aclose()


@pytest.mark.anyio
async def test_commit_is_idempotent_also_after_recover_published_the_epoch(
    tmp_path: Path,
) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    part = sink.open_partition(0, 1)
    await part.write_epoch(1, ["a"])
    await part.pre_commit(1)
    await part.commit(1)
    await part.commit(1)
    await part.commit(0)
    assert sink.read() == ["a"]
    await part.write_epoch(2, ["b"])
    await part.pre_commit(2)
    assert sink.recover(2) == SinkRecovery(published=1)  # the driver got there first
    await part.commit(2)  # the file is published: no-op
    assert sink.read() == ["a", "b"]
    assert staged(sink) == []
    assert sink.recover(2) == SinkRecovery()
    await part.aclose()


@pytest.mark.anyio
async def test_a_published_file_that_exists_already_is_kept_and_the_staged_copy_dropped(
    tmp_path: Path,
) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    (tmp_path / file_name(1, 0, 1)).write_text('"first"\n')
    part = sink.open_partition(0, 1)
    await part.write_epoch(1, ["second"])
    await part.pre_commit(1)
    await part.commit(1)
    assert sink.read() == ["first"]
    assert staged(sink) == []
    await part.aclose()


@pytest.mark.anyio
async def test_gather_sink_writes_one_partition_on_the_driver(tmp_path: Path) -> None:
    sink = TransactionalJsonlSink(str(tmp_path / "g"), gather=True)
    assert sink.gather is True
    assert repr(sink) == f"TransactionalJsonlSink({str(tmp_path / 'g')!r}, gather=True)"
    part = sink.open_partition(0, 1)
    await part.write_epoch(1, [{"worker": 0}, {"worker": 1}])  # every worker's output, shipped
    await part.pre_commit(1)
    await part.commit(1)
    assert published(sink) == ["epoch-0000000001-p0000of0001.jsonl"]
    assert sink.read() == [{"worker": 0}, {"worker": 1}]
    await part.aclose()


@pytest.mark.anyio
async def test_names_sort_in_epoch_then_partition_order(tmp_path: Path) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    parts = [sink.open_partition(w, 12) for w in range(12)]
    for epoch in (9, 10):
        for w, part in enumerate(parts):
            await part.write_epoch(epoch, [(epoch, w)])
    for part in parts:
        await part.pre_commit(10)
        await part.commit(10)
        await part.aclose()
    expected = [[e, w] for e in (9, 10) for w in range(12)]
    assert sink.read() == expected
    # a plain listing of names is the same order (p2 before p10, epoch 9 before epoch 10)
    assert sorted(os.listdir(tmp_path)) == [".staging", *published(sink)]


@pytest.mark.anyio
async def test_the_partition_count_may_change_between_runs(tmp_path: Path) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    first = [sink.open_partition(w, 2) for w in range(2)]
    for w, part in enumerate(first):
        await part.write_epoch(1, [f"run1-p{w}"])
        await part.write_epoch(2, [f"lost-p{w}"])
        await part.pre_commit(1)
    crash(*first)  # checkpoint 1 completed; the commit did not happen
    assert sink.recover(1) == SinkRecovery(published=2, discarded=2)
    second = [sink.open_partition(w, 3) for w in range(3)]
    for w, part in enumerate(second):
        await part.write_epoch(2, [f"run2-p{w}"])
        await part.pre_commit(2)
        await part.commit(2)
        await part.aclose()
    assert sink.read() == ["run1-p0", "run1-p1", "run2-p0", "run2-p1", "run2-p2"]


# ---------------------------------------------------------------------------------------------
# refusals


@pytest.mark.anyio
async def test_write_batch_is_refused_because_it_has_no_epoch(tmp_path: Path) -> None:
    part = TransactionalJsonlSink(tmp_path).open_partition(0, 1)
    with pytest.raises(
        TypeError,
        match=r"^TransactionalJsonlSink: write_batch has no epoch; a transactional sink takes "
        r"write_epoch\(epoch, items\), driven by checkpoints \(use JsonlSink for output without "
        r"checkpoints\)$",
    ):
        await part.write_batch([1])
    await part.aclose()


def test_bad_constructor_and_partition_arguments_name_the_mistake(tmp_path: Path) -> None:
    with pytest.raises(
        TypeError,
        match=r"^TransactionalJsonlSink: directory must be a str or os.PathLike; got int$",
    ):
        TransactionalJsonlSink(3)  # type: ignore[arg-type]
    sink = TransactionalJsonlSink(tmp_path)
    with pytest.raises(
        ValueError, match=r"^TransactionalJsonlSink: worker must be in \[0, 2\); got 2$"
    ):
        sink.open_partition(2, 2)
    with pytest.raises(
        TypeError, match=r"^TransactionalJsonlSink: workers must be an int; got str$"
    ):
        sink.open_partition(0, "2")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"^TransactionalJsonlSink: workers must be <= 9999 \(file names hold four digits\); "
        r"got 10000$",
    ):
        sink.open_partition(0, 10_000)
    with pytest.raises(
        TypeError, match=r"^TransactionalJsonlSink.recover: committed must be an int; got str$"
    ):
        sink.recover("3")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"^TransactionalJsonlSink.recover: committed must be in \[0, 9999999999\]; got -1$",
    ):
        sink.recover(-1)


@pytest.mark.anyio
async def test_bad_epochs_and_items_name_the_mistake(tmp_path: Path) -> None:
    part = TransactionalJsonlSink(tmp_path).open_partition(0, 1)
    with pytest.raises(
        TypeError, match=r"^TransactionalJsonlSink.write_epoch: epoch must be an int; got bool$"
    ):
        await part.write_epoch(True, [1])
    with pytest.raises(
        ValueError,
        match=r"^TransactionalJsonlSink.pre_commit: epoch must be in \[0, 9999999999\]; "
        r"got 10000000000$",
    ):
        await part.pre_commit(10**10)
    with pytest.raises(
        TypeError, match=r"^TransactionalJsonlSink.commit: epoch must be an int; got float$"
    ):
        await part.commit(1.0)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"^TransactionalJsonlSink.write_epoch: items must be a list; got tuple$"
    ):
        await part.write_epoch(1, (1, 2))  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^TransactionalJsonlSink: item of type set is not JSON-serializable: "
        r"Object of type set is not JSON serializable$",
    ):
        await part.write_epoch(1, [1, {2}])
    assert part.open_epochs == []  # the batch staged nothing
    await part.aclose()


@pytest.mark.anyio
async def test_protocol_violations_are_refused(tmp_path: Path) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    part = sink.open_partition(0, 1)
    await part.write_epoch(2, [1])
    with pytest.raises(
        RuntimeError,
        match=r"^TransactionalJsonlSink.commit: epoch 2 has staged output that was never "
        r"pre-committed; call pre_commit\(3\) before commit\(3\)$",
    ):
        await part.commit(3)
    await part.pre_commit(3)
    with pytest.raises(
        RuntimeError,
        match=r"^TransactionalJsonlSink.write_epoch: epoch 2 is already pre-committed \(up to "
        r"3\); output of a pre-committed epoch cannot change$",
    ):
        await part.write_epoch(2, [2])
    await part.aclose()
    with pytest.raises(
        RuntimeError, match=r"^TransactionalJsonlSink.write_epoch: the partition is closed$"
    ):
        await part.write_epoch(4, [1])
    with pytest.raises(
        RuntimeError, match=r"^TransactionalJsonlSink.pre_commit: the partition is closed$"
    ):
        await part.pre_commit(4)
    await part.commit(3)  # allowed after aclose: the pre-committed file is closed already
    assert sink.read() == [1]


@pytest.mark.anyio
async def test_aclose_leaves_staged_output_unpublished(tmp_path: Path) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    part = sink.open_partition(0, 1)
    await part.write_epoch(1, ["kept"])
    await part.pre_commit(1)
    await part.write_epoch(2, ["dropped"])
    await part.aclose()
    await part.aclose()
    assert sink.read() == []
    assert staged(sink) == [file_name(1, 0, 1), file_name(2, 0, 1)]
    assert sink.recover(1) == SinkRecovery(published=1, discarded=1)
    assert sink.read() == ["kept"]


@pytest.mark.anyio
async def test_a_failed_fsync_fails_the_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    part = sink.open_partition(0, 1)
    await part.write_epoch(1, ["x"])

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match=r"Input/output error"):
        await part.pre_commit(1)
    monkeypatch.undo()
    with pytest.raises(
        RuntimeError,
        match=r"^TransactionalJsonlSink.commit: partition p0of1 failed earlier \(OSError: "
        r"\[Errno 5\] Input/output error\); recover\(\) the sink and open a new partition$",
    ):
        await part.commit(1)
    await part.aclose()
    assert sink.recover(None) == SinkRecovery(discarded=1)
    assert sink.read() == []


# ---------------------------------------------------------------------------------------------
# recovery after a crash at every point

# Two partitions, three epochs. Partition 0 has output in every epoch, partition 1 in epochs 1
# and 3 (epoch 2 is empty there). Checkpoint 1 completes and is committed; then checkpoints 2
# and 3 are pre-committed together (checkpoint 2 failed after its pre-commit), and checkpoint
# 3's commit publishes two files on partition 0 (a multi-file commit).
OUTPUT = {(1, 0): ["1a", "1b"], (1, 1): ["1c"], (2, 0): ["2a"], (3, 0): ["3a"], (3, 1): ["3b"]}


def expected(committed: int | None) -> list[str]:
    last = committed or 0
    return [item for (e, _w), items in sorted(OUTPUT.items()) if e <= last for item in items]


async def run_until(sink: TransactionalJsonlSink, point: str) -> int | None:
    """Drive the schedule above, stop at ``point``, crash; return the committed epoch."""
    parts = [sink.open_partition(w, 2) for w in range(2)]
    committed: int | None = None
    try:
        for epoch in (1, 2, 3):
            for (e, w), items in OUTPUT.items():
                if e == epoch:
                    await parts[w].write_epoch(e, items[:1])
                    await parts[w].write_epoch(e, items[1:])
            if point == f"staged {epoch}":
                return committed
            if epoch == 2:
                continue  # checkpoint 2 was triggered after epoch 3's writes: see below
            for part in parts:
                await part.pre_commit(epoch)
            if point == f"pre-committed {epoch}":
                return committed
            committed = epoch  # the checkpoint's manifest is written
            if point == f"manifest {epoch}":
                return committed
            for w, part in enumerate(parts):
                await part.commit(epoch)
                if point == f"committed {epoch} p{w}":
                    return committed
        return committed
    finally:
        crash(*parts)


CRASH_POINTS = [
    "staged 1",
    "pre-committed 1",
    "manifest 1",
    "committed 1 p0",
    "committed 1 p1",
    "staged 2",
    "staged 3",
    "pre-committed 3",
    "manifest 3",
    "committed 3 p0",
    "committed 3 p1",
]


@pytest.mark.anyio
@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_recover_after_a_crash_at_each_point_publishes_each_committed_item_once(
    tmp_path: Path, point: str
) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    committed = await run_until(sink, point)
    # a reader sees whole files of committed epochs only (an epoch appears partition by partition)
    for path in sink.published_files():
        e, _workers, w = _txn_sink.parse_name(path.name)  # type: ignore[misc]
        assert e <= (committed or 0)
        assert [json.loads(line) for line in path.read_text().splitlines()] == OUTPUT[(e, w)]
    sink.recover(committed)
    assert sink.read() == expected(committed)
    assert staged(sink) == []
    assert sink.recover(committed) == SinkRecovery()  # idempotent


@pytest.mark.anyio
@pytest.mark.parametrize("k", [0, 1])
async def test_recover_after_a_crash_in_the_middle_of_a_multi_file_commit(
    tmp_path: Path, k: int
) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    committed = await run_until(sink, "manifest 3")
    assert committed == 3
    part = sink.open_partition(0, 2)  # partition 0's files of epochs 2 and 3, staged
    part._durable = {e: sink.staging / file_name(e, 0, 2) for e in (2, 3)}
    with interrupted_after(k), pytest.raises(SimulatedCrash):
        await part.commit(3)
    assert len(published(sink)) == 2 + k  # epoch 1's two files, then k of these two
    crash(part)
    sink.recover(3)
    assert sink.read() == expected(3)


@pytest.mark.anyio
@pytest.mark.parametrize("point", ["staged 3", "manifest 3", "committed 3 p0"])
async def test_recover_interrupted_at_every_step_then_run_again_ends_the_same(
    tmp_path: Path, point: str
) -> None:
    # staged 3: committed 1, epochs 2 and 3 staged (to discard), 1 published
    # manifest 3: epochs 2 and 3 staged, to publish; committed 3 p0: partition 1's epoch 3
    k = 0
    while True:  # crash before the 0th, 1st, ... file operation, until recover needs no more
        sink = TransactionalJsonlSink(tmp_path / f"k{k}")
        committed = await run_until(sink, point)
        with interrupted_after(k) as done:
            try:
                sink.recover(committed)
            except SimulatedCrash:
                finished = False
            else:
                finished = True
                assert done[0] == k
        sink.recover(committed)
        assert sink.read() == expected(committed), (point, k)
        assert staged(sink) == []
        if finished:
            break
        k += 1
    assert k >= 1  # at least one step, each one interrupted once


@pytest.mark.anyio
async def test_recover_from_an_older_checkpoint_retracts_later_published_epochs(
    tmp_path: Path,
) -> None:
    sink = TransactionalJsonlSink(tmp_path)
    await run_until(sink, "committed 3 p1")
    assert sink.read() == expected(3)
    # checkpoint 3's files turned out corrupt: the job restores checkpoint 1 and replays 2, 3
    assert sink.recover(1) == SinkRecovery(retracted=3)
    assert sink.read() == expected(1)
    # a fresh run (no checkpoint) starts from nothing, like JsonlSink truncating its file
    assert sink.recover(None) == SinkRecovery(retracted=2)
    assert sink.read() == []
    (tmp_path / "notes.txt").write_text("not the sink's")
    (tmp_path / ".staging" / "scratch").write_text("not the sink's")
    sink.recover(None)
    assert (tmp_path / "notes.txt").exists()
    assert (tmp_path / ".staging" / "scratch").exists()


# ---------------------------------------------------------------------------------------------
# property: random schedules of writes, checkpoints, commits, crashes and recovers


class Model:
    """What the sink must hold: per (epoch, workers, worker), the items written, in order."""

    def __init__(self) -> None:
        self.files: dict[tuple[int, int, int], list[int]] = {}
        self.committed: int | None = None

    def visible(self, committed: int | None) -> list[int]:
        last = committed or 0
        return [i for key in sorted(self.files) if key[0] <= last for i in self.files[key]]

    def replay_after(self, committed: int | None) -> None:
        last = committed or 0
        self.files = {key: v for key, v in self.files.items() if key[0] <= last}


ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 2), st.integers(0, 1), st.integers(0, 3)),
        st.tuples(st.just("checkpoint"), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("commit_rest"), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("crash"), st.integers(1, 3), st.integers(-1, 6)),
        st.tuples(st.just("crash_in_commit"), st.integers(1, 3), st.integers(0, 3)),
    ),
    max_size=30,
)


@pytest.mark.asyncio
@settings(
    max_examples=SCHEDULES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops)
async def test_random_schedules_with_crashes_publish_exactly_the_committed_epochs(
    schedule: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory(prefix="shoal-txn-") as tmp:
        sink = TransactionalJsonlSink(Path(tmp) / "out")
        model = Model()
        sink.recover(None)
        workers = 2
        parts = [sink.open_partition(w, workers) for w in range(workers)]
        cur = 1  # the epoch the next checkpoint closes
        pending: set[int] = set()  # partitions that have not committed the last checkpoint
        serial = 0

        async def restart(new_workers: int, interrupt: int) -> list[TransactionalPartition]:
            nonlocal cur, workers
            crash(*parts)
            if interrupt >= 0:  # the recovery itself dies once, at its interrupt-th step
                with interrupted_after(interrupt), suppress(SimulatedCrash):
                    sink.recover(model.committed)
            sink.recover(model.committed)
            model.replay_after(model.committed)
            assert sink.read() == model.visible(model.committed)
            assert os.listdir(sink.staging) == []
            workers, cur = new_workers, (model.committed or 0) + 1
            pending.clear()
            return [sink.open_partition(w, workers) for w in range(workers)]

        for op in schedule:
            if op[0] == "write":
                _, w, ahead, n = op
                w %= workers
                batch = list(range(serial, serial + n))
                serial += n
                await parts[w].write_epoch(cur + ahead, batch)
                if batch:
                    model.files.setdefault((cur + ahead, workers, w), []).extend(batch)
            elif op[0] == "checkpoint":
                _, mask, completes = op
                for part in parts:
                    await part.pre_commit(cur)
                if completes:  # the manifest is written; some partitions commit at once
                    model.committed = cur
                    pending = set(range(workers))
                    for w, part in enumerate(parts):
                        if mask >> w & 1:
                            await part.commit(cur)
                            pending.discard(w)
                cur += 1  # a failed checkpoint's epoch is covered by the next one
            elif op[0] == "commit_rest" and model.committed is not None:
                for w in sorted(pending):
                    await parts[w].commit(model.committed)
                pending.clear()
            elif op[0] == "crash":
                parts = await restart(op[1], op[2])
            elif op[0] == "crash_in_commit" and pending:
                w = min(pending)
                with interrupted_after(op[2]), suppress(SimulatedCrash):
                    await parts[w].commit(model.committed)  # type: ignore[arg-type]
                parts = await restart(op[1], -1)
            # at every step a reader sees whole files of committed epochs, nothing else
            for path in sink.published_files():
                key = _txn_sink.parse_name(path.name)
                assert key is not None
                assert key[0] <= (model.committed or 0)
                assert [int(line) for line in path.read_text().splitlines()] == model.files[key]
        # the end: every partition commits the last completed checkpoint
        if model.committed is not None:
            for w in sorted(pending):
                await parts[w].commit(model.committed)
        assert sink.read() == model.visible(model.committed)
        for part in parts:
            await part.aclose()
        sink.recover(model.committed)
        assert sink.read() == model.visible(model.committed)


# ---------------------------------------------------------------------------------------------
# a real process, killed with SIGKILL


def child_output(committed: int | None, workers: int) -> list[Any]:
    last = committed or 0
    return [
        item
        for e in range(1, last + 1)
        for w in range(workers)
        for item in child.items(e, w, workers)
    ]


@pytest.mark.processes
@pytest.mark.parametrize("seed", range(6))
def test_a_process_killed_at_a_random_point_recovers_to_whole_committed_epochs(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    workers, epochs = rng.choice([1, 2, 3]), 6
    steps = epochs * (3 * workers + 1)  # write, pre_commit, commit per partition; a manifest
    kill_after = rng.randrange(steps)
    directory = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, child.__file__, str(directory), str(workers), str(epochs)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line.strip())
            if len(seen) > kill_after:
                proc.kill()  # SIGKILL: lands somewhere after this step
                break
    finally:
        proc.stdout.close()
        proc.wait()
    manifest = child.manifest_path(directory)
    committed = int(manifest.read_text()) if manifest.exists() else None
    sink = TransactionalJsonlSink(directory)
    sink.recover(committed)
    assert sink.read() == child_output(committed, workers), (seen[-1], committed)
    assert os.listdir(sink.staging) == []


@pytest.mark.anyio
async def test_a_pre_commit_cancelled_while_it_waits_closes_the_files_it_took(
    tmp_path: Path,
) -> None:
    """An attempt torn down while a pre-commit waits for the partition's lock (behind a
    commit) must not leak the staged files the pre-commit took out of the partition."""
    sink = TransactionalJsonlSink(tmp_path / "out")
    sink.recover(None)
    part = sink.open_partition(0, 1)
    await part.write_epoch(1, ["a"])
    staged = part._open[1]  # type: ignore[attr-defined]
    release = anyio.Event()

    async def commit_in_progress(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with part._lock:  # type: ignore[attr-defined]
            task_status.started()
            await release.wait()

    async with anyio.create_task_group() as tg:
        await tg.start(commit_in_progress)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await part.pre_commit(1)
        release.set()
    assert staged.closed
    await part.aclose()
