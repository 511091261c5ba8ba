"""Live rescaling: the clickstream job scales 2 -> 4 -> 1 -> 3 workers while it runs, and a
worker is killed with SIGKILL in the middle of a rescale.

    shoal run scenarios/rescale.py --workers 2 --json

The clickstream workload (per-user click count and last page, in LMDB) writes every running
count to a transactional JSON-lines sink. The timeline, in fractions of the events:

* at 10%: scale to 4 workers (two worker processes start; key groups and splits move to them
  one placement version at a time while every other key group keeps running);
* at 30%: scale to 1 worker (three workers hand everything to worker 0 and retire);
* at 50%: scale to 3 workers;
* at 70%: scale to 2 workers, and while the first key groups are handed over, worker 0 is
  killed with SIGKILL: the job restarts from its last checkpoint, at the new size.

The checks recompute everything from the input alone: every user's count and last page in the
final state; in the sink's published output, every user's running counts exactly
``1, 2, ..., n``; and that the rescales moved key groups live.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

# The crash-recovery scenario's workload and checks (beside this file: importable here and in
# every worker process).
from crash_recovery import checks as crash_checks
from crash_recovery import clickstream_flow
from shoal.runtime.timeline import Step, at, rescale

from shoal import Check, Flow, JobResult, Scenario


def build(**params: Any) -> Flow:
    return clickstream_flow("rescale", params)


def timeline(params: Mapping[str, Any]) -> Sequence[Step]:
    events = params["events"]
    return [
        at(rescale(4), records=events * 10 // 100),
        at(rescale(1), records=events * 30 // 100),
        at(rescale(3), records=events * 50 // 100),
        at(rescale(2, kill_worker=0), records=events * 70 // 100),
    ]


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    for check in crash_checks(result, params):
        if check.name.startswith(("final state", "the sink published", "checkpoints")):
            yield check
    moved = [m for m in result.migrations if m.kind == "group"]
    pauses = sorted(m.pause_s for m in moved)
    done = [(r.workers_before, r.workers_after) for r in result.rescales]
    yield Check(
        "three rescales completed live (2->4, 4->1, 1->3)",
        done[:3] == [(2, 4), (4, 1), (1, 3)],
        ", ".join(
            f"{r.workers_before}->{r.workers_after} in {r.seconds:.2f} s" for r in result.rescales
        )
        or "none",
    )
    yield Check(
        "key groups moved live (most of them at least once)",
        len({m.name for m in moved}) >= params["key_groups"] * 3 // 4,
        f"{len(moved)} moves of {len({m.name for m in moved})} key groups; pause p50 "
        f"{_ms(pauses, 0.5)} ms, max {_ms(pauses, 1.0)} ms",
    )
    yield Check(
        "the worker killed mid-rescale was recovered from, at the new size",
        len(result.recoveries) >= 1 and result.workers == 2,
        f"{len(result.recoveries)} recover{'y' if len(result.recoveries) == 1 else 'ies'}; "
        f"{result.workers} workers at the end",
    )


def _ms(values: Sequence[float], quantile: float) -> str:
    if not values:
        return "-"
    return f"{values[min(len(values) - 1, int(quantile * len(values)))] * 1000:.1f}"


scenario = Scenario(
    name="rescale",
    build=build,
    checks=checks,
    params={
        "events": 800_000,
        "users": 20_000,
        "seed": 7,
        "splits": 6,
        "zipf_s": 0.9,
        "key_groups": 64,
        # Paced, so each rescale (a second or two: starting processes, moving key groups)
        # ends well before the next step is due.
        "rate": 30_000.0,
        "output": "{state_dir}/output",
    },
    timeline=timeline,
    checkpoint_interval=0.5,
    description=(
        "clickstream scaled 2 -> 4 -> 1 -> 3 -> 2 workers live, a worker killed mid-rescale; "
        "state and output checked exactly once against an oracle"
    ),
)
