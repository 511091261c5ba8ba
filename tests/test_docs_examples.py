"""Every code block in README.md and docs/ is a tested example.

The blocks of one Markdown file run in order, in one scratch directory:

* ```` ```python ```` runs as a script (``python block.py``); ```` ```pycon ```` and blocks
  whose lines start with ``>>>`` run as doctests.
* ```` ```console ```` / ```` ```sh ````: every ``$ shoal ...`` line runs (the installed
  ``shoal`` command); the lines after a command, up to the next ``$``, are its expected output.
* ```` ```text ```` right after a runnable block is that block's expected output.
* In expected output, ``...`` matches any text (also across lines).

A block that is not run says so, with a reason, in an HTML comment on the line before it:

* ``<!-- doc-test: skip: REASON -->``: not run (``test_blocks_that_do_not_run_say_why`` lists
  every one).
* ``<!-- doc-test: write NAME -->``: written to ``NAME`` in the scratch directory for later
  blocks (a flow or scenario file), not run by itself.
* ``<!-- doc-test: synopsis -->``: the README's command synopsis, compared with
  ``shoal run --help``.
* ``<!-- doc-test: json-fields -->``: a ``--json`` example, whose fields are compared with what
  ``shoal run --json`` prints.
* ``<!-- doc-test: append ARGS -->``: a console block whose commands run with ``ARGS``
  appended (to make a long documented run short).

Console commands run in the scratch directory, where ``scenarios/`` links to the repository's.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from shoal.runtime._cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
SHOAL = Path(sys.executable).with_name("shoal")

_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    directive: str  # "" when there is none

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    found: list[Block] = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        above = lines[start - 1] if start > 0 else ""
        directive = _DIRECTIVE.match(above)
        found.append(
            Block(
                doc,
                start + 1,
                fence.group(1),
                "\n".join(body) + "\n",
                directive.group(1) if directive else "",
            )
        )
        i += 1
    return found


def _expected(text: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in text.strip().split("...")]
    return re.compile(r".*?".join(parts), re.DOTALL)


def _check_output(block: Block, expected: str, got: str) -> None:
    pattern = _expected(expected)
    assert pattern.fullmatch(got.strip()), (
        f"{block.where}: output differs\n--- expected\n{expected}--- got\n{got}"
    )


def _env(tmp: Path) -> dict[str, str]:
    scratch_tmp = tmp / "tmp"
    scratch_tmp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(scratch_tmp), "COLUMNS": "100"}


def _run_python(block: Block, work: Path) -> str:
    script = work / f"block_{block.line}.py"
    script.write_text(block.text)
    done = subprocess.run(
        [sys.executable, script.name],
        cwd=work,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{block.where}: exit {done.returncode}\n{done.stderr}"
    return done.stdout.replace(str(work / "tmp"), "/tmp")  # the scratch TMPDIR reads as /tmp


def _run_doctest(block: Block) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.text, {}, block.where, str(block.doc), block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0, f"{block.where}: doctest failed"


def _run_console(block: Block, work: Path, extra: list[str]) -> str:
    """Run every ``$ shoal`` command; check the output shown under it. Return the last one's."""
    commands: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
    assert commands, f"{block.where}: a console block without a `$ ` command must be marked"
    out = ""
    for command, shown in commands:
        argv = shlex.split(command)
        assert argv[0] == "shoal", f"{block.where}: only shoal commands run here: {command!r}"
        done = subprocess.run(
            [str(SHOAL), *argv[1:], *extra],
            cwd=work,
            env=_env(work),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        out = done.stdout + done.stderr
        if shown:
            _check_output(block, "\n".join(shown) + "\n", out)
        else:
            assert done.returncode == 0, (
                f"{block.where}: {command!r} exited {done.returncode}\n{out}"
            )
    return out


def _json_fields(block: Block, work: Path) -> None:
    documented = json.loads(block.text)
    done = subprocess.run(
        [str(SHOAL), "run", str(ROOT / "tests/runtime/scenarios/typed_params.py"), "--json"],
        cwd=work,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    printed = json.loads(done.stdout)
    assert set(documented) == set(printed), f"{block.where}: documented fields differ"


def _synopsis(block: Block) -> None:
    helps = [
        _help(command)
        for command in (
            [],
            ["run"],
            *(["state", sub] for sub in STATE_COMMANDS),
            *([control] for control in CONTROL_COMMANDS),
        )
    ]
    help_options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", "".join(helps))) - {"--help"}
    synopsis_options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", block.text))
    assert synopsis_options == help_options, f"{block.where}: synopsis differs from --help"


def _help(command: list[str]) -> str:
    """What ``shoal COMMAND --help`` prints, from the CLI's own parser, in this process (ten
    processes importing shoal took most of this test's time on a loaded machine)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command, "--help"])
    assert exited.value.code == 0
    return out.getvalue()


STATE_COMMANDS = ("inspect", "verify", "rewrite", "savepoint")
CONTROL_COMMANDS = ("rescale", "rebalance", "status")

RUNNABLE = {"python", "pycon", "console", "sh"}


def run_doc(doc: Path, work: Path) -> tuple[int, int]:
    """Run or check every block of ``doc``; return (blocks checked, blocks skipped)."""
    (work / "scenarios").symlink_to(ROOT / "scenarios")
    previous: tuple[Block, str] | None = None  # the last runnable block and its output
    checked = skipped = 0
    for block in blocks(doc):
        directive = block.directive
        last, previous = previous, None
        if directive.startswith("skip:"):
            skipped += 1
            continue
        checked += 1
        if directive.startswith("append ") and block.lang in ("console", "sh"):
            previous = (block, _run_console(block, work, shlex.split(directive[7:])))
        elif directive.startswith("write "):
            (work / directive.removeprefix("write ").strip()).write_text(block.text)
        elif directive == "synopsis":
            _synopsis(block)
        elif directive == "json-fields":
            _json_fields(block, work)
        elif directive:
            raise AssertionError(f"{block.where}: unknown doc-test directive {directive!r}")
        elif block.lang == "python" and block.text.lstrip().startswith(">>>"):
            _run_doctest(block)
        elif block.lang == "python":
            previous = (block, _run_python(block, work))
        elif block.lang == "pycon":
            _run_doctest(block)
        elif block.lang in ("console", "sh"):
            previous = (block, _run_console(block, work, []))
        elif block.lang == "text" and last is not None:
            _check_output(block, block.text, last[1])
        else:
            raise AssertionError(
                f"{block.where}: a ```{block.lang} block that does not run: mark it "
                "`<!-- doc-test: skip: REASON -->` on the line above"
            )
    return checked, skipped


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_code_block_runs_and_prints_what_the_doc_shows(doc: Path, tmp_path: Path) -> None:
    # run_doc asserts each block (exit status, printed output, doctests); here: every block
    # of the doc was either checked or skipped with a reason, none passed over.
    checked, skipped = run_doc(doc, tmp_path)
    assert checked + skipped == len(list(blocks(doc)))
    if checked == 0:
        assert skipped > 0, f"{doc} has no code block: nothing to test"


def test_blocks_that_do_not_run_say_why() -> None:
    skipped = sorted(
        (str(block.doc.relative_to(ROOT)), block.directive.removeprefix("skip:").strip())
        for doc in DOCS
        for block in blocks(doc)
        if block.directive.startswith("skip:")
    )
    assert all(reason for _doc, reason in skipped), "a skip needs a reason"
    # The whole list, so that not running a block is a visible decision:
    assert skipped == sorted(EXPECTED_SKIPS)


_BENCHMARK = "benchmarks run for minutes and print their own figures"
EXPECTED_SKIPS = [
    (
        "README.md",
        "sets up a virtual environment and installs shoal; .ci/run does the same in CI",
    ),
    ("README.md", "runs this test suite"),
    ("README.md", "a fragment; `stream` stands for a stream of (user, page, ts) clicks"),
    ("docs/architecture.md", "the shape of a flow, with placeholders"),
    ("docs/architecture.md", "a formula, not a command"),
    ("docs/architecture.md", "a sequence of messages, not a command"),
    ("docs/architecture.md", "a sequence diagram, not code"),
    ("docs/architecture.md", "a sequence diagram, not code"),
    ("docs/benchmarks.md", _BENCHMARK),  # Rebalancing
    ("docs/benchmarks.md", _BENCHMARK),  # Large state under a memory budget
    ("docs/benchmarks.md", "benchmarks run for minutes, and this one installs Bytewax"),
    ("docs/benchmarks.md", _BENCHMARK),
    ("docs/benchmarks.md", _BENCHMARK),
    ("docs/benchmarks.md", _BENCHMARK),
    ("docs/benchmarks.md", _BENCHMARK),
    ("docs/benchmarks.md", _BENCHMARK),
    ("docs/benchmarks.md", _BENCHMARK),
    ("docs/benchmarks.md", _BENCHMARK),  # Columnar sum, min and max
    ("docs/benchmarks.md", "minutes under valgrind"),  # Columnar sum, min and max
    (
        "docs/benchmarks.md",
        "N is a placeholder; the command runs in docs/getting-started.md's test",
    ),
    ("docs/getting-started.md", "installs shoal"),
    ("docs/guides/async-functions.md", "a benchmark; figures in docs/benchmarks.md"),
    ("docs/guides/embedding.md", "starts a server that runs until it is stopped"),
    (
        "docs/guides/rescaling.md",
        "a 30 s run of worker processes; tests/runtime/test_rescale.py runs it",
    ),
    ("docs/guides/rescaling.md", "an 8-minute soak"),
    ("docs/guides/rescaling.md", "needs a job running in another terminal"),
    (
        "docs/guides/rescaling.md",
        "the same calls run in tests/runtime/test_job_handle.py (with processes)",
    ),
    (
        "docs/guides/scenarios.md",
        "the form of a failure; tests/runtime/test_cli.py pins these objects",
    ),
    ("docs/getting-started.md", "installs shoal and runs the suite"),
    (
        "docs/getting-started.md",
        "the output of the full 1M-event run above (tests/runtime/test_cli.py pins its lines)",
    ),
]


def test_the_documented_metric_names_are_the_names_prometheus_stores() -> None:
    import prometheus_client
    from shoal.runtime._metrics import JobCollector, WorkerMetrics

    metrics = WorkerMetrics(worker=0)
    metrics.observe_operator("users", 1, 1, 0.1)
    metrics.state_size[("users", 3)] = (1, 10)
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(JobCollector("job", lambda: [metrics.snapshot()]))
    exposed = {
        re.sub(r"_(count|sum)$", "", line.split("{")[0])
        for line in prometheus_client.generate_latest(registry).decode().splitlines()
        if line.startswith("shoal_") and not line.split("{")[0].endswith("_created")
    }
    text = (ROOT / "docs" / "architecture.md").read_text()
    paragraph = text[text.index("The metrics, as\na Prometheus server stores them") :]
    paragraph = paragraph[: paragraph.index("\n\n")]
    documented = set(re.findall(r"`(shoal_[a-z_]+)`", paragraph))
    assert documented == exposed
    assert {name for name in exposed if "records" in name or "dead" in name} == {
        "shoal_records_in_total",
        "shoal_records_out_total",
        "shoal_dead_letters_total",
        "shoal_records_crossing_total",
        "shoal_operator_records_in_total",
        "shoal_operator_records_out_total",
    }


def test_an_engine_error_in_one_loop_is_the_job_error_the_reference_names() -> None:
    import shoal

    def fail(item: object) -> None:
        raise OSError("disk full")

    flow = shoal.Flow("fails")
    flow.source(shoal.IterableSource([1, 2])).sink(shoal.CallbackSink(fail))
    with pytest.raises(shoal.JobError):
        shoal.run(flow, backend="memory")
    reference = (ROOT / "docs" / "reference.md").read_text()
    assert "ActorFailedError" not in reference
    assert "`JobError` when the engine fails, in one loop as\nacross processes" in reference


def test_the_package_description_promises_nothing_unbuilt() -> None:
    import tomllib

    description = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["description"]
    # exactly-once needs checkpoints; say it when they exist (and change this test then)
    assert "exactly-once" not in description.lower()
