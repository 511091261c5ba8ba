"""Flows of the rescaling and rebalancing tests, importable by worker processes (which rebuild
them): the recovery tests' ``stats`` flow over a paced source (``IterableSource(rate=...)``),
so a timeline can act while it runs; the oracle of what a stopped job read; and the runner of
the seeded random schedules both test files draw (:func:`run_schedule`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recovery_flows import final_state, records, stats_over
from shoal.runtime import JobResult
from shoal.runtime._faults import Fault
from shoal.runtime.timeline import At
from shoal.storage import CheckpointStore

from shoal import (
    CollectingSink,
    Flow,
    IterableSource,
    TransactionalJsonlSink,
    run_job,
)

FLOWS = Path(__file__)


def paced_stats(
    seed: int = 0,
    n: int = 20_000,
    vocabulary: int = 300,
    splits: int = 4,
    key_groups: int = 16,
    stages: int = 1,
    rate: float = 20_000.0,
    output: str = "",
    collect: CollectingSink | None = None,
) -> Flow:
    """``recovery_flows.stats`` over an ``IterableSource`` paced to ``rate`` records/s (same
    oracle); ``collect``: the sink to collect the output in (in one loop: a test watches it
    while the job runs)."""
    source = IterableSource(records(seed, n, vocabulary), splits=splits, rate=rate)
    return stats_over(source, key_groups=key_groups, stages=stages, output=output, collect=collect)


def read_records(p: dict[str, Any], checkpoint_dir: str) -> list[dict[str, Any]]:
    """The records the job read: each split's prefix up to its position in the final
    checkpoint (an IterableSource split ``i`` covers ``[i*n//splits, (i+1)*n//splits)`` and
    its position is the next index)."""
    final = CheckpointStore(checkpoint_dir).latest_complete()
    assert final is not None
    inputs = records(p["seed"], p["n"], p["vocabulary"])
    n, splits = p["n"], p["splits"]
    read: list[dict[str, Any]] = []
    for i in range(splits):
        start = i * n // splits
        position = final.positions.get(f"items:{i}")
        read += inputs[start : start if position is None else int(position)]
    return read


def oracle_of(read: list[dict[str, Any]], stages: int) -> dict[str, dict[Any, Any]]:
    out: dict[str, dict[Any, Any]] = {"count": {}, "sum": {}, "min": {}, "max": {}}
    for record in read:
        word, n = record["word"], record["n"]
        out["count"][word] = out["count"].get(word, 0) + 1
        out["sum"][word] = out["sum"].get(word, 0) + n
        out["min"][word] = min(out["min"].get(word, n), n)
        out["max"][word] = max(out["max"].get(word, n), n)
    if stages == 2:
        out["per_letter"] = dict(Counter(record["word"][-1] for record in read))
    return out


#: A key group's pause, phase by phase (``MoveRecord.phases``), in order.
PAUSE_PHASES = ("downstream", "file_write", "flush", "close", "transit", "open")


def check_phases(result: JobResult, *, shipped: bool = False) -> None:
    """Every key-group move says where its pause went: the phases in order (``ship`` before
    ``close`` when shipped), none negative, together no longer than the pause; a split's
    move has none."""
    expected = list(PAUSE_PHASES)
    if shipped:
        expected.insert(expected.index("close"), "ship")
    groups = [m for m in result.migrations if m.kind == "group"]
    assert groups
    for move in groups:
        assert list(move.phases) == expected, move
        assert all(s >= 0 for s in move.phases.values()), move
        assert sum(move.phases.values()) <= move.pause_s + 1e-6, move
        assert move.to_json()["phases_ms"].keys() == move.phases.keys()
    assert all(not m.phases for m in result.migrations if m.kind == "split")


def check_output_of(read: list[dict[str, Any]], p: dict[str, Any]) -> None:
    """Every published running count exactly once: per key, ``1..n``."""
    key = (lambda r: r["word"][-1]) if p.get("stages", 1) == 2 else (lambda r: r["word"])
    expected = Counter(key(record) for record in read)
    published: dict[str, list[int]] = {}
    for word, count in TransactionalJsonlSink(p["output"]).read():
        published.setdefault(word, []).append(count)
    wrong = {
        k: n for k, n in expected.items() if sorted(published.get(k, [])) != list(range(1, n + 1))
    }
    assert not wrong, f"{len(wrong)} keys' published counts are not 1..n"
    assert set(published) == set(expected)


@dataclass(frozen=True)
class ScheduleRun:
    """One seeded schedule's run: the result, the records the final checkpoint says were
    read, and the final state beside the oracle's (the test asserts they are equal)."""

    result: JobResult
    read: list[dict[str, Any]]
    state: dict[str, dict[Any, Any]]
    expected: dict[str, dict[Any, Any]]


async def run_schedule(
    tmp_path: Path,
    p: dict[str, Any],
    steps: list[At],
    faults: list[Fault],
    *,
    processes: bool,
    checkpoint_interval: float,
    **options: Any,
) -> ScheduleRun:
    """Run ``paced_stats(**p)`` from two workers through ``steps`` (ending with a stop) and
    ``faults``, in one loop or in worker processes (``options``: more ``run_job`` arguments,
    e.g. ``per_worker_state=True``); check that the stop came after every step
    (unless a recovery's rereads counted towards the triggers) and that the output holds every
    published count exactly once.

    The input must be far longer than what is read before the stop, so the job cannot run out
    of input before its steps however slow a move is on a loaded machine; the oracle is
    computed from what the final checkpoint says was read (see :func:`read_records`).
    """
    result = await run_job(
        f"{FLOWS}:paced_stats" if processes else paced_stats(**p),
        params=p if processes else None,
        workers=2,
        processes=processes,
        state_dir=tmp_path / "state",
        timeline=steps,
        faults=faults,
        max_restarts=5,
        checkpoint_interval=checkpoint_interval,
        **options,
    )
    assert result.checkpoint_dir is not None
    read = read_records(p, result.checkpoint_dir)
    if not result.recoveries:  # (a recovery's rereads count towards the step's trigger)
        assert steps[-1].records is not None
        assert len(read) >= steps[-1].records  # the stop came after every other step
    check_output_of(read, p)
    return ScheduleRun(result, read, final_state(result, p), oracle_of(read, p.get("stages", 1)))
