"""Live rescaling between workers that do not share a state directory (per_worker_state):
every moving key group is shipped (pre-copied while it runs, then the changes since at the
handoff); state and output equal an oracle recomputed from the input, also when a worker is
killed or fails in the middle of a shipment."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from recovery_flows import final_state
from rescale_flows import (
    check_output_of,
    check_phases,
    oracle_of,
    paced_stats,
    read_records,
    records,
    run_schedule,
)
from shoal.runtime._faults import Fault
from shoal.runtime._worker_state import WORKERS_DIR
from shoal.runtime.timeline import at, rescale, stop

from shoal import run_job

FLOWS = Path(__file__).parent / "rescale_flows.py"
LONG = 300_000  # far more than is read: each timeline ends with a stop


def params(**overrides: Any) -> dict[str, Any]:
    base = {"seed": 5, "n": LONG, "vocabulary": 300, "splits": 4, "key_groups": 16}
    base.update(overrides)
    return base


def environments(state_dir: Path) -> dict[tuple[str, str], list[str]]:
    """(operator, key group) -> the worker directories holding its environment."""
    held: dict[tuple[str, str], list[str]] = {}
    for data in sorted((state_dir / WORKERS_DIR).glob("w*/*/kg-*/data.mdb")):
        group, operator, worker = data.parent.name, data.parent.parent.name, data.parents[2].name
        held.setdefault((operator, group), []).append(worker)
    return held


@pytest.mark.asyncio
async def test_key_groups_ship_between_worker_state_dirs_with_exact_state_and_output(
    tmp_path: Path,
) -> None:
    p = params(rate=10_000.0, stages=2, output=str(tmp_path / "out"))
    state_dir = tmp_path / "state"
    result = await run_job(
        paced_stats(**p),
        workers=2,
        processes=False,
        state_dir=state_dir,
        checkpoint_interval=0.2,
        per_worker_state=True,
        timeline=[
            at(rescale(4), records=4_000),
            at(rescale(1), records=9_000),
            at(rescale(3), records=14_000),
            at(stop(), records=16_000),
        ],
    )
    assert [(r.workers_before, r.workers_after) for r in result.rescales] == [
        (2, 4),
        (4, 1),
        (1, 3),
    ]
    moves = [m for m in result.migrations if m.kind == "group"]
    assert len({m.name for m in moves}) > 16  # most of both stages' key groups moved
    # Every move shipped its environment; the pause carried only the tail.
    assert all(m.bytes > 0 for m in moves)
    assert all(m.tail_bytes < m.bytes for m in moves)
    assert sum(m.tail_bytes for m in moves) < sum(m.bytes for m in moves) / 2
    check_phases(result, shipped=True)
    assert result.checkpoint_dir is not None
    read = read_records(p, result.checkpoint_dir)
    assert final_state(result, p) == oracle_of(read, 2)
    check_output_of(read, p)
    # Each key group's environment is in exactly one worker's directory, its final owner's;
    # nothing half-shipped is left over.
    held = environments(state_dir)
    assert len(held) == 2 * 16
    assert all(len(workers) == 1 for workers in held.values()), held
    assert not list(state_dir.glob(f"{WORKERS_DIR}/*/shoal~*/*/kg-*"))


@pytest.mark.asyncio
async def test_a_rescale_of_a_job_without_checkpoints_ships_state_too(tmp_path: Path) -> None:
    p = params(rate=10_000.0, n=12_000)
    result = await run_job(
        paced_stats(**p),
        workers=1,
        processes=False,
        state_dir=tmp_path / "state",
        per_worker_state=True,
        timeline=[at(rescale(3), records=3_000)],
    )
    assert [(r.workers_before, r.workers_after) for r in result.rescales] == [(1, 3)]
    assert result.migrations
    # Bounded input read whole: the oracle is the whole input.
    read = records(p["seed"], p["n"], p["vocabulary"])
    assert len(read) == result.records_in == 12_000
    assert final_state(result, p) == oracle_of(read, 1)


def test_per_worker_state_is_refused_where_it_cannot_work() -> None:
    import anyio

    async def refused(**options: Any) -> str:
        with pytest.raises((TypeError, ValueError)) as info:
            await run_job(paced_stats(**params(n=10)), **options)
        return str(info.value)

    assert anyio.run(lambda: refused(per_worker_state="yes")) == (
        "per_worker_state must be True or False; got 'yes'"
    )
    assert anyio.run(lambda: refused(per_worker_state=True, backend="memory")) == (
        "per_worker_state keeps each worker's state in LMDB: it needs backend='lmdb'"
    )


# Seeded random schedules: rescales with a fault in the middle of a shipment or a handoff.

SHIP_POINTS = ("keygroup.ship", "keygroup.handoff", "keygroup.takeover")


def shipped_schedule(seed: int, *, processes: bool, output: str) -> tuple[Any, Any, Any]:
    rng = random.Random(seed)
    p = params(
        seed=seed,
        n=100_000,
        splits=rng.randint(2, 4),
        key_groups=rng.choice([8, 16]),
        stages=rng.choice([1, 2]),
        rate=4_000.0 if processes else 10_000.0,
        output=output,
    )
    last = 8_000 if processes else 16_000
    steps: list[Any] = []
    workers = 2
    for due in sorted(rng.sample(range(last // 10, last, 100), 2)):
        target = rng.choice([w for w in (1, 2, 3) if w != workers])
        steps.append(at(rescale(target), records=due))
        workers = target
    steps.append(at(stop(), records=steps[-1].records + 3_000))
    point = SHIP_POINTS[seed % len(SHIP_POINTS)]
    faults = [Fault(point, worker=rng.randrange(3), attempt=0, hit=rng.randint(1, 3))]
    return p, steps, faults


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(3))
async def test_random_shipped_rescales_with_faults_in_one_loop_keep_state_exactly_once(
    tmp_path: Path, seed: int
) -> None:
    p, steps, faults = shipped_schedule(seed, processes=False, output=str(tmp_path / "out"))
    run = await run_schedule(
        tmp_path, p, steps, faults, processes=False, checkpoint_interval=0.1, per_worker_state=True
    )
    assert run.result.recoveries  # the fault fired: the job restarted mid-move
    assert run.state == run.expected


@pytest.mark.processes
@pytest.mark.asyncio
@pytest.mark.parametrize("seed", [100, 102])  # a kill -9 mid-handoff, mid-shipment
async def test_random_shipped_rescales_with_kills_across_processes_keep_state_exactly_once(
    tmp_path: Path, seed: int
) -> None:
    p, steps, faults = shipped_schedule(seed, processes=True, output=str(tmp_path / "out"))
    run = await run_schedule(
        tmp_path, p, steps, faults, processes=True, checkpoint_interval=0.1, per_worker_state=True
    )
    assert run.result.processes
    assert run.result.recoveries  # the worker was killed, the job restarted
    assert run.state == run.expected
    held = environments(tmp_path / "state")
    assert all(len(workers) == 1 for workers in held.values()), held


@pytest.mark.processes
def test_shoal_run_per_worker_state_keeps_each_workers_state_apart(tmp_path: Path) -> None:
    """`shoal run ... --per-worker-state`: each worker process writes under its own directory,
    and the scenario's checks (state against the oracle) read it back from there."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("shoal")),
            "run",
            str(Path(__file__).parents[2] / "scenarios" / "clickstream.py"),
            "--workers",
            "2",
            "--per-worker-state",
            "--param",
            "events=20000",
            "--json",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["passed"] is True
    held = environments(tmp_path / "state")
    assert {workers[0] for workers in held.values()} == {"w00000", "w00001"}
    assert all(len(workers) == 1 for workers in held.values())
    assert not list((tmp_path / "state").glob("*/kg-*"))  # nothing in the shared layout
