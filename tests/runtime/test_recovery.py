"""Recovery: a job whose workers fail (SIGKILL, engine errors) at any point restarts from its
last completed checkpoint, and its final state equals the oracle: every record's effect exactly
once, recomputed from the input alone."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
import recovery_flows as flows
from shoal.runtime._faults import FAULT_POINTS, Fault, Faults, InjectedFault
from shoal.storage import CheckpointStore

from shoal import (
    CollectingSink,
    Flow,
    IterableSource,
    JobError,
    StateDirectoryInUseError,
    run_job,
)

FLOWS = str(Path(flows.__file__).resolve())
PARAMS: dict[str, Any] = {
    "seed": 5,
    "n": 20_000,
    "vocabulary": 300,
    "splits": 3,
    "key_groups": 8,
    "stages": 1,
}
# Seeded random fault schedules per run of the suite (the soak sets more: see docs/testing).
SCHEDULES = int(os.environ.get("SHOAL_FAULT_SCHEDULES", "3"))


def restores(result: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for report in result.reports:
        for path, n in report["restores"].items():
            out[path] = out.get(path, 0) + n
    return out


async def run_stats(
    tmp_path: Path, params: dict[str, Any], faults: list[Fault], *, processes: bool, **kw: Any
) -> Any:
    job: Any = f"{FLOWS}:stats" if processes else flows.stats(**params)
    return await run_job(
        job,
        params=params if processes else None,
        workers=2,
        processes=processes,
        state_dir=tmp_path / "state",
        batch_size=16,
        mailbox_size=2,
        checkpoint_interval=0.05,
        restart_backoff=0.0,
        faults=faults,
        **kw,
    )


def test_a_fault_names_a_known_point_and_action() -> None:
    with pytest.raises(ValueError, match=r"^unknown fault point 'nowhere'; known: "):
        Fault("nowhere")
    with pytest.raises(ValueError, match=r"^fault action must be one of "):
        Fault("source.batch", action="explode")
    with pytest.raises(ValueError, match=r"^fault hit must be an int >= 1; got 0$"):
        Fault("source.batch", hit=0)
    assert Fault.from_data(Fault("keygroup.batch", 1, 2, 3, "fail").to_data()) == Fault(
        "keygroup.batch", 1, 2, 3, "fail"
    )


def test_faults_fire_on_their_hit_of_their_worker_and_attempt_only() -> None:
    schedule = [Fault("source.batch", worker=1, attempt=0, hit=3, action="fail")]
    assert not Faults(schedule, worker=0, attempt=0)
    assert not Faults(schedule, worker=1, attempt=1)
    faults = Faults(schedule, worker=1, attempt=0)
    faults.hit("keygroup.batch")  # another point: not counted
    faults.hit("source.batch")
    faults.hit("source.batch")
    with pytest.raises(InjectedFault, match=r"^fault injected at source.batch \(hit 3\)$"):
        faults.hit("source.batch")
    faults.hit("source.batch")  # fired once
    with pytest.raises(OSError, match="No space left on device"):
        Faults([Fault("checkpoint.write", action="enospc")]).hit("checkpoint.write")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "point", ["source.batch", "keygroup.batch", "keygroup.aligning", "keygroup.committed"]
)
async def test_a_worker_failing_in_the_loop_recovers_to_exactly_once_state(
    tmp_path: Path, point: str
) -> None:
    params = {**PARAMS, "stages": 2}
    hit = {"source.batch": 200, "keygroup.batch": 400}.get(point, 12)
    faults = [
        Fault(point, worker=1, attempt=0, hit=hit, action="fail"),
        Fault(point, worker=0, attempt=1, hit=hit // 2, action="fail"),
    ]
    result = await run_stats(tmp_path, params, faults, processes=False)
    assert flows.final_state(result, params) == flows.oracle(params)
    assert len(result.recoveries) == 2
    assert result.checkpoints is not None
    assert result.checkpoints.completed >= 1
    # Every key group of the last attempt was restored, by one of the paths.
    assert sum(restores(result).values()) == 2 * params["key_groups"]


@pytest.mark.asyncio
async def test_past_max_restarts_the_job_fails_naming_the_last_failure(tmp_path: Path) -> None:
    faults = [
        Fault("keygroup.batch", worker=0, attempt=attempt, hit=1, action="fail")
        for attempt in range(3)
    ]
    with pytest.raises(
        JobError,
        match=r"^job 'stats' failed 2 times in a row with no checkpoint completed in between "
        r"\(max_restarts=1\); last failure: job 'stats' failed: .*InjectedFault",
    ):
        await run_stats(tmp_path, PARAMS, faults, processes=False, max_restarts=1)


@pytest.mark.asyncio
async def test_without_checkpoints_a_failure_fails_the_job(tmp_path: Path) -> None:
    with pytest.raises(JobError, match=r"InjectedFault: fault injected at keygroup.batch"):
        await run_job(
            flows.stats(**PARAMS),
            state_dir=tmp_path,
            batch_size=16,
            faults=[Fault("keygroup.batch", hit=5, action="fail")],
        )


@pytest.mark.asyncio
async def test_a_corrupt_checkpoint_file_falls_back_to_the_previous_checkpoint(
    tmp_path: Path,
) -> None:
    """Corrupt every data file of the newest checkpoint before recovery reads it: the key
    groups that must restore from files detect it, and the job recovers from the one before."""
    params = {**PARAMS, "n": 30_000}
    corrupted: list[str] = []

    def corrupt_newest(store: CheckpointStore) -> None:
        epoch = store.epochs()[-1]
        manifest = store.read_manifest(epoch)
        for record in manifest.files():
            if record.epoch == epoch:
                path = Path(store.location.url) / record.path
                data = bytearray(path.read_bytes())
                data[len(data) // 2] ^= 0xFF
                path.write_bytes(bytes(data))
                corrupted.append(record.path)

    import shoal.runtime._recovery as recovery

    original = recovery.recovery_point

    def corrupting(store: CheckpointStore, **kw: Any) -> Any:
        if not corrupted:
            assert len(store.epochs()) >= 2, "the fault fired before two checkpoints completed"
            corrupt_newest(store)
            # And the local state is lost (a disk replaced): every key group must restore from
            # the checkpoint's files, so the corruption cannot go unread.
            shutil.rmtree(tmp_path / "state" / "per_word")
        return original(store, **kw)

    recovery.recovery_point = corrupting  # type: ignore[assignment]
    try:
        result = await run_stats(
            tmp_path,
            params,
            # The 13th local commit of worker 1's four key groups: epoch 4 is being taken, so
            # epochs 1-3 completed (one checkpoint at a time).
            [Fault("keygroup.committed", worker=1, hit=13, action="fail")],
            processes=False,
        )
    finally:
        recovery.recovery_point = original  # type: ignore[assignment]
    assert corrupted
    assert flows.final_state(result, params) == flows.oracle(params)
    # One recovery, which took two attempts: the first failed on the corrupt file.
    assert len(result.recoveries) == 1


@pytest.mark.processes
@pytest.mark.asyncio
async def test_workers_killed_with_sigkill_recover_to_exactly_once_state(tmp_path: Path) -> None:
    """Three real kill -9s: worker 1 between a key group's local commit and the manifest,
    worker 0 in the middle of the stream after the restart, worker 1 while restoring. State
    and the transactional sink's output are exactly once."""
    params = {**PARAMS, "stages": 2, "output": str(tmp_path / "out")}
    faults = [
        Fault("keygroup.committed", worker=1, attempt=0, hit=9),
        Fault("source.batch", worker=0, attempt=1, hit=150),
        Fault("keygroup.restore", worker=1, attempt=2, hit=2),
    ]
    result = await run_stats(tmp_path, params, faults, processes=True)
    assert flows.final_state(result, params) == flows.oracle(params)
    flows.check_output(params)
    assert len(result.recoveries) == 2  # the third kill happened during the second recovery
    assert all(0 < seconds < 30 for seconds in result.recoveries)
    assert sum(restores(result).values()) == 2 * params["key_groups"]


def random_schedule(seed: int, output: str = "") -> tuple[dict[str, Any], list[Fault]]:
    """A seeded job and one to three kills, each in the attempt after the previous one."""
    rng = random.Random(seed)
    params = {**PARAMS, "seed": seed, "stages": rng.choice([1, 2]), "output": output}
    hits = {
        "sink.commit": 10,
        "source.batch": 400,
        "keygroup.batch": 1500,
        "keygroup.committed": 40,
        "checkpoint.write": 40,
        "keygroup.restore": 4,
    }
    if params["stages"] == 2:
        hits["keygroup.aligning"] = 40
    faults = []
    for attempt in range(rng.randint(1, 3)):
        points = sorted(hits) if attempt else sorted(set(hits) - {"keygroup.restore"})
        point = rng.choice(points)
        action = "enospc" if point == "checkpoint.write" and rng.random() < 0.3 else "kill"
        faults.append(Fault(point, rng.randrange(2), attempt, rng.randint(1, hits[point]), action))
    return params, faults


#: The points of live migration: tests/runtime/test_rescale.py (and, for shipping between
#: state directories, test_rescale_shipped.py) schedules faults there.
MIGRATION_POINTS = {"keygroup.handoff", "keygroup.takeover", "source.handoff", "keygroup.ship"}


def test_random_schedules_cover_every_fault_point() -> None:
    points = {f.point for seed in range(40) for f in random_schedule(seed)[1]}
    assert points == set(FAULT_POINTS) - MIGRATION_POINTS


@pytest.mark.processes
@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(SCHEDULES))
async def test_random_kill_schedules_across_processes_keep_state_exactly_once(
    tmp_path: Path, seed: int
) -> None:
    """State and the transactional sink's output are exactly once: the oracle recomputes
    per-key count, sum, min and max, and every published running count, from the input."""
    params, faults = random_schedule(seed, output=str(tmp_path / "out"))
    result = await run_stats(tmp_path, params, faults, processes=True, max_restarts=5)
    assert flows.final_state(result, params) == flows.oracle(params), faults
    flows.check_output(params)
    assert len(result.recoveries) <= len(faults)
    assert result.checkpoints is not None


# Resuming a run from its state directory.


@pytest.mark.asyncio
async def test_a_finished_run_ends_with_a_final_checkpoint_and_resuming_it_reads_nothing(
    tmp_path: Path,
) -> None:
    first = await run_stats(tmp_path, PARAMS, [], processes=False)
    assert first.checkpoint_dir is not None
    store = CheckpointStore(first.checkpoint_dir)
    final = store.latest_complete()
    assert final is not None
    assert final.epoch == first.checkpoints.last_completed  # type: ignore[union-attr]
    # Every split at its end: the IterableSource position is the next item's index.
    n, splits = PARAMS["n"], PARAMS["splits"]
    assert final.positions == {f"items:{i}": (i + 1) * n // splits for i in range(splits)}
    again = await run_stats(tmp_path, PARAMS, [], processes=False, resume=True)
    # It reads nothing; the job's count (each record once) is the first run's.
    assert (again.records_read, again.records_in) == (0, PARAMS["n"])
    assert flows.final_state(again, PARAMS) == flows.oracle(PARAMS)
    assert restores(again) == {"local": PARAMS["key_groups"]}


RESUMABLE = """
import asyncio, sys
sys.path.insert(0, {here!r})
import recovery_flows as flows
from shoal import run_job

asyncio.run(run_job(flows.stats(**{params!r}), state_dir={state!r}, batch_size=4,
                    checkpoint_interval=0.05, resume={resume!r}))
"""


def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    """The driver itself (one process, every worker in its loop) is killed with kill -9 once
    two checkpoints exist; `resume=True` finishes the job with exactly-once state."""
    import subprocess
    import sys

    params = {**PARAMS, "n": 80_000}
    state = tmp_path / "state"
    here = str(Path(__file__).parent)
    script = RESUMABLE.format(here=here, params=params, state=str(state), resume=False)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    manifests = state / "checkpoints" / "manifests"
    import time

    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if manifests.exists() and len(list(manifests.iterdir())) >= 2:
            break
        time.sleep(0.01)  # polling for a file another process writes
    proc.kill()
    assert proc.wait() == -9, "the job ended before two checkpoints were taken"
    resumed = subprocess.run(
        [
            sys.executable,
            "-c",
            RESUMABLE.format(here=here, params=params, state=str(state), resume=True),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    import asyncio

    async def read() -> dict[str, dict[Any, Any]]:
        # A third run resumes from the second one's final checkpoint: nothing left to read,
        # and its result reads the state.
        result = await run_job(
            flows.stats(**params), state_dir=state, checkpoint_interval=1.0, resume=True
        )
        # Nothing read; each record counted once over the killed run and the two resumes.
        assert (result.records_read, result.records_in) == (0, params["n"])
        return flows.final_state(result, params)

    assert asyncio.run(read()) == flows.oracle(params)


@pytest.mark.asyncio
async def test_resume_is_refused_without_state_of_this_job_or_without_checkpoints(
    tmp_path: Path,
) -> None:
    with pytest.raises(
        ValueError,
        match=r"^resume=True needs the state_dir of the run to resume and checkpoints on",
    ):
        await run_job(flows.stats(**PARAMS), state_dir=tmp_path, resume=True)
    with pytest.raises(
        StateDirectoryInUseError,
        match=rf"^nothing to resume in '{tmp_path / 'fresh'}': it holds no shoal state",
    ):
        await run_job(
            flows.stats(**PARAMS), state_dir=tmp_path / "fresh", checkpoint_interval=1, resume=True
        )
    other = Flow("other", num_key_groups=2)
    other.source(IterableSource([1])).key_by(str).count(name="n").sink(CollectingSink())
    await run_job(other, state_dir=tmp_path / "other")
    with pytest.raises(
        StateDirectoryInUseError,
        match=r"holds the state of job 'other', not 'stats': a job resumes only its own state$",
    ):
        await run_job(
            flows.stats(**PARAMS), state_dir=tmp_path / "other", checkpoint_interval=1, resume=True
        )


def test_a_state_directory_in_use_by_a_running_job_is_refused(tmp_path: Path) -> None:
    from shoal.runtime._statedir import claim_state_dir

    claim = claim_state_dir(tmp_path, "stats")
    try:
        with pytest.raises(
            StateDirectoryInUseError,
            match=rf"^state directory '{tmp_path}' is in use by a running job "
            rf"\(pid {os.getpid()}\)",
        ):
            claim_state_dir(tmp_path, "stats", resume=True)
    finally:
        claim.release()
    claim_state_dir(tmp_path, "stats", resume=True).release()  # free again


@pytest.mark.asyncio
@pytest.mark.parametrize("point", ["source.batch", "keygroup.committed"])
async def test_the_failure_named_is_the_root_cause_not_its_consequences(
    tmp_path: Path, point: str
) -> None:
    """Other actors fail in turn (a peer's exchange is gone, the writer stopped); the error
    names the one that failed first."""
    with pytest.raises(
        JobError, match=rf"last failure: .*InjectedFault: fault injected at {point} \(hit 3\)$"
    ):
        await run_stats(
            tmp_path,
            {**PARAMS, "stages": 2},
            [Fault(point, worker=1, hit=3, action="fail")],
            processes=False,
            max_restarts=0,
        )


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_worker_killed_while_publishing_its_output_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    """Killed between the manifest and its partition's publish: recovery publishes it."""
    params = {**PARAMS, "output": str(tmp_path / "out")}
    faults = [Fault("sink.commit", worker=1, hit=3), Fault("sink.commit", worker=0, attempt=1)]
    result = await run_stats(tmp_path, params, faults, processes=True)
    assert flows.final_state(result, params) == flows.oracle(params)
    flows.check_output(params)
    assert len(result.recoveries) == 2


@pytest.mark.asyncio
async def test_resume_refuses_a_checkpoint_of_another_key_group_count(tmp_path: Path) -> None:
    """Resuming with another num_key_groups would hash keys into other groups: refused,
    naming the fix, before anything runs."""
    await run_stats(tmp_path, PARAMS, [], processes=False)
    state = tmp_path / "state"
    with pytest.raises(
        ValueError,
        match=rf"^the checkpoint to resume \({state / 'checkpoints'}, epoch \d+\) has 8 key "
        r"groups; flow 'stats' has 16: rewrite it first \(shoal state savepoint ",
    ):
        await run_job(
            flows.stats(**{**PARAMS, "key_groups": 16}),
            state_dir=state,
            checkpoint_interval=1.0,
            resume=True,
        )


@pytest.mark.asyncio
async def test_the_checkpoint_dir_is_recorded_so_a_copied_state_dir_resumes_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded relative to the state directory (not the working directory): a copy of the
    directory resumes from its own checkpoints and leaves the original's alone."""
    import json

    await run_stats(tmp_path, PARAMS, [], processes=False)
    state = tmp_path / "state"
    assert json.loads((state / "shoal-state.json").read_text())["checkpoint_dir"] == "checkpoints"
    before = CheckpointStore(state / "checkpoints").epochs()
    copy = tmp_path / "copy"
    # As docs/guides/recovery.md says: a copy that keeps the LMDB files sparse (shutil writes
    # their 1 GiB holes out: 13-45 s of this test).
    await anyio.run_process(["cp", "-a", str(state), str(copy)])
    monkeypatch.chdir(tmp_path.parent)  # resolved against the state directory, not the cwd
    again = await run_job(
        flows.stats(**PARAMS), state_dir=copy, checkpoint_interval=1.0, resume=True
    )
    assert again.records_read == 0
    assert again.checkpoint_dir == str(copy / "checkpoints")
    assert CheckpointStore(state / "checkpoints").epochs() == before


@pytest.mark.asyncio
async def test_bad_checkpoint_dirs_and_savepoints_are_refused_leaving_no_trace(
    tmp_path: Path,
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(ValueError, match=r"^checkpoint_dir '.*afile' is a file; give a directory"):
        await run_job(
            flows.stats(**PARAMS),
            state_dir=tmp_path / "a",
            checkpoint_interval=1.0,
            checkpoint_dir=afile,
        )
    with pytest.raises(ValueError, match=r"^from_savepoint: no savepoint at '/nonexistent' "):
        await run_job(
            flows.stats(**PARAMS), state_dir=tmp_path / "b", from_savepoint="/nonexistent"
        )
    assert not (tmp_path / "b" / "shoal-state.json").exists()  # a retry is not refused


def test_a_state_dir_still_used_by_workers_of_a_dead_driver_is_refused(tmp_path: Path) -> None:
    from shoal.runtime import _statedir

    _statedir.hold_as_worker(tmp_path)  # as a worker process whose driver was killed
    try:
        with pytest.raises(
            StateDirectoryInUseError,
            match=r"is still in use by worker processes of an earlier run whose driver is gone",
        ):
            _statedir.claim_state_dir(tmp_path, "stats", resume=False)
    finally:
        os.close(_statedir._held.pop())
    _statedir.claim_state_dir(tmp_path, "stats").release()  # free once they are gone
