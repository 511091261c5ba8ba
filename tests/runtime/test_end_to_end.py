"""End to end: whole jobs, checked against oracles recomputed from the input."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import e2e_flows as flows
import pytest

from shoal import (
    AsyncIterableSource,
    CallbackSink,
    CollectingSink,
    Flow,
    IterableSource,
    JobError,
    JsonlSource,
    ProcessContext,
    ValueStateSpec,
    WorkerLostError,
    run_job,
)

FLOWS = str(Path(flows.__file__).resolve())


def final_counts(items: list[Any]) -> dict[Any, Any]:
    """The last running value emitted per key."""
    last: dict[Any, Any] = {}
    for key, value in items:
        last[key] = value
    return last


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["lmdb", "memory"])
async def test_keyed_state_equals_the_oracle_in_one_loop(tmp_path: Path, backend: str) -> None:
    flow = flows.clicks()
    result = await run_job(flow, state_dir=tmp_path, backend=backend, batch_size=1000)
    n, total = flows.clicks_oracle()
    assert result.records_in == 20_000
    assert result.records_out == 20_000
    assert result.read_state("per_user", "n") == dict(n)
    assert result.read_state("per_user", "total") == dict(total)
    items = result.sink.items  # type: ignore[attr-defined]
    assert final_counts(items) == dict(n)
    stats = result.key_group_statistics("per_user")
    assert [s.key_group for s in stats] == list(range(16))
    assert sum(s.entries for s in stats) == 2 * len(n)  # two states per user
    assert all(s.bytes > 0 for s in stats) or backend == "memory"
    (report,) = result.reports
    assert report["access_samples"] > 0  # sampled state reads feed the latency metric
    assert 0 < report["access_seconds"] / report["access_samples"] < 0.1
    # per-key order: every key's running counts arrive as 1, 2, 3, ...
    seen: Counter[int] = Counter()
    for user, count in items:
        seen[user] += 1
        assert count == seen[user]


@pytest.mark.asyncio
async def test_two_keyed_stages(tmp_path: Path) -> None:
    result = await run_job(flows.two_stage(), state_dir=tmp_path, batch_size=100)
    words = Counter(f"w{i % 97}" for i in range(3000))
    assert result.read_state("words", "value") == dict(words)
    # stage two counts, for every count c, how many times some word's running count was c
    expected: Counter[int] = Counter()
    for n in words.values():
        for c in range(1, n + 1):
            expected[c] += 1
    assert result.read_state("by_count", "value") == dict(expected)
    assert result.records_out == 3000


@pytest.mark.asyncio
async def test_failing_user_function_goes_to_dead_letters_with_position(tmp_path: Path) -> None:
    def strict(key: str, value: int, ctx: ProcessContext) -> None:
        if value % 50 == 7:
            raise ValueError(f"bad value {value}")
        ctx.state.seen.update(ctx.state.seen.value() + 1)
        ctx.emit(value)

    flow = Flow("strict", num_key_groups=4)
    sink = CollectingSink()
    (
        flow.source(IterableSource(list(range(500)), splits=2))
        .map(lambda v: v if v != 123 else None)
        .key_by(lambda v: "odd" if v % 2 else "even")
        .process(strict, states=[ValueStateSpec("seen", default=0)], name="strict")
        .sink(sink)
    )
    result = await run_job(flow, state_dir=tmp_path, batch_size=64)
    letters = result.dead_letter_records
    assert result.dead_letters == len(letters) == 11
    by_operator = Counter(letter.operator for letter in letters)
    assert by_operator == {"strict": 10, "strict.key_by": 1}  # None % 2 fails in the key function
    for letter in letters:
        assert letter.split is not None
        assert letter.offset is not None
        if letter.operator == "strict":
            assert letter.error_type == "ValueError"
            assert letter.record % 50 == 7
            assert letter.offset == letter.record  # the item's index in its source
    assert sorted(sink.items) == [v for v in range(500) if v % 50 != 7 and v != 123]
    # written to the state directory as JSON lines too
    assert len((tmp_path / "dead-letters.jsonl").read_text().splitlines()) == 11


@pytest.mark.asyncio
async def test_bad_json_lines_become_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [b'{"word": "a"}', b"{not json", b'{"word": "b"}', b'{"word": "a"}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    flow = Flow("words", num_key_groups=4)
    sink = CollectingSink()
    flow.source(JsonlSource(path)).key_by(flows.word_of).count(name="n").sink(sink)
    result = await run_job(flow, state_dir=tmp_path / "state")
    assert final_counts(sink.items) == {"a": 2, "b": 1}
    (letter,) = result.dead_letter_records
    assert letter.operator == "source"
    assert letter.offset == len(lines[0]) + 1  # byte offset of the bad line
    assert "{not json" in str(letter.record)


@pytest.mark.asyncio
async def test_bad_arguments_fail_at_the_boundary(tmp_path: Path) -> None:
    flow = flows.clicks(events=10)
    with pytest.raises(ValueError, match=r"^workers must be a positive int; got 0$"):
        await run_job(flow, workers=0)
    with pytest.raises(ValueError, match=r"^workers must be at most 256; got 300$"):
        await run_job(flow, workers=300, processes=False)
    with pytest.raises(TypeError, match=r"^worker processes rebuild the flow from its definition"):
        await run_job(flow, workers=2)
    with pytest.raises(ValueError, match=r"^backend must be 'lmdb' or 'memory'; got 'redis'$"):
        await run_job(flow, backend="redis")
    with pytest.raises(ValueError, match=r"^flow reference must look like 'path/to/file.py:name'"):
        await run_job("nonsense", workers=2)
    with pytest.raises(FileNotFoundError, match=r"^flow file not found: missing.py$"):
        await run_job("missing.py:flow", workers=2)
    with pytest.raises(ValueError, match=r"^log_level must be 'debug', 'info', 'warning' or"):
        await run_job(flow, log_level="loud")
    with pytest.raises(ValueError, match=r"^log_format must be 'console' or 'json'; got 'xml'$"):
        await run_job(flow, log_format="xml")
    with pytest.raises(
        AttributeError,
        match=r"^.*e2e_flows.py has no attribute 'nosuch' \(reference '.*:nosuch'\)$",
    ):
        await run_job(f"{FLOWS}:nosuch", workers=2)


@pytest.mark.processes
@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2, 3])
async def test_worker_processes_agree_with_the_oracle(tmp_path: Path, workers: int) -> None:
    result = await run_job(
        f"{FLOWS}:clicks", workers=workers, processes=True, state_dir=tmp_path, batch_size=512
    )
    n, total = flows.clicks_oracle()
    assert result.workers == workers
    assert result.records_in == 20_000
    assert result.read_state("per_user", "n") == dict(n)
    assert result.read_state("per_user", "total") == dict(total)
    items = result.sink.items  # type: ignore[attr-defined]
    assert len(items) == 20_000
    assert final_counts(items) == dict(n)
    assert sum(r["records_in"] for r in result.reports) == 20_000
    if workers > 1:
        assert all(r["records_in"] > 0 for r in result.reports)  # splits really ran everywhere


@pytest.mark.processes
@pytest.mark.asyncio
async def test_two_stages_across_processes(tmp_path: Path) -> None:
    result = await run_job(f"{FLOWS}:two_stage", workers=2, state_dir=tmp_path, batch_size=100)
    words = Counter(f"w{i % 97}" for i in range(3000))
    assert result.read_state("words", "value") == dict(words)
    assert result.records_out == 3000


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_killed_worker_fails_the_job_loudly(tmp_path: Path) -> None:
    with pytest.raises(
        WorkerLostError,
        match=r"^worker \d \(pid \d+\) was killed by SIGKILL while the job was running$",
    ):
        await run_job(f"{FLOWS}:doomed", workers=2, state_dir=tmp_path, batch_size=100)


async def endless(seen: list[int]) -> Any:
    """An unbounded source: counts up forever, a little at a time."""
    n = 0
    while True:
        seen.append(n)
        yield {"word": f"w{n % 5}"}
        n += 1
        if n % 100 == 0:
            await anyio.lowlevel.checkpoint()


@pytest.mark.asyncio
async def test_an_unbounded_job_runs_until_stopped_and_keeps_what_it_read(tmp_path: Path) -> None:
    seen: list[int] = []
    stop = anyio.Event()
    outputs: list[Any] = []

    def watch(item: Any) -> None:
        outputs.append(item)
        if len(outputs) == 1000:
            stop.set()

    flow = Flow("endless", num_key_groups=4)
    (
        flow.source(AsyncIterableSource(lambda: endless(seen)))
        .key_by(flows.word_of)
        .count(name="n")
        .sink(CallbackSink(watch))
    )
    with anyio.fail_after(30):
        result = await run_job(flow, state_dir=tmp_path, batch_size=50, stop=stop)
    # everything the source handed out before the stop went through, exactly once
    assert result.records_in == result.records_out == len(outputs) == len(seen) >= 1000
    assert seen == list(range(len(seen)))
    counts = result.read_state("n", "value")
    assert counts == Counter(f"w{n % 5}" for n in seen)
    assert final_counts(outputs) == counts


async def handing_out(handed: list[int], stop: anyio.Event, stop_after: int, seed: int) -> Any:
    """Counts up forever, awaiting at seeded points; sets ``stop`` after ``stop_after`` items."""
    rng = random.Random(seed)
    n = 0
    while True:
        handed.append(n)
        yield {"word": f"w{n % 7}", "n": n}
        n += 1
        if n == stop_after:
            stop.set()
        if rng.random() < 0.3:
            await anyio.lowlevel.checkpoint()


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(12))
async def test_a_stop_processes_every_record_the_source_handed_out(
    tmp_path: Path, seed: int
) -> None:
    """Stops land at seeded points of a read (mid-batch, between batches, while waiting)."""
    rng = random.Random(seed)
    handed: list[int] = []
    stop = anyio.Event()
    stop_after = rng.randint(1, 3000)
    flow = Flow("handing-out", num_key_groups=4)
    (
        flow.source(AsyncIterableSource(lambda: handing_out(handed, stop, stop_after, seed)))
        .key_by(flows.word_of)
        .count(name="n")
        .sink(CollectingSink())
    )
    with anyio.fail_after(30):
        result = await run_job(flow, backend="memory", batch_size=rng.randint(1, 200), stop=stop)
    assert len(handed) >= stop_after
    assert result.records_in == result.records_out == len(handed)
    assert result.read_state("n", "value") == Counter(f"w{n % 7}" for n in handed)


@pytest.mark.processes
@pytest.mark.asyncio
async def test_stop_across_worker_processes(tmp_path: Path) -> None:
    stop = anyio.Event()

    async def stop_soon() -> None:
        stop.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_soon)
            result = await run_job(
                f"{FLOWS}:clicks",
                params={"events": 5_000_000},
                workers=2,
                state_dir=tmp_path,
                batch_size=256,
                stop=stop,
            )
    assert 0 < result.records_in < 5_000_000
    counts = result.read_state("per_user", "n")
    assert sum(counts.values()) == result.records_in == result.records_out


@pytest.mark.asyncio
async def test_a_flow_without_keyed_operator_reads_its_source_to_the_end(tmp_path: Path) -> None:
    sink = CollectingSink()
    flow = Flow("stateless", num_key_groups=4)
    flow.source(IterableSource(list(range(100_000)), splits=3)).map(lambda v: v * 2).sink(sink)
    result = await run_job(flow, state_dir=tmp_path, batch_size=1000)
    assert result.records_in == result.records_out == 100_000
    assert sorted(sink.items) == [v * 2 for v in range(100_000)]


@pytest.mark.asyncio
async def test_an_engine_failure_is_a_job_error(tmp_path: Path) -> None:
    def broken_sink(_item: Any) -> None:
        raise OSError("disk on fire")

    flow = Flow("broken", num_key_groups=4)
    flow.source(IterableSource([1, 2, 3])).key_by(str).count().sink(CallbackSink(broken_sink))
    with pytest.raises(JobError, match=r"^job 'broken' failed: .*OSError: disk on fire"):
        await run_job(flow, state_dir=tmp_path)


@pytest.mark.asyncio
async def test_a_stop_set_before_the_job_starts_still_stops_it(tmp_path: Path) -> None:
    stop = anyio.Event()
    stop.set()
    flow = Flow("endless", num_key_groups=4)
    (
        flow.source(AsyncIterableSource(lambda: endless([])))
        .key_by(flows.word_of)
        .count(name="n")
        .sink(CollectingSink())
    )
    with anyio.fail_after(30):
        result = await run_job(flow, state_dir=tmp_path, batch_size=50, stop=stop)
    assert result.records_in == result.records_out


@pytest.mark.asyncio
async def test_a_blocked_sink_stops_the_source_backpressure_never_drops(tmp_path: Path) -> None:
    pulled = 0
    total = 1_000_000

    def numbers() -> Any:
        nonlocal pulled
        for i in range(total):
            pulled += 1
            yield i

    gate = anyio.Event()
    written: list[Any] = []

    async def slow_sink(batch: list[Any]) -> None:
        await gate.wait()
        written.extend(batch)

    flow = Flow("blocked", num_key_groups=4)
    (
        flow.source(IterableSource(numbers()))
        .key_by(lambda n: n % 4)
        .count()
        .sink(CallbackSink(slow_sink, batch=True))
    )
    batch, mailbox = 100, 2
    async with anyio.create_task_group() as tg:
        results: list[Any] = []

        async def run() -> None:
            results.append(
                await run_job(flow, state_dir=tmp_path, batch_size=batch, mailbox_size=mailbox)
            )

        tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        # Everything waits on the sink: the source has read only what the bounded mailboxes
        # (4 key groups, 2 batches each, plus the batches in hand) can hold.
        assert 0 < pulled <= batch * (4 * (mailbox + 2) + 2), pulled
        blocked_at = pulled
        await anyio.wait_all_tasks_blocked()
        assert pulled == blocked_at  # still blocked: nothing more was read
        gate.set()
    (result,) = results
    assert result.records_in == result.records_out == len(written) == total
