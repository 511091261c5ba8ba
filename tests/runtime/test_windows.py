"""Windows: results equal an oracle recomputed from the input, in one loop and across worker
processes, with out-of-order input, tiny batches and tiny mailboxes; late records are accounted
for; window state is removed once its windows can no longer fire."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
import time_flows as flows
from hypothesis import assume, given
from hypothesis import strategies as st
from shoal.runtime._windows import WINDOWS_STATE

from shoal import (
    BoundedOutOfOrderness,
    CollectingSink,
    DeadLetterSink,
    Fault,
    Flow,
    IterableSource,
    OutputTag,
    Session,
    Sliding,
    TransactionalJsonlSink,
    Tumbling,
    run_job,
)

FLOWS = str(Path(flows.__file__).resolve())
KINDS = [("tumbling", 20, 20), ("sliding", 20, 7), ("session", 0, 4)]


def params(kind: str, size: int, slide: int, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "size": size, "slide": slide, **extra}


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "size", "slide"), KINDS)
@pytest.mark.parametrize("fold", ["count", "reduce", "aggregate", "process"])
async def test_window_results_equal_the_oracle_in_one_loop(
    kind: str, size: int, slide: int, fold: str
) -> None:
    p = params(kind, size, slide, fold=fold)
    flow = flows.windowed(**p)
    result = await run_job(flow, backend="memory", batch_size=16)
    data = flows.events(400, seed=1, disorder=10)
    assert flows.results(result.sink.items) == flows.oracle(data, kind, size, slide, fold)  # type: ignore[attr-defined]
    assert result.dead_letters == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "size", "slide"), KINDS)
@pytest.mark.parametrize("batch_size", [1, 2, 3, 7])
async def test_window_results_with_two_workers_tiny_batches_and_mailboxes(
    tmp_path: Path, kind: str, size: int, slide: int, batch_size: int
) -> None:
    p = params(kind, size, slide, count=150, seed=batch_size, disorder=6, delay=6)
    result = await run_job(
        f"{FLOWS}:windowed",
        params=p,
        workers=2,
        processes=False,
        state_dir=tmp_path,
        batch_size=batch_size,
        mailbox_size=1,
    )
    data = flows.events(150, seed=batch_size, disorder=6)
    assert flows.results(result.sink.items) == flows.oracle(data, kind, size, slide)  # type: ignore[attr-defined]
    assert result.dead_letters == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "size", "slide"), KINDS[:2])
async def test_process_windows_equal_the_oracle_with_late_firings_and_leave_no_state(
    tmp_path: Path, kind: str, size: int, slide: int
) -> None:
    # allowed lateness: a window fires again with the late record among its records; the last
    # result per window is what the oracle over the records that were not late says.
    dead = DeadLetterSink()
    p = params(kind, size, slide, count=300, seed=4, disorder=30, delay=5, lateness=15)
    p["fold"] = "process"
    result = await run_job(
        flows.windowed(**p), state_dir=tmp_path, batch_size=4, mailbox_size=1, dead_letters=dead
    )
    data = flows.events(300, seed=4, disorder=30)
    late = {(d.split, d.offset) for d in dead.letters if d.error_type == "LateRecordError"}
    assert len(late) == result.dead_letters
    kept = [
        event
        for split_events, split in _by_split(data, 3)
        for offset, event in split_events
        if (split, offset) not in late
    ]
    final: dict[tuple[Any, Any, Any], Any] = {}
    for key, start, end, value in result.sink.items:  # type: ignore[attr-defined]
        final[(key, start, end)] = value
    got = flows.results([(*window, value) for window, value in final.items()])
    assert got == flows.oracle(kept, kind, size, slide, "process")
    assert result.read_state("w", WINDOWS_STATE) == {}


def _raise_on_big(key: str, window: tuple[int, int], records: list[Any]) -> int:
    if len(records) > 2:
        raise ValueError(f"{len(records)} records")
    return len(records)


@pytest.mark.asyncio
async def test_a_raising_window_process_function_dead_letters_the_windows_records() -> None:
    dead = DeadLetterSink()
    flow = Flow("raising", num_key_groups=2)
    sink = CollectingSink()
    data = [("a", 1), ("a", 2), ("a", 3), ("a", 11), ("b", 4)]
    (
        flow.source(
            IterableSource(data), timestamps=lambda e: e[1], watermarks=BoundedOutOfOrderness(3)
        )
        .key_by(lambda e: e[0])
        .window(Tumbling(10))
        .process(_raise_on_big, name="big")
        .sink(sink)
    )
    result = await run_job(flow, backend="memory", dead_letters=dead)
    assert sorted(sink.items) == [("a", 10, 20, 1), ("b", 0, 10, 1)]
    (letter,) = dead.letters
    assert (letter.operator, letter.error, letter.key) == ("big.process", "3 records", "a")
    assert letter.record == [["a", 1], ["a", 2], ["a", 3]] or letter.record == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
    ]
    assert result.dead_letters == 1


@pytest.mark.processes
@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "size", "slide"), KINDS)
async def test_window_results_across_worker_processes_equal_the_oracle(
    tmp_path: Path, kind: str, size: int, slide: int
) -> None:
    p = params(kind, size, slide, count=300, seed=5, fold="aggregate")
    result = await run_job(
        f"{FLOWS}:windowed", params=p, workers=2, state_dir=tmp_path, batch_size=5
    )
    data = flows.events(300, seed=5, disorder=10)
    assert flows.results(result.sink.items) == flows.oracle(data, kind, size, slide, "aggregate")  # type: ignore[attr-defined]
    assert result.dead_letters == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "size", "slide"), KINDS)
@pytest.mark.parametrize("lateness", [0, 15])
async def test_late_records_go_to_the_dead_letters_and_the_rest_equal_the_oracle(
    kind: str, size: int, slide: int, lateness: int
) -> None:
    # Disorder far beyond the watermark delay: many records are late. Every record is either
    # in its windows' final results or a LateRecordError dead letter, never both, never lost.
    dead = DeadLetterSink()
    p = params(kind, size, slide, count=300, seed=3, disorder=60, delay=5, lateness=lateness)
    result = await run_job(
        flows.windowed(**p), backend="memory", batch_size=4, mailbox_size=1, dead_letters=dead
    )
    data = flows.events(300, seed=3, disorder=60)
    late = [letter for letter in dead.letters if letter.error_type == "LateRecordError"]
    assert late, "the input was meant to have late records"
    assert len(late) == result.dead_letters
    assert all(letter.operator == "w" for letter in late)
    late_records = {(letter.split, letter.offset) for letter in late}
    kept = [
        event
        for split_events, split in _by_split(data, 3)
        for offset, event in split_events
        if (split, offset) not in late_records
    ]
    final: dict[tuple[Any, Any, Any], Any] = {}
    for key, start, end, value in result.sink.items:  # type: ignore[attr-defined]
        final[(key, start, end)] = value  # a late firing replaces the window's result
    if kind == "session":  # a late record can merge fired sessions: the merged one supersedes
        final = {
            (key, start, end): value
            for (key, start, end), value in final.items()
            if not any(
                other[0] == key
                and other[1] <= start
                and end <= other[2]
                and other != (key, start, end)
                for other in final
            )
        }
    got = flows.results([(*window, value) for window, value in final.items()])
    assert got == flows.oracle(kept, kind, size, slide)


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "size", "slide"), KINDS)
async def test_late_records_go_to_the_late_side_output_and_the_rest_equal_the_oracle(
    kind: str, size: int, slide: int
) -> None:
    """With ``window(..., late=tag)`` the late records are a stream of their own: no dead
    letters; late records and kept records together are the input, each once; the windows'
    results equal the oracle over the kept ones."""
    data = flows.events(300, seed=3, disorder=60)
    late_tag = OutputTag("late")
    results, late = CollectingSink(), CollectingSink()
    flow = Flow("late_side", num_key_groups=8)
    windows = (
        flow.source(
            IterableSource(data, splits=3),
            timestamps=flows._ts,
            watermarks=BoundedOutOfOrderness(5),
        )
        .key_by(flows._key)
        .window(flows.assigner(kind, size, slide), late=late_tag)
        .count(name="w")
    )
    windows.sink(results)
    windows.side_output(late_tag).sink(late)
    result = await run_job(flow, backend="memory", batch_size=4, mailbox_size=1)
    assert result.dead_letters == 0
    assert late.items, "the input was meant to have late records"
    assert Counter(late.items) <= Counter(data)
    kept = list((Counter(data) - Counter(late.items)).elements())
    final: dict[tuple[Any, Any, Any], Any] = {}
    for key, start, end, value in results.items:
        final[(key, start, end)] = value
    got = flows.results([(*window, value) for window, value in final.items()])
    assert got == flows.oracle(kept, kind, size, slide)


def test_a_late_side_output_needs_an_output_tag_and_a_window_to_read() -> None:
    keyed = Flow("f").source(IterableSource([1]), timestamps=lambda r: r).key_by(lambda r: r % 2)
    with pytest.raises(TypeError, match=r"late takes an OutputTag\('name'\) or None"):
        keyed.window(Tumbling(5), late="late")  # type: ignore[arg-type]
    counted = keyed.window(Tumbling(5)).count()
    with pytest.raises(
        ValueError,
        match=r"^side_output: this stream \(after 'window'\) is a window's output; the window "
        r"declares no late output, and OutputTag\('late'\) is not declared \(a window's side "
        r"output is its late records: \.window\(\.\.\., late=OutputTag\(name\)\)\)$",
    ):
        counted.side_output(OutputTag("late"))


def _by_split(data: list[Any], splits: int) -> list[tuple[list[tuple[int, Any]], str]]:
    """IterableSource's contiguous splits, as (offset, event) lists with their split ids."""
    source = IterableSource(data, splits=splits)
    ids = list(source.splits())
    size, extra = divmod(len(data), splits)
    out, start = [], 0
    for index, split in enumerate(ids):
        end = start + size + (1 if index < extra else 0)
        out.append(([(offset, data[offset]) for offset in range(start, end)], split))
        start = end
    return out


@pytest.mark.asyncio
async def test_window_state_is_removed_once_its_windows_fired(tmp_path: Path) -> None:
    flow = flows.windowed("sliding", size=20, slide=7, lateness=5)
    result = await run_job(flow, state_dir=tmp_path, batch_size=8)
    assert result.read_state("w", WINDOWS_STATE) == {}
    assert result.read_state("w", "_shoal_timers") == {}
    assert flows.results(result.sink.items)  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_fired_window_carries_its_last_instant_as_timestamp() -> None:
    # Two tumbling windows in a row: the second (size 20) must see each result of the first
    # (size 10) inside the window that holds its whole range.
    flow = Flow("nested", num_key_groups=4)
    data = [("a", ts) for ts in (1, 4, 12, 15, 19, 22, 38)]
    sink = CollectingSink()
    (
        flow.source(IterableSource(data, splits=2), timestamps=lambda e: e[1])
        .key_by(lambda e: e[0])
        .window(Tumbling(10))
        .count(name="tens")
        .key_by(lambda result: result[0])
        .window(Tumbling(20))
        .aggregate(lambda: 0, lambda acc, result: acc + result[3], name="twenties")
        .sink(sink)
    )
    result = await run_job(flow, backend="memory", batch_size=1, mailbox_size=1)
    assert sorted(sink.items) == [("a", 0, 20, 5), ("a", 20, 40, 2)]
    assert result.dead_letters == 0


def test_window_arguments_are_checked() -> None:
    flow = Flow("bad")
    keyed = flow.source(IterableSource([1]), timestamps=lambda v: v).key_by(lambda v: v)
    with pytest.raises(
        ValueError, match=r"^Tumbling: size must be a number > 0 \(timestamp units\); got 0$"
    ):
        Tumbling(0)
    with pytest.raises(
        ValueError, match=r"^Sliding: slide must be a number > 0 \(timestamp units\); got -1$"
    ):
        Sliding(10, -1)
    with pytest.raises(
        ValueError,
        match=r"^Sliding: slide 7 is greater than size 4: a record between two windows would "
        r"belong to none; did you mean Sliding\(7, 4\)\? \(Tumbling\(4\) for back-to-back "
        r"windows, a slide <= 4 for overlapping ones\)$",
    ):
        Sliding(4, 7)
    with pytest.raises(ValueError, match=r"^Session: gap must be finite; got inf$"):
        Session(float("inf"))
    with pytest.raises(
        TypeError,
        match=r"^window takes Tumbling\(size\), Sliding\(size, slide\) or Session\(gap\); got 10$",
    ):
        keyed.window(10)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^allowed_lateness must be a finite number >= 0; got -1$"
    ):
        keyed.window(Tumbling(5), allowed_lateness=-1)
    with pytest.raises(
        ValueError,
        match=r"^session windows merge: aggregate over Session\(\.\.\.\) needs "
        r"merge=<function \(acc, acc\) -> acc>$",
    ):
        keyed.window(Session(5)).aggregate(list, lambda acc, v: acc)
    untimed = Flow("untimed").source(IterableSource([1])).key_by(lambda v: v)
    with pytest.raises(
        ValueError,
        match=r"^windows need event time: give the source a timestamp assigner, "
        r"flow.source\(source, timestamps=lambda record: \.\.\.\)$",
    ):
        untimed.window(Tumbling(5))


def test_assigners_cut_half_open_epoch_aligned_windows() -> None:
    assert Tumbling(10).assign(0) == [(0, 10)]
    assert Tumbling(10).assign(9) == [(0, 10)]
    assert Tumbling(10).assign(10) == [(10, 20)]
    assert Tumbling(10).assign(-1) == [(-10, 0)]
    assert Sliding(10, 5).assign(12) == [(5, 15), (10, 20)]
    assert Sliding(10, 3).assign(9) == [(0, 10), (3, 13), (6, 16), (9, 19)]
    assert Tumbling(0.5).assign(1.25) == [(1.0, 1.5)]
    assert Tumbling(0.1).assign(1.0) == [(1.0, 1.1)]  # 1.0 - 1.0 % 0.1 is 0.9
    assert Sliding(0.2, 0.1).assign(1.0) == [(0.9, 1.1), (1.0, 1.2)]
    # Window j starts at j * 0.1 in floats: 3 * 0.1 is 0.30000000000000004, above 0.3.
    assert Sliding(0.3, 0.1).assign(0.3) == [(0.1, 0.4), (0.2, 0.5)]
    assert Sliding(10, 10).assign(-1) == [(-10, 0)]


def _brute_force(ts: float, size: float, slide: float) -> list[tuple[float, float]]:
    """Every window ``j`` (``[j * slide, j * slide + size)``, ``j`` a float unless everything
    is an int) that holds ``ts``, by trying every ``j`` near ``ts / slide``."""
    ints = type(ts) is int and type(size) is int and type(slide) is int
    low = math.floor((ts - size) / slide) - 3
    high = math.floor(ts / slide) + 3
    out = []
    for j in range(low, high + 1):
        start = j * slide if ints else float(j) * slide
        end = start + size if slide != size or ints else (float(j) + 1.0) * slide
        if start <= ts < end:
            out.append((start, end))
    return out


_number = st.one_of(
    st.integers(1, 1000),
    st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False),
)


@given(
    ts=st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False)),
    size=_number,
    slide=_number,
)
def test_every_assigned_window_holds_the_timestamp_and_none_is_missing(
    ts: float, size: float, slide: float
) -> None:
    if slide > size:
        size, slide = slide, size
    assume(size / slide <= 64)  # a record in at most ~64 windows: the test stays fast
    for assigner, step in ((Tumbling(size), size), (Sliding(size, slide), slide)):
        windows = assigner.assign(ts)
        assert windows, (assigner, ts)
        assert all(start <= ts < end for start, end in windows), (assigner, ts, windows)
        assert windows == _brute_force(ts, size, step)
    # A tumbling window is the sliding window whose slide is its size.
    assert Sliding(size, size).assign(ts) == Tumbling(size).assign(ts)


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "size", "slide"), KINDS)
async def test_window_results_are_unchanged_by_checkpoint_barriers(
    tmp_path: Path, kind: str, size: int, slide: int
) -> None:
    # Barriers align over the same channels as watermarks: held watermarks must not be lost.
    p = params(kind, size, slide, count=400, seed=9, disorder=6, delay=6)
    result = await run_job(
        f"{FLOWS}:windowed",
        params=p,
        workers=2,
        processes=False,
        state_dir=tmp_path,
        batch_size=2,
        mailbox_size=1,
        checkpoint_interval=0.005,
    )
    data = flows.events(400, seed=9, disorder=6)
    assert result.checkpoints is not None
    assert result.checkpoints.completed > 0
    assert flows.results(result.sink.items) == flows.oracle(data, kind, size, slide)  # type: ignore[attr-defined]


@pytest.mark.processes
@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "size", "slide"), KINDS)
async def test_windows_fire_exactly_once_across_kills_and_checkpoint_restores(
    tmp_path: Path, kind: str, size: int, slide: int
) -> None:
    # Two kill -9s (one mid-stream, one in the recovered attempt): open windows and their
    # timers come back from the checkpoint with the rest of the key group's state, and the
    # transactional sink publishes each window's result exactly once.
    output = tmp_path / "out"
    p = params(kind, size, slide, count=3000, seed=11, disorder=6, delay=6, output=str(output))
    result = await run_job(
        f"{FLOWS}:windowed",
        params=p,
        workers=2,
        state_dir=tmp_path / "state",
        batch_size=4,
        mailbox_size=2,
        checkpoint_interval=0.02,
        restart_backoff=0.0,
        faults=[
            Fault("keygroup.batch", worker=1, attempt=0, hit=150),
            Fault("source.batch", worker=0, attempt=1, hit=100),
        ],
    )
    assert len(result.recoveries) == 2
    assert result.checkpoints is not None
    assert result.checkpoints.completed >= 1
    data = flows.events(3000, seed=11, disorder=6)
    published = TransactionalJsonlSink(str(output)).read()
    assert flows.results(published) == flows.oracle(data, kind, size, slide)


@pytest.mark.parametrize("assigner", [Tumbling(0.1), Sliding(0.3, 0.1), Sliding(0.25, 0.25)])
def test_float_windows_count_every_record_in_the_windows_assign_gives(
    assigner: Tumbling | Sliding,
) -> None:
    # Timestamps on and near float window boundaries (i * 0.1, 1.0 among them): each record
    # is counted in exactly the windows assign() gives, and each result's window holds it.
    stamps = [i * 0.1 for i in range(25)] + [1.0, 0.3, 0.30000000000000004, 2.5]
    data = [("k", ts) for ts in stamps]
    flow = Flow("floats", num_key_groups=2)
    sink = CollectingSink()
    (
        flow.source(
            IterableSource(data), timestamps=lambda e: e[1], watermarks=BoundedOutOfOrderness(3)
        )
        .key_by(lambda e: e[0])
        .window(assigner)
        .count()
        .sink(sink)
    )
    result = anyio.run(lambda: run_job(flow, backend="memory", processes=False, batch_size=4))
    expected: Counter[tuple[Any, Any]] = Counter()
    for ts in stamps:
        expected.update(assigner.assign(ts))
    got = {(start, end): n for _key, start, end, n in sink.items}
    assert got == dict(expected)
    assert result.dead_letters == 0


def test_a_timestamp_too_far_from_zero_for_the_window_size_is_a_dead_letter() -> None:
    # 1e300 / 0.5 windows from 0: no float window [k * 0.5, (k + 1) * 0.5) holds it.
    with pytest.raises(
        ValueError, match=r"^timestamp 1e\+300 is too far from 0 for windows of 0\.5$"
    ):
        Tumbling(0.5).assign(1e300)
    flow = Flow("far", num_key_groups=2)
    sink = CollectingSink()
    dead = DeadLetterSink()
    (
        flow.source(IterableSource([("k", 1.25), ("k", 1e300)]), timestamps=lambda e: e[1])
        .key_by(lambda e: e[0])
        .window(Tumbling(0.5))
        .count()
        .sink(sink)
    )
    anyio.run(
        lambda: run_job(flow, backend="memory", processes=False, batch_size=2, dead_letters=dead)
    )
    assert sink.items == [("k", 1.0, 1.5, 1)]
    assert [(letter.error_type, letter.offset) for letter in dead.letters] == [("ValueError", 1)]


def test_a_timestamp_a_session_gap_cannot_extend_is_a_dead_letter() -> None:
    # 1e20 + 1.0 is 1e20: the session [1e20, 1e20) would not hold its own record.
    flow = Flow("far", num_key_groups=2)
    sink = CollectingSink()
    dead = DeadLetterSink()
    (
        flow.source(IterableSource([("k", 1.25), ("k", 1e20)]), timestamps=lambda e: e[1])
        .key_by(lambda e: e[0])
        .window(Session(1.0))
        .count()
        .sink(sink)
    )
    anyio.run(
        lambda: run_job(flow, backend="memory", processes=False, batch_size=2, dead_letters=dead)
    )
    assert sink.items == [("k", 1.25, 2.25, 1)]
    assert [(letter.error, letter.offset) for letter in dead.letters] == [
        ("timestamp 1e+20 is too far from 0 for sessions of gap 1.0", 1)
    ]
