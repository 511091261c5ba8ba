"""Scenarios: a dataflow, its workload parameters and its checks, in one Python file.

A scenario file defines ``scenario = Scenario(...)`` at module level. ``shoal run FILE`` loads
it, runs its flow (in this process or in worker processes, which load the same file), and then
runs its checks against the result: an oracle computed independently from the same input.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._dataflow import Flow
from ._exceptions import ScenarioError
from ._job import JobResult, run_job
from ._loader import load_module
from ._statedir import under_state_dir
from ._timeline import Step, split_timeline

__all__ = ("Check", "Scenario", "load_scenario", "run_scenario")


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check: its name, whether it passed, and what it saw."""

    name: str
    passed: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Scenario:
    """A runnable scenario.

    Args:
        name: the scenario's name (reports and the state directory use it).
        build: a function returning the :class:`Flow`, called with the parameters.
        checks: a function ``checks(result, params)`` returning :class:`Check` records.
        params: default parameters; ``shoal run --param key=value`` overrides them.
        description: one line for ``shoal run --help`` and the summary.
        timeline: actions on the running job (``at(...)``) and further runs (``resume(...)``),
            see ``shoal.runtime._timeline``; or a function of the parameters returning them
            (to act at fractions of a workload whose size is a parameter).
        checkpoint_interval: the scenario's checkpoint interval in seconds (None: the
            runner's default); a timeline that kills, checkpoints or resumes needs one.
    """

    name: str
    build: Callable[..., Flow]
    checks: Callable[[JobResult, Mapping[str, Any]], Iterable[Check]]
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    timeline: Sequence[Step] | Callable[[Mapping[str, Any]], Sequence[Step]] = ()
    checkpoint_interval: float | None = None

    def __post_init__(self) -> None:
        if not callable(self.timeline):
            self.steps({})

    def steps(self, params: Mapping[str, Any]) -> Sequence[Step]:
        """The timeline for these parameters.

        Raises:
            ScenarioError: it is not a valid timeline (the message says why).
        """
        try:
            steps = self.timeline(params) if callable(self.timeline) else self.timeline
            split_timeline(steps)
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"scenario {self.name!r}: timeline: {exc}") from exc
        return steps

    def bind(self, params: Mapping[str, Any], state_dir: str | Path) -> dict[str, Any]:
        """``params`` with ``{state_dir}`` in string values replaced by the run's state
        directory (a scenario's output can live beside its state)."""
        return {
            key: value.replace("{state_dir}", str(state_dir)) if isinstance(value, str) else value
            for key, value in params.items()
        }

    def resolve_params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults merged with ``overrides``; unknown names are a ScenarioError naming them."""
        merged = dict(self.params)
        for key, value in (overrides or {}).items():
            if key not in merged:
                known = ", ".join(sorted(merged)) or "none"
                raise ScenarioError(
                    f"scenario {self.name!r} has no parameter {key!r}; its parameters are: {known}"
                )
            default = merged[key]
            if isinstance(value, str) and not isinstance(default, str) and default is not None:
                value = _coerce(key, value, default)
            merged[key] = value
        return merged

    def build_flow(self, **params: Any) -> Flow:
        """Build the flow with the given (already resolved) parameters.

        Raises:
            ScenarioError: ``build`` raised (the message names the exception and the line it
                came from; the exception is chained), or did not return a :class:`Flow`.
        """
        try:
            flow = self.build(**params)
        except Exception as exc:
            raise ScenarioError(
                f"scenario {self.name!r}: build raised {_describe(exc)}{_where(exc)}"
            ) from exc
        if not isinstance(flow, Flow):
            raise ScenarioError(
                f"scenario {self.name!r}: build returned {type(flow).__name__}, not a Flow"
            )
        return flow

    def run_checks(self, result: JobResult, params: Mapping[str, Any]) -> list[Check]:
        """Run the checks and return their outcomes.

        A scenario cannot pass by checking nothing: a ``checks`` function that raises becomes
        one failed check named ``checks raised``; one that returns ``None`` (forgot to return
        or yield) or no checks at all becomes one failed check named ``has checks``.

        Raises:
            ScenarioError: ``checks`` produced something that is not a :class:`Check`.
        """
        try:
            produced = self.checks(result, params)
            if produced is None:
                return [
                    Check(
                        "has checks",
                        False,
                        "the scenario's checks returned None; return or yield Check records",
                    )
                ]
            checks = list(produced)
        except Exception as exc:
            return [Check("checks raised", False, f"{_describe(exc)}{_where(exc)}")]
        for check in checks:
            if not isinstance(check, Check):
                raise ScenarioError(
                    f"scenario {self.name!r}: checks must yield Check records; got {check!r}"
                )
        if not checks:
            return [Check("has checks", False, "the scenario's checks returned nothing")]
        return checks


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where(exc: BaseException) -> str:
    """`` (file.py:line)`` of the innermost frame outside the import machinery, or ``""``."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ")
    ]
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _import_error(path: str | Path, exc: Exception) -> ScenarioError:
    """A short message for a scenario file that cannot be imported: file:line and the error."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename or path}:{exc.lineno}" if exc.lineno else str(path)
        return ScenarioError(f"{where}: {type(exc).__name__}: {exc.msg}")
    return ScenarioError(f"cannot import scenario file {path}: {_describe(exc)}{_where(exc)}")


def _coerce(key: str, text: str, default: Any) -> Any:
    kind = type(default)
    if kind not in (bool, int, float):
        raise ScenarioError(
            f"parameter {key!r} is a {kind.__name__} (default {default!r}); only str, int, "
            "float and bool parameters can be set with --param"
        )
    if kind is bool and text.lower() in ("1", "true", "yes", "on"):
        return True
    if kind is bool and text.lower() in ("0", "false", "no", "off"):
        return False
    if kind is not bool:
        try:
            return kind(text)
        except ValueError:
            pass
    raise ScenarioError(
        f"parameter {key!r} must be {kind.__name__} (like its default {default!r}); got {text!r}"
    )


def load_scenario(path: str | Path) -> tuple[Scenario, str]:
    """Load a scenario file; return the scenario and the reference worker processes use.

    The file's folder goes first on ``sys.path`` (see :func:`load_module`), so it can import
    a helper module beside it, in this process and in every worker process.

    Raises:
        ScenarioError: no such file, not a ``.py`` file, a syntax error (``file:line``), an
            exception while importing it (its type, message and ``file:line``), or no
            :class:`Scenario` in it.
    """
    file = Path(path)
    if not file.is_file():
        raise ScenarioError(f"scenario file not found: {path}")
    if file.suffix != ".py":
        raise ScenarioError(f"a scenario is a Python file ending in .py; got {path}")
    try:
        module = load_module(str(file.resolve()))
    except Exception as exc:
        raise _import_error(path, exc) from exc
    found = [(name, obj) for name, obj in inspect.getmembers(module) if isinstance(obj, Scenario)]
    if not found:
        raise ScenarioError(
            f"{path} defines no Scenario: add `scenario = Scenario(...)` at module level"
        )
    named = [item for item in found if item[0] == "scenario"]
    if len(found) > 1 and not named:
        raise ScenarioError(f"{path} defines several Scenarios; name the one to run `scenario`")
    attr, scenario = (named or found)[0]
    return scenario, f"{file.resolve()}:{attr}"


async def run_scenario(
    scenario: Scenario,
    ref: str,
    params: Mapping[str, Any],
    *,
    workers: int = 1,
    state_dir: str | Path,
    **options: Any,
) -> JobResult:
    """Run ``scenario``'s flow (``ref``) through its timeline: one run, then one more per
    ``resume(...)`` step (from the state directory, optionally from a savepoint and with
    another worker count). Returns the last run's result (whose ``records_in`` and
    ``records_out`` are the whole job's), with the runs' own reads (``records_read``),
    elapsed time, dead letters, recoveries and checkpoints summed, and ``resumed_from`` of
    the first run (where the scenario started).

    ``params`` are bound to the state directory (:meth:`Scenario.bind`); ``options`` go to
    every :func:`run_job`; the scenario's ``checkpoint_interval`` is used unless they give one.
    """
    params = scenario.bind(params, state_dir)
    if options.get("checkpoint_interval") is None and scenario.checkpoint_interval is not None:
        options["checkpoint_interval"] = scenario.checkpoint_interval
    results: list[JobResult] = []
    for start, steps in split_timeline(scenario.steps(params)):
        run_options = dict(options)
        if start is not None:
            run_options["resume"] = True
            if start.savepoint is not None:
                run_options["from_savepoint"] = under_state_dir(start.savepoint, state_dir)
            workers = start.workers or workers
        results.append(
            await run_job(
                ref,
                params=params,
                workers=workers,
                state_dir=state_dir,
                timeline=steps,
                **run_options,
            )
        )
    return _combined(results)


def _combined(results: list[JobResult]) -> JobResult:
    last = results[-1]
    if len(results) == 1:
        return last
    stats = [r.checkpoints for r in results if r.checkpoints is not None]
    checkpoints = last.checkpoints
    if checkpoints is not None and stats:
        checkpoints = replace(
            checkpoints,
            completed=sum(s.completed for s in stats),
            failed=sum(s.failed for s in stats),
            skipped=sum(s.skipped for s in stats),
            durations_s=tuple(d for s in stats for d in s.durations_s),
            max_pause_s=max(s.max_pause_s for s in stats),
        )
    return replace(
        last,
        # records_in and records_out are the last run's: a run that resumes counts what the
        # checkpoint or savepoint it started from had counted, so the last run's are the whole
        # scenario's, each record once. What each run read itself adds up.
        dead_letters=sum(r.dead_letters for r in results),
        elapsed_s=sum(r.elapsed_s for r in results),
        records_read=sum(
            r.records_in if r.records_read is None else r.records_read for r in results
        ),
        recoveries=tuple(s for r in results for s in r.recoveries),
        checkpoints=checkpoints,
        resumed_from=results[0].resumed_from,
    )
