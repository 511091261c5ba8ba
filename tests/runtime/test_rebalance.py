"""Load-aware placement: per-key-group load measured and exported, ``rebalance()`` moving the
hottest key groups off the busiest worker (state equal to the oracle), placement policies as a
plug-in, the automatic policy's hysteresis, and the hot-key sketch."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from rebalance_flows import hot_words, skewed_oracle, skewed_stats
from recovery_flows import final_state
from rescale_flows import paced_stats, run_schedule
from shoal.runtime import _attempt
from shoal.runtime._cli import main
from shoal.runtime._control_socket import CONTROL_SOCKET, request
from shoal.runtime._faults import Fault
from shoal.runtime._load import (
    HOT_KEY_CHECK_EVERY,
    HOT_KEY_MIN_RECORDS,
    GroupLoad,
    LoadMonitor,
    hot_key_summary,
)
from shoal.runtime._logging import configure_logging
from shoal.runtime._placement import Placement
from shoal.runtime._policies import AutoTrigger, check_table, plan_rebalance, skew
from shoal.runtime._timeline import Rebalance, Stop
from shoal.runtime.timeline import at, rebalance, rescale, stop
from structlog.testing import capture_logs

from shoal import (
    AutoRebalance,
    BalanceLoad,
    Job,
    JobCollector,
    KeyGroupLoad,
    PlacementPolicy,
    Progress,
    key_group_of,
    run_job,
    start_job,
)

FLOWS = Path(__file__).parent / "rebalance_flows.py"
SCHEDULES = int(os.environ.get("SHOAL_FAULT_SCHEDULES", "3"))


def params(**overrides: Any) -> dict[str, Any]:
    base = {
        "seed": 5,
        "n": 24_000,
        "vocabulary": 300,
        "splits": 4,
        "key_groups": 16,
        "hot": 4,
        "skew": 0.8,
        "rate": 12_000.0,
    }
    base.update(overrides)
    return base


def loads_of(rates: Sequence[float]) -> list[KeyGroupLoad]:
    return [KeyGroupLoad(g, -1, 0, rate, 0, 0) for g, rate in enumerate(rates)]


def table(owner: Sequence[int]) -> Placement:
    return Placement(3, tuple(sorted(set(owner))), tuple(owner), ())


# -- the default policy ---------------------------------------------------------------------


def test_the_default_policy_moves_the_hot_key_groups_off_the_busiest_worker() -> None:
    # Worker 0 hosts four hot key groups (100 each) and four cold ones; worker 1 eight cold.
    rates = [100.0, 1, 100, 1, 100, 1, 100, 1] + [1.0] * 8
    placement = table([0] * 8 + [1] * 8)
    moves = plan_rebalance(placement, loads_of(rates), [0, 1], BalanceLoad())
    assert {m.item for m in moves} <= {0, 2, 4, 6}  # only hot ones: fewest moves
    assert len(moves) == 2
    assert all((m.source, m.target) == (0, 1) for m in moves)


def test_a_hot_key_group_is_left_where_it_is_when_moving_it_would_not_help() -> None:
    # One key group carries nearly everything: moving it only moves the peak. The cold ones
    # beside it go instead, as far as that lowers the peak by the margin.
    rates = [1000.0] + [1.0] * 7
    placement = table([0, 0, 0, 0, 1, 1, 1, 1])
    moves = plan_rebalance(placement, loads_of(rates), [0, 1], BalanceLoad())
    assert moves == []  # 1003 -> 1000 is under the 10 % margin


@pytest.mark.parametrize("noise", [0.0, 0.04])
def test_a_balanced_or_mildly_noisy_load_moves_nothing(noise: float) -> None:
    rng = random.Random(7)
    rates = [100.0 * (1 + rng.uniform(-noise, noise)) for _ in range(16)]
    placement = table([g % 4 for g in range(16)])
    assert plan_rebalance(placement, loads_of(rates), [0, 1, 2, 3], BalanceLoad()) == []


def test_no_load_measured_moves_nothing() -> None:
    placement = table([0] * 8 + [1] * 8)
    assert plan_rebalance(placement, loads_of([0.0] * 16), [0, 1], BalanceLoad()) == []


# -- the plug-in point ----------------------------------------------------------------------


class EverythingOn:
    """A custom policy: every key group on one worker."""

    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.calls: list[tuple[int, int, list[int]]] = []

    def place(
        self, placement: Placement, loads: Sequence[KeyGroupLoad], workers: Sequence[int]
    ) -> list[int]:
        self.calls.append((placement.version, len(loads), list(workers)))
        return [self.worker] * len(placement.group_owner)


def test_a_custom_policy_is_a_placement_policy() -> None:
    assert isinstance(EverythingOn(1), PlacementPolicy)
    assert isinstance(BalanceLoad(), PlacementPolicy)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            [0, 1],
            r"^placement policy Fixed returned 2 owners; the job has 4 key groups: "
            r"return one worker id per key group$",
        ),
        (
            [0, 1, 2, 5],
            r"^placement policy Fixed placed key groups on workers \[2, 5\]; the "
            r"job's workers are \[0, 1\]$",
        ),
        (None, r"^placement policy Fixed must return a sequence of worker ids; got None$"),
    ],
)
def test_a_policy_that_returns_a_bad_table_is_refused(answer: Any, message: str) -> None:
    class Fixed:
        def place(self, placement: Any, loads: Any, workers: Any) -> Any:
            return answer

    with pytest.raises(ValueError, match=message):
        check_table(Fixed(), Fixed().place(None, None, None), 4, [0, 1])


# -- the automatic policy's hysteresis ------------------------------------------------------


def run_trigger(auto: AutoRebalance, readings: Sequence[dict[int, float]]) -> list[int]:
    """Feed one reading per interval; return the reading numbers at which it rebalanced."""
    trigger = AutoTrigger(auto)
    fired = []
    for index, reading in enumerate(readings):
        now = index * auto.interval
        if trigger.observe(reading, now):
            fired.append(index)
            trigger.rebalanced(now)
    return fired


def test_the_automatic_policy_never_fires_on_a_balanced_or_mildly_noisy_load() -> None:
    auto = AutoRebalance(interval=1.0, threshold=0.25, readings=3, cooldown=10.0)
    rng = random.Random(3)
    balanced = [{0: 1000.0, 1: 1000.0, 2: 1000.0}] * 50
    # Noise of +-15 % per worker and reading: under the threshold.
    noisy = [{w: 1000.0 * (1 + rng.uniform(-0.15, 0.15)) for w in range(3)} for _ in range(200)]
    # Spikes: two readings in three pass the threshold, never three in a row.
    spiky = [{0: 2000.0 if i % 3 else 1000.0, 1: 1000.0, 2: 1000.0} for i in range(60)]
    assert sum(skew(r) > auto.threshold for r in spiky) == 40
    assert run_trigger(auto, balanced) == []
    assert run_trigger(auto, noisy) == []
    assert run_trigger(auto, spiky) == []
    idle = [{0: 50.0, 1: 0.0}] * 50  # far apart, but under min_rate: idle
    assert run_trigger(auto, idle) == []


def test_the_automatic_policy_fires_on_a_clear_skew_after_its_readings_and_cooldown() -> None:
    auto = AutoRebalance(interval=1.0, threshold=0.25, readings=3, cooldown=10.0)
    skewed = [{0: 3000.0, 1: 1000.0}] * 30  # a skew the rebalance could not fix
    # Three readings (at 0, 1, 2 s), quiet until 12 s, three readings again (12, 13, 14 s).
    assert run_trigger(auto, skewed) == [2, 14, 26]
    # A skew broken by one balanced reading starts counting afresh.
    broken = [{0: 3000.0, 1: 1000.0}] * 2 + [{0: 1000.0, 1: 1000.0}] + [{0: 3000.0, 1: 1000.0}] * 3
    assert run_trigger(auto, broken) == [5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": 0}, r"^AutoRebalance\(interval=\.\.\.\) must be > 0; got 0$"),
        ({"readings": 0}, r"^AutoRebalance\(readings=\.\.\.\) must be an int >= 1; got 0$"),
        ({"threshold": -1}, r"^AutoRebalance\(threshold=\.\.\.\) must be a number >= 0; got -1$"),
    ],
)
def test_bad_automatic_policy_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AutoRebalance(**kwargs)


# -- hot keys -------------------------------------------------------------------------------


def test_the_sketch_finds_a_planted_hot_key_and_logs_it_once() -> None:
    logged: list[dict[str, Any]] = []
    load = GroupLoad(lambda event, **fields: logged.append(fields))
    rng = random.Random(1)
    for _ in range(4 * HOT_KEY_CHECK_EVERY):
        batch = ["planted" if rng.random() < 0.6 else f"k{rng.randrange(5000)}" for _ in range(200)]
        load.observe(batch)
    assert load.records == 4 * HOT_KEY_CHECK_EVERY * 200
    top = load.top()
    assert top[0].key == "'planted'"
    assert 0.5 < top[0].share < 0.7
    assert abs(top[0].records - 0.6 * load.records) < 0.05 * load.records
    assert [entry["key"] for entry in logged] == ["'planted'"]  # once, though checked 4 times


def test_a_key_under_the_hot_share_is_reported_but_not_logged() -> None:
    logged: list[Any] = []
    load = GroupLoad(lambda event, **fields: logged.append(fields))
    rng = random.Random(2)
    for _ in range(2 * HOT_KEY_CHECK_EVERY):
        load.observe([7 if rng.random() < 0.3 else rng.randrange(10**6) for _ in range(300)])
    assert load.top()[0].key == "7"
    assert logged == []


def test_the_hot_key_summary_counts_every_hot_key_and_names_the_hottest() -> None:
    def report(worker: int, groups: list[list[Any]]) -> dict[str, Any]:
        return {"worker": worker, "groups": groups}

    big = HOT_KEY_MIN_RECORDS
    reports = [
        report(0, [["users", 48, big * 2, 0, [["118886", big, 0.74], ["7", 10, 0.01]]]]),
        report(
            1,
            [
                ["users", 3, big, 0, [["42", big, 0.9]]],
                ["users", 5, big, 0, [["8", big, 0.6]]],
                ["users", 9, big, 0, [["9", big, 0.55]]],
                ["users", 11, big, 0, [["10", big // 2, 0.5]]],  # not above the share
                ["users", 12, big - 1, 0, [["11", big, 0.99]]],  # too few records to tell
            ],
        ),
    ]
    assert hot_key_summary(reports) == (
        "4 hot keys hold more than 50% of their key group's records: users 42 (kg 3, 90%), "
        "users 118886 (kg 48, 74%), users 8 (kg 5, 60%), and 1 more; rebalancing cannot "
        "spread a single key (one actor processes it in order)"
    )
    assert hot_key_summary(reports[:1]) == (
        "1 hot key holds more than 50% of its key group's records: users 118886 (kg 48, 74%); "
        "rebalancing cannot spread a single key (one actor processes it in order)"
    )
    assert hot_key_summary([report(0, [["users", 1, big, 0, [["7", 5, 0.3]]]])]) is None
    assert hot_key_summary([]) is None


@contextmanager
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """structlog's ``capture_logs``, leaving structlog unconfigured if it was: otherwise its
    built-in defaults (every level, to stdout) would reach later tests' captured stdout."""
    configured = structlog.is_configured()
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        if not configured:
            structlog.reset_defaults()


@pytest.mark.asyncio
async def test_a_skewed_job_logs_its_hot_keys_at_info_and_one_warning_summary(
    tmp_path: Path,
) -> None:
    """Four planted hot words, each most of its key group: one info line per key, one warning
    for the attempt (not one warning per key), and the load data unchanged."""
    p = params(n=60_000, rate=None)  # ~12,000 records per hot key group: enough to tell
    with captured_logs() as logs:
        result = await run_job(
            skewed_stats(**p),
            workers=2,
            processes=False,
            state_dir=tmp_path / "state",
            batch_size=100,  # batches enough for the actors' periodic check (every 64)
        )
    hot = sorted(repr(w) for w in hot_words(300, p["key_groups"], p["hot"]))
    found = [e for e in logs if e["event"].startswith("hot key: ")]
    assert sorted(e["key"] for e in found) == hot
    assert {e["log_level"] for e in found} == {"info"}
    warnings = [e for e in logs if e["log_level"] == "warning"]
    [summary] = warnings
    assert summary["event"].startswith(
        "4 hot keys hold more than 50% of their key group's records: per_word "
    )
    named = re.findall(r"per_word ('w\d+') \(kg \d+, \d+%\)", summary["event"])
    assert len(named) == 3
    assert set(named) <= set(hot)
    assert ", and 1 more; rebalancing cannot spread a single key" in summary["event"]
    tops = [entry[4] for r in result.reports for entry in r["groups"] if entry[4]]
    assert {top[0][0] for top in tops} >= set(hot)  # the reports still carry the top keys


# -- jobs -----------------------------------------------------------------------------------


def assert_hot_groups_moved(result: Any, p: dict[str, Any]) -> None:
    [record] = result.rebalances
    hot = {key_group_of(w, p["key_groups"]) for w in hot_words(300, p["key_groups"], p["hot"])}
    moved = {int(m.item) for m in record.moves}
    assert moved, record
    assert moved & hot, (moved, hot)
    # The hot ones left worker 0 (a cold one may come back to even out the rest).
    assert all((m.source, m.target) == (0, 1) for m in record.moves if int(m.item) in hot)
    before, after = dict(record.load_before), dict(record.load_after)
    assert max(after.values()) < 0.8 * max(before.values())
    names = {m.name for m in result.migrations}
    assert {f"per_word#{g}" for g in moved} <= names


@pytest.mark.asyncio
async def test_rebalance_in_one_loop_moves_the_hot_key_groups_with_exact_state(
    tmp_path: Path,
) -> None:
    p = params()
    result = await run_job(
        skewed_stats(**p),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        checkpoint_interval=0.1,
        timeline=[at(rebalance(), records=8_000)],
    )
    assert_hot_groups_moved(result, p)
    assert final_state(result, p) == skewed_oracle(p)


@pytest.mark.processes
@pytest.mark.asyncio
async def test_rebalance_across_worker_processes_moves_the_hot_key_groups_with_exact_state(
    tmp_path: Path,
) -> None:
    p = params(rate=6_000.0)
    result = await run_job(
        f"{FLOWS}:skewed_stats",
        params=p,
        workers=2,
        state_dir=tmp_path / "state",
        checkpoint_interval=0.1,
        timeline=[at(rebalance(), records=6_000)],
    )
    assert result.processes
    assert_hot_groups_moved(result, p)
    assert final_state(result, p) == skewed_oracle(p)


@pytest.mark.asyncio
async def test_a_custom_policy_decides_where_key_groups_go(tmp_path: Path) -> None:
    p = params()
    policy = EverythingOn(1)
    result = await run_job(
        skewed_stats(**p),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        timeline=[at(rebalance(policy), records=8_000)],
    )
    [(version, loads, workers)] = policy.calls
    assert (version, loads, workers) == (0, 16, [0, 1])
    [record] = result.rebalances
    assert sorted(int(m.item) for m in record.moves) == list(range(8))  # worker 0's
    assert dict(record.load_after)[0] == 0.0
    assert [r["key_groups"] for r in sorted(result.reports, key=lambda r: r["worker"])] == [0, 16]
    assert final_state(result, p) == skewed_oracle(p)


def test_rebalance_refuses_what_is_not_a_policy() -> None:
    with pytest.raises(
        TypeError,
        match=r"^rebalance takes a placement policy \(an object with a place\(placement, loads, "
        r"workers\) method\) or None; got 3$",
    ):
        rebalance(3)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_the_automatic_policy_rebalances_a_clear_skew_once(tmp_path: Path) -> None:
    p = params(n=30_000)
    result = await run_job(
        skewed_stats(**p),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        auto_rebalance=AutoRebalance(interval=0.2, readings=2, cooldown=60.0),
    )
    assert_hot_groups_moved(result, p)
    assert final_state(result, p) == skewed_oracle(p)


@pytest.mark.asyncio
async def test_the_automatic_policy_leaves_a_balanced_job_alone(tmp_path: Path) -> None:
    p = {"seed": 3, "n": 20_000, "vocabulary": 300, "splits": 4, "key_groups": 16}
    result = await run_job(
        paced_stats(**p, rate=10_000.0),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        auto_rebalance=AutoRebalance(interval=0.1, readings=2, cooldown=0.0),
    )
    assert result.rebalances == ()
    assert result.migrations == ()


@pytest.mark.asyncio
async def test_run_job_refuses_an_auto_rebalance_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(
        TypeError, match=r"^auto_rebalance takes an AutoRebalance\(\.\.\.\) or None; got 5$"
    ):
        await run_job(skewed_stats(**params()), auto_rebalance=5)  # type: ignore[arg-type]


# -- measured and exported ------------------------------------------------------------------


def test_the_monitor_turns_counters_into_rates_per_key_group() -> None:
    now = [0.0]
    monitor = LoadMonitor(4, clock=lambda: now[0])

    def report(worker: int, groups: list[list[Any]]) -> dict[str, Any]:
        return {"worker": worker, "groups": groups, "state_size": [["op", 1, 3, 300]]}

    now[0] = 2.0
    first = monitor.measure([report(0, [["op", 1, 100, 2, [["'k'", 60, 0.6]]]])])
    assert first[1].records_per_s == 50.0
    assert (first[1].worker, first[1].state_bytes, first[1].mailbox_depth) == (0, 300, 2)
    assert first[1].hot_keys[0][0] == "op"
    assert (first[0].worker, first[0].records_per_s) == (-1, 0.0)
    now[0] = 3.0
    # Key group 1 moved to worker 1: its counter there started from zero.
    second = monitor.measure([report(0, []), report(1, [["op", 1, 30, 0, []]])])
    assert second[1].records_per_s == 30.0
    assert second[1].worker == 1


@pytest.mark.asyncio
async def test_load_appears_in_reports_progress_and_prometheus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_attempt, "_PROGRESS_INTERVAL_S", 0.1)
    progress: list[Progress] = []
    p = params(n=12_000)
    result = await run_job(
        skewed_stats(**p),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        on_progress=progress.append,
    )
    groups = [entry for report in result.reports for entry in report["groups"]]
    assert sum(entry[2] for entry in groups) == p["n"]
    hot = {key_group_of(w, 16): w for w in hot_words(300, 16, 4)}
    busy = [load for pr in progress for load in pr.key_groups if load.records_per_s > 0]
    assert busy
    assert any(load.key_group in hot for load in busy)
    assert all(len(pr.key_groups) == 16 for pr in progress)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobCollector("skewed", lambda: result.reports))
    exposition = generate_latest(registry).decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }
    group, word = next(iter(hot.items()))
    where = {"job": "skewed", "operator": "per_word", "key_group": str(group)}
    records = [
        v
        for (name, labels), v in samples.items()
        if name == "shoal_key_group_records_total" and where.items() <= dict(labels).items()
    ]
    assert records
    assert records[0] > 0
    hot_keys = [
        dict(labels)["key"]
        for (name, labels), _v in samples.items()
        if name == "shoal_hot_key_share" and where.items() <= dict(labels).items()
    ]
    assert repr(word) in hot_keys
    assert any(name == "shoal_key_group_mailbox_depth" for name, _labels in samples)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``configure_logging()`` binds structlog to this test's captured stderr, which pytest
    closes after the test: put the earlier configuration back, or a later test's log line in
    the same process fails with "I/O operation on closed file"."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.asyncio
@pytest.mark.usefixtures("restore_logging")
async def test_a_running_job_rebalances_through_its_control_socket_and_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`shoal rebalance --state-dir DIR` (text, then --json) talks to this socket."""
    # The job's own log lines go to stderr, as under `shoal run` (unconfigured, structlog
    # prints to stdout, which this test reads as the command's output).
    configure_logging()
    p = params(n=36_000)
    state = tmp_path / "state"
    answers: list[Any] = []

    async def read(records: int) -> None:
        with anyio.fail_after(30):
            while True:  # the socket appears once the job runs, and the sources read
                try:
                    status = await request(state, {"command": "status"})
                except ConnectionError:
                    status = {"records_in": 0}
                if status["records_in"] >= records:
                    return
                await anyio.sleep(0.05)

    async def control() -> None:
        await read(6_000)
        answers.append(
            await anyio.to_thread.run_sync(main, ["rebalance", "--state-dir", str(state)])
        )
        answers.append(capsys.readouterr().out)
        await read(18_000)  # a window of load measured after the moves
        args = ["rebalance", "--state-dir", str(state), "--json"]
        answers.append(await anyio.to_thread.run_sync(main, args))
        answers.append(json.loads(capsys.readouterr().out))

    async with anyio.create_task_group() as tg:
        tg.start_soon(control)
        result = await run_job(
            skewed_stats(**p),
            workers=2,
            processes=False,
            state_dir=state,
            control_socket=state / CONTROL_SOCKET,
        )
    code, text, code_json, again = answers
    assert code == 0
    assert re.match(
        r"^rebalanced in \d+\.\d\d s; moves: key group \d+: 0 -> 1.*; busiest worker "
        r"[\d,]+ -> [\d,]+ records/s \(predicted\)\n$",
        text,
    ), text
    # The second reading is balanced (the hot key groups moved): nothing more moves.
    assert code_json == 0
    assert again["ok"] is True
    assert again["moves"] == []
    assert set(again["load_before"]) == {"0", "1"}
    assert len(result.rebalances) == 1  # the second moved nothing: no news
    assert final_state(result, p) == skewed_oracle(p)


def test_shoal_rebalance_without_a_running_job_fails_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rebalance", "--state-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("shoal: error: no running job listens at ")


# -- seeded random schedules: rebalances, rescales, checkpoints and faults mid-move ---------


class Shuffle:
    """A policy that puts every key group on a random active worker (seeded): many moves."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def place(
        self, placement: Placement, loads: Sequence[KeyGroupLoad], workers: Sequence[int]
    ) -> list[int]:
        return [self.rng.choice(list(workers)) for _ in placement.group_owner]


MIGRATION_POINTS = ("keygroup.handoff", "keygroup.takeover")


def random_rebalances(
    seed: int, *, processes: bool, output: str
) -> tuple[dict[str, Any], list[Any], list[Fault], float]:
    """A seeded job (one or two keyed stages, exactly-once output), three steps among
    rebalance(Shuffle), rebalance() and rescale(n), then a stop, maybe one fault at a point of
    a move (kill -9 in a process, an engine error in one loop), and a checkpoint interval.

    The input is far longer than what is read before the stop (as in test_rescale.py), so the
    job cannot drain before its steps however slow a move is on a loaded machine; the oracle
    is computed from what the final checkpoint says was read (see ``run_schedule``).
    """
    rng = random.Random(seed)
    p = {
        "seed": seed,
        "n": 100_000,
        "vocabulary": 300,
        "splits": rng.randint(2, 5),
        "key_groups": rng.choice([8, 16]),
        "stages": rng.choice([1, 2]),
        "rate": 8_000.0 if processes else 20_000.0,
        "output": output,
    }
    last = 10_000 if processes else 14_000
    steps: list[Any] = []
    workers = 2
    for records in sorted(rng.sample(range(last // 10, last, 100), 3)):
        kind = rng.choice(["shuffle", "shuffle", "balance", "rescale"])
        if kind == "rescale":
            workers = rng.choice([w for w in (1, 2, 3) if w != workers])
            steps.append(at(rescale(workers), records=records))
        else:
            policy = Shuffle(rng.randrange(10**6)) if kind == "shuffle" else None
            steps.append(at(rebalance(policy), records=records))
    steps.append(at(stop(), records=steps[-1].records + 3_000))
    faults = []
    if rng.random() < 0.6:
        point = rng.choice(MIGRATION_POINTS)
        faults.append(Fault(point, worker=rng.randrange(3), attempt=0, hit=rng.randint(1, 3)))
    return p, steps, faults, rng.choice([0.05, 0.2])


def test_random_rebalance_schedules_end_with_a_stop_after_their_steps() -> None:
    """The timing-robust shape: every schedule stops the job well before its input ends."""
    for seed in range(40):
        for processes in (False, True):
            p, steps, _faults, _interval = random_rebalances(seed, processes=processes, output="")
            assert isinstance(steps[-1].action, Stop)
            assert [s.records for s in steps] == sorted(s.records for s in steps)
            assert steps[-1].records - steps[-2].records == 3_000
            assert p["n"] >= 5 * steps[-1].records


async def run_rebalance_schedule(tmp_path: Path, seed: int, *, processes: bool) -> tuple[Any, Any]:
    """Run one seeded schedule (the shared runner checks the output and the stop); check the
    moves; return the final state and the oracle's (the test asserts they are equal)."""
    p, steps, faults, interval = random_rebalances(
        seed, processes=processes, output=str(tmp_path / "out")
    )
    run = await run_schedule(
        tmp_path, p, steps, faults, processes=processes, checkpoint_interval=interval
    )
    result = run.result
    if not result.recoveries:
        # Every rebalance that moved something is recorded (one onto a single worker cannot).
        rebalances = [s for s in steps if isinstance(s.action, Rebalance)]
        assert len(result.rebalances) <= len(rebalances)
        assert all(record.moves for record in result.rebalances)
        moved = {f"per_word#{m.item}" for r in result.rebalances for m in r.moves}
        assert moved <= {m.name for m in result.migrations}
    return run.state, run.expected


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(SCHEDULES))
async def test_random_rebalances_in_one_loop_keep_state_and_output_exactly_once(
    tmp_path: Path, seed: int
) -> None:
    state, expected = await run_rebalance_schedule(tmp_path, seed, processes=False)
    assert state == expected


@pytest.mark.processes
@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(SCHEDULES))
async def test_random_rebalances_and_kills_across_processes_keep_state_exactly_once(
    tmp_path: Path, seed: int
) -> None:
    state, expected = await run_rebalance_schedule(tmp_path, seed, processes=True)
    assert state == expected


async def read(job: Job, records: int) -> None:
    """Return once ``job``'s sources have read ``records`` (polling its status)."""
    with anyio.fail_after(30):
        while (await job.status())["records_in"] < records:  # noqa: ASYNC110 (a poll)
            await anyio.sleep(0.05)


@pytest.mark.asyncio
async def test_a_job_handle_rebalances_and_reads_the_load(tmp_path: Path) -> None:
    """``await job.rebalance()`` on ``start_job``'s handle."""
    p = params(n=36_000)
    async with start_job(
        skewed_stats(**p), workers=2, processes=False, state_dir=tmp_path / "state"
    ) as job:
        await read(job, 6_000)
        loads = await job.loads()
        assert len(loads) == p["key_groups"]
        await read(job, 9_000)
        record = await job.rebalance()
        pinned = await job.rebalance(EverythingOn(0))
        result = await job.wait()
    hot = {key_group_of(w, 16) for w in hot_words(300, 16, 4)}
    assert {int(m.item) for m in record.moves} & hot
    assert {m.target for m in pinned.moves} == {0}
    assert list(result.rebalances) == [record, pinned]
    assert final_state(result, p) == skewed_oracle(p)
