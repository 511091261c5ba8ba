"""Crash recovery: the clickstream job survives two kill -9s and a rescale through a savepoint.

    shoal run scenarios/crash_recovery.py --workers 2 --json

The clickstream workload (per-user click count and last page, in LMDB) writes every running
count to a transactional JSON-lines sink, whose output is published only when the checkpoint
covering it completes. The timeline, in fractions of the events:

* at 10%: a checkpoint (besides the periodic ones);
* at 20%: worker 1 is killed with SIGKILL; the job restarts from the last checkpoint;
* at 35%: a checkpoint;
* at 45%: worker 0 is killed with SIGKILL right after a checkpoint's barriers were injected
  (the checkpoint dies with it; the job restarts from the one before);
* at 70%: the job stops and its final checkpoint is written as a savepoint;
* then the job resumes from that savepoint with three workers and runs to the end.

The checks recompute everything from the input alone: every user's count and last page in the
final state, and, in the sink's published output, every user's running counts exactly
``1, 2, ..., n`` (each event's effect once: none lost, none repeated); plus the recoveries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

# The clickstream scenario's keyed function (beside this file: importable here and in every
# worker process).
from clickstream import track_user, user_of
from shoal.runtime.timeline import Step, at, checkpoint, kill_worker, resume, stop

from shoal import (
    Check,
    ClickstreamSource,
    Flow,
    JobResult,
    Scenario,
    TransactionalJsonlSink,
    ValueStateSpec,
    clickstream_oracle,
)


def source(params: Mapping[str, Any]) -> ClickstreamSource:
    return ClickstreamSource(
        events=params["events"],
        users=params["users"],
        seed=params["seed"],
        splits=params["splits"],
        zipf_s=params["zipf_s"],
        # Paced, so the timeline's steps land where they are written (an unpaced run reads
        # 400k events in about a second, faster than a checkpoint step completes).
        rate=params["rate"],
    )


def build(**params: Any) -> Flow:
    return clickstream_flow("crash_recovery", params)


def clickstream_flow(name: str, params: Mapping[str, Any]) -> Flow:
    """The clickstream job into a transactional sink (also scenarios/rescale.py's)."""
    flow = Flow(name, num_key_groups=params["key_groups"])
    (
        flow.source(source(params))
        .key_by(user_of)
        .process(
            track_user,
            states=[ValueStateSpec("clicks", default=0), ValueStateSpec("last")],
            name="users",
        )
        .sink(TransactionalJsonlSink(params["output"]))
    )
    return flow


def timeline(params: Mapping[str, Any]) -> Sequence[Step]:
    events = params["events"]
    return [
        at(checkpoint(), records=events * 10 // 100),
        at(kill_worker(1), records=events * 20 // 100),
        at(checkpoint(), records=events * 35 // 100),
        at(kill_worker(0, during_checkpoint=True), records=events * 45 // 100),
        at(stop(savepoint="savepoint-before-rescale"), records=events * 70 // 100),
        resume(workers=3, savepoint="savepoint-before-rescale"),
    ]


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    expected = clickstream_oracle(source(params))
    clicks = result.read_state("users", "clicks")
    last = result.read_state("users", "last")
    wrong = [u for u, (n, _page, _ts) in expected.items() if clicks.get(u) != n]
    wrong_last = [
        u
        for u, (_n, page, ts) in expected.items()
        if last.get(u) is None or tuple(last[u]) != (page, ts)
    ]
    yield Check(
        "final state equals the oracle (count and last page of every user)",
        not wrong and not wrong_last and set(clicks) == set(expected),
        f"{len(expected):,} users compared; {len(wrong):,} counts and {len(wrong_last):,} "
        f"last pages differ; {len(set(clicks) - set(expected))} unexpected users",
    )
    emitted: dict[int, list[int]] = defaultdict(list)
    output = TransactionalJsonlSink(params["output"]).read()
    for user, count in output:
        emitted[user].append(count)
    lost = repeated = 0
    for user, (n, _page, _ts) in expected.items():
        counts = sorted(emitted.get(user, []))
        repeated += len(counts) - len(set(counts))
        lost += len(set(range(1, n + 1)) - set(counts))
    yield Check(
        "the sink published every event's effect exactly once",
        lost == 0 and repeated == 0 and len(output) == params["events"],
        f"{len(output):,} outputs for {params['events']:,} events; {lost} lost, "
        f"{repeated} repeated",
    )
    yield Check(
        "two workers were killed and recovered from",
        len(result.recoveries) >= 2,
        f"{len(result.recoveries)} recover{'y' if len(result.recoveries) == 1 else 'ies'}, "
        + ", ".join(f"{s * 1000:.0f} ms" for s in result.recoveries),
    )
    stats = result.checkpoints
    yield Check(
        "checkpoints completed",
        stats is not None and stats.completed > 0,
        "checkpoints off"
        if stats is None
        else f"{stats.completed} completed, {stats.failed} failed",
    )
    yield Check(
        "the job ended on three workers (resumed from the savepoint)",
        result.workers == 3,
        f"{result.workers} workers",
    )


scenario = Scenario(
    name="crash_recovery",
    build=build,
    checks=checks,
    params={
        "events": 400_000,
        "users": 20_000,
        "seed": 5,
        "splits": 4,
        "zipf_s": 0.9,
        "key_groups": 64,
        "rate": 150_000.0,
        "output": "{state_dir}/output",
    },
    timeline=timeline,
    checkpoint_interval=0.5,
    description=(
        "clickstream with a transactional sink through two kill -9s and a rescale from a "
        "savepoint; output and state checked exactly once against an oracle"
    ),
)
