"""Scenario timelines act on running jobs (checkpoints, kill -9, savepoints, stop) and resume
them, possibly with another worker count; the final state still equals the oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import recovery_flows as flows
from shoal.runtime._scenario import run_scenario
from shoal.runtime.timeline import at, checkpoint, kill_worker, resume, savepoint, stop
from shoal.storage import (
    CheckpointStore,
    read_savepoint,
    savepoint_from_checkpoint,
    verify_savepoint,
)

from shoal import (
    Check,
    CollectingSink,
    Flow,
    IterableSource,
    JobError,
    JobResult,
    Scenario,
    ScenarioError,
    run_job,
)

FLOWS = str(Path(flows.__file__).resolve())
PARAMS: dict[str, Any] = {
    "seed": 9,
    "n": 40_000,
    "vocabulary": 400,
    "splits": 4,
    "key_groups": 8,
    "stages": 2,
}


def no_checks(result: JobResult, params: Any) -> list[Check]:
    return [Check("ran", True)]


def test_timeline_steps_are_checked_where_they_are_written() -> None:
    with pytest.raises(ValueError, match=r"^at\(\.\.\.\) needs exactly one of records=N or"):
        at(checkpoint())
    with pytest.raises(ValueError, match=r"^at\(records=\.\.\.\) must be an int >= 0; got -1$"):
        at(checkpoint(), records=-1)
    with pytest.raises(TypeError, match=r"^at\(\.\.\.\) takes an action"):
        at("checkpoint", records=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^kill_worker takes a worker index >= 0; got -2$"):
        kill_worker(-2)
    with pytest.raises(
        ScenarioError,
        match=r"^scenario 'x': timeline: resume\(\.\.\.\) must follow a run that ends with "
        r"at\(stop\(\), \.\.\.\)",
    ):
        Scenario("x", flows.stats, no_checks, timeline=[at(checkpoint(), records=5), resume()])


@pytest.mark.asyncio
async def test_run_job_refuses_timeline_actions_it_cannot_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"kill_worker needs worker processes"):
        await run_job(
            flows.stats(**PARAMS),
            state_dir=tmp_path / "a",
            checkpoint_interval=1,
            timeline=[at(kill_worker(0), records=10)],
        )
    with pytest.raises(ValueError, match=r"this timeline action needs checkpoints on$"):
        await run_job(
            flows.stats(**PARAMS), state_dir=tmp_path / "b", timeline=[at(checkpoint(), records=1)]
        )


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_timeline_kills_savepoints_stops_and_resumes_with_three_workers(
    tmp_path: Path,
) -> None:
    scenario = Scenario(
        "stats",
        flows.stats,
        no_checks,
        params=PARAMS,
        checkpoint_interval=0.05,
        timeline=[
            at(kill_worker(1), records=6_000),
            at(kill_worker(0, during_checkpoint=True), records=14_000),
            at(savepoint("mid"), records=20_000),
            at(stop(savepoint="stopped"), records=26_000),
            resume(workers=3, savepoint="stopped"),
            at(checkpoint(), records=2_000),
        ],
    )
    state = tmp_path / "state"
    result = await run_scenario(
        scenario,
        f"{FLOWS}:stats",
        PARAMS,
        workers=2,
        state_dir=state,
        batch_size=16,
        mailbox_size=2,
        restart_backoff=0.0,
    )
    assert result.workers == 3
    assert len(result.recoveries) == 2
    assert flows.final_state(result, PARAMS) == flows.oracle(PARAMS)
    # Both savepoints are self-contained and verify; the stopped one was where the second run
    # started, and it read only what the first had not.
    for name in ("mid", "stopped"):
        report = verify_savepoint(state / name)
        assert report.ok, report.problems
        assert report.files > 0
    stopped = read_savepoint(state / "stopped")
    read_after = sum(stopped.positions.values()) - sum(
        i * PARAMS["n"] // PARAMS["splits"] for i in range(PARAMS["splits"])
    )
    # The stop came at 26,000 records read, re-reads after the two recoveries included (a few
    # checkpoint intervals' worth), and the sources stop within a turn or two of the count on
    # a quiet machine; on a loaded one a few hundred more records go by (26,640 was seen).
    # What matters: the first run stopped well before the end, and the second read the rest.
    assert 20_000 < read_after < PARAMS["n"] - 10_000
    assert result.checkpoints is not None
    assert result.checkpoints.completed >= 3


@pytest.mark.asyncio
async def test_a_failing_step_stops_the_job_and_names_the_step(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(
        JobError,
        match=rf"^job 'stats': timeline step At\(action=Savepoint\(path='{blocker}/sp'\), "
        r"records=100, seconds=None\) failed: ",
    ):
        await run_job(
            flows.stats(**PARAMS),
            state_dir=tmp_path / "state",
            batch_size=16,
            checkpoint_interval=0.05,
            timeline=[at(savepoint(str(blocker / "sp")), records=100)],
        )


@pytest.mark.asyncio
async def test_in_one_loop_a_timeline_checkpoints_and_savepoints(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = await run_job(
        flows.stats(**PARAMS),
        workers=2,
        processes=False,
        state_dir=state,
        batch_size=16,
        # Only the timeline's and the final one (10 s was passed once, by a slow run).
        checkpoint_interval=1_000.0,
        timeline=[at(checkpoint(), records=5_000), at(savepoint("sp"), records=15_000)],
    )
    assert result.checkpoints is not None
    assert result.checkpoints.completed == 3
    assert verify_savepoint(state / "sp").ok
    again = await run_job(
        flows.stats(**PARAMS), state_dir=tmp_path / "again", from_savepoint=state / "sp"
    )
    assert flows.final_state(again, PARAMS) == flows.oracle(PARAMS)
    # It read what came after the savepoint; the savepoint's counts make the job's whole.
    assert again.records_read is not None
    assert 0 < again.records_read < PARAMS["n"]
    assert again.records_in == PARAMS["n"]


@pytest.mark.asyncio
async def test_a_savepoint_the_flow_cannot_load_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    small = {**PARAMS, "n": 2_000, "stages": 1}
    state = tmp_path / "state"
    first = await run_job(flows.stats(**small), state_dir=state, checkpoint_interval=10.0)
    assert first.checkpoint_dir is not None
    store = CheckpointStore(first.checkpoint_dir)
    final = store.latest_complete()  # the final checkpoint, as a savepoint
    assert final is not None
    sp = state / "sp"
    savepoint_from_checkpoint(store, final, sp)
    with pytest.raises(
        ValueError,
        match=rf"^savepoint '{sp}' has 8 key groups; flow 'stats' has 16: rewrite it first "
        rf"\(shoal state rewrite {sp} --key-groups 16 OUT\)$",
    ):
        await run_job(
            flows.stats(**{**small, "key_groups": 16}), state_dir=tmp_path / "a", from_savepoint=sp
        )
    other = Flow("stats", num_key_groups=8)
    other.source(IterableSource(["x"])).key_by(str).count(name="per_word").sink(CollectingSink())
    with pytest.raises(
        ValueError,
        match=rf"^savepoint '{sp}' holds value state per_word.count; flow 'stats' does not "
        r"declare it$",
    ):
        await run_job(other, state_dir=tmp_path / "b", from_savepoint=sp)
    assert not (tmp_path / "b" / "per_word").exists()  # refused before any state was opened
