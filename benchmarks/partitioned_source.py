"""Benchmark: a key-partitioned source against the same records split by position.

    python benchmarks/partitioned_source.py                 # 2M events, 100k zipf keys, 2 workers
    python benchmarks/partitioned_source.py --rounds 5 --workers 2 4

The same clickstream events (materialised in memory, in the same order) are read twice, in
interleaved rounds, by a keyed running count (``count()``, 1 s checkpoints, worker processes):
once from an ``IterableSource`` cut into splits by position (every split holds every key, so
about ``(workers - 1) / workers`` of the records cross to another worker's key groups), once
``partition_by`` the user (``key_partition``: each split holds one range of key groups and is
read on the worker that owns it, so no record crosses). Prints events/s per run, the medians,
their ratio, and the records that crossed (``shoal_records_crossing_total``). Each run's final
counts are checked against the input.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import Counter
from typing import Any

import anyio

from shoal import (
    ClickstreamSource,
    CountingSink,
    Flow,
    IterableSource,
    configure_logging,
    run_job,
)


def click_user(click: tuple[int, str, int]) -> int:
    return click[0]


def events_of(events: int, keys: int, zipf_s: float) -> list[tuple[int, str, int]]:
    return list(ClickstreamSource(events=events, users=keys, seed=11, zipf_s=zipf_s).iter_all())


def build(events: int, keys: int, zipf_s: float, splits: int, partitioned: bool) -> Flow:
    """The keyed count over the materialised clicks, partitioned by user or by position."""
    flow = Flow("partitioned_source")
    source = IterableSource(
        events_of(events, keys, zipf_s),
        splits=splits,
        partition_by=click_user if partitioned else None,
        num_key_groups=flow.num_key_groups,
    )
    flow.source(source).key_by(click_user).count(name="counts").sink(CountingSink())
    return flow


async def measure(args: argparse.Namespace, workers: int, partitioned: bool) -> dict[str, Any]:
    params = {
        "events": args.events,
        "keys": args.keys,
        "zipf_s": args.zipf_s,
        "splits": args.splits_per_worker * workers,
        "partitioned": partitioned,
    }
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as state_dir:
        result = await run_job(
            f"{__file__}:build",
            params=params,
            workers=workers,
            processes=True,
            state_dir=state_dir,
            checkpoint_interval=1.0,
        )
        counts = result.read_state("counts", "value")
    expected = Counter(user for user, _page, _ts in events_of(args.events, args.keys, args.zipf_s))
    assert counts == expected, "a click was miscounted"
    return {
        "events_per_s": result.events_per_s,
        "crossing": sum(int(r["records_crossing"]) for r in result.reports),
    }


async def main(args: argparse.Namespace) -> None:
    configure_logging("console", "warning")
    runs: dict[tuple[int, bool], list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for workers in args.workers:
            for partitioned in (False, True):
                run = await measure(args, workers, partitioned)
                runs.setdefault((workers, partitioned), []).append(run)
                name = "partitioned" if partitioned else "by position"
                print(
                    f"round {round_ + 1} workers={workers} {name:<12} "
                    f"{run['events_per_s']:>10,.0f} events/s, {run['crossing']:>9,} crossed",
                    flush=True,
                )
    for workers in args.workers:
        plain = statistics.median(r["events_per_s"] for r in runs[(workers, False)])
        keyed = statistics.median(r["events_per_s"] for r in runs[(workers, True)])
        print(
            f"workers={workers}: by position {plain:,.0f} events/s, partitioned {keyed:,.0f} "
            f"(medians of {args.rounds}): x{keyed / plain:.2f}"
        )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--zipf-s", type=float, default=1.1)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--splits-per-worker", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse())
