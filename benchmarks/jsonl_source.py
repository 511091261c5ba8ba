"""Benchmark of the JSONL source alone: lines per second of small JSON objects, one split.

Run from the repository root::

    python benchmarks/jsonl_source.py                       # 1M lines, 5 rounds
    python benchmarks/jsonl_source.py --lines 300000 --rounds 3
    # before/after in one run: the JsonlSource of another commit next to this one
    git show <commit>:runtime/_sources.py > /tmp/sources_before.py
    python benchmarks/jsonl_source.py --before /tmp/sources_before.py

The file holds lines like ``{"user": "u123", "item": 42, "price": 9.99}`` (~45 bytes) with
every 1,000th line bad JSON (so the dead-letter path is part of the figure). One reader reads
the whole file (one split) in batches of ``--batch`` records, as a source actor does, from the
page cache (a first untimed pass warms it). Only the source is timed: no job, no keying, no
actors. Printed per reader: the best and the median lines/s over the rounds; the same per
CPU-second of this process (the figure to read on a shared machine; the busy share says how much
of a core the reader got); and the records and errors it returned (equal across readers).

``--before`` loads ``JsonlSource`` from a standalone module file (the previous implementation
lived in ``runtime/_sources.py``, which imports nothing from shoal) and runs it interleaved with
the current one, round by round, because this machine's speed drifts over minutes.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from shoal import JsonlSource


def write_file(path: Path, lines: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        if i % 1000 == 999:
            out.append(b'{"user": "u%d", "item": oops}' % i)
        else:
            out.append(
                b'{"user": "u%d", "item": %d, "price": %.2f}'
                % (rng.randrange(100_000), rng.randrange(1000), rng.random() * 100)
            )
    data = b"\n".join(out) + b"\n"
    path.write_bytes(data)
    return len(data)


async def read_all(source_cls: Any, path: Path, batch: int) -> tuple[int, int, float, float]:
    source = source_cls(path, split_bytes=1 << 40)  # one split: one reader, as on one worker
    (split,) = source.splits()
    reader = source.open_split(split)
    records = errors = 0
    gc.collect()
    started, cpu_started = time.perf_counter(), time.process_time()
    while (b := await reader.read_batch(batch)) is not None:
        records += len(b.values)
        errors += len(b.errors)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await reader.aclose()
    return records, errors, elapsed, cpu


def load_before(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("jsonl_before", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module.JsonlSource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8192, help="records per read_batch")
    parser.add_argument("--before", help="a module file with an older JsonlSource to compare")
    args = parser.parse_args()

    readers: dict[str, Any] = {}
    if args.before:
        readers["before"] = load_before(args.before)
    readers["current"] = JsonlSource
    with tempfile.TemporaryDirectory(prefix="shoal-bench-jsonl-") as tmp:
        path = Path(tmp) / "bids.jsonl"
        size = write_file(path, args.lines)
        print(f"{args.lines:,} lines, {size / 1e6:.1f} MB, batches of {args.batch:,}")
        counts: dict[str, tuple[int, int]] = {}
        rates: dict[str, list[float]] = {name: [] for name in readers}
        cpu_rates: dict[str, list[float]] = {name: [] for name in readers}
        busy: dict[str, list[float]] = {name: [] for name in readers}
        for name, cls in readers.items():  # warm the page cache and the imports
            records, errors, _, _ = anyio.run(read_all, cls, path, args.batch)
            counts[name] = (records, errors)
        for _ in range(args.rounds):
            for name, cls in readers.items():
                records, errors, elapsed, cpu = anyio.run(read_all, cls, path, args.batch)
                rates[name].append((records + errors) / elapsed)
                cpu_rates[name].append((records + errors) / cpu)
                busy[name].append(cpu / elapsed)
        for name in readers:
            runs = rates[name]
            records, errors = counts[name]
            print(
                f"{name:8s} best {max(runs):>10,.0f} lines/s   median "
                f"{statistics.median(runs):>10,.0f} lines/s   per CPU-second: best "
                f"{max(cpu_rates[name]):>10,.0f}, median "
                f"{statistics.median(cpu_rates[name]):>10,.0f}"
                f"   CPU busy {min(busy[name]):.0%}-{max(busy[name]):.0%}"
            )
            print(
                f"         ({records:,} records, {errors:,} errors; rounds: "
                + ", ".join(f"{r:,.0f}" for r in runs)
                + " lines/s)"
            )
        if len(set(counts.values())) > 1:
            raise SystemExit(f"readers disagree on what the file holds: {counts}")


if __name__ == "__main__":
    main()
