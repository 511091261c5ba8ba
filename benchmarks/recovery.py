"""Benchmark: recovery time after kill -9, at 100k and 1M keys of state.

    python benchmarks/recovery.py                          # 100k and 1M keys, 2 rounds each
    python benchmarks/recovery.py --keys 100000 --rounds 1

A keyed count over ``keys`` distinct int keys (each seen ``repeats`` times, key order
repeated: at least 2M events, so the state holds ``keys`` entries after the first pass) runs in
two worker processes with 1 s checkpoints. A timeline kills worker 1 with SIGKILL once 60% of
the events were read (a few checkpoints have completed by then). Printed per key count:
recovery time (the failure noticed by the driver -> every worker processing again; median
over rounds), how each key
group came back (the local fast path when its LMDB holds the checkpoint's epoch), the slowest
key group's restore, and the checkpoints completed. The final state is checked against the
input (every key counted exactly ``repeats`` times).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from shoal.runtime.timeline import at, kill_worker

from shoal import CountingSink, Flow, IterableSource, run_job

HERE = str(Path(__file__).resolve())


def key_of(keys: int, value: int) -> int:
    return value % keys


def build(keys: int = 100_000, repeats: int = 3, key_groups: int = 128) -> Flow:
    """Every key ``repeats`` times, key order repeated (worker processes rebuild this)."""
    flow = Flow("recovery", num_key_groups=key_groups)
    # A range, not a list: each worker process rebuilds the flow, and a list of millions of
    # ints would add its construction to every (re)start measured here.
    values = range(keys * repeats)
    flow.source(IterableSource(values, splits=4)).key_by(partial(key_of, keys)).count(
        name="counts"
    ).sink(CountingSink())
    return flow


def repeats_for(keys: int) -> int:
    return max(3, -(-2_000_000 // keys))


async def one(keys: int) -> dict[str, Any]:
    repeats = repeats_for(keys)
    with tempfile.TemporaryDirectory(prefix="shoal-recovery-bench-") as state:
        result = await run_job(
            f"{HERE}:build",
            params={"keys": keys, "repeats": repeats},
            workers=2,
            state_dir=state,
            checkpoint_interval=1.0,
            timeline=[at(kill_worker(1), records=keys * repeats * 6 // 10)],
        )
        counts = result.read_state("counts", "value")
        assert len(counts) == keys, f"{len(counts)} keys in state, {keys} expected"
        assert set(counts.values()) == {repeats}, "a key was not counted exactly once a pass"
        paths: dict[str, int] = {}
        for report in result.reports:
            for path, n in report["restores"].items():
                paths[path] = paths.get(path, 0) + n
        stats = result.checkpoints
        assert stats is not None
        return {
            "recovery_s": result.recoveries,
            "paths": paths,
            "restore_s": max(report["restore_s"] for report in result.reports),
            "checkpoints": stats.completed,
        }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("keyed count, 2 worker processes, 1 s checkpoints, kill -9 of worker 1 at 60% read")
    print(
        f"{'keys':>10} {'recovery ms (median)':>21} {'each':>18} {'restore paths':>28} "
        f"{'slowest restore ms':>19} {'checkpoints':>11}"
    )
    for keys in args.keys:
        runs = [await one(keys) for _ in range(args.rounds)]
        recoveries = [s for run in runs for s in run["recovery_s"]]
        each = ", ".join(f"{s * 1000:.0f}" for s in recoveries)
        print(
            f"{keys:>10,} {statistics.median(recoveries) * 1000:>21.0f} {each:>18} "
            f"{runs[-1]['paths']!s:>28} {max(r['restore_s'] for r in runs) * 1000:>19.1f} "
            f"{min(r['checkpoints'] for r in runs):>11}"
        )


if __name__ == "__main__":
    anyio.run(main)
