"""Benchmark: checkpoints of a large keyed state (1M keys, ~10% of them changed per interval).

    python benchmarks/checkpoint_state.py                        # 1M keys, 3 rounds
    python benchmarks/checkpoint_state.py --keys 100000 --events 2000000 --rounds 2

A keyed count over a workload built for checkpoints (:class:`RotatingKeys`): first every key
once (the state grows to ``--keys`` entries), then records whose keys come from a hot window of
``--hot`` of the keys that moves on every ``--rotate-every`` records, so a checkpoint interval
that sees about that many records changes about ``--hot`` of the keys (the figure printed as
"delta entries per checkpoint" is measured: the entries of the delta files divided by
``--keys``; it includes the keys the preload adds while checkpoints run, and a checkpoint that
takes longer than the interval covers more than one window).

Each run is a fresh ``python`` process (its own peak RSS, no warm caches carried over) running
``run_job`` with one worker process, in interleaved rounds: without checkpoints, then with
checkpoints every ``--interval`` seconds, and again. Printed per configuration: events/s
(median over rounds), the ratio of the medians, checkpoints completed/failed, checkpoint
duration p50/p99 (trigger to manifest written), processing pause p99 and max (a key group's
local epoch commit), bytes written (full / delta), and peak RSS of the worker process.

Recovery time after kill -9 is :func:`measure_recovery` (not measured yet: see its docstring).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from shoal.runtime import SourceBatch

from shoal import CountingSink, Flow, run_job

HERE = Path(__file__).resolve()
#: Multiplier of the key scramble inside the hot window (odd, so it is a bijection mod 2**k
#: and spreads consecutive records over the window).
SCRAMBLE = 2654435761


class RotatingKeys:
    """Seeded-free, deterministic keys: ``keys`` preload records, then ``events`` hot ones.

    Global record ``i`` has key ``i`` while ``i < keys`` (the preload: every key once); after
    that, record ``j = i - keys`` has a key in the window ``[w * hot_n, (w + 1) * hot_n)``
    (modulo ``keys``) with ``w = j // rotate_every``. Split ``s`` of ``splits`` reads the
    records ``i = s, s + splits, ...`` (interleaved, so every split is in the same phase); its
    position is the count of records it has read.
    """

    bounded = True

    def __init__(
        self, *, keys: int, events: int, hot: float, rotate_every: int, splits: int
    ) -> None:
        self.keys = keys
        self.events = events
        self.hot_n = max(1, int(keys * hot))
        self.rotate_every = rotate_every
        self.n_splits = splits

    def splits(self) -> list[str]:
        return [f"rotating:{s}" for s in range(self.n_splits)]

    def open_split(self, split: str, position: Any | None = None) -> _Reader:
        return _Reader(self, int(split.rpartition(":")[2]), position or 0)

    def key_of(self, i: np.ndarray) -> np.ndarray:
        j = i - self.keys
        window = (j // self.rotate_every) * self.hot_n
        hot = window + (j * SCRAMBLE) % self.hot_n
        return np.where(i < self.keys, i, hot % self.keys)


class _Reader:
    def __init__(self, source: RotatingKeys, split: int, position: int) -> None:
        self.source = source
        self.split = split
        self.pos = position
        total = source.keys + source.events
        self.end = (total - split + source.n_splits - 1) // source.n_splits

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        if self.pos >= self.end:
            return None
        stop = min(self.pos + max_records, self.end)
        local = np.arange(self.pos, stop, dtype=np.int64)
        keys = self.source.key_of(self.split + local * self.source.n_splits).tolist()
        offsets = list(range(self.pos, stop))
        self.pos = stop
        return SourceBatch(keys, offsets, stop)

    async def aclose(self) -> None:
        return None


def identity(key: int) -> int:
    return key


def build(
    keys: int = 1_000_000,
    events: int = 4_000_000,
    hot: float = 0.1,
    rotate_every: int = 300_000,
    splits: int = 2,
) -> Flow:
    flow = Flow("checkpoint_state")
    source = RotatingKeys(
        keys=keys, events=events, hot=hot, rotate_every=rotate_every, splits=splits
    )
    flow.source(source).key_by(identity).count(name="counts").sink(CountingSink())
    return flow


def measure_recovery(params: dict[str, Any], interval: float) -> dict[str, Any] | None:
    """Recovery time after ``kill -9`` of a worker, until processing again.

    TO BE FILLED by the recovery work (issue 11): run the same job with ``workers=2`` and
    checkpoints every ``interval`` s, SIGKILL one worker process once a checkpoint has
    completed, and report ``result.recoveries`` (seconds from the loss noticed to every worker
    processing again), at ``--keys 100000`` and at 1M (on the local fast path it should not
    grow with the key count). Returns None until then; the report prints "not measured".
    ``benchmarks/recovery.py`` measures recovery on its own workload meanwhile.
    """
    return None


async def one_run(params: dict[str, Any], interval: float | None, batch_size: int) -> None:
    """One run in this process; prints one JSON object."""
    with tempfile.TemporaryDirectory(prefix="shoal-ckpt-state-") as state:
        result = await run_job(
            f"{HERE}:build",
            params=params,
            workers=1,
            processes=True,
            state_dir=state,
            batch_size=batch_size,
            checkpoint_interval=interval,
        )
        stats = result.checkpoints
        out: dict[str, Any] = {
            "events_per_s": result.events_per_s,
            "elapsed_s": result.elapsed_s,
            "records_in": result.records_in,
            "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "worker_cpu_s": sum(r.get("cpu_seconds", 0.0) for r in result.reports),
        }
        if stats is not None:
            # The first checkpoint writes fulls only; the others a delta per changed key group.
            delta_checkpoints = max(1, stats.completed - 1)
            out.update(
                completed=stats.completed,
                failed=stats.failed,
                skipped=stats.skipped,
                durations=list(stats.durations_s),
                pause_p99_s=stats.pause_p99_s,
                max_pause_s=stats.max_pause_s,
                alignment_p99_s=stats.alignment_p99_s,
                full_bytes=stats.full_bytes,
                delta_bytes=stats.delta_bytes,
                full_files=stats.full_files,
                delta_files=stats.delta_files,
                delta_entries_per_checkpoint=stats.delta_entries / delta_checkpoints,
            )
        print(json.dumps(out), flush=True)


def pct(values: list[float], q: float) -> float | None:
    from shoal.runtime._checkpoint_stats import percentile

    return percentile(values, q)


def spawn(args: argparse.Namespace, interval: float | None) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(HERE),
        "--one",
        "--interval",
        "none" if interval is None else str(interval),
        "--keys",
        str(args.keys),
        "--events",
        str(args.events),
        "--hot",
        str(args.hot),
        "--rotate-every",
        str(args.rotate_every),
        "--batch-size",
        str(args.batch_size),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def rates(runs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{run['events_per_s']:,.0f}" for run in runs)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f} ms"


def report(args: argparse.Namespace, runs: dict[float | None, list[dict[str, Any]]]) -> None:
    base_runs, ckpt_runs = runs[None], runs[args.interval]
    base = statistics.median(r["events_per_s"] for r in base_runs)
    with_ckpt = statistics.median(r["events_per_s"] for r in ckpt_runs)
    durations = [d for r in ckpt_runs for d in r["durations"]]
    pauses = [r["pause_p99_s"] for r in ckpt_runs if r["pause_p99_s"] is not None]
    print(
        f"\n{args.keys:,} keys, {args.events:,} hot events ({args.hot:.0%} of the keys per"
        f" {args.rotate_every:,} records), 1 worker process, {args.rounds} rounds"
    )
    print(
        f"without checkpoints: {base:,.0f} events/s (median; runs {rates(base_runs)}), "
        f"peak worker RSS {max(r['worker_rss_mb'] for r in base_runs):,.0f} MB"
    )
    print(
        f"checkpoints every {args.interval:g} s: {with_ckpt:,.0f} events/s (median; runs "
        f"{rates(ckpt_runs)}), "
        f"peak worker RSS {max(r['worker_rss_mb'] for r in ckpt_runs):,.0f} MB"
    )
    print(f"throughput ratio (medians): {with_ckpt / base:.2f}")
    print(
        f"checkpoints: {sum(r['completed'] for r in ckpt_runs)} completed, "
        f"{sum(r['failed'] for r in ckpt_runs)} failed, "
        f"{sum(r['skipped'] for r in ckpt_runs)} triggers skipped (one in flight)"
    )
    print(
        f"duration p50 {ms(pct(durations, 0.5))}, p99 {ms(pct(durations, 0.99))}, "
        f"max {ms(max(durations, default=None))}"
    )
    print(
        f"processing pause p99 {ms(max(pauses, default=None))} (worst run), "
        f"max {ms(max(r['max_pause_s'] for r in ckpt_runs))}"
    )
    changed = statistics.median(r["delta_entries_per_checkpoint"] for r in ckpt_runs)
    print(
        f"delta entries per checkpoint after the first (preload growth included): "
        f"{changed / args.keys:.1%} of the keys; written per"
        f" run: full {statistics.median(r['full_bytes'] for r in ckpt_runs) / 1e6:,.1f} MB,"
        f" delta {statistics.median(r['delta_bytes'] for r in ckpt_runs) / 1e6:,.1f} MB"
        " (medians)"
    )
    recovery = measure_recovery(vars(args), args.interval)
    print(f"recovery after kill -9: {'not measured' if recovery is None else recovery}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=4_000_000)
    parser.add_argument("--hot", type=float, default=0.1)
    parser.add_argument("--rotate-every", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--interval", default="1.0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", action="store_true", help="one run in this process (JSON)")
    args = parser.parse_args()
    args.interval = None if args.interval == "none" else float(args.interval)
    if args.one:
        params = {
            "keys": args.keys,
            "events": args.events,
            "hot": args.hot,
            "rotate_every": args.rotate_every,
        }
        anyio.run(one_run, params, args.interval, args.batch_size)
        return
    runs: dict[float | None, list[dict[str, Any]]] = {None: [], args.interval: []}
    started = time.perf_counter()
    for round_ in range(args.rounds):
        for interval in (None, args.interval):
            run = spawn(args, interval)
            runs[interval].append(run)
            extra = (
                ""
                if interval is None
                else f", {run['completed']} checkpoints, p99 {ms(pct(run['durations'], 0.99))}"
            )
            print(
                f"round {round_} interval={interval}: {run['events_per_s']:,.0f} events/s, "
                f"{run['elapsed_s']:.1f} s{extra} ({time.perf_counter() - started:.0f} s so far)",
                flush=True,
            )
    report(args, runs)


if __name__ == "__main__":
    main()
