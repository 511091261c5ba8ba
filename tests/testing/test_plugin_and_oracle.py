"""The pytest plugin's fixtures (in a pytester session, as a user's suite loads them), the
per-key oracle, and the hypothesis strategies for schedules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from shoal.runtime._timeline import At, Rescale, Stop, split_timeline

from shoal import FAULT_POINTS, Fault
from shoal.testing import KeyDifference, assert_matches_reference, per_key_differences, strategies

pytest_plugins = ["pytester"]


def test_the_plugin_fixtures_work_under_pytest_asyncio_strict_mode(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        """
        import anyio
        import pytest
        from shoal.testing import KeyedHarness, VirtualClock

        @pytest.mark.asyncio
        async def test_clock(virtual_clock):
            assert isinstance(virtual_clock, VirtualClock) and virtual_clock.installed
            await anyio.sleep(7200)
            assert virtual_clock.now() == 7200.0

        def test_harness(keyed_harness):
            h = keyed_harness(lambda k, v, ctx: ctx.emit(v), event_time=False)
            assert isinstance(h, KeyedHarness)
            assert [e.value for e in h.push("k", 1)] == [1]

        def test_state_dir(shoal_state_dir):
            assert shoal_state_dir.is_dir() and not any(shoal_state_dir.iterdir())
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_differences_are_named_per_key_in_input_order() -> None:
    inputs = [("a", 1), ("b", 2), ("a", 3), ("c", 4)]
    actual = [("a", 1), ("a", 5), ("b", 9), ("z", 0)]  # the last result per key counts
    assert per_key_differences(
        actual, lambda key, values: sum(values), inputs, key=lambda r: r[0], value=lambda r: r[1]
    ) == [
        KeyDifference("a", 4, 5),
        KeyDifference("b", 2, 9),
        KeyDifference("c", 4, None, missing=True),
        KeyDifference("z", None, 0, unexpected=True),
    ]


def test_the_assertion_message_shows_the_first_differing_keys() -> None:
    inputs = [(f"k{i}", i) for i in range(10)]
    with pytest.raises(
        AssertionError,
        match=r"^3 of 10 keys differ from the reference \(the first 2 shown\):\n"
        r"  key 'k1': expected 1, got 0\n"
        r"  key 'k2': expected 2, got 0$",
    ):
        assert_matches_reference(
            {key: 0 if key in {"k1", "k2", "k3"} else v for key, v in inputs},
            lambda key, values: values[0],
            inputs,
            key=lambda r: r[0],
            value=lambda r: r[1],
            show=2,
        )
    assert_matches_reference({"k": 2}, lambda key, values: len(values), ["k", "k"], key=str)


@settings(max_examples=60, deadline=None)
@given(strategies.schedules(start_workers=2, max_workers=3, max_steps=5))
def test_drawn_schedules_are_timelines_a_job_accepts(timeline: list[At]) -> None:
    runs = split_timeline(timeline)  # what run_job(timeline=...) does first
    assert len(runs) == 1
    counts = [step.records for step in timeline]
    assert counts == sorted(counts)
    assert len(set(counts)) == len(counts)
    assert isinstance(timeline[-1].action, Stop)
    workers = 2
    for step in timeline:
        if isinstance(step.action, Rescale):
            assert step.action.workers != workers
            assert 1 <= step.action.workers <= 3
            workers = step.action.workers


@settings(max_examples=30, deadline=None)
@given(strategies.faults(workers=3, attempts=2, max_faults=3))
def test_drawn_faults_name_known_points_and_workers(faults: list[Fault]) -> None:
    assert len(faults) <= 3
    for fault in faults:
        assert fault.point in FAULT_POINTS
        assert 0 <= fault.worker < 3
        assert fault.attempt < 2


def test_kill_steps_need_worker_processes() -> None:
    with pytest.raises(
        ValueError,
        match=r"^kill steps send SIGKILL to worker processes: pass processes=True \(and run "
        r"the job with processes=True\), or leave 'kill' out of kinds$",
    ):
        strategies.schedules(kinds=("rescale", "kill"))
    with pytest.raises(
        ValueError,
        match=r"^schedules kinds must be some of \('rescale', 'checkpoint', 'savepoint', "
        r"'rebalance', 'kill'\); got \('explode',\)$",
    ):
        strategies.schedules(kinds=("explode",))
