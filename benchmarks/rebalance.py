"""Benchmark: a skewed workload's throughput before and after ``rebalance()``.

    python benchmarks/rebalance.py                     # 3M records, 2 worker processes
    python benchmarks/rebalance.py --records 6000000 --work 20

Two worker processes run a keyed operator that costs ~``work`` µs of Python per record over
32 key groups. 80 % of the records go to 8 hot keys, each in its own key group, all among the
16 key groups the initial placement gives worker 0 (placed badly on purpose); the other 20 %
are spread over 1,000 cold keys. Worker 0 is then the bottleneck, worker 1 mostly idle. A
timeline step calls ``rebalance()`` once 40 % of the records were read. Printed: events/s
before (from 10 % of the input to the last progress sample with the initial placement) and
after (from the second sample with every move done to 95 % of the input), their ratio, the
moves, the busiest worker's load before and after as the policy predicted it, and the
longest pause of a moved key group. The final state is checked against the input.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from functools import partial
from pathlib import Path

import anyio
from shoal.runtime.timeline import at, rebalance

from shoal import (
    CountingSink,
    Flow,
    IterableSource,
    ProcessContext,
    Progress,
    ValueStateSpec,
    key_group_of,
    run_job,
)

HERE = str(Path(__file__).resolve())
KEY_GROUPS = 32
HOT = 8
COLD = 1_000


def hot_keys() -> list[int]:
    """``HOT`` int keys in distinct key groups of the first half (worker 0's at the start)."""
    keys: list[int] = []
    groups: set[int] = set()
    key = 10**6
    while len(keys) < HOT:
        group = key_group_of(key, KEY_GROUPS)
        if group < KEY_GROUPS // 2 and group not in groups:
            keys.append(key)
            groups.add(group)
        key += 1
    return keys


def key_of(hot: list[int], value: int) -> int:
    share = (value * 2654435761) % 100
    return hot[share % HOT] if share < 80 else value % COLD


def busy(work: int, key: int, value: int, ctx: ProcessContext) -> None:
    n = ctx.state.n
    n.update(n.value() + 1)
    acc = value
    for _ in range(work * 2):  # ~0.45 µs an iteration here: ~``work`` µs a record
        acc = (acc * 31 + 7) & 0xFFFF
    ctx.emit(acc)


def build(records: int = 3_000_000, work: int = 10) -> Flow:
    """The skewed keyed count (worker processes rebuild this)."""
    flow = Flow("skewed", num_key_groups=KEY_GROUPS)
    flow.source(IterableSource(range(records), splits=4)).key_by(
        partial(key_of, hot_keys())
    ).process(partial(busy, work), states=[ValueStateSpec("n", default=0)], name="counts").sink(
        CountingSink()
    )
    return flow


Sample = tuple[float, int, tuple[int, ...]]  # elapsed s, records read, key group -> worker


def rate(window: list[Sample]) -> float:
    """Records per second from the first to the last sample of ``window``."""
    if len(window) < 2:
        raise SystemExit(f"too few progress samples in a window ({window}): use more --records")
    (t0, n0, _), (t1, n1, _) = window[0], window[-1]
    return (n1 - n0) / (t1 - t0)


def windows(samples: list[Sample], records: int) -> tuple[list[Sample], list[Sample]]:
    """Before: from 10 % of the input to the last sample with the initial placement. After:
    from the second sample with the final placement (every move done) to 95 %."""
    first, last = samples[0][2], samples[-1][2]
    changed = next(i for i, s in enumerate(samples) if s[2] != first)
    # From the second sample with the final table: the first window after the moves holds
    # the sources refilling the buffers the move drained.
    settled = max(i for i, s in enumerate(samples) if s[2] != last) + 2
    before = [s for s in samples[:changed] if s[1] >= records // 10]
    after = [s for s in samples[settled:] if s[1] <= records * 95 // 100]
    return before, after


async def main(records: int, work: int) -> None:
    samples: list[Sample] = []

    def on_progress(progress: Progress) -> None:
        where = tuple(load.worker for load in progress.key_groups)
        samples.append((progress.elapsed_s, progress.records_in, where))

    with tempfile.TemporaryDirectory(prefix="shoal-rebalance-bench-") as state:
        result = await run_job(
            f"{HERE}:build",
            params={"records": records, "work": work},
            workers=2,
            state_dir=state,
            on_progress=on_progress,
            timeline=[at(rebalance(), records=records * 4 // 10)],
        )
        counts = result.read_state("counts", "n")
    hot = hot_keys()
    expected = Counter(key_of(hot, value) for value in range(records))
    assert counts == dict(expected), "state differs from the input's counts"
    before_window, after_window = windows(samples, records)
    before, after = rate(before_window), rate(after_window)
    [record] = result.rebalances
    peak_before = max(load for _w, load in record.load_before)
    peak_after = max(load for _w, load in record.load_after)
    pauses = sorted(m.pause_s * 1000 for m in result.migrations if m.kind == "group")
    print(f"records {records:,}, ~{work} µs of work per record, 2 worker processes")
    print(f"before rebalance: {before:,.0f} events/s")
    print(f"after rebalance:  {after:,.0f} events/s")
    print(f"ratio after/before: {after / before:.2f}")
    moves = ", ".join(f"{m.item}: {m.source}->{m.target}" for m in record.moves)
    print(f"rebalance: {len(record.moves)} moves in {record.seconds * 1000:.1f} ms ({moves})")
    print(
        f"busiest worker (predicted by the policy): {peak_before:,.0f} -> {peak_after:,.0f}"
        " records/s"
    )
    if pauses:
        print(f"pause per moved key group: max {pauses[-1]:.2f} ms")
    print(f"whole run: {result.events_per_s:,.0f} events/s in {result.elapsed_s:.1f} s")
    busy_total = sum(op[2] for r in result.reports for op in r["by_operator"].values())
    print(f"keyed operator, wall time per record: {busy_total / records * 1e6:.2f} µs")
    for report in sorted(result.reports, key=lambda r: r["worker"]):
        busy_s = sum(op[2] for op in report["by_operator"].values())
        print(
            f"worker {report['worker']}: CPU {report['cpu_seconds']:.1f} s, keyed operator"
            f" busy {busy_s:.1f} s"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3_000_000)
    parser.add_argument("--work", type=int, default=10, help="µs of work per record (approx.)")
    args = parser.parse_args()
    anyio.run(main, args.records, args.work)


if __name__ == "__main__":
    cli()
