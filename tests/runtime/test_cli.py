"""``shoal run``: the JSON summary, exit statuses, usage errors, progress and metrics."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from shoal.runtime import _cli, _scenario
from shoal.runtime._cli import main

ROOT = Path(__file__).resolve().parents[2]
CLICKSTREAM = str(ROOT / "scenarios" / "clickstream.py")
WINDOWS = str(ROOT / "scenarios" / "windows.py")
SCENARIOS = Path(__file__).parent / "scenarios"
SMALL = ["--param", "events=20000", "--param", "users=2000"]
SUMMARY_KEYS = {
    "scenario",
    "workers",
    "records_in",
    "records_out",
    "dead_letters",
    "elapsed_s",
    "events_per_s",
    "checks",
    "passed",
}


def scenario(name: str) -> str:
    return str(SCENARIOS / f"{name}.py")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() configures structlog (bound to this test's captured stderr): undo it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary state directories go here, so a test can see whether one was left behind."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    return tmp


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main(["run", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err  # the whole of stdout is one JSON object


def assert_one_json_error(out: str, kind: str) -> dict[str, Any]:
    """stdout is exactly one JSON object saying the run did not pass, and why."""
    summary = json.loads(out)
    assert isinstance(summary, dict)
    assert summary["passed"] is False
    assert set(summary["error"]) == {"kind", "message"}
    if kind:
        assert summary["error"]["kind"] == kind
    error: dict[str, Any] = summary["error"]
    return error


def check_summary(summary: dict[str, Any], workers: int, processes: bool) -> None:
    assert set(summary) >= SUMMARY_KEYS
    assert summary["scenario"] == "clickstream"
    assert summary["workers"] == workers
    assert summary["processes"] is processes
    assert summary["records_in"] == summary["records_out"] == 20_000
    assert summary["dead_letters"] == 0
    assert summary["elapsed_s"] > 0
    assert summary["events_per_s"] > 0
    assert summary["passed"] is True
    assert len(summary["checks"]) == 7
    for check in summary["checks"]:
        assert set(check) == {"name", "passed", "detail"}
        assert check["passed"] is True
        assert isinstance(check["name"], str)
        assert isinstance(check["detail"], str)


def test_json_summary_of_the_default_scenario_in_process(
    capsys: pytest.CaptureFixture[str], private_tmp: Path
) -> None:
    code, summary, err = run_json(capsys, CLICKSTREAM, *SMALL, "--in-process")
    assert code == 0
    check_summary(summary, workers=1, processes=False)
    assert err == ""  # no TTY: no progress display, and nothing logged at the default level
    assert list(private_tmp.iterdir()) == []  # the temporary state directory is gone


@pytest.mark.processes
def test_json_summary_of_the_default_scenario_with_two_worker_processes(
    capsys: pytest.CaptureFixture[str], private_tmp: Path
) -> None:
    code, summary, _err = run_json(capsys, CLICKSTREAM, *SMALL, "--workers", "2")
    assert code == 0
    check_summary(summary, workers=2, processes=True)
    assert list(private_tmp.iterdir()) == []


@pytest.mark.processes
@pytest.mark.parametrize("workers", ["1", "2", "4"])
def test_the_windows_scenario_passes_its_oracle_checks(
    capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    small = ["--param", "events=16000", "--param", "users=1000"]
    code, summary, _err = run_json(capsys, WINDOWS, *small, "--workers", workers)
    assert code == 0, summary["checks"]
    assert summary["passed"] is True
    assert [check["name"] for check in summary["checks"]] == [
        "every event read",
        "no late records, no dead letters",
        "every event counted in exactly one fired window",
        "per-user per-second counts equal the oracle",
        "no window state left behind",
    ]


def test_a_failing_check_exits_1_and_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, _err = run_json(capsys, scenario("wrong_count"), "--in-process")
    assert code == 1
    assert summary["passed"] is False
    assert summary["records_out"] == 50
    assert summary["checks"] == [
        {"name": "every record read", "passed": True, "detail": "50 read"},
        {"name": "claimed count emitted", "passed": False, "detail": "50 emitted, 51 claimed"},
    ]


def test_the_same_scenario_passes_with_a_param_that_makes_its_claim_true(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, summary, _err = run_json(
        capsys, scenario("wrong_count"), "--in-process", "--param", "claimed=50"
    )
    assert code == 0
    assert summary["passed"] is True


def test_params_arrive_with_the_types_of_their_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, _err = run_json(
        capsys,
        scenario("typed_params"),
        "--in-process",
        "--param",
        "records=7",
        "--param",
        "ratio=3",
        "--param",
        "flag=on",
        "--param",
        "label=12",
    )
    assert [(c["name"], c["detail"]) for c in summary["checks"]] == [
        ("records is int", "7"),
        ("ratio is float", "3.0"),
        ("flag is bool", "True"),
        ("label is str", "'12'"),
        ("every record read", "7"),
    ]
    assert code == 0


def test_the_human_summary_says_passed_and_names_the_checks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["run", scenario("typed_params"), "--in-process"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""
    assert "scenario typed_params: PASSED" in out
    for name in (
        "records is int",
        "ratio is float",
        "flag is bool",
        "label is str",
        "every record read",
    ):
        assert f"[ok  ] {name}" in out
    assert "\x1b[" not in out  # no live display (or any terminal control) without a TTY


def test_the_human_summary_of_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", scenario("wrong_count"), "--in-process"]) == 1
    out = capsys.readouterr().out
    assert "scenario wrong_count: FAILED" in out
    assert "[FAIL] claimed count emitted — 50 emitted, 51 claimed" in out


USAGE_ERRORS = [
    pytest.param(
        [str(SCENARIOS / "missing.py")],
        r"shoal: error: scenario file not found: .*missing\.py\n",
        id="missing-file",
    ),
    pytest.param(
        [scenario("no_scenario")],
        r"shoal: error: .*no_scenario\.py defines no Scenario: "
        r"add `scenario = Scenario\(\.\.\.\)` at module level\n",
        id="no-scenario",
    ),
    pytest.param(
        [CLICKSTREAM, "--param", "evnets=10"],
        r"shoal: error: scenario 'clickstream' has no parameter 'evnets'; its parameters are: "
        r"events, key_groups, seed, splits, users, zipf_s\n",
        id="unknown-param",
    ),
    pytest.param(
        [CLICKSTREAM, "--param", "events=many"],
        r"shoal: error: parameter 'events' must be int \(like its default 1000000\); got 'many'\n",
        id="bad-param-type",
    ),
    pytest.param(
        [CLICKSTREAM, "--param", "events"],
        r"shoal: error: argument --param: expected KEY=VALUE, got 'events'\n",
        id="param-without-value",
    ),
    pytest.param(
        [CLICKSTREAM, "--workers", "0"],
        r"shoal: error: argument --workers: expected a positive integer, got '0'\n",
        id="workers-0",
    ),
    pytest.param(
        [CLICKSTREAM, "--workers", "abc"],
        r"shoal: error: argument --workers: expected a positive integer, got 'abc'\n",
        id="workers-abc",
    ),
    pytest.param(
        [CLICKSTREAM, "--in-process", "--workers", "2"],
        r"shoal: error: --in-process runs one worker; drop --workers or --in-process\n",
        id="in-process-with-workers",
    ),
    pytest.param(
        [CLICKSTREAM, "--metrics-port", "70000"],
        r"shoal: error: argument --metrics-port: "
        r"expected a port number from 1 to 65535, got '70000'\n",
        id="metrics-port-too-large",
    ),
    *(
        pytest.param(
            [CLICKSTREAM, "--checkpoint-interval", value],
            r"shoal: error: argument --checkpoint-interval: "
            rf"expected a number of seconds of at least 0\.01, or 'off'; got '{value}'\n",
            id=f"checkpoint-interval-{value}",
        )
        for value in ("0", "-1", "soon", "nan", "inf", "1e-9", "0.009")
    ),
]


@pytest.mark.parametrize(("argv", "message"), USAGE_ERRORS)
def test_bad_usage_exits_2_naming_the_mistake(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    try:
        code = main(["run", *argv, "--json"])
    except SystemExit as exc:  # argparse's own errors leave through sys.exit
        code = exc.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    assert code == 2
    assert assert_one_json_error(out, "")["kind"] in ("usage", "scenario")
    assert re.search(message + r"\Z", err), err


@pytest.mark.parametrize(
    "argv",
    [
        ["--checkpoint-interval", "abc"],
        ["--checkpoint-interval", "-1"],
        ["--checkpoint-interval", "0"],
        ["--checkpoint-interval", "1e-9"],
        ["--workers", "0"],
        ["--param", "events"],
        ["--log-format", "xml"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_a_bad_option_value_is_one_line_without_the_usage_block(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code = main(["run", CLICKSTREAM, *argv])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert re.fullmatch(rf"shoal: error: argument {argv[0]}: [^\n]+\n", err), err


def test_a_command_line_of_the_wrong_shape_still_shows_the_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["run"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("usage: shoal run ")
    assert err.endswith("shoal: error: the following arguments are required: SCENARIO\n")


def test_the_smallest_checkpoint_interval_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, _err = run_json(
        capsys, scenario("typed_params"), "--in-process", "--checkpoint-interval", "0.01"
    )
    assert (code, summary["checkpoint_interval_s"]) == (0, 0.01)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "bad_checks",
            r"^shoal: error: scenario 'bad_checks': "
            r"checks must yield Check records; got \('records read', True\)\n\Z",
        ),
        (
            "not_a_flow",
            r"^shoal: error: scenario 'not_a_flow': build returned dict, not a Flow\n\Z",
        ),
    ],
)
def test_a_malformed_scenario_exits_2_with_a_message_not_a_traceback(
    capsys: pytest.CaptureFixture[str], private_tmp: Path, name: str, message: str
) -> None:
    code = main(["run", scenario(name), "--in-process", "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert_one_json_error(out, "scenario")
    assert re.search(message, err), err
    assert list(private_tmp.iterdir()) == []


def shoal_command(*argv: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("shoal")
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run(
        [str(script), "run", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        ([scenario("typed_params"), "--json"], 0),
        ([scenario("wrong_count"), "--json"], 1),
        ([scenario("typed_params"), "--json", "--workers", "0"], 2),
        ([scenario("typed_params"), "--json", "--param", "nope=1"], 2),
    ],
    ids=["passed", "check-failed", "bad-option", "bad-param"],
)
@pytest.mark.processes
def test_the_console_script_exit_status(argv: list[str], status: int, private_tmp: Path) -> None:
    # the default (no --in-process) runs one worker process
    done = shoal_command(*argv, tmp=private_tmp)
    assert done.returncode == status, done.stderr
    if status == 2:
        assert_one_json_error(done.stdout, "")
        assert done.stderr.splitlines()[-1].startswith("shoal: error: ")
    else:
        summary = json.loads(done.stdout)
        assert summary["passed"] is (status == 0)
        assert summary["processes"] is True
        assert done.stderr == ""  # a pipe is no TTY: no progress display
    assert list(private_tmp.iterdir()) == []


@pytest.mark.processes
def test_a_killed_worker_fails_the_run_with_status_1_and_a_message(private_tmp: Path) -> None:
    # Without checkpoints there is nothing to recover from: the first loss fails the run.
    done = shoal_command(
        scenario("worker_dies"), "--json", "--checkpoint-interval", "off", tmp=private_tmp
    )
    assert done.returncode == 1, done.stderr
    error = assert_one_json_error(done.stdout, "job")
    assert error["message"] in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert any(
        re.fullmatch(
            r"shoal: job failed: worker 0 \(pid \d+\) was killed by SIGKILL "
            r"while the job was running",
            line,
        )
        for line in done.stderr.splitlines()
    ), done.stderr
    assert list(private_tmp.iterdir()) == []


@pytest.mark.processes
def test_a_worker_killed_on_every_attempt_fails_the_run_once_restarts_are_spent(
    private_tmp: Path,
) -> None:
    # Checkpoints are on by default: the job restarts, and fails once its budget is spent.
    done = shoal_command(scenario("worker_dies"), "--json", tmp=private_tmp)
    assert done.returncode == 1, done.stderr
    error = assert_one_json_error(done.stdout, "job")
    assert re.fullmatch(
        r"job 'worker_dies' failed 4 times in a row with no checkpoint completed in between "
        r"\(max_restarts=3\); last failure: worker 0 \(pid \d+\) was killed by SIGKILL "
        r"while the job was running",
        error["message"],
    ), error
    assert f"shoal: job failed: {error['message']}" in done.stderr.splitlines()
    assert "Traceback" not in done.stderr, done.stderr
    assert list(private_tmp.iterdir()) == []


def test_metrics_port_serves_the_final_reports_until_the_run_ends(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scrape at the last moment the server is up: inside the stop function main() calls.
    from test_metrics import free_port, labels, parse

    real = _cli.serve_metrics
    served: list[tuple[int, str]] = []

    def spy(collector: Any, port: int, *args: Any, **kwargs: Any) -> Callable[[], None]:
        assert not args  # the default address: loopback
        assert not kwargs
        stop = real(collector, port)

        def scrape_then_stop() -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                served.append((port, response.read().decode()))
            stop()

        return scrape_then_stop

    monkeypatch.setattr(_cli, "serve_metrics", spy)
    port = free_port()
    code, summary, _err = run_json(
        capsys,
        scenario("wrong_count"),
        "--in-process",
        "--param",
        "claimed=50",
        "--metrics-port",
        str(port),
    )
    assert code == 0
    [(served_port, text)] = served
    assert served_port == port
    _types, samples = parse(text)
    worker = labels(job="wrong_count", worker="0")
    assert samples[("shoal_records_in_total", worker)] == summary["records_in"] == 50
    assert samples[("shoal_operator_records_in_total", worker | labels(operator="counts"))] == 50
    job = labels(job="wrong_count")
    assert samples[("shoal_checkpoints_completed_total", job)] == summary["checkpoints_completed"]
    assert samples[("shoal_checkpoints_failed_total", job)] == summary["checkpoints_failed"]


def test_a_metrics_port_in_use_exits_2_naming_the_port(
    capsys: pytest.CaptureFixture[str], private_tmp: Path
) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(
            ["run", scenario("typed_params"), "--in-process", "--json", "--metrics-port", str(port)]
        )
    out, err = capsys.readouterr()
    assert code == 2
    assert_one_json_error(out, "usage")
    assert re.search(rf"^shoal: error: .*\b{port}\b.*\n\Z", err), err
    assert list(private_tmp.iterdir()) == []


# --- bad scenario files: one line, exit 2, and with --json one JSON object ---------------------


def bad_scenario_files(tmp: Path) -> list[tuple[str, str]]:
    """(file, the whole of stderr) for a syntax error, an import error and a raising build."""
    syntax = tmp / "syntax_error.py"
    syntax.write_text('"""A scenario file with a syntax error on line 3."""\n\ndef build(:\n')
    return [
        (str(syntax), rf"shoal: error: {re.escape(str(syntax))}:3: SyntaxError: invalid syntax\n"),
        (
            scenario("import_error"),
            r"shoal: error: cannot import scenario file .*import_error\.py: "
            r"ModuleNotFoundError: No module named 'shoal_no_such_module' "
            r"\(.*import_error\.py:5\)\n",
        ),
        (
            scenario("build_raises"),
            r"shoal: error: scenario 'build_raises': build raised ValueError: "
            r"records must be even; got 3 \(.*build_raises\.py:13\)\n",
        ),
    ]


@pytest.mark.parametrize("case", [0, 1, 2], ids=["syntax-error", "import-error", "build-raises"])
def test_a_bad_scenario_file_exits_2_with_one_line_and_one_json_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, private_tmp: Path, case: int
) -> None:
    file, message = bad_scenario_files(tmp_path)[case]
    code = main(["run", file, "--in-process", "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert re.fullmatch(message, err), err
    error = assert_one_json_error(out, "scenario")
    assert f"shoal: error: {error['message']}\n" == err
    assert list(private_tmp.iterdir()) == []


@pytest.mark.processes
def test_a_bad_scenario_file_is_one_line_from_the_console_script_too(
    tmp_path: Path, private_tmp: Path
) -> None:
    for file, message in bad_scenario_files(tmp_path):
        done = shoal_command(file, "--workers", "2", tmp=private_tmp)  # human output, processes
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert re.fullmatch(message, done.stderr), done.stderr
    assert list(private_tmp.iterdir()) == []


def test_a_failing_check_still_prints_one_json_object_without_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, summary, _err = run_json(capsys, scenario("wrong_count"), "--in-process")
    assert code == 1
    assert summary["passed"] is False
    assert summary["error"] is None


def test_checks_that_return_none_fail_as_has_checks(capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, _err = run_json(capsys, scenario("checks_return_none"), "--in-process")
    assert code == 1
    assert summary["checks"] == [
        {
            "name": "has checks",
            "passed": False,
            "detail": "the scenario's checks returned None; return or yield Check records",
        }
    ]


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    import shoal

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"shoal {shoal.__version__}\n"


# --- dead letters: samples in the summary, the full list in a file the user can read ----------


def test_dead_letters_show_samples_and_are_kept_in_the_current_directory(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    private_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["run", scenario("some_fail"), "--in-process"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""  # some records failed, not all: no warning
    kept = tmp_path / "shoal-dead-letters.jsonl"
    assert "  20 records in, 16 out, 4 dead letters\n" in out
    samples = [line for line in out.splitlines() if line.startswith("    dead letter: ")]
    assert len(samples) == 3
    assert all(
        re.fullmatch(
            r"    dead letter: map: ValueError: \d+ is divisible by 5 at items:[01] offset \d+",
            line,
        )
        for line in samples
    ), samples
    assert f"    all dead letters: {kept}\n" in out
    letters = [json.loads(line) for line in kept.read_text().splitlines()]
    assert sorted(letter["record"] for letter in letters) == [0, 5, 10, 15]
    assert {letter["operator"] for letter in letters} == {"map"}
    assert list(private_tmp.iterdir()) == []  # the temporary state directory is gone


def test_no_dead_letters_leave_no_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code, summary, _err = run_json(capsys, scenario("typed_params"), "--in-process")
    assert code == 0
    assert summary["dead_letters"] == 0
    assert summary["dead_letter_samples"] == []
    assert summary["dead_letters_file"] is None
    assert list(cwd.iterdir()) == []


@pytest.mark.processes
def test_dead_letters_option_writes_this_runs_letters_to_the_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "out" / "letters.jsonl"
    path.parent.mkdir()
    path.write_text('{"an older run": true}\n')
    code, summary, _err = run_json(
        capsys, scenario("some_fail"), "--workers", "2", "--dead-letters", str(path)
    )
    assert code == 0
    assert summary["dead_letters"] == 4
    assert summary["dead_letters_file"] == str(path)
    assert [s["operator"] for s in summary["dead_letter_samples"]] == ["map"] * 3
    assert all(
        set(s) == {"operator", "error", "split", "offset", "position"}
        for s in summary["dead_letter_samples"]
    )
    letters = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(letter["record"] for letter in letters) == [0, 5, 10, 15]


def test_dead_letters_stay_in_a_state_dir_the_user_chose(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state"
    code, summary, _err = run_json(
        capsys, scenario("some_fail"), "--in-process", "--state-dir", str(state)
    )
    assert code == 0
    assert summary["dead_letters_file"] == str(state / "dead-letters.jsonl")
    assert len((state / "dead-letters.jsonl").read_text().splitlines()) == 4
    assert not (tmp_path / "shoal-dead-letters.jsonl").exists()


def test_a_job_in_which_every_record_failed_warns_loudly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["run", scenario("some_fail"), "--in-process", "--param", "every=1"])
    out, err = capsys.readouterr()
    assert code == 0  # the scenario's own check passes: it expects the failures
    warning = "every record failed: 20 dead letters for 20 records in"
    assert err == f"shoal: warning: {warning}\n"
    assert f"  WARNING: {warning}\n" in out
    code, summary, err = run_json(
        capsys, scenario("some_fail"), "--in-process", "--param", "every=1"
    )
    assert summary["warnings"] == [warning]
    assert err == f"shoal: warning: {warning}\n"


# --- a scenario file imports a module beside it, in every process ------------------------------


def test_a_scenario_imports_a_module_beside_it_in_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, summary, _err = run_json(capsys, scenario("imports_helper"), "--in-process")
    assert code == 0, summary
    assert summary["records_in"] == 60


@pytest.mark.processes
def test_a_scenario_imports_a_module_beside_it_in_worker_processes(
    private_tmp: Path,
) -> None:
    done = shoal_command(scenario("imports_helper"), "--workers", "2", "--json", tmp=private_tmp)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["passed"] is True
    assert summary["workers"] == 2


# --- checkpoints and recoveries in the summary -------------------------------------------------

CHECKPOINT_KEYS = {
    "checkpoint_interval_s",
    "checkpoints_completed",
    "checkpoints_failed",
    "checkpoint_ms_p50",
    "checkpoint_ms_p99",
    "max_pause_ms",
    "recoveries",
    "recovery_ms",
}
# Small batches keep the loop turning, so checkpoints every 10 ms complete during the run.
CHECKPOINTED = [*SMALL, "--in-process", "--batch-size", "64", "--checkpoint-interval", "0.01"]


def test_json_summary_reports_the_checkpoints_of_the_run(
    capsys: pytest.CaptureFixture[str], private_tmp: Path
) -> None:
    code, summary, _err = run_json(capsys, CLICKSTREAM, *CHECKPOINTED)
    assert code == 0
    check_summary(summary, workers=1, processes=False)
    assert set(summary) >= CHECKPOINT_KEYS
    assert summary["checkpoint_interval_s"] == 0.01
    assert summary["checkpoints_completed"] >= 1
    assert summary["checkpoints_failed"] == 0
    p50, p99 = summary["checkpoint_ms_p50"], summary["checkpoint_ms_p99"]
    assert isinstance(p50, float)
    assert isinstance(p99, float)
    assert 0 < p50 <= p99
    assert isinstance(summary["max_pause_ms"], float)
    assert summary["max_pause_ms"] > 0
    assert summary["recoveries"] == 0
    assert summary["recovery_ms"] == []
    assert list(private_tmp.iterdir()) == []  # the temporary checkpoints went with the state


def test_json_summary_with_checkpoints_off_has_zero_counts_and_null_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, summary, _err = run_json(
        capsys, CLICKSTREAM, *SMALL, "--in-process", "--checkpoint-interval", "off"
    )
    assert code == 0
    assert {key: summary[key] for key in CHECKPOINT_KEYS} == {
        "checkpoint_interval_s": None,
        "checkpoints_completed": 0,
        "checkpoints_failed": 0,
        "checkpoint_ms_p50": None,
        "checkpoint_ms_p99": None,
        "max_pause_ms": None,
        "recoveries": 0,
        "recovery_ms": [],
    }


def test_shoal_run_checkpoints_every_second_by_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[dict[str, Any]] = []
    real = _scenario.run_job  # the CLI runs a scenario's runs through run_scenario

    async def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return await real(*args, **kwargs)

    monkeypatch.setattr(_scenario, "run_job", spy)
    state = tmp_path / "state"
    code, summary, _err = run_json(
        capsys, scenario("typed_params"), "--in-process", "--state-dir", str(state)
    )
    assert code == 0
    [kwargs] = seen
    assert (kwargs["checkpoint_interval"], kwargs["checkpoint_dir"]) == (1.0, None)
    assert summary["checkpoint_interval_s"] == 1.0


def test_checkpoint_dir_is_where_the_checkpoints_are_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from shoal.storage import CheckpointStore

    target = tmp_path / "elsewhere"
    code, summary, _err = run_json(
        capsys, CLICKSTREAM, *CHECKPOINTED, "--checkpoint-dir", str(target)
    )
    assert code == 0
    latest = CheckpointStore(str(target)).latest_complete()
    assert latest is not None
    assert summary["checkpoints_completed"] >= 1
    assert latest.epoch <= summary["checkpoints_completed"]


def test_recoveries_of_the_result_are_counted_and_listed_in_milliseconds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recovery itself is tested with the supervisor; here: how the summary reports it.
    real = _scenario.run_job

    async def recovered_twice(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        return dataclasses.replace(result, recoveries=(1.23456, 0.5))

    monkeypatch.setattr(_scenario, "run_job", recovered_twice)
    code, summary, _err = run_json(capsys, scenario("typed_params"), "--in-process")
    assert code == 0
    assert (summary["recoveries"], summary["recovery_ms"]) == (2, [1234.6, 500.0])
    assert main(["run", scenario("typed_params"), "--in-process"]) == 0
    assert "  2 recoveries (1,235 ms, 500 ms)\n" in capsys.readouterr().out


def test_the_human_summary_has_a_checkpoint_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", CLICKSTREAM, *CHECKPOINTED]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"^  checkpoints every 0\.01 s: [1-9][\d,]* completed, 0 failed, "
        r"duration p50 [\d,]+ ms p99 [\d,]+ ms, max pause [\d.,]+ ms$",
        out,
        re.MULTILINE,
    ), out
    assert "recoveries" not in out
    assert main(["run", CLICKSTREAM, *SMALL, "--in-process", "--checkpoint-interval", "off"]) == 0
    assert re.search(r"^  checkpoints off$", capsys.readouterr().out, re.MULTILINE)


@pytest.mark.processes
def test_the_crash_recovery_scenario_passes_through_two_kills_and_a_rescale(
    private_tmp: Path,
) -> None:
    """The issue's acceptance run, smaller: `--workers 2 --json` passes with at least two
    recoveries and completed checkpoints; the output and state checks are the scenario's."""
    done = shoal_command(
        str(ROOT / "scenarios" / "crash_recovery.py"),
        "--workers",
        "2",
        "--json",
        "--param",
        "events=100000",
        "--param",
        "users=5000",
        "--param",
        "rate=50000",
        tmp=private_tmp,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["passed"] is True
    assert summary["recoveries"] >= 2
    assert len(summary["recovery_ms"]) == summary["recoveries"]
    assert summary["checkpoints_completed"] > 0
    names = {check["name"]: check["passed"] for check in summary["checks"]}
    assert names["the sink published every event's effect exactly once"] is True
    assert summary["workers"] == 3
    # The whole job's counts, each event once, through two recoveries and a resumed run.
    assert (summary["records_in"], summary["records_out"]) == (100_000, 100_000)
    assert summary["records_read"] > 0


def test_resume_needs_a_state_dir(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", CLICKSTREAM, "--resume"])
    _out, err = capsys.readouterr()
    assert code == 2
    assert err.strip().endswith(
        "--resume goes on from the checkpoints of a run's state directory: give it with "
        "--state-dir DIR"
    )


def test_resume_goes_on_from_the_last_checkpoint_of_the_state_dir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    state = str(tmp_path / "state")
    small = ["--param", "events=20000", "--param", "users=2000", "--in-process"]
    code, first, _err = run_json(capsys, CLICKSTREAM, "--state-dir", state, *small)
    assert code == 0
    assert first["records_in"] == 20000
    assert first["resumed_from"] is None
    # The first run ended with a final checkpoint: the resumed run reads nothing, and the
    # job it reports (every event read once, one running count each) still passes.
    code, again, _err = run_json(capsys, CLICKSTREAM, "--state-dir", state, "--resume", *small)
    assert (code, again["passed"]) == (0, True)
    assert (again["records_in"], again["records_out"], again["records_read"]) == (20000, 20000, 0)
    assert again["resumed_from"]["records_in"] == 20000


def _stop_midway(state: Path, events: int, at_records: int) -> Any:
    """Run the clickstream scenario's flow into ``state`` and stop it after ``at_records``
    records (as Ctrl-C does: drain, final checkpoint); return the result."""
    import anyio
    from shoal.runtime._scenario import load_scenario
    from shoal.runtime.timeline import at, stop

    scenario, ref = load_scenario(CLICKSTREAM)
    params = scenario.resolve_params({"events": events, "users": 2000})

    async def main() -> Any:
        return await _scenario.run_job(
            ref,
            params=params,
            state_dir=state,
            processes=False,
            batch_size=512,
            checkpoint_interval=0.05,
            timeline=[at(stop(), records=at_records)],
        )

    return anyio.run(main)


def test_a_run_stopped_midway_and_resumed_passes_the_checks_of_the_whole_job(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The newcomer trial: Ctrl-C a run, `--resume` it: per-user state equalled the oracle but
    "every event read" and "one running count per event" failed, counting the resumed run's
    reads only. They judge the whole job now."""
    state = tmp_path / "state"
    first = _stop_midway(state, 30_000, 8_000)
    capsys.readouterr()  # the first run's log lines
    assert 8_000 <= first.records_in < 30_000
    small = ["--param", "events=30000", "--param", "users=2000", "--in-process"]
    code, summary, _err = run_json(
        capsys, CLICKSTREAM, "--state-dir", str(state), "--resume", *small
    )
    failed = [check for check in summary["checks"] if not check["passed"]]
    assert (code, failed) == (0, [])
    assert (summary["records_in"], summary["records_out"]) == (30_000, 30_000)
    assert summary["records_read"] == 30_000 - first.records_in
    checks = {check["name"]: check["detail"] for check in summary["checks"]}
    assert checks["every event read"] == (
        f"30,000 of 30,000 ({first.records_in:,} before the resume)"
    )


def test_the_summary_names_the_checkpoint_a_run_resumed_from(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from shoal.storage import CheckpointStore

    state = tmp_path / "state"
    first = _stop_midway(state, 30_000, 8_000)
    capsys.readouterr()  # the first run's log lines
    last = CheckpointStore(state / "checkpoints").latest_complete()
    assert last is not None
    small = ["--param", "events=30000", "--param", "users=2000", "--in-process"]
    code, summary, _err = run_json(
        capsys, CLICKSTREAM, "--state-dir", str(state), "--resume", *small
    )
    assert code == 0
    taken = _cli._utc(last.created)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", taken)
    assert summary["resumed_from"] == {
        "kind": "checkpoint",
        "path": str(state / "checkpoints"),
        "epoch": last.epoch,
        "created": taken,
        "records_in": first.records_in,
        "records_out": first.records_out,
    }
    # A second resume starts from the final checkpoint of the first resume.
    final = CheckpointStore(state / "checkpoints").latest_complete()
    assert final is not None
    assert final.epoch > last.epoch
    assert main(["run", CLICKSTREAM, "--state-dir", str(state), "--resume", *small]) == 0
    assert (
        f"  resumed from checkpoint {final.epoch} of {state / 'checkpoints'}, taken "
        f"{_cli._utc(final.created)}: 30,000 records read before it, 30,000 out (included "
        "above)\n"
    ) in capsys.readouterr().out


def _damage_a_newest_file(checkpoints: Path) -> tuple[str, int]:
    """Flip a byte in a file of the newest checkpoint that some older checkpoint does not use;
    return its path and the newest checkpoint without it."""
    from shoal.storage import CheckpointStore

    store = CheckpointStore(checkpoints)
    epochs = store.epochs()
    files = {epoch: {r.path for r in store.read_manifest(epoch).files()} for epoch in epochs}
    # A file the newest checkpoint that wrote any wrote (the final one may only reuse files).
    newest = store.read_manifest(epochs[-1])
    wrote = max(record.epoch for record in newest.files())
    path = next(record.path for record in newest.files() if record.epoch == wrote)
    data = bytearray((checkpoints / path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (checkpoints / path).write_bytes(bytes(data))
    return path, max(epoch for epoch in epochs if path not in files[epoch])


@pytest.mark.processes
@pytest.mark.parametrize("mode", [["--workers", "2"], ["--in-process"]], ids=["processes", "loop"])
def test_a_damaged_checkpoint_file_is_one_line_naming_it_and_the_checkpoint_used(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, private_tmp: Path, mode: list[str]
) -> None:
    """A worker whose key group finds a checkpoint file damaged while restoring printed its
    whole traceback; the recovery itself (an older checkpoint) already worked."""
    state = tmp_path / "state"
    small = ["--param", "events=20000", "--param", "users=2000"]
    code = main(["run", CLICKSTREAM, "--state-dir", str(state), *CHECKPOINTED])
    assert code == 0
    capsys.readouterr()
    path, used = _damage_a_newest_file(state / "checkpoints")
    shutil.rmtree(state / "users")  # no local state: every key group restores from the files
    done = shoal_command(
        CLICKSTREAM, "--state-dir", str(state), "--resume", *small, *mode, tmp=private_tmp
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if path in line]
    assert len(lines) == 1, done.stderr
    assert (
        f"checkpoint file {path} is damaged (checksum mismatch); restarting from checkpoint "
        f"{used}, the newest that does not use it"
    ) in lines[0]
    assert "PASSED" in done.stdout
