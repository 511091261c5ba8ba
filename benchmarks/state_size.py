"""Benchmark: a keyed count as its state grows from 100k to 20M keys under a memory budget.

    python benchmarks/state_size.py                       # 100k 1M 4M 20M keys x zipf 0.6, 1.1
    python benchmarks/state_size.py --keys 100000 1000000 --zipf-s 0.6 --events 2000000
    python benchmarks/state_size.py --state-memory off    # no budget, for comparison

Each case runs ``run_job`` with one worker process, checkpoints every second (``--interval``)
and a state memory budget (``--state-memory``, default 256 MB) over :class:`ZipfKeys`: first
every key once (the preload: the state then holds ``keys`` entries, far more than the budget
holds at 4M and 20M keys), then ``--events`` records whose keys are Zipf-distributed over all
keys. The workload needs O(1) memory whatever the key count (unlike ``ClickstreamSource``,
whose sampling tables take 16 bytes a key in the worker), so the worker's memory is the job's.

Printed per case: events/s over the whole job (preload included) and after the preload
(from the first progress sample past it: the rate with the state at its full size), the
worker's peak RSS as the kernel counts it (``VmHWM``: anonymous memory plus mapped file
pages, among them LMDB's pages, which are reclaimable page cache) and its peak *anonymous*
RSS (``RssAnon``, sampled every 50 ms: the Python heap, what the budget bounds) beside what
LMDB holds (pages in use, all key groups), the state cache's hit rate (per lookup: the
columnar count looks each distinct key of a batch up once) and its misses per record, the
longest single flush (a checkpoint's epoch commit of one key group, an early write-back or
the final flush) and the final counts checked against an oracle computed from the workload
alone (every key's count, compared key by key with what LMDB holds).

Cases run in order of key count (every Zipf exponent at one size, then the next size), each in
a fresh worker process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _args  # run as a script: its folder is on sys.path
import anyio
import numpy as np
from shoal.runtime import SourceBatch

from shoal import CountingSink, Flow, configure_logging, run_job

#: Odd multipliers of the key scramble (coprime with every key count made of 2s and 5s, so
#: ``(rank * A + B) % keys`` is a bijection) and of the index hash.
A = 2654435761
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _uniform(index: np.ndarray, seed: int) -> np.ndarray:
    """A uniform float in [0, 1) per global index: splitmix64 of (seed, index)."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) * GOLDEN + np.uint64(seed)
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class ZipfKeys:
    """Deterministic int keys in ``[0, keys)``: ``keys`` preload records, then ``events`` more.

    Global record ``i < keys`` has key ``(i * A) % keys`` (every key once, scattered); record
    ``keys + j`` has the key of Zipf rank ``r`` (probability ~ ``1 / (r + 1) ** zipf_s``, drawn
    by the continuous inverse CDF from a hash of ``j``), scattered the same way. Split ``s`` of
    ``splits`` reads records ``s, s + splits, ...``; its position is the count it has read.
    Nothing is precomputed: any record is a pure function of its index.
    """

    bounded = True

    def __init__(self, *, keys: int, events: int, zipf_s: float, splits: int, seed: int) -> None:
        self.keys = keys
        self.events = events
        self.zipf_s = zipf_s
        self.n_splits = splits
        self.seed = seed

    def splits(self) -> list[str]:
        return [f"zipf:{s}" for s in range(self.n_splits)]

    def open_split(self, split: str, position: Any | None = None) -> _Reader:
        return _Reader(self, int(split.rpartition(":")[2]), position or 0)

    def key_of(self, i: np.ndarray) -> np.ndarray:
        n = self.keys
        u = _uniform(i - n, self.seed)
        s = self.zipf_s
        if abs(s - 1.0) < 1e-9:
            x = np.exp(u * np.log(n + 1.0))
        else:
            x = ((float(n + 1) ** (1.0 - s) - 1.0) * u + 1.0) ** (1.0 / (1.0 - s))
        rank = np.minimum(x.astype(np.int64) - 1, n - 1)
        rank = np.where(i < n, i, rank)
        return (rank * A + 7) % n


class _Reader:
    def __init__(self, source: ZipfKeys, split: int, position: int) -> None:
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


def build(keys: int, events: int, zipf_s: float, splits: int = 2, seed: int = 5) -> Flow:
    flow = Flow("state_size")
    source = ZipfKeys(keys=keys, events=events, zipf_s=zipf_s, splits=splits, seed=seed)
    flow.source(source).key_by(identity).count(name="counts").sink(CountingSink())
    return flow


def oracle(source: ZipfKeys) -> np.ndarray:
    """Every key's count, from the workload alone (numpy, in chunks)."""
    counts = np.zeros(source.keys, dtype=np.int64)
    total = source.keys + source.events
    for start in range(0, total, 1 << 22):
        index = np.arange(start, min(total, start + (1 << 22)), dtype=np.int64)
        counts += np.bincount(source.key_of(index), minlength=source.keys)
    return counts


def check(result: Any, expected: np.ndarray) -> int:
    """Compare every key's committed count with the oracle, key group by key group (never all
    of the state in one dict); return the keys checked."""
    (op,) = [op for op in result.plan.flow.keyed_operators() if op.name == "counts"]
    seen = 0
    for group in range(result.plan.num_key_groups):
        with result.backend.open_store(op.name, group, op.states) as store:
            for key, value in store.items("value"):
                if expected[key] != value:
                    raise AssertionError(f"key {key}: counted {value}, expected {expected[key]}")
                seen += 1
    if seen != int(np.count_nonzero(expected)):
        raise AssertionError(f"{seen} keys in state, expected {np.count_nonzero(expected)}")
    return seen


class MemorySampler:
    """Polls /proc of this process's descendants (the worker) every ``period`` seconds and
    keeps each one's peak RssAnon, RssFile and VmHWM (the kernel's own peak of VmRSS)."""

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.peaks: dict[int, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for pid in _descendants(os.getpid()):
                fields = _status(pid)
                if not fields:
                    continue
                peak = self.peaks.setdefault(pid, {})
                for name, value in fields.items():
                    peak[name] = max(peak.get(name, 0), value)

    def worker(self) -> dict[str, int]:
        """The peaks of the descendant with the largest VmHWM (the worker process), in KiB."""
        return max(self.peaks.values(), key=lambda p: p.get("VmHWM", 0), default={})


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{parent}/task/{task}/children").read_text()
            except OSError:
                continue
            for child in map(int, text.split()):
                found.append(child)
                todo.append(child)
    return found


def _status(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(rest.split()[0])
    return fields


async def measure(args: argparse.Namespace, keys: int, zipf_s: float) -> dict[str, Any]:
    params = {"keys": keys, "events": args.events, "zipf_s": zipf_s, "splits": args.splits}
    samples: list[tuple[float, int]] = []  # (elapsed s, records read): twice a second
    with tempfile.TemporaryDirectory(prefix="shoal-state-size-", dir=args.tmp) as state_dir:
        with MemorySampler() as sampler:
            result = await run_job(
                f"{__file__}:build",
                on_progress=lambda p: samples.append((p.elapsed_s, p.records_in)),
                params=params,
                workers=1,
                processes=True,
                state_dir=state_dir,
                batch_size=args.batch_size,
                checkpoint_interval=args.interval,
                state_memory=args.state_memory,
            )
        checked = time.perf_counter()
        expected = oracle(ZipfKeys(seed=5, **params))
        assert int(expected.sum()) == result.records_in, "a record was lost or doubled"
        keys_checked = check(result, expected)
        checked = time.perf_counter() - checked
        # What LMDB holds (pages in use, every key group): what RssFile grows with.
        lmdb_bytes = sum(stats.bytes for stats in result.key_group_statistics("counts"))
    (report,) = result.reports
    peaks = sampler.worker()
    # The Zipf phase alone: from the first progress sample past the preload to the end.
    after = [(t, n) for t, n in samples if n >= keys]
    zipf_rate = (
        (result.records_in - after[0][1]) / (result.elapsed_s - after[0][0])
        if after and result.elapsed_s > after[0][0]
        else None
    )
    hits = report.get("state_cache_hits", 0)
    misses = report.get("state_cache_misses", 0)
    return {
        "keys": keys,
        "zipf_s": zipf_s,
        "events": result.records_in,
        "elapsed_s": round(result.elapsed_s, 2),
        "events_per_s": round(result.events_per_s),
        "zipf_phase_events_per_s": None if zipf_rate is None else round(zipf_rate),
        "peak_rss_mb": round(peaks.get("VmHWM", 0) / 1024),
        "peak_anon_mb": round(peaks.get("RssAnon", 0) / 1024),
        "peak_file_mb": round(peaks.get("RssFile", 0) / 1024),
        "lmdb_mb": round(lmdb_bytes / 2**20),
        # Per lookup: the columnar count looks each distinct key of a batch up once, so a
        # hot key's repeats in a batch are no lookups; misses per record say what LMDB serves.
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "misses_per_record": round(misses / max(result.records_in, 1), 3),
        "longest_flush_s": round(report.get("flush_max_seconds", 0.0), 3),
        "flush_s": round(report["flush_seconds"], 2),
        "evicted": report.get("state_cache_evicted", 0),
        "cache_mb": round(report.get("state_cache_bytes", 0) / 2**20),
        "checkpoints": result.checkpoints.completed if result.checkpoints else 0,
        # Trigger to manifest: the interval a checkpoint's delta (held in memory until its
        # file is written) covers when checkpoints run back to back.
        "checkpoint_p50_s": (
            None
            if result.checkpoints is None or result.checkpoints.duration_p50_s is None
            else round(result.checkpoints.duration_p50_s, 2)
        ),
        "keys_checked": keys_checked,
        "check_s": round(checked, 1),
    }


async def main(args: argparse.Namespace) -> None:
    configure_logging("console", "warning")
    runs = []
    for keys in args.keys:
        for zipf_s in args.zipf_s:
            run = await measure(args, keys, zipf_s)
            runs.append(run)
            print(
                f"{keys:>11,} keys zipf {zipf_s:<4}: {run['events_per_s']:>9,} events/s "
                f"({run['events']:,} in {run['elapsed_s']} s; after the preload "
                f"{_rate(run['zipf_phase_events_per_s'])}), peak RSS {run['peak_rss_mb']} MB "
                f"(anon {run['peak_anon_mb']}, file {run['peak_file_mb']}; LMDB holds "
                f"{run['lmdb_mb']} MB), hit rate "
                f"{run['hit_rate']} ({run['misses_per_record']} misses a record), longest "
                f"flush {run['longest_flush_s']} s, "
                f"{run['checkpoints']} checkpoints (p50 {run['checkpoint_p50_s']} s), "
                f"{run['evicted']:,} evicted, "
                f"oracle equal ({run['keys_checked']:,} keys)",
                flush=True,
            )
    by = {(run["keys"], run["zipf_s"]): run for run in runs}
    if any(keys in (4_000_000, 20_000_000) for keys in args.keys):
        print("targets:")
    for zipf_s in args.zipf_s:
        small, large = by.get((100_000, zipf_s)), by.get((4_000_000, zipf_s))
        if small and large:
            ratio = large["events_per_s"] / small["events_per_s"]
            print(f"  zipf {zipf_s}: 4M-key rate / 100k-key rate = {ratio:.2f} (target >= 0.7)")
            if large["zipf_phase_events_per_s"] and small["zipf_phase_events_per_s"]:
                phase = large["zipf_phase_events_per_s"] / small["zipf_phase_events_per_s"]
                print(f"  zipf {zipf_s}: the same after the preload = {phase:.2f}")
        if large:
            print(
                f"  zipf {zipf_s}: longest flush at 4M keys {large['longest_flush_s']} s "
                "(target < 0.5)"
            )
        huge = by.get((20_000_000, zipf_s))
        if huge:
            print(
                f"  zipf {zipf_s}: peak RSS at 20M keys {huge['peak_rss_mb']} MB, anon "
                f"{huge['peak_anon_mb']} MB (target < ~400)"
            )
    if args.json:
        print(json.dumps({"state_memory": args.state_memory, "runs": runs}))


def _rate(events_per_s: float | None) -> str:
    return "n/a" if events_per_s is None else f"{events_per_s:,.0f} events/s"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keys", type=_args.count, nargs="+", default=[100_000, 1_000_000, 4_000_000, 20_000_000]
    )
    parser.add_argument(
        "--zipf-s", type=_args.exponent, nargs="+", default=[0.6, 1.1], dest="zipf_s"
    )
    parser.add_argument(
        "--events", type=_args.count, default=4_000_000, help="Zipf records after the preload"
    )
    parser.add_argument("--splits", type=_args.count, default=2)
    parser.add_argument("--batch-size", type=_args.count, default=8192)
    parser.add_argument("--interval", type=_args.interval, default=1.0, metavar="SECONDS|off")
    parser.add_argument(
        "--state-memory",
        type=_args.megabytes,
        default=256 * 1024 * 1024,
        metavar="MB|off",
        help="the worker's state memory budget in MiB (default 256; 'off': none)",
    )
    parser.add_argument("--tmp", default=None, help="where state directories go")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]), backend_options={"use_uvloop": True})
