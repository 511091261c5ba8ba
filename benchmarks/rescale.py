"""Benchmark: live rescaling 2 -> 4 worker processes under load, with 1, 10 and 100 MB of state
per key group.

    python benchmarks/rescale.py                      # the three tiers, 3 rounds each
    python benchmarks/rescale.py --mb 1 --rounds 1    # one tier, one round
    python benchmarks/rescale.py --mb 1 --rate 100000 --events 1500000   # a paced source
    python benchmarks/rescale.py --per-worker-state   # shipped between worker state dirs

Each round runs a keyed job in two worker processes with 1 s checkpoints. Its input is the
ints ``0 .. events-1`` in 4 splits, keyed by ``value % keys``; per key the operator keeps a
count and, written the first time the key is seen, a blob of ``value_bytes`` bytes, and emits
the key (to a counting sink). Each key group then holds ``keys_per_group`` keys on average
(keys hash to key groups) of ``value_bytes`` each: 1, 10 or 100 MB of LMDB state (the 100 MB
tier has 10 key groups: ~1 GB in all). The source is not paced unless ``--rate`` says so: it
reads as fast as the job takes records. A timeline takes a checkpoint once every
key has been seen (so the populating writes are behind us: the state is in LMDB and in the
checkpoint store), then rescales the job to 4 workers once ``steady`` more records were read
(``--workers FROM TO`` for other counts: ``--workers 1 2`` leaves a core per worker).

Printed per tier, with each round's figures on a line of its own:

* pause per key group moved (``JobResult.migrations``, kind ``group``: from the old owner
  starting its handoff, every input's marker in, to the successor holding the store), p50 /
  p99 / max over every move of every round, and the median state bytes of a moved group;
  each round also prints where its pauses went (``MoveRecord.phases``: each phase's p50 and
  max, and the longest move's phases);
* each rescale's wall time (``JobResult.rescales``: new processes started and admitted, key
  groups then splits moved, 8 at a time), median over rounds;
* throughput, from ``records_out`` (records the operator has processed and emitted, summed
  over workers) in the ``Progress`` snapshots ``run_job(on_progress=...)`` passes about twice
  a second, timed when each arrives: ``steady`` over the samples between the populating
  checkpoint's completion and the rescale's start (2 workers); ``during`` from the last
  sample before the rescale started to the first after it ended (the rescale's start is when
  the timeline logs its action; its end is that plus its duration): the window holds the
  whole rescale plus up to a sample interval on each side; ``after``: from there to the last
  sample (4 workers). The ratio is during / steady.

With ``--per-worker-state`` each worker has a state directory of its own (as on separate
hosts): every moved key group is shipped, pre-copied while it runs and then its tail (what
changed since) during the pause; each round also prints the shipped bytes and the tail.

The final state is checked against the input: every key counted exactly as often as it
occurs in ``0 .. events-1``, and one blob per key.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import _args  # run as a script: its folder is on sys.path
import anyio
import structlog
from shoal.runtime.timeline import at, checkpoint, rescale

from shoal import (
    CountingSink,
    Flow,
    IterableSource,
    ProcessContext,
    Progress,
    ValueStateSpec,
    run_job,
)

HERE = str(Path(__file__).resolve())
SPLITS = 4

# One blob object per size and process: every key's state holds its own copy on disk (LMDB),
# while the key groups' in-memory caches share this one (the job's memory stays small).
_BLOBS: dict[int, bytes] = {}


def blob(size: int) -> bytes:
    found = _BLOBS.get(size)
    if found is None:
        found = _BLOBS[size] = (bytes(range(256)) * (size // 256 + 1))[:size]
    return found


def key_of(keys: int, value: int) -> int:
    return value % keys


def keep(value_bytes: int, key: int, _value: int, ctx: ProcessContext) -> None:
    state = ctx.state
    n = state.count.value()
    if n == 0:
        state.blob.update(blob(value_bytes))
    state.count.update(n + 1)
    ctx.emit(key)


def build(
    events: int = 1_000_000,
    keys: int = 4096,
    value_bytes: int = 4096,
    key_groups: int = 16,
    rate: float = 0.0,
) -> Flow:
    """The benchmark job (worker processes rebuild it from these parameters); ``rate`` > 0
    paces the source to that many records per second."""
    flow = Flow("rescale", num_key_groups=key_groups)
    values = range(events)
    source = IterableSource(values, splits=SPLITS, rate=rate if rate > 0 else None)
    flow.source(source).key_by(partial(key_of, keys)).process(
        partial(keep, value_bytes),
        states=[ValueStateSpec("count", default=0), ValueStateSpec("blob", default=b"")],
        name="blobs",
    ).sink(CountingSink())
    return flow


@dataclass(frozen=True)
class Tier:
    mb: int
    key_groups: int
    keys_per_group: int
    events: int
    steady: int

    @property
    def keys(self) -> int:
        return self.key_groups * self.keys_per_group

    @property
    def value_bytes(self) -> int:
        return self.mb * 1024 * 1024 // self.keys_per_group


# 100 MB per key group: 10 key groups, ~1 GB in all (also the "~1 GB rescale" figure).
TIERS = {
    1: Tier(1, 64, 256, events=6_000_000, steady=2_000_000),
    10: Tier(10, 32, 256, events=6_000_000, steady=2_000_000),
    100: Tier(100, 10, 256, events=6_000_000, steady=2_000_000),
}


@dataclass
class Watch:
    """What the run showed while it ran: progress samples and the timeline's actions, timed
    with ``time.perf_counter()`` when they reached this process."""

    #: (time, records_in, records_out, checkpoints completed)
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    #: (time, action) of each timeline action, from the driver's "timeline action" log event.
    actions: list[tuple[float, str]] = field(default_factory=list)

    def __call__(self, progress: Progress) -> None:
        done = 0 if progress.checkpoints is None else progress.checkpoints.completed
        self.samples.append((time.perf_counter(), progress.records_in, progress.records_out, done))

    def log_event(self, _logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        """A structlog processor: note the timeline's actions; drop what is below warning."""
        if event.get("event") == "timeline action":
            self.actions.append((time.perf_counter(), str(event.get("action"))))
        if method in ("debug", "info"):
            raise structlog.DropEvent
        return event


WATCH = Watch()


def processed_per_s(samples: list[tuple[float, int, int, int]]) -> float:
    """Records processed per second from the first sample to the last."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return float("nan")
    return (samples[-1][2] - samples[0][2]) / (samples[-1][0] - samples[0][0])


async def one(
    tier: Tier, rate: float, per_worker_state: bool = False, workers: tuple[int, int] = (2, 4)
) -> dict[str, Any]:
    """One round of ``tier``: run, check the final state, and take the figures apart."""
    WATCH.samples.clear()
    WATCH.actions.clear()
    populated = tier.keys * SPLITS  # every split has read every key by then
    with tempfile.TemporaryDirectory(prefix="shoal-rescale-bench-") as state:
        result = await run_job(
            f"{HERE}:build",
            params={
                "events": tier.events,
                "keys": tier.keys,
                "value_bytes": tier.value_bytes,
                "key_groups": tier.key_groups,
                "rate": rate,
            },
            workers=workers[0],
            state_dir=state,
            checkpoint_interval=1.0,
            per_worker_state=per_worker_state,
            on_progress=WATCH,
            timeline=[
                at(checkpoint(), records=populated),
                at(rescale(workers[1]), records=populated + tier.steady),
            ],
        )
        ended = time.perf_counter()
        assert [(r.workers_before, r.workers_after) for r in result.rescales] == [workers], (
            f"the rescale did not complete before the job drained ({result.rescales}): "
            "raise the tier's events"
        )
        assert result.records_in == tier.events
        counts = result.read_state("blobs", "count")
        passes, rest = divmod(tier.events, tier.keys)
        expected = {k: passes + (1 if k < rest else 0) for k in range(tier.keys)}
        assert counts == expected, "a key was not counted exactly once per occurrence"
        stats = result.key_group_statistics("blobs")
        blobs = sum(dict(s.entries_by_state)["blob"] for s in stats)
        assert blobs == tier.keys, f"{blobs} blobs, {tier.keys} expected"
        state_bytes = sum(s.bytes for s in stats)
    moves = [m for m in result.migrations if m.kind == "group"]
    record = result.rescales[0]
    (ckpt_at, _), (start, _) = WATCH.actions
    end = start + record.seconds
    samples = WATCH.samples
    done_before = max((s[3] for s in samples if s[0] <= ckpt_at), default=0)
    ckpt_done = next((s[0] for s in samples if s[0] > ckpt_at and s[3] > done_before), start)
    steady = [s for s in samples if ckpt_done <= s[0] <= start]
    first = max((i for i, s in enumerate(samples) if s[0] <= start), default=0)
    last = next((i for i, s in enumerate(samples) if s[0] >= end), len(samples) - 1)
    during = samples[first : last + 1]
    after = [s for s in samples[last:] if s[0] <= ended]
    return {
        "pauses": [m.pause_s for m in moves],
        "phases": [dict(m.phases) for m in moves],
        "split_pauses": [m.pause_s for m in result.migrations if m.kind == "split"],
        "bytes": [m.bytes for m in moves],
        "tail_bytes": [m.tail_bytes for m in moves],
        "state_bytes": state_bytes,
        "rescale_s": record.seconds,
        "moves": record.moves,
        "steady": processed_per_s(steady),
        "steady_s": steady[-1][0] - steady[0][0] if len(steady) > 1 else 0.0,
        "during": processed_per_s(during),
        "during_s": during[-1][0] - during[0][0] if len(during) > 1 else 0.0,
        "after": processed_per_s(after),
        "elapsed_s": result.elapsed_s,
        "checkpoints": result.checkpoints.completed if result.checkpoints else 0,
    }


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-int(q * 100) * len(ordered) // 100) - 1))]


def rate_text(rate: float) -> str:
    """A rate for a round's line; ``n/a`` where fewer than two progress samples fell in its
    window (an unpaced job too short for the phase to be measured)."""
    return "n/a" if math.isnan(rate) else f"{rate:,.0f}"


def show_round(tier: Tier, n: int, run: dict[str, Any]) -> None:
    pauses = [p * 1000 for p in run["pauses"]]
    print(
        f"  {tier.mb:>3} MB round {n}: {len(pauses)} group moves, pause ms p50 "
        f"{percentile(pauses, 0.5):.1f} max {max(pauses):.1f} (splits: max "
        f"{max(run['split_pauses']) * 1000:.0f}); rescale {run['rescale_s']:.2f} s "
        f"({run['moves']} moves); events/s steady {rate_text(run['steady'])} over "
        f"{run['steady_s']:.1f} s, during {rate_text(run['during'])} over "
        f"{run['during_s']:.1f} s, after {rate_text(run['after'])}; "
        f"state {run['state_bytes'] / 2**20:,.0f} MiB; "
        f"{run['checkpoints']} checkpoints; job {run['elapsed_s']:.1f} s"
        + (
            f"; shipped per group median {statistics.median(run['bytes']) / 2**20:.1f} MiB, "
            f"tail median {statistics.median(run['tail_bytes']) / 2**10:.1f} KiB "
            f"max {max(run['tail_bytes']) / 2**10:.1f} KiB"
            if any(run["tail_bytes"])
            else ""
        ),
        flush=True,
    )
    print(f"          {phases_line(run['phases'], run['pauses'])}", flush=True)


def phases_line(phases: list[dict[str, float]], pauses: list[float]) -> str:
    """Where the pauses went (``MoveRecord.phases``): each phase's p50 / max in ms over the
    moves, then the longest move's own phases."""
    names = list(dict.fromkeys(name for move in phases for name in move))
    parts = []
    for name in names:
        ms = [move[name] * 1000 for move in phases if name in move]
        parts.append(f"{name} {percentile(ms, 0.5):.1f}/{max(ms):.1f}")
    longest = phases[max(range(len(pauses)), key=pauses.__getitem__)]
    worst = ", ".join(f"{name} {s * 1000:.1f}" for name, s in longest.items() if s >= 0.0005)
    return f"pause phases ms p50/max: {'; '.join(parts)}; the longest move: {worst}"


def summary(tier: Tier, runs: list[dict[str, Any]]) -> str:
    """One tier's line: pauses over every move of every round, the rest medians of rounds."""
    pauses = [p * 1000 for run in runs for p in run["pauses"]]
    moved = statistics.median(b for run in runs for b in run["bytes"]) / 2**20

    def median(name: str) -> float:
        return statistics.median(run[name] for run in runs)

    ratio = statistics.median(run["during"] / run["steady"] for run in runs)
    return (
        f"{tier.mb:>5} {tier.key_groups:>6} {moved:>9.1f} {len(pauses):>6} "
        f"{percentile(pauses, 0.5):>8.1f} {percentile(pauses, 0.99):>8.1f} {max(pauses):>8.1f} "
        f"{median('rescale_s'):>10.2f} {median('steady'):>11,.0f} {median('during'):>11,.0f} "
        f"{ratio:>6.2f} {median('after'):>11,.0f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, nargs="+", default=sorted(TIERS), choices=sorted(TIERS))
    parser.add_argument("--rounds", type=_args.count, default=3)
    parser.add_argument(
        "--events",
        type=_args.count,
        help="events per round (default: the tier's; steady: a quarter)",
    )
    parser.add_argument(
        "--rate",
        type=_args.rate,
        default=None,
        help="pace the source to this many records/s in all (default: unpaced)",
    )
    parser.add_argument(
        "--workers",
        type=_args.workers,
        nargs=2,
        default=(2, 4),
        metavar=("FROM", "TO"),
        help="worker processes before and after the rescale (default: 2 4)",
    )
    parser.add_argument(
        "--per-worker-state",
        action="store_true",
        help="a state directory per worker: moved key groups are shipped (pre-copy + tail)",
    )
    args = parser.parse_args()
    workers = tuple(args.workers)
    if workers[0] == workers[1]:
        parser.error(f"--workers FROM TO: two different counts; got {args.workers}")
    for mb in args.mb:
        least = 2 * TIERS[mb].keys * SPLITS
        if args.events is not None and args.events < least:
            parser.error(
                f"--events {args.events}: the {mb} MB tier needs at least {least:,} (every "
                "key read by every split before its checkpoint, then a steady quarter)"
            )
    rate = args.rate or 0.0
    structlog.configure(
        processors=[
            WATCH.log_event,
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    paced = f"paced to {rate:,.0f} records/s" if rate > 0 else "unpaced"
    print(
        f"rescale {workers[0]} -> {workers[1]} worker processes under load (source {paced}), "
        "1 s checkpoints, "
        + ("a state directory per worker (shipped); " if args.per_worker_state else "shared; ")
        + "each round, then per tier over all rounds"
    )
    rows = []
    for mb in args.mb:
        tier = TIERS[mb]
        if args.events:
            tier = replace(tier, events=args.events, steady=args.events // 4)
        runs = []
        for n in range(1, args.rounds + 1):
            runs.append(await one(tier, rate, args.per_worker_state, workers))
            show_round(tier, n, runs[-1])
        rows.append(summary(tier, runs))
    print(
        f"{'MB/kg':>5} {'groups':>6} {'moved MiB':>9} {'moves':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'rescale s':>10} {'steady ev/s':>11} {'during ev/s':>11} "
        f"{'ratio':>6} {'after ev/s':>11}"
    )
    for row in rows:
        print(row)
    print(
        "targets: pause p99 <= 10 ms on one host ("
        + ("shipped: <= 50 ms at 100 MB" if args.per_worker_state else "shared state")
        + "), rescale <= 5 s (~1 GB: the 100 MB tier), ratio >= 0.7"
    )


if __name__ == "__main__":
    anyio.run(main)
