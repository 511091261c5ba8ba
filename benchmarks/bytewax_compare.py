"""Benchmark: the keyed running count of ``keyed_count.py`` on shoal and on Bytewax, side by side.

    python benchmarks/bytewax_compare.py                # 2M events, 3 interleaved rounds
    python benchmarks/bytewax_compare.py --quick        # 200k events, 1 round
    python benchmarks/bytewax_compare.py --bytewax-op stateful_map stateful_batch count_final

Bytewax is installed on demand into a virtual environment of its own, outside the source tree
(``~/.cache/shoal-bench/bytewax-<version>`` unless ``--venv`` says otherwise), pinned to
``--bytewax-version`` with the numpy version this interpreter has. It is never a dependency of
shoal: its job (``benchmarks/_bytewax_job.py``) runs in that environment and imports no shoal.

The workload is the same on both sides: 2M events of the seeded clickstream (100k users, zipf
s = 1.1, seed 11, 8 splits, batches of 8,192), keyed by user, the updated count emitted for
every event into a sink that counts. Shoal runs ``keyed_count.py``'s own job (its
``ClickstreamSource``); Bytewax's source generates the same events in-process with
``benchmarks/_clickstream_events.py``, a numpy-only copy of that generator (a test checks the
two yield identical events). Every run's final per-key counts must equal the oracle computed
from the generator, or the script stops: shoal's from its LMDB state, Bytewax's from the last
count its sink saw per key.

Variants: shoal ``count()`` and a ``process`` function holding a ValueState (``--shoal-op``);
Bytewax ``stateful_map`` (per event), ``stateful_batch`` (per key and batch) and
``count_final`` (emits only at the end) (``--bytewax-op``); 1 and 2 workers (Bytewax: one
worker per process, processes started with ``-i``/``-a`` as ``python -m bytewax.testing -p``
does); checkpoints off and every 1 s (shoal ``checkpoint_interval=1``; Bytewax a SQLite
recovery directory and a 1 s snapshot interval, which ``bytewax.run`` also makes the epoch).

Each run is a fresh process tree, and rounds interleave the engines (shoal, Bytewax, shoal,
Bytewax, ...) so a shared machine's drift hits both alike. The clock runs from the first read
of a source to the end of the job (shoal: the last key group flushed to LMDB; Bytewax: its
``cli_main`` returned in every process). Prints every run, then per variant the median
events/s and the peak RSS of the largest process, and the shoal / Bytewax ratios of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from itertools import zip_longest
from pathlib import Path
from typing import Any

# Run as a script, so its folder is on sys.path (for the generator and keyed_count.py).
import _args
from _clickstream_events import ClickstreamEvents

HERE = Path(__file__).resolve().parent

DEFAULT_BYTEWAX_VERSION = "0.21.1"
SEED = 11  # keyed_count.py's seed
SHOAL_OPS = ("count", "process", "per-record")
BYTEWAX_OPS = ("stateful_map", "stateful_batch", "count_final")

Case = tuple[str, str, float | None, int]  # (engine, op, checkpoint interval, workers)


# --- Bytewax's environment ---------------------------------------------------------------------


def default_venv(version: str) -> Path:
    """Where Bytewax ``version`` is installed unless ``--venv`` is given."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "shoal-bench" / f"bytewax-{version}"


def ensure_bytewax(venv: Path, version: str) -> Path:
    """Create ``venv`` with ``bytewax==version`` (and this numpy) unless it has it; its python."""
    python = venv / "bin" / "python"
    numpy_version = metadata.version("numpy")
    probe = "import importlib.metadata as m; print(m.version('bytewax'), m.version('numpy'))"
    if python.exists():
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.split() == [version, numpy_version]:
            return python
    print(f"installing bytewax=={version} numpy=={numpy_version} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [python, "-m", "pip", "install", "-q", f"bytewax=={version}", f"numpy=={numpy_version}"],
        check=True,
    )
    return python


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --- One run of each engine ---------------------------------------------------------------------


def run_bytewax(
    python: Path, args: argparse.Namespace, op: str, interval: float | None, workers: int
) -> dict[str, Any]:
    """One Bytewax run: ``workers`` processes of ``_bytewax_job.py``; their results merged."""
    addresses = [f"127.0.0.1:{p}" for p in _free_ports(workers)] if workers > 1 else None
    with tempfile.TemporaryDirectory(prefix="bytewax-bench-") as tmp:
        recovery_dir = None
        if interval is not None:
            recovery_dir = str(Path(tmp) / "recovery")
            Path(recovery_dir).mkdir()
            # One SQLite recovery partition per process.
            init = [str(python), "-m", "bytewax.recovery", recovery_dir, str(workers)]
            subprocess.run(init, check=True)
        cfg = {
            "events": args.events,
            "keys": args.keys,
            "zipf_s": args.zipf_s,
            "seed": SEED,
            "splits": args.splits,
            "batch_size": args.batch_size,
            "op": op,
            "addresses": addresses,
            "snapshot_interval": interval,
            "recovery_dir": recovery_dir,
        }
        # Results go to files: Bytewax prints its own notes (connection retries) on stdout.
        results = [Path(tmp) / f"result-{i}.json" for i in range(workers)]
        wall = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    python,
                    str(HERE / "_bytewax_job.py"),
                    json.dumps({**cfg, "process_id": i, "result_path": str(results[i])}),
                ]
            )
            for i in range(workers)
        ]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - wall
        if any(codes):
            raise RuntimeError(f"a Bytewax process failed: exit codes {codes}")
        reports = [json.loads(path.read_text()) for path in results]
    final: dict[int, int] = {}
    for report in reports:
        for key, count in report["final"].items():
            if int(key) in final:
                raise AssertionError(f"Bytewax: key {key} reached the sinks of two processes")
            final[int(key)] = count
    elapsed = max(r["ended"] for r in reports) - min(r["first_read"] for r in reports)
    return {
        "elapsed_s": elapsed,
        "wall_s": wall,
        "records_out": sum(r["records_out"] for r in reports),
        "final": final,
        "maxrss_mb": max(r["maxrss_kb"] for r in reports) / 1024,
        "versions": {"bytewax": reports[0]["bytewax"], "numpy": reports[0]["numpy"]},
    }


def run_shoal(
    args: argparse.Namespace, op: str, interval: float | None, workers: int
) -> dict[str, Any]:
    """One shoal run, in a fresh process (``--run-shoal``), so that its peak RSS is its own."""
    cfg = {
        "events": args.events,
        "keys": args.keys,
        "zipf_s": args.zipf_s,
        "splits": args.splits,
        "batch_size": args.batch_size,
        "op": op,
        "interval": interval,
        "workers": workers,
    }
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        # Results go to a file: the job's worker processes share its stdout.
        result = Path(tmp) / "result.json"
        wall = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--run-shoal",
                json.dumps({**cfg, "result_path": str(result)}),
            ],
            check=True,
        )
        wall = time.perf_counter() - wall
        report: dict[str, Any] = json.loads(result.read_text())
    report["wall_s"] = wall
    report["final"] = {int(k): v for k, v in report["final"].items()}
    return report


def _shoal_child(cfg: dict[str, Any]) -> None:
    """Run one shoal job (keyed_count.py's) and write its results as JSON to ``result_path``."""
    import anyio
    import keyed_count

    from shoal import configure_logging, run_job

    async def job() -> dict[str, Any]:
        configure_logging("console", "warning")
        params = {k: cfg[k] for k in ("events", "keys", "splits", "op", "zipf_s")}
        with tempfile.TemporaryDirectory(prefix="shoal-bench-") as state_dir:
            result = await run_job(
                f"{keyed_count.__file__}:build",
                params=params,
                workers=cfg["workers"],
                processes=True,
                state_dir=state_dir,
                batch_size=cfg["batch_size"],
                checkpoint_interval=cfg["interval"],
            )
            final = result.read_state("counts", keyed_count.STATE[cfg["op"]])
        return {
            "elapsed_s": result.elapsed_s,
            "records_out": result.records_out,
            "final": final,
            "checkpoints": result.checkpoints.completed if result.checkpoints else 0,
        }

    report = anyio.run(job, backend_options={"use_uvloop": True})
    report["maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report["versions"] = {"shoal": metadata.version("shoal"), "numpy": metadata.version("numpy")}
    Path(cfg["result_path"]).write_text(json.dumps(report))


# --- Checks, rounds and the summary -------------------------------------------------------------


def check_run(case: Case, run: dict[str, Any], oracle: dict[int, int], events: int) -> None:
    """Fail unless the run's final per-key counts equal the oracle and it emitted what it should.

    Every op emits one record per event except ``count_final``, which emits one per key.
    """
    name = _name(case)
    final = run["final"]
    if final != oracle:
        wrong = [k for k in oracle.keys() | final.keys() if final.get(k) != oracle.get(k)]
        raise AssertionError(
            f"{name}: final counts differ from the oracle for {len(wrong)} keys, e.g. "
            + ", ".join(f"{k}: {final.get(k)} != {oracle.get(k)}" for k in sorted(wrong)[:5])
        )
    expected_out = len(oracle) if case[1] == "count_final" else events
    if run["records_out"] != expected_out:
        raise AssertionError(f"{name}: emitted {run['records_out']} records, not {expected_out}")


def interleave(args: argparse.Namespace) -> list[Case]:
    """One round's cases: per interval and worker count, shoal and Bytewax ops alternating."""
    cases: list[Case] = []
    for interval in args.checkpoint_interval:
        for workers in args.workers:
            for shoal_op, bytewax_op in zip_longest(args.shoal_op, args.bytewax_op):
                if shoal_op is not None:
                    cases.append(("shoal", shoal_op, interval, workers))
                if bytewax_op is not None:
                    cases.append(("bytewax", bytewax_op, interval, workers))
    return cases


def _interval_name(interval: float | None) -> str:
    return "off" if interval is None else f"{interval:g}s"


def _name(case: Case) -> str:
    engine, op, interval, workers = case
    return f"{engine} {op} ckpt={_interval_name(interval)} w={workers}"


def summarize(
    args: argparse.Namespace, results: dict[Case, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Print the medians and the ratios; return them."""
    medians: dict[Case, float] = {}
    print(f"\nmedians of {args.repeat} round(s) ({args.events:,} events):")
    for case, runs in results.items():
        rates = [r["events_per_s"] for r in runs]
        medians[case] = statistics.median(rates)
        rss = max(r["maxrss_mb"] for r in runs)
        print(
            f"  {_name(case):<42} {medians[case]:>10,.0f} events/s  "
            f"(runs {' / '.join(f'{x:,.0f}' for x in rates)}; peak RSS {rss:.0f} MB)"
        )
    ratios = []
    print("shoal / Bytewax (ratio of medians; the ratio in each round, and their median):")
    for interval in args.checkpoint_interval:
        for workers in args.workers:
            for shoal_op in args.shoal_op:
                for bytewax_op in args.bytewax_op:
                    shoal = ("shoal", shoal_op, interval, workers)
                    bytewax = ("bytewax", bytewax_op, interval, workers)
                    s, b = medians[shoal], medians[bytewax]
                    # Each round's pair ran minutes apart at most: their ratio drifts less.
                    paired = [
                        x["events_per_s"] / y["events_per_s"]
                        for x, y in zip(results[shoal], results[bytewax], strict=True)
                    ]
                    ratios.append(
                        {
                            "shoal": shoal_op,
                            "bytewax": bytewax_op,
                            "interval": interval,
                            "workers": workers,
                            "ratio": round(s / b, 2),
                            "per_round": [round(r, 2) for r in paired],
                        }
                    )
                    print(
                        f"  ckpt={_interval_name(interval):<4} w={workers}  shoal {shoal_op:<10} / "
                        f"bytewax {bytewax_op:<14} {s / b:5.2f}x  (per round "
                        f"{' / '.join(f'{r:.2f}' for r in paired)}; median "
                        f"{statistics.median(paired):.2f}x)"
                    )
    if None in args.checkpoint_interval and len(args.checkpoint_interval) > 1:
        print("each engine with checkpoints / snapshots against itself without:")
        for (engine, op, interval, workers), median in medians.items():
            if interval is not None:
                off = medians[(engine, op, None, workers)]
                print(
                    f"  {engine:<7} {op:<14} ckpt={_interval_name(interval)} w={workers}: "
                    f"{median / off:.2f}x of off"
                )
    if len(args.workers) > 1:
        print(f"each engine with more workers against {args.workers[0]}:")
        for (engine, op, interval, workers), median in medians.items():
            if workers != args.workers[0]:
                one = medians[(engine, op, interval, args.workers[0])]
                print(
                    f"  {engine:<7} {op:<14} ckpt={_interval_name(interval)} w={workers}: "
                    f"{median / one:.2f}x"
                )
    return {
        "medians": [
            {"engine": e, "op": o, "interval": i, "workers": w, "events_per_s": round(m)}
            for (e, o, i, w), m in medians.items()
        ],
        "ratios": ratios,
    }


def main(args: argparse.Namespace) -> None:
    python = ensure_bytewax(args.venv or default_venv(args.bytewax_version), args.bytewax_version)
    generator = ClickstreamEvents(
        events=args.events, users=args.keys, zipf_s=args.zipf_s, seed=SEED
    )
    oracle = generator.oracle_counts()
    print(
        f"workload: {args.events:,} events, {args.keys:,} users (zipf s={args.zipf_s}, "
        f"{len(oracle):,} occur), seed {SEED}, {args.splits} splits, batches of "
        f"{args.batch_size:,}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    cases = interleave(args)
    results: dict[Case, list[dict[str, Any]]] = {case: [] for case in cases}
    versions: dict[str, str] = {"python": sys.version.split()[0]}
    for round_ in range(args.repeat):
        for case in cases:
            engine, op, interval, workers = case
            if engine == "shoal":
                run = run_shoal(args, op, interval, workers)
            else:
                run = run_bytewax(python, args, op, interval, workers)
            check_run(case, run, oracle, args.events)
            versions.update(run.pop("versions"))
            run.pop("final")
            run["events_per_s"] = args.events / run["elapsed_s"]
            results[case].append(run)
            print(
                f"round {round_ + 1}  {_name(case):<42} {run['events_per_s']:>10,.0f} events/s "
                f"({run['elapsed_s']:.2f} s; {run['wall_s']:.2f} s with start-up; "
                f"RSS {run['maxrss_mb']:.0f} MB; final counts = oracle)",
                flush=True,
            )
    summary = summarize(args, results)
    print(
        "versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; load average now {os.getloadavg()[0]:.2f}"
    )
    if args.json:
        print(json.dumps({"events": args.events, "versions": versions, **summary}))


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=_args.count, default=2_000_000)
    parser.add_argument("--keys", type=_args.count, default=100_000)
    parser.add_argument("--zipf-s", type=_args.exponent, default=1.1, dest="zipf_s")
    parser.add_argument("--splits", type=_args.count, default=8)
    parser.add_argument("--batch-size", type=_args.count, default=8192)
    parser.add_argument("--workers", type=_args.count, nargs="+", default=[1, 2])
    parser.add_argument(
        "--checkpoint-interval",
        type=_args.interval,
        nargs="+",
        default=[None, 1.0],
        metavar="SECONDS|off",
        help="checkpoint / snapshot interval(s) to measure (default: off and 1 s)",
    )
    parser.add_argument("--shoal-op", choices=SHOAL_OPS, nargs="+", default=["count", "process"])
    parser.add_argument(
        "--bytewax-op", choices=BYTEWAX_OPS, nargs="+", default=["stateful_map", "count_final"]
    )
    parser.add_argument("--repeat", type=_args.count, default=3, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="200k events, 1 round")
    parser.add_argument("--bytewax-version", default=DEFAULT_BYTEWAX_VERSION)
    parser.add_argument("--venv", type=Path, help="Bytewax's virtual environment (made if absent)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line of results")
    parser.add_argument("--run-shoal", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.repeat = 200_000, 1
    if args.events < 1 or args.repeat < 1 or min(args.workers) < 1:
        parser.error("--events, --repeat and --workers must be >= 1")
    return args


if __name__ == "__main__":
    parsed = parse(sys.argv[1:])
    if parsed.run_shoal:
        _shoal_child(json.loads(parsed.run_shoal))
    else:
        main(parsed)
