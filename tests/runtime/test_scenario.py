"""The scenario API: parameter resolution, checks that misbehave, loading scenario files."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from shoal.runtime._scenario import load_scenario

from shoal import Check, CountingSink, Flow, IterableSource, JobResult, Scenario, ScenarioError

SCENARIOS = Path(__file__).parent / "scenarios"


def build(**params: Any) -> Flow:
    flow = Flow("tiny")
    flow.source(IterableSource([1, 2, 3])).sink(CountingSink())
    return flow


def no_checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    return iter(())


def make(params: Mapping[str, Any], checks: Any = no_checks) -> Scenario:
    return Scenario(name="tiny", build=build, checks=checks, params=params)


def test_defaults_come_back_when_nothing_is_overridden() -> None:
    scenario = make({"events": 10, "ratio": 0.5})
    assert scenario.resolve_params() == {"events": 10, "ratio": 0.5}
    assert scenario.resolve_params({}) == {"events": 10, "ratio": 0.5}


def test_command_line_text_is_coerced_to_the_type_of_the_default() -> None:
    scenario = make({"events": 10, "ratio": 0.5, "label": "a", "note": None})
    resolved = scenario.resolve_params({"events": "20", "ratio": "2", "label": "7", "note": "x"})
    assert resolved == {"events": 20, "ratio": 2.0, "label": "7", "note": "x"}
    assert type(resolved["events"]) is int
    assert type(resolved["ratio"]) is float


def test_values_that_are_not_text_are_kept_as_given() -> None:
    assert make({"events": 10}).resolve_params({"events": 3}) == {"events": 3}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("true", True),
        ("True", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_bool_parameters_parse_the_usual_spellings(text: str, expected: bool) -> None:
    resolved = make({"flag": not expected}).resolve_params({"flag": text})
    assert resolved["flag"] is expected


@pytest.mark.parametrize(
    ("params", "key", "text", "message"),
    [
        (
            {"flag": False},
            "flag",
            "maybe",
            r"^parameter 'flag' must be bool \(like its default False\); got 'maybe'$",
        ),
        (
            {"events": 10},
            "events",
            "1.5",
            r"^parameter 'events' must be int \(like its default 10\); got '1\.5'$",
        ),
        (
            {"ratio": 0.5},
            "ratio",
            "half",
            r"^parameter 'ratio' must be float \(like its default 0\.5\); got 'half'$",
        ),
    ],
)
def test_text_that_does_not_fit_the_type_is_a_scenario_error(
    params: dict[str, Any], key: str, text: str, message: str
) -> None:
    with pytest.raises(ScenarioError, match=message):
        make(params).resolve_params({key: text})


@pytest.mark.parametrize("default", [[1, 2], (1, 2)])
def test_a_sequence_parameter_is_not_silently_split_into_characters(default: Any) -> None:
    # type(default)(text) turns "3,4" into ['3', ',', '4']: the mistake must be named instead.
    with pytest.raises(ScenarioError, match=r"parameter 'pages'"):
        make({"pages": default}).resolve_params({"pages": "3,4"})


def test_an_unknown_parameter_names_itself_and_the_known_ones() -> None:
    with pytest.raises(
        ScenarioError,
        match=r"^scenario 'tiny' has no parameter 'evnets'; its parameters are: events, users$",
    ):
        make({"users": 1, "events": 2}).resolve_params({"evnets": "5"})


def test_an_unknown_parameter_of_a_scenario_without_parameters() -> None:
    with pytest.raises(ScenarioError, match=r"its parameters are: none$"):
        make({}).resolve_params({"events": "5"})


def fake_result() -> JobResult:
    return None  # type: ignore[return-value] - the check functions below never look at it


def test_checks_that_raise_become_one_failed_check() -> None:
    def boom(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
        yield Check("first", True)
        raise KeyError("events")

    checks = make({}, boom).run_checks(fake_result(), {})
    detail = f"KeyError: 'events' ({__file__}:125)"  # the exception and where it was raised
    assert checks == [Check("checks raised", False, detail)]
    assert [c.to_json() for c in checks] == [
        {"name": "checks raised", "passed": False, "detail": detail}
    ]


def test_checks_that_return_nothing_fail() -> None:
    checks = make({}, no_checks).run_checks(fake_result(), {})
    assert checks == [Check("has checks", False, "the scenario's checks returned nothing")]


def test_checks_that_return_none_fail_as_has_checks() -> None:
    # a check function that forgets to return its list returns None: it checked nothing
    checks = make({}, lambda result, params: None).run_checks(fake_result(), {})
    assert checks == [
        Check(
            "has checks",
            False,
            "the scenario's checks returned None; return or yield Check records",
        )
    ]


def test_checks_that_yield_something_else_are_a_scenario_error() -> None:
    with pytest.raises(
        ScenarioError,
        match=r"^scenario 'tiny': checks must yield Check records; got \('ok', True\)$",
    ):
        make({}, lambda result, params: [("ok", True)]).run_checks(fake_result(), {})


def test_passing_checks_come_back_in_order() -> None:
    expected = [Check("a", True, "1"), Check("b", False)]
    assert make({}, lambda result, params: iter(expected)).run_checks(fake_result(), {}) == expected


def test_build_flow_rejects_a_builder_that_returns_no_flow() -> None:
    scenario = Scenario(name="odd", build=lambda: 42, checks=no_checks)
    with pytest.raises(ScenarioError, match=r"^scenario 'odd': build returned int, not a Flow$"):
        scenario.build_flow()


def test_build_flow_turns_an_exception_in_build_into_a_scenario_error() -> None:
    def build() -> Flow:
        raise ValueError("no such table")

    scenario = Scenario(name="odd", build=build, checks=no_checks)
    line = build.__code__.co_firstlineno + 1
    with pytest.raises(
        ScenarioError,
        match=rf"^scenario 'odd': build raised ValueError: no such table \({__file__}:{line}\)$",
    ) as raised:
        scenario.build_flow()
    assert isinstance(raised.value.__cause__, ValueError)


def test_load_scenario_names_the_line_of_a_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\ny = (\n")
    with pytest.raises(ScenarioError, match=rf"^{bad}:2: SyntaxError: '\(' was never closed$"):
        load_scenario(bad)


def test_load_scenario_names_an_exception_raised_while_importing(tmp_path: Path) -> None:
    bad = tmp_path / "raises_at_import.py"
    bad.write_text("x = 1\nraise RuntimeError('no config')\n")
    with pytest.raises(
        ScenarioError,
        match=rf"^cannot import scenario file {bad}: RuntimeError: no config \({bad}:2\)$",
    ):
        load_scenario(bad)


def test_load_scenario_returns_the_scenario_and_a_reference_to_it() -> None:
    scenario, ref = load_scenario(SCENARIOS / "wrong_count.py")
    assert scenario.name == "wrong_count"
    assert ref == f"{(SCENARIOS / 'wrong_count.py').resolve()}:scenario"


def test_load_scenario_accepts_a_relative_path_and_gives_an_absolute_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(SCENARIOS)
    scenario, ref = load_scenario("typed_params.py")
    assert scenario.name == "typed_params"
    assert ref == f"{(SCENARIOS / 'typed_params.py').resolve()}:scenario"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("missing.py", r"^scenario file not found: .*missing\.py$"),
        ("__init__", r"^scenario file not found: .*__init__$"),
        (
            "no_scenario.py",
            r"^.*no_scenario\.py defines no Scenario: "
            r"add `scenario = Scenario\(\.\.\.\)` at module level$",
        ),
        (
            "two_scenarios.py",
            r"^.*two_scenarios\.py defines several Scenarios; name the one to run `scenario`$",
        ),
    ],
)
def test_load_scenario_errors_name_the_mistake(path: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        load_scenario(SCENARIOS / path)


def test_load_scenario_wants_a_python_file(tmp_path: Path) -> None:
    file = tmp_path / "scenario.toml"
    file.write_text("name = 'x'\n")
    with pytest.raises(
        ScenarioError, match=r"^a scenario is a Python file ending in \.py; got .*scenario\.toml$"
    ):
        load_scenario(file)


# --- the default scenario's checks check what their names say ---------------------------------

CLICKSTREAM = Path(__file__).resolve().parents[2] / "scenarios" / "clickstream.py"


class OracleResult:
    """What a correct job over ``expected`` leaves behind (counters and state)."""

    def __init__(self, expected: dict[int, tuple[int, str, int]], events: int) -> None:
        self.records_in = self.records_out = events
        self.dead_letters = 0
        self.resumed_from = None  # a run from the beginning
        self._state = {
            "clicks": {user: n for user, (n, _page, _ts) in expected.items()},
            "last": {user: [page, ts] for user, (_n, page, ts) in expected.items()},
        }

    def read_state(self, operator: str, state: str) -> dict[Any, Any]:
        assert operator == "users"
        return self._state[state]


def clickstream_checks(
    monkeypatch: pytest.MonkeyPatch, workload: Any = None, **overrides: str
) -> dict[str, Check]:
    """Run the default scenario's checks over ``workload`` (default: its own generator)."""
    import inspect

    scenario, _ref = load_scenario(CLICKSTREAM)
    module = inspect.getmodule(scenario.build)
    params = scenario.resolve_params(overrides)
    if workload is not None:
        monkeypatch.setattr(module, "clickstream_oracle", workload)
    oracle = module.clickstream_oracle  # type: ignore[union-attr]
    expected = oracle(
        module.source(  # type: ignore[union-attr]
            params["events"], params["users"], params["seed"], params["splits"], params["zipf_s"]
        )
    )
    checks = scenario.run_checks(OracleResult(expected, params["events"]), params)  # type: ignore[arg-type]
    return {check.name.split(" >= ")[0]: check for check in checks}


def test_the_default_scenario_names_its_workload_thresholds_and_passes_a_true_workload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks = clickstream_checks(monkeypatch, events="100000")
    assert all(check.passed for check in checks.values()), checks
    users = checks["workload has"]
    skew = checks["workload is zipf-skewed: the busiest user has"]
    # The thresholds come from the parameters (mean minus five standard deviations).
    assert users.name == "workload has >= 38,466 distinct users"
    assert users.detail == "39,265 distinct users of 200,000; 39,247 expected"
    assert skew.name == "workload is zipf-skewed: the busiest user has >= 3,774 clicks"


def test_the_distinct_users_check_fails_when_the_workload_has_fewer_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shoal import clickstream_oracle

    def fewer_users(source: Any) -> dict[int, tuple[int, str, int]]:
        full = clickstream_oracle(source)
        return {user: v for user, v in full.items() if user % 4}  # a quarter of them lost

    checks = clickstream_checks(monkeypatch, fewer_users, events="100000")
    assert not checks["workload has"].passed


def test_the_skew_check_fails_when_the_workload_is_uniform(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shoal import ClickstreamSource, clickstream_oracle

    def uniform(source: ClickstreamSource) -> dict[int, tuple[int, str, int]]:
        flat = ClickstreamSource(events=source.events, users=source.users, seed=1, zipf_s=0.0)
        return clickstream_oracle(flat)

    checks = clickstream_checks(monkeypatch, uniform, events="100000")
    assert not checks["workload is zipf-skewed: the busiest user has"].passed
