"""Benchmark: keyed running count (emit the updated count for every event) on LMDB state.

    python benchmarks/keyed_count.py                  # 2M events, 100k zipf keys, 1 and 2 workers
    python benchmarks/keyed_count.py --events 500000 --workers 1 2 4 --op process
    python benchmarks/keyed_count.py --op count per-record process --checkpoint-interval 1 off
    python benchmarks/keyed_count.py --op sum reduce --workers 1   # the running sum

Three ways to count (``--op``, any of them; each run's final counts are checked against the
input): ``count`` is the built-in ``count()``, which runs a batch as columns (no Python code
per record); ``per-record`` is the same count record by record (``count(columnar=False)``:
read, add, write and emit per record, what ``count()`` did before it went columnar);
``process`` is a user process function holding a ValueState. Two ways to keep a running sum
of the same events, each event's number its user id + 1 (so every key's sum divides into its
count, checked the same way): ``sum`` is the built-in ``sum()`` (columns), ``reduce`` is
``reduce(lambda a, b: a + b)`` (record by record). ``--checkpoint-interval`` takes seconds or
``off`` (several: each is measured; default 1 s, as users run).

Runs the same job with each worker count (worker processes, so 1 worker is measured with the
same code path as 2), in interleaved rounds (every op, interval and worker count once per
round); prints every run, then per (op, interval, worker count) the median and best events/s,
the speed-up of the medians over one worker, each worker's CPU busy share, the final flush
time, and peak worker memory; then the ratios the performance targets are stated in. The
job's clock starts when the sources start reading and stops when the last key group has
drained and flushed its state to LMDB (process start-up is reported separately).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

import _args  # run as a script: its folder is on sys.path
import anyio

from shoal import (
    ClickstreamSource,
    CountingSink,
    Flow,
    ProcessContext,
    ValueStateSpec,
    configure_logging,
    run_job,
)


def click_user(click: tuple[int, str, int]) -> int:
    return click[0]


def count_clicks(user: int, _click: Any, ctx: ProcessContext) -> None:
    n = ctx.state.n.value() + 1
    ctx.state.n.update(n)
    ctx.emit((user, n))


def user_number(click: tuple[int, str, int]) -> int:
    """The number the sum ops add: the user id + 1 (never 0, so a sum divides into a count)."""
    return click[0] + 1


def same(number: int) -> int:
    return number


OPS = ("count", "per-record", "process", "sum", "reduce")
DEFAULT_OPS = ("count", "per-record", "process")
STATE = {"count": "value", "per-record": "value", "process": "n", "sum": "value", "reduce": "value"}


def build(events: int, keys: int, splits: int, op: str, zipf_s: float) -> Flow:
    """The benchmark job; ``op`` is one of :data:`OPS` (see the module docstring)."""
    flow = Flow("keyed_count")
    source = flow.source(
        ClickstreamSource(events=events, users=keys, seed=11, splits=splits, zipf_s=zipf_s)
    )
    if op in ("sum", "reduce"):
        numbers = source.map(user_number).key_by(same)
        if op == "sum":
            numbers.sum(name="counts").sink(CountingSink())
        else:
            numbers.reduce(lambda a, b: a + b, name="counts").sink(CountingSink())
        return flow
    keyed = source.key_by(click_user)
    if op == "count":
        out = keyed.count(name="counts")
    elif op == "per-record":
        out = keyed.count(name="counts", columnar=False)
    else:
        out = keyed.process(count_clicks, states=[ValueStateSpec("n", default=0)], name="counts")
    out.sink(CountingSink())
    return flow


async def measure(
    args: argparse.Namespace, op: str, interval: float | None, workers: int
) -> dict[str, Any]:
    params = {
        "events": args.events,
        "keys": args.keys,
        "splits": args.splits,
        "op": op,
        "zipf_s": args.zipf_s,
    }
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as state_dir:
        wall = time.perf_counter()
        driver_cpu = time.process_time()
        result = await run_job(
            f"{__file__}:build",
            params=params,
            workers=workers,
            processes=True,
            state_dir=state_dir,
            batch_size=args.batch_size,
            checkpoint_interval=interval,
            state_memory=args.state_memory,
        )
        wall = time.perf_counter() - wall
        driver_cpu = time.process_time() - driver_cpu
        counts = result.read_state("counts", STATE[op])
    if op in ("sum", "reduce"):  # a key's sum is its number (the key) times its count
        assert all(total % key == 0 for key, total in counts.items()), "a number was miscounted"
        counts = {key: total // key for key, total in counts.items()}
    # Every click counted once: the counts add up to the events, over the users seen.
    assert sum(counts.values()) == result.records_in == args.events, "a click was miscounted"
    flush_s = max(sum(r["flush_seconds"] for r in result.reports) / workers, 0.0)
    busy = [r["cpu_seconds"] / result.elapsed_s for r in result.reports]
    return {
        "workers": workers,
        "events": result.records_in,
        "outputs": result.records_out,
        "keys_in_state": len(counts),
        "checkpoints": result.checkpoints.completed if result.checkpoints else 0,
        "elapsed_s": round(result.elapsed_s, 3),
        "events_per_s": round(result.events_per_s),
        "startup_and_teardown_s": round(wall - result.elapsed_s, 3),
        "flush_s_per_worker": round(flush_s, 3),
        # CPU seconds each worker process spent on the job / elapsed: below ~0.95 a worker
        # waited (for its peer, or for a core another process held).
        "worker_busy": [round(b, 2) for b in busy],
        # The driver's CPU seconds (supervisor, checkpoint coordinator, progress; start-up
        # and teardown included) / elapsed: its share of the two cores the workers lack.
        "driver_busy": round(driver_cpu / result.elapsed_s, 2),
    }


def _interval_name(interval: float | None) -> str:
    return "off" if interval is None else f"{interval:g}s"


async def main(args: argparse.Namespace) -> None:
    configure_logging("console", "warning")
    # Rounds interleave everything measured (op, checkpoint interval, worker count): a shared
    # machine's speed drifts over minutes, and interleaving makes the drift hit all alike.
    cases = [
        (op, interval, workers)
        for op in args.op
        for interval in args.checkpoint_interval
        for workers in args.workers
    ]
    results: dict[tuple[str, float | None, int], list[dict[str, Any]]] = {c: [] for c in cases}
    for round_ in range(args.repeat):
        for case in cases:
            op, interval, workers = case
            run = await measure(args, op, interval, workers)
            results[case].append(run)
            print(
                f"round {round_ + 1} {op:<10} checkpoints {_interval_name(interval):<4} "
                f"workers={workers}: {run['events_per_s']:>10,} events/s  "
                f"({run['elapsed_s']:.2f} s, {run['checkpoints']} checkpoint"
                f"{'' if run['checkpoints'] == 1 else 's'}, worker CPU busy "
                f"{'/'.join(f'{b:.0%}' for b in run['worker_busy'])}, "
                f"driver {run['driver_busy']:.0%})",
                flush=True,
            )
    summary = []
    medians: dict[tuple[str, float | None, int], float] = {}
    for case, runs in results.items():
        op, interval, workers = case
        median = medians[case] = statistics.median(run["events_per_s"] for run in runs)
        best = max(runs, key=lambda run: run["events_per_s"])
        one = medians.get((op, interval, args.workers[0]), median)
        summary.append(
            {
                "op": op,
                "checkpoint_interval": interval,
                "workers": workers,
                "median_events_per_s": round(median),
                "best": best,
                "speedup_of_medians": round(median / one, 2),
            }
        )
        print(
            f"{op:<10} checkpoints {_interval_name(interval):<4} workers={workers}: median "
            f"{median:>12,.0f} events/s, best {best['events_per_s']:,} (final flush "
            f"{best['flush_s_per_worker']:.2f} s/worker, start-up+teardown "
            f"{best['startup_and_teardown_s']:.2f} s)"
            + (
                f"  x{median / one:.2f} over {args.workers[0]} worker"
                f"{'' if args.workers[0] == 1 else 's'}"
                if workers != args.workers[0]
                else ""
            ),
            flush=True,
        )
    lines = []
    for (op, interval, workers), median in medians.items():
        notes = []
        # What each op is compared with: the count's per-record path, or reduce for sum.
        base = "reduce" if op == "sum" else "per-record"
        if (base, interval, workers) in medians and op not in ("per-record", "reduce"):
            notes.append(f"{median / medians[(base, interval, workers)]:.2f}x {base}")
        if interval is not None and (op, None, workers) in medians:
            notes.append(f"{median / medians[(op, None, workers)]:.2f}x checkpoints off")
        if notes:
            lines.append(
                f"  {op:<10} checkpoints {_interval_name(interval):<4} workers={workers}: "
                + ", ".join(notes)
            )
    if lines:
        print("ratios of medians (targets: 2 workers >= 1.7x one; columnar >= 2x per-record;")
        print("                   process >= 0.85x per-record; 1 s checkpoints >= 0.85x off):")
        print("\n".join(lines))
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak worker RSS: {peak_mb:.0f} MB")
    if args.json:
        print(
            json.dumps(
                {
                    "events": args.events,
                    "keys": args.keys,
                    "summary": summary,
                    "peak_worker_rss_mb": round(peak_mb),
                }
            )
        )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=_args.count, default=2_000_000)
    parser.add_argument("--keys", type=_args.count, default=100_000)
    parser.add_argument("--zipf-s", type=_args.exponent, default=1.1, dest="zipf_s")
    parser.add_argument("--splits", type=_args.count, default=8)
    parser.add_argument("--workers", type=_args.workers, nargs="+", default=[1, 2])
    parser.add_argument("--op", choices=OPS, nargs="+", default=list(DEFAULT_OPS))
    parser.add_argument(
        "--checkpoint-interval",
        type=_args.interval,
        nargs="+",
        default=[1.0],
        metavar="SECONDS|off",
        help="checkpoint interval(s) to measure (default 1; 'off': none)",
    )
    parser.add_argument("--batch-size", type=_args.count, default=8192)
    parser.add_argument(
        "--state-memory",
        type=_args.megabytes,
        default=256 * 1024 * 1024,
        metavar="MB|off",
        help="each worker's state memory budget (default 256 MB; 'off': none)",
    )
    parser.add_argument(
        "--repeat", type=_args.count, default=3, help="rounds (each runs every case once)"
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON line of results")
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]), backend_options={"use_uvloop": True})
