"""A job stopped from outside keeps its open windows for the resumed run: a stop is not the end
of the input, so event time does not jump to +inf and nothing fires with part of its records
(found from a terminal: Ctrl-C of scenarios/windows.py, then --resume, counted windows twice,
each with part of its records)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from shoal.runtime._watermarks import WatermarkCombiner
from shoal.runtime.timeline import at, stop

from shoal import AsyncIterableSource, CollectingSink, Flow, Tumbling, run_job

RECORDS = [(f"k{i % 3}", i) for i in range(3000)]  # one record per time unit


async def _slow() -> AsyncIterator[tuple[str, int]]:
    for i, record in enumerate(RECORDS):
        if i % 50 == 0:
            await anyio.sleep(0.005)  # the stop comes while the input is still being read
        yield record


def _build() -> tuple[Flow, CollectingSink]:
    flow = Flow("stopped-windows", num_key_groups=4)
    sink = CollectingSink()
    (
        flow.source(AsyncIterableSource(_slow), timestamps=lambda r: r[1])
        .key_by(lambda r: r[0])
        .window(Tumbling(1000))
        .count(name="w")
        .sink(sink)
    )
    return flow, sink


def _oracle() -> Counter[Any]:
    windows: Counter[Any] = Counter()
    for key, ts in RECORDS:
        start = ts // 1000 * 1000
        windows[(key, start, start + 1000)] += 1
    return Counter({(k, s, e, n): 1 for (k, s, e), n in windows.items()})


@pytest.mark.asyncio
async def test_a_stopped_job_fires_no_window_early_and_its_resume_completes_them(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    first_flow, first = _build()
    stopped = await run_job(
        first_flow,
        state_dir=state,
        batch_size=50,
        checkpoint_interval=0.5,
        timeline=[at(stop(), records=1500)],
    )
    assert 1500 <= stopped.records_in < len(RECORDS)  # stopped mid-input
    # Only windows the watermark passed while the input was read fired: all complete.
    assert set(Counter(first.items)) <= set(_oracle())
    second_flow, second = _build()
    await run_job(second_flow, state_dir=state, checkpoint_interval=0.5, resume=True)
    # Each window exactly once over both runs, with all its records.
    assert Counter(first.items) + Counter(second.items) == _oracle()


def test_a_stopped_channel_holds_event_time_where_it_was() -> None:
    ended = WatermarkCombiner(["a", "b"])
    ended.update("a", 10)
    assert ended.update("b", 7) == 7
    assert ended.end("b") == 10  # an input that ended holds nothing back
    assert ended.end("a") == float("inf")
    combiner = WatermarkCombiner(["a", "b"])
    combiner.update("a", 10)
    assert combiner.update("b", 7) == 7
    assert combiner.end("b", stopped=True) is None  # stopped: time stays at its 7
    assert combiner.end("a") is None  # not +inf: b was stopped, not at its end
    assert combiner.current == 7
    assert combiner.update("b", 50) is None  # nothing after its end moves it
    moved = WatermarkCombiner(["a"])
    moved.restore(combiner.to_data())  # a successor keeps it frozen
    assert moved.update("b", 60) is None
    assert moved.current == 7
