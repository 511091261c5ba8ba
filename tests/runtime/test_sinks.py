"""Sinks: collecting, callbacks, JSON lines files, counting, dead letters."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from shoal.runtime._sinks import (
    CallbackSink,
    CollectingSink,
    CountingSink,
    DeadLetter,
    DeadLetterSink,
    JsonlSink,
    Sink,
    SinkPartition,
)

# Every async test here runs on asyncio and on uvloop (tests/conftest.py's anyio_backend).
pytestmark = pytest.mark.anyio


async def test_collecting_sink_keeps_items_in_arrival_order() -> None:
    sink = CollectingSink()
    assert isinstance(sink, Sink)
    assert sink.gather is True
    a, b = sink.open_partition(0, 2), sink.open_partition(1, 2)
    assert isinstance(a, SinkPartition)
    await a.write_batch([1, 2])
    await b.write_batch([3])
    await a.write_batch([4])
    await a.aclose()
    await b.aclose()
    assert sink.items == [1, 2, 3, 4]
    assert len(sink) == 4
    await sink.open_partition(0, 1).write_batch([5])
    assert sink.items == [1, 2, 3, 4, 5]
    sink.clear()
    assert len(sink) == 0


async def test_callback_sink_calls_sync_and_async_functions() -> None:
    seen: list[Any] = []

    async def afn(item: Any) -> None:
        seen.append(("async", item))

    sync = CallbackSink(seen.append)
    assert sync.gather is False
    await sync.open_partition(0, 1).write_batch([1, 2])
    await CallbackSink(afn, gather=True).open_partition(0, 1).write_batch([3])
    await CallbackSink(seen.append, batch=True).open_partition(0, 1).write_batch([4, 5])

    async def abatch(items: list[Any]) -> None:
        seen.append(("batch", list(items)))

    await CallbackSink(abatch, batch=True).open_partition(0, 1).write_batch([6])
    assert seen == [1, 2, ("async", 3), [4, 5], ("batch", [6])]
    assert CallbackSink(afn, gather=True).gather is True
    with pytest.raises(TypeError, match=r"^CallbackSink: fn must be callable; got int$"):
        CallbackSink(3)  # type: ignore[arg-type]


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def read_lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


async def test_jsonl_sink_single_worker_writes_exactly_path(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "out.jsonl"
    sink = JsonlSink(path)
    partition = sink.open_partition(0, 1)
    await partition.write_batch([{"a": 1, "b": (1, "x")}, "été", 3])
    await partition.write_batch([])
    await partition.write_batch([[None, True]])
    await partition.aclose()
    await partition.aclose()
    assert names(path.parent) == ["out.jsonl"]
    assert path.read_bytes() == '{"a":1,"b":[1,"x"]}\n"été"\n3\n[null,true]\n'.encode()


async def test_jsonl_sink_several_workers_write_one_file_each(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "out.jsonl")
    partitions = [sink.open_partition(w, 3) for w in range(3)]
    for w, partition in enumerate(partitions):
        await partition.write_batch([w, w * 10])
        await partition.aclose()
    assert names(tmp_path) == [
        "out-w0.jsonl",
        "out-w1.jsonl",
        "out-w2.jsonl",
    ]
    assert [read_lines(tmp_path / f"out-w{w}.jsonl") for w in range(3)] == [
        [0, 0],
        [1, 10],
        [2, 20],
    ]
    gathered = JsonlSink(tmp_path / "g.jsonl", gather=True)
    assert gathered.partition_path(2, 3) == tmp_path / "g.jsonl"


async def test_jsonl_sink_truncates_or_appends(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    p = JsonlSink(path).open_partition(0, 1)
    await p.write_batch([1])
    await p.aclose()
    p = JsonlSink(path, append=True).open_partition(0, 1)
    await p.write_batch([2])
    await p.aclose()
    assert read_lines(path) == [1, 2]


async def test_jsonl_sink_rejects_unserializable_items_naming_their_type(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    partition = JsonlSink(path).open_partition(0, 1)
    with pytest.raises(
        TypeError,
        match=r"^JsonlSink: item of type set is not JSON-serializable: "
        r"Object of type set is not JSON serializable$",
    ):
        await partition.write_batch([1, {1, 2}, 3])
    await partition.write_batch([4])
    await partition.aclose()
    # The bad batch wrote nothing.
    assert read_lines(path) == [4]
    with pytest.raises(RuntimeError, match=r"^JsonlSink: write_batch on a closed partition$"):
        await partition.write_batch([5])


def test_sink_worker_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^JsonlSink: worker must be in \[0, 2\); got 2$"):
        JsonlSink(tmp_path / "x.jsonl").open_partition(2, 2)
    with pytest.raises(ValueError, match=r"^CountingSink: workers must be >= 1; got 0$"):
        CountingSink().open_partition(0, 0)
    with pytest.raises(TypeError, match=r"^JsonlSink: path must be a str or os.PathLike; got int$"):
        JsonlSink(1)  # type: ignore[arg-type]


async def test_counting_sink_counts_without_keeping() -> None:
    sink = CountingSink()
    assert sink.gather is False
    a, b = sink.open_partition(0, 2), sink.open_partition(1, 2)
    await a.write_batch([1, 2, 3])
    await b.write_batch(list(range(10)))
    await a.aclose()
    assert sink.count == 13


def letter(record: Any, **kw: Any) -> DeadLetter:
    return DeadLetter("count", "KeyError", "'x'", "items:0", 7, record, **kw)


def test_dead_letter_json_round_trip() -> None:
    dl = letter({"a": [1, "b", None]}, key="k", worker=2)
    d = dl.to_json()
    assert json.loads(json.dumps(d)) == d
    assert DeadLetter.from_json(d) == dl
    assert DeadLetter.from_json(json.loads(json.dumps(d))) == dl
    assert d == {
        "operator": "count",
        "error_type": "KeyError",
        "error": "'x'",
        "split": "items:0",
        "offset": 7,
        "record": {"a": [1, "b", None]},
        "key": "k",
        "worker": 2,
    }


def test_dead_letter_to_json_converts_what_json_cannot_hold() -> None:
    d = letter((1, b"\x00", {3: {2}}, math.nan), key=("u", 1)).to_json()
    assert d["record"] == [1, "b'\\x00'", {"3": "{2}"}, "nan"]
    assert d["key"] == ["u", 1]
    json.dumps(d, allow_nan=False)
    assert DeadLetter.from_json(d).record == d["record"]


def test_dead_letter_from_json_rejects_bad_dicts() -> None:
    with pytest.raises(
        ValueError,
        match=r"^DeadLetter.from_json: missing fields \['offset', 'record'\], "
        r"unknown fields \['extra'\]$",
    ):
        DeadLetter.from_json(
            {"operator": "o", "error_type": "E", "error": "", "split": None, "extra": 1}
        )


def test_dead_letter_constructors() -> None:
    dl = DeadLetter.from_exception(
        ZeroDivisionError("division by zero"), operator="avg", record=(1, 0), key=1, offset=3
    )
    assert dl == DeadLetter("avg", "ZeroDivisionError", "division by zero", None, 3, (1, 0), 1)

    class Err:
        offset = 10
        raw = "not json"
        error = "JSONDecodeError: Expecting value: line 1 column 1 (char 0)"

    dl = DeadLetter.from_source_error(Err(), operator="clicks", split="f:0-9", worker=1)
    assert dl == DeadLetter(
        "clicks",
        "JSONDecodeError",
        "Expecting value: line 1 column 1 (char 0)",
        "f:0-9",
        10,
        "not json",
        None,
        1,
    )


async def test_dead_letter_sink_keeps_counts_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "dlq" / "dead.jsonl"
    sink = DeadLetterSink(path, limit=2)
    assert sink.gather is True
    partition = sink.open_partition(0, 1)
    letters = [letter(i) for i in range(3)]
    await partition.write_batch([letters[0], letters[1].to_json()])
    await partition.write_batch([letters[2]])
    await partition.aclose()
    assert sink.letters == letters[:2]
    assert sink.count == 3
    assert [DeadLetter.from_json(d) for d in read_lines(path)] == letters
    with pytest.raises(
        TypeError,
        match=r"^DeadLetterSink: expected DeadLetter or its to_json\(\) dict; got int$",
    ):
        await DeadLetterSink().open_partition(0, 1).write_batch([1])
    with pytest.raises(ValueError, match=r"^DeadLetterSink: limit must be >= 0; got -1$"):
        DeadLetterSink(limit=-1)
