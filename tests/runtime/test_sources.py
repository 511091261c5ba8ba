"""Sources: split/resume equivalence, JSONL byte-range splits, bad records, argument errors."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import pytest
import source_flows
from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.runtime import _jsonl, _sources
from shoal.runtime._jsonl import JsonlSource
from shoal.runtime._sources import (
    AsyncIterableSource,
    IterableSource,
    Source,
    SourceBatch,
    SourceError,
    SplitReader,
)

from shoal import CollectingSink, Flow, run_job

SOURCE_FLOWS = str(Path(source_flows.__file__).resolve())

# Every async test here is marked asyncio: it runs on asyncio and on uvloop (tests/conftest.py).


Read = tuple[list[tuple[int, Any]], list[SourceError]]


async def read_split(
    source: Source, split: str, rng: random.Random, *, reopen: float = 0.3
) -> Read:
    """Read ``split`` to its end with random batch sizes, reopening at recorded positions."""
    records: list[tuple[int, Any]] = []
    errors: list[SourceError] = []
    reader = source.open_split(split)
    while True:
        batch = await reader.read_batch(rng.randint(1, 7))
        if batch is None:
            break
        assert len(batch.values) == len(batch.offsets)
        assert batch.values or batch.errors
        records.extend(zip(batch.offsets, batch.values, strict=True))
        errors.extend(batch.errors)
        if rng.random() < reopen:
            await reader.aclose()
            reader = source.open_split(split, batch.position)
    await reader.aclose()
    return records, errors


async def read_source(source: Source, seed: int) -> Read:
    """Read every split, in a seeded random order."""
    rng = random.Random(seed)
    splits = list(source.splits())
    rng.shuffle(splits)
    records: list[tuple[int, Any]] = []
    errors: list[SourceError] = []
    for split in splits:
        r, e = await read_split(source, split, rng)
        records.extend(r)
        errors.extend(e)
    return sorted(records, key=lambda r: r[0]), sorted(errors, key=lambda e: e.offset)


# ---------------------------------------------------------------------------------------------
# IterableSource


@pytest.mark.parametrize("splits", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.asyncio
async def test_iterable_source_splits_resume_to_every_item_once(splits: int, seed: int) -> None:
    items = [f"r{i}" for i in range(23)]
    source = IterableSource(items, splits=splits)
    assert isinstance(source, Source)
    assert source.bounded
    assert list(source.splits()) == [f"items:{i}" for i in range(splits)]
    records, errors = await read_source(source, seed)
    assert records == list(enumerate(items))
    assert errors == []


@pytest.mark.asyncio
async def test_iterable_source_split_ranges_are_contiguous() -> None:
    source = IterableSource(range(10), splits=3)
    ranges = []
    for split in source.splits():
        reader = source.open_split(split)
        batch = await reader.read_batch(100)
        assert batch is not None
        ranges.append(batch.offsets)
        assert batch.position == batch.offsets[-1] + 1
        assert await reader.read_batch(100) is None
    assert ranges == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


@pytest.mark.asyncio
async def test_iterable_source_resumes_at_every_position() -> None:
    items = list(range(100, 110))
    source = IterableSource(items, splits=2)
    for position in range(5, 11):
        reader = source.open_split("items:1", position)
        batch = await reader.read_batch(100)
        if position == 10:
            assert batch is None
            continue
        assert batch is not None
        assert batch.offsets == list(range(position, 10))
        assert batch.values == items[position:]


@pytest.mark.asyncio
async def test_one_shot_iterator_opens_once_and_resumes_by_skipping() -> None:
    source = IterableSource(iter(range(10)))
    reader = source.open_split("items:0", 4)
    batch = await reader.read_batch(3)
    assert batch == SourceBatch([4, 5, 6], [4, 5, 6], 7)
    with pytest.raises(
        RuntimeError,
        match=r"^IterableSource: a one-shot iterator can only be opened once; pass a list "
        r"\(or another re-iterable\) to reopen or resume a split$",
    ):
        source.open_split("items:0")
    batch = await reader.read_batch(10)
    assert batch is not None
    assert batch.values == [7, 8, 9]
    assert await reader.read_batch(10) is None


@pytest.mark.asyncio
async def test_generator_is_closed_by_aclose() -> None:
    closed = []

    def gen() -> Any:
        try:
            yield from range(100)
        finally:
            closed.append(True)

    source = IterableSource(gen())
    reader = source.open_split("items:0")
    assert await reader.read_batch(2) is not None
    await reader.aclose()
    assert closed == [True]
    assert await reader.read_batch(2) is None


@pytest.mark.asyncio
async def test_reiterable_non_sequence_reopens() -> None:
    source = IterableSource({"a": 1, "b": 2, "c": 3}.keys())
    first, _ = await read_source(source, 0)
    second, _ = await read_source(source, 1)
    assert first == second == [(0, "a"), (1, "b"), (2, "c")]


def test_iterable_source_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"^IterableSource: splits must be >= 1; got 0$"):
        IterableSource([1], splits=0)
    with pytest.raises(TypeError, match=r"^IterableSource: splits must be an int; got str$"):
        IterableSource([1], splits="2")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"^IterableSource: splits must be 1 for an iterable that is not a Sequence "
        r"\(got splits=2\); pass a list to split it$",
    ):
        IterableSource(iter([1, 2]), splits=2)
    with pytest.raises(TypeError, match=r"^IterableSource: items must be an iterable; got int$"):
        IterableSource(5)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^IterableSource: items must be an iterable of records, not str; "
        r"wrap it in a list to emit it as one record$",
    ):
        IterableSource("abc")


def test_open_split_errors() -> None:
    source = IterableSource([1, 2, 3, 4], splits=2)
    with pytest.raises(
        ValueError,
        match=r"^IterableSource: unknown split 'x'; this source's splits are 'items:0', 'items:1'$",
    ):
        source.open_split("x")
    with pytest.raises(
        ValueError, match=r"^IterableSource: position 1 is outside the split \[2, 4\]$"
    ):
        source.open_split("items:1", 1)
    with pytest.raises(TypeError, match=r"^IterableSource: position must be an int; got str$"):
        source.open_split("items:1", "3")


@pytest.mark.asyncio
async def test_max_records_must_be_positive() -> None:
    reader = IterableSource([1]).open_split("items:0")
    assert isinstance(reader, SplitReader)
    with pytest.raises(ValueError, match=r"^max_records must be an int >= 1; got 0$"):
        await reader.read_batch(0)


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.asyncio
async def test_a_paced_iterable_source_yields_every_item_once_like_an_unpaced_one(
    splits: int, seed: int
) -> None:
    items = [f"r{i}" for i in range(23)]
    source = IterableSource(items, splits=splits, rate=1e6)  # pacing, not waiting
    assert source.rate == 1e6
    assert repr(source) == f"IterableSource(list, splits={splits}, rate=1e+06)"
    assert await read_source(source, seed) == ([*enumerate(items)], [])


@pytest.mark.asyncio
async def test_a_paced_split_sleeps_its_batch_share_of_a_second_before_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``rate`` is over all splits: each split reads ``rate / splits`` records per second, in
    batches of at most PACED_BATCH, each after sleeping its share of a second."""
    slept: list[float] = []
    real_sleep = _sources.anyio.sleep

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(_sources.anyio, "sleep", sleep)
    source = IterableSource(range(1000), splits=2, rate=100.0)  # 50 records/s per split
    reader = source.open_split("items:1", 700)
    sizes = []
    while (batch := await reader.read_batch(1000)) is not None:
        sizes.append(len(batch.values))
    assert sizes == [_sources.PACED_BATCH, 300 - _sources.PACED_BATCH]
    assert slept == [
        _sources.PACED_BATCH / 50,
        _sources.PACED_BATCH / 50,
        _sources.PACED_BATCH / 50,
    ]
    slept.clear()
    reader = IterableSource(range(10)).open_split("items:0")  # unpaced: no sleep at all
    assert (await reader.read_batch(1000)) is not None
    assert slept == []


@pytest.mark.parametrize(
    ("rate", "error", "message"),
    [
        (
            "fast",
            TypeError,
            r"^IterableSource: rate must be a number of records per second, or None for no "
            r"pacing; got str$",
        ),
        (
            True,
            TypeError,
            r"^IterableSource: rate must be a number of records per second, or None for no "
            r"pacing; got bool$",
        ),
        (
            0,
            ValueError,
            r"^IterableSource: rate must be > 0 records per second \(None: no pacing\); got 0$",
        ),
        (
            -5.0,
            ValueError,
            r"^IterableSource: rate must be > 0 records per second \(None: no pacing\); "
            r"got -5\.0$",
        ),
        (
            float("inf"),
            ValueError,
            r"^IterableSource: rate must be > 0 records per second \(None: no pacing\); got inf$",
        ),
    ],
)
def test_a_bad_rate_is_refused_at_construction(
    rate: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        IterableSource([1, 2, 3], rate=rate)


# ---------------------------------------------------------------------------------------------
# AsyncIterableSource


async def agen(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await anyio.lowlevel.checkpoint()
        yield i * 10


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.asyncio
async def test_async_iterable_source_resumes_with_a_factory(seed: int) -> None:
    source = AsyncIterableSource(lambda: agen(17))
    assert source.bounded
    assert list(source.splits()) == ["aiter:0"]
    records, _ = await read_source(source, seed)
    assert records == [(i, i * 10) for i in range(17)]


@pytest.mark.asyncio
async def test_async_one_shot_iterator_opens_once() -> None:
    source = AsyncIterableSource(agen(5))
    reader = source.open_split("aiter:0", 2)
    batch = await reader.read_batch(10)
    assert batch == SourceBatch([20, 30, 40], [2, 3, 4], 5)
    assert await reader.read_batch(10) is None
    with pytest.raises(RuntimeError, match=r"^AsyncIterableSource: a one-shot async iterator"):
        source.open_split("aiter:0")


async def cancelling(handed: list[int], scope: anyio.CancelScope, at: int) -> AsyncIterator[int]:
    """Hands out 0..59, awaiting after each; cancels ``scope`` right after handing out ``at``."""
    for i in range(60):
        handed.append(i)
        yield i
        if i == at:
            scope.cancel()
        await anyio.lowlevel.checkpoint()


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(8))
async def test_a_cancelled_async_read_keeps_what_it_took_for_drain(seed: int) -> None:
    """A read cancelled at any await loses no item: ``drain`` (or the next read) returns it."""
    rng = random.Random(seed)
    for _ in range(20):
        handed: list[int] = []
        scope = anyio.CancelScope()
        cancel_at = rng.randint(0, 60)

        reader = AsyncIterableSource(cancelling(handed, scope, cancel_at)).open_split("aiter:0")
        got: list[int] = []
        with scope:
            while (batch := await reader.read_batch(rng.randint(1, 25))) is not None:
                got += batch.values
        drained = reader.drain()  # type: ignore[attr-defined]
        if drained is not None:
            assert drained.offsets == list(range(len(got), len(got) + len(drained.values)))
            got += drained.values
        assert reader.drain() is None  # type: ignore[attr-defined]
        assert got == handed
        await reader.aclose()


def test_async_iterable_source_argument_errors() -> None:
    with pytest.raises(
        TypeError,
        match=r"^AsyncIterableSource: aiterable must be an async iterable or a callable "
        r"returning one; got list$",
    ):
        AsyncIterableSource([1, 2])  # type: ignore[arg-type]
    source = AsyncIterableSource(lambda: [1, 2])  # type: ignore[arg-type,return-value]
    with pytest.raises(
        TypeError,
        match=r"^AsyncIterableSource: the factory must return an async iterable; got list$",
    ):
        source.open_split("aiter:0")
    with pytest.raises(ValueError, match=r"^AsyncIterableSource: unknown split 'items:0'"):
        source.open_split("items:0")
    with pytest.raises(TypeError, match=r"^AsyncIterableSource: bounded must be a bool; got str$"):
        AsyncIterableSource(lambda: agen(1), bounded="no")  # type: ignore[arg-type]
    assert not AsyncIterableSource(agen(1), bounded=False).bounded


# ---------------------------------------------------------------------------------------------
# JsonlSource


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.asyncio
async def test_jsonl_offsets_are_line_starts_and_bad_lines_become_errors(tmp_path: Path) -> None:
    data = b'{"a": 1}\n\nnot json\n[1, 2]\r\n   \n"\xc3\xa9t\xc3\xa9"\n\xff\xfe\n{"b": 2}'
    path = write(tmp_path / "in.jsonl", data)
    source = JsonlSource(path)
    assert list(source.splits()) == [f"{path}:0-{len(data)}"]
    reader = source.open_split(source.splits()[0])
    batch = await reader.read_batch(1000)
    assert batch is not None
    assert batch.values == [{"a": 1}, [1, 2], "été", {"b": 2}]
    assert batch.offsets == [0, 19, 31, 42]
    assert [data[o : o + 2] for o in batch.offsets] == [b'{"', b"[1", b'"\xc3', b'{"']
    assert batch.errors == [
        SourceError(10, "not json", "DecodeError: JSON is malformed: invalid character (byte 4)"),
        SourceError(
            39, "\ufffd\ufffd", "DecodeError: JSON is malformed: invalid character (byte 0)"
        ),
    ]
    # The unterminated last line ends at the end of the file.
    assert batch.position == len(data)
    assert await reader.read_batch(1000) is None
    assert await source.open_split(source.splits()[0], len(data)).read_batch(5) is None


@pytest.mark.asyncio
async def test_jsonl_max_records_counts_errors_too(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", b"1\nx\n2\ny\n3\n")
    reader = JsonlSource(path).open_split(f"{path}:0-10")
    batches = []
    while (batch := await reader.read_batch(2)) is not None:
        batches.append(batch)
    assert [(b.values, [e.offset for e in b.errors], b.position) for b in batches] == [
        ([1], [2], 4),
        ([2], [6], 8),
        ([3], [], 10),
    ]


@pytest.mark.asyncio
async def test_jsonl_several_files_and_stable_split_ids(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", b"".join(b'{"i": %d}\n' % i for i in range(50)))
    b = write(tmp_path / "b.jsonl", b"".join(b"%d\n" % i for i in range(30)))
    write(tmp_path / "empty.jsonl", b"")
    source = JsonlSource([str(a), b, tmp_path / "empty.jsonl"], split_bytes=100)
    again = JsonlSource([str(a), b, tmp_path / "empty.jsonl"], split_bytes=100)
    assert source.splits() == again.splits()
    assert source.splits()[:2] == (f"{a}:0-100", f"{a}:100-200")
    assert source.splits()[-1] == f"{b}:0-{b.stat().st_size}" == f"{b}:0-80"
    records, errors = await read_source(source, 3)
    assert errors == []
    values = [v for _, v in records]
    # Offsets are per file: sort each file's records on their own.
    assert sorted(v["i"] for v in values if isinstance(v, dict)) == list(range(50))
    assert sorted(v for v in values if isinstance(v, int)) == list(range(30))


def _line(kind: int, length: int, i: int) -> bytes:
    if kind == 0:  # a JSON string padded to about `length` bytes
        return json.dumps(f"{i}:" + "x" * length).encode()
    if kind == 1:  # blank or whitespace-only
        return b" " * (length % 4)
    return b"{bad " + b"y" * length  # undecodable


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(
        st.tuples(st.sampled_from([0, 0, 0, 1, 2]), st.integers(0, 120)), min_size=0, max_size=40
    ),
    terminated=st.booleans(),
    split_bytes=st.integers(1, 400),
    crlf=st.booleans(),
    seed=st.integers(0, 2**16),
    read_chunk=st.integers(1, 300),
    tail_chunk=st.integers(1, 50),
)
def test_jsonl_byte_range_splits_never_lose_or_duplicate_a_line(
    lines: list[tuple[int, int]],
    terminated: bool,
    split_bytes: int,
    crlf: bool,
    seed: int,
    read_chunk: int,
    tail_chunk: int,
) -> None:
    """Each line belongs to exactly one split, whatever the split, read and batch sizes.

    The reader's file reads are shrunk to a few bytes, so lines straddle reads and splits.
    """
    raws = [
        _line(kind, length, i) + (b"\r" if crlf else b"") for i, (kind, length) in enumerate(lines)
    ]
    data = b"\n".join(raws) + (b"\n" if terminated and raws else b"")
    expected_records = []
    expected_errors = []
    offset = 0
    for i, ((kind, _), raw) in enumerate(zip(lines, raws, strict=True)):
        if kind == 0:
            expected_records.append((offset, json.loads(raw)))
            assert expected_records[-1][1].startswith(f"{i}:")
        elif kind == 2:
            expected_errors.append((offset, raw.rstrip(b"\r").decode()))
        offset += len(raw) + 1

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_bytes(data)
        source = JsonlSource(path, split_bytes=split_bytes)
        assert len(source.splits()) == -(-len(data) // split_bytes)
        with (
            mock.patch.object(_jsonl, "_READ_CHUNK", read_chunk),
            mock.patch.object(_jsonl, "_TAIL_CHUNK", tail_chunk),
        ):
            records, errors = anyio.run(read_source, source, seed)
    assert records == expected_records
    assert [(e.offset, e.raw) for e in errors] == expected_errors
    assert all(e.error.startswith("DecodeError: ") for e in errors)


def test_jsonl_argument_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(FileNotFoundError, match=r"^JsonlSource: no such file: '.*missing\.jsonl'$"):
        JsonlSource(missing)
    path = write(tmp_path / "in.jsonl", b"1\n")
    with pytest.raises(ValueError, match=r"^JsonlSource: split_bytes must be >= 1; got 0$"):
        JsonlSource(path, split_bytes=0)
    with pytest.raises(ValueError, match=r"^JsonlSource: path_or_paths must not be empty$"):
        JsonlSource([])
    with pytest.raises(
        ValueError, match=r"^JsonlSource: path_or_paths contains the same path twice$"
    ):
        JsonlSource([path, str(path)])
    with pytest.raises(
        TypeError,
        match=r"^JsonlSource: path_or_paths must be a path or a sequence of paths; got int$",
    ):
        JsonlSource(3)  # type: ignore[arg-type]
    source = JsonlSource(path)
    with pytest.raises(ValueError, match=r"^JsonlSource: unknown split 'nope'"):
        source.open_split("nope")
    with pytest.raises(ValueError, match=r"^JsonlSource: position -1 is outside the split \[0\]$"):
        source.open_split(source.splits()[0], -1)


def open_fds() -> int | None:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


@pytest.mark.asyncio
async def test_jsonl_reader_closes_its_file(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", b"1\n2\n3\n")
    reader = JsonlSource(path).open_split(f"{path}:0-6")
    assert await reader.read_batch(1) is not None
    fds_open = open_fds()
    await reader.aclose()
    if fds_open is not None:
        assert open_fds() == fds_open - 1
    assert await reader.read_batch(1) is None


def test_sources_satisfy_the_protocol(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", b"1\n")
    sources: Sequence[object] = [
        IterableSource([1]),
        AsyncIterableSource(lambda: agen(1)),
        JsonlSource(path),
    ]
    assert all(isinstance(s, Source) for s in sources)


# ---------------------------------------------------------------------------------------------
# the source lifecycle in a job


@pytest.mark.asyncio
async def test_a_source_is_opened_once_per_worker_before_any_read_and_closed_last(
    tmp_path: Path,
) -> None:
    flow = source_flows.lifecycle(splits=3, per_split=100)
    source = flow.get_source()
    assert isinstance(source, source_flows.LifecycleSource)
    result = await run_job(flow, state_dir=tmp_path, backend="memory", batch_size=30)
    assert result.records_in == 300
    assert result.read_state("n", "value") == {0: 150, 1: 150}
    kinds = [event[0] for event in source.events]
    assert kinds[0] == "construct"
    assert source.events[1] == ("open", "lifecycle", 0, 1, ["part:0", "part:1", "part:2"])
    # Every split is opened before the first read (set-up is not job time) ...
    first_read = kinds.index("read")
    assert sorted(e[1] for e in source.events[2:first_read]) == ["part:0", "part:1", "part:2"]
    assert all(e[0] == "open_split" and e[2] is None for e in source.events[2:first_read])
    # ... each is read and closed once, and the source is closed after its last reader.
    assert kinds.count("open") == kinds.count("aclose") == 1
    assert sorted(e[1] for e in source.events if e[0] == "close_split") == [
        "part:0",
        "part:1",
        "part:2",
    ]
    assert kinds[-1] == "aclose"


@pytest.mark.asyncio
async def test_an_unbounded_source_needs_a_stop_event(tmp_path: Path) -> None:
    flow = Flow("live", num_key_groups=4)
    flow.source(AsyncIterableSource(lambda: agen(3), bounded=False)).key_by(str).count().sink(
        CollectingSink()
    )
    with pytest.raises(
        ValueError,
        match=r"^the source of flow 'live' is unbounded \(bounded=False\) and would run forever: "
        r"pass stop=anyio\.Event\(\) and set it to end the job$",
    ):
        await run_job(flow, state_dir=tmp_path)
    # With a stop event it runs; this iterable happens to end on its own.
    result = await run_job(flow, state_dir=tmp_path / "2", stop=anyio.Event())
    assert result.records_in == 3


@pytest.mark.asyncio
async def test_bounded_must_be_a_bool(tmp_path: Path) -> None:
    source = IterableSource([1, 2])
    source.bounded = "yes"  # type: ignore[assignment]
    flow = Flow("odd", num_key_groups=4)
    flow.source(source).key_by(str).count().sink(CollectingSink())
    with pytest.raises(
        TypeError,
        match=r"^the source of flow 'odd' must have a bool attribute 'bounded' \(True if its "
        r"splits end on their own\); got 'yes'$",
    ):
        await run_job(flow, state_dir=tmp_path)


@pytest.mark.processes
@pytest.mark.asyncio
async def test_worker_processes_open_the_source_once_each_and_the_driver_never(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "lifecycle.jsonl"
    result = await run_job(
        f"{SOURCE_FLOWS}:lifecycle",
        params={"splits": 5, "per_split": 200, "log_path": str(log_path)},
        workers=2,
        state_dir=tmp_path / "state",
        batch_size=50,
    )
    assert result.records_in == 1000
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    opens = [e for e in events if e[1] == "open"]
    assert sorted(e[3] for e in opens) == [0, 1]  # one open per worker, told its index ...
    assert {e[4] for e in opens} == {2}  # ... and the worker count
    assert sorted(s for e in opens for s in e[5]) == [f"part:{i}" for i in range(5)]
    assert os.getpid() not in {e[0] for e in opens}
    # the driver only constructed the source (and asked for its splits)
    assert {e[1] for e in events if e[0] == os.getpid()} == {"construct"}
    for pid in {e[0] for e in opens}:
        kinds = [e[1] for e in events if e[0] == pid]
        assert kinds.count("open") == kinds.count("aclose") == 1
        assert kinds[-1] == "aclose"
