"""Hypothesis strategies for the schedules a job is tested under: rescales, kills,
checkpoints, savepoints, rebalances, and injected faults.

Needs ``hypothesis`` (in shoal's ``test`` extra). What they draw is what
``run_job(timeline=..., faults=...)`` and ``Scenario(timeline=...)`` accept::

    from hypothesis import given, settings
    from shoal.testing import strategies

    @given(strategies.schedules(max_workers=3))
    def test_state_survives(timeline): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from shoal.runtime import FAULT_POINTS, Fault
from shoal.runtime.timeline import (
    At,
    at,
    checkpoint,
    kill_worker,
    rebalance,
    rescale,
    savepoint,
    stop,
)

__all__ = ("KINDS", "faults", "schedules")

#: The step kinds :func:`schedules` can draw.
KINDS = ("rescale", "checkpoint", "savepoint", "rebalance", "kill")


def _check_kinds(kinds: Sequence[str], processes: bool) -> tuple[str, ...]:
    chosen = tuple(kinds)
    unknown = [kind for kind in chosen if kind not in KINDS]
    if not chosen or unknown:
        raise ValueError(f"schedules kinds must be some of {KINDS}; got {tuple(kinds)!r}")
    if "kill" in chosen and not processes:
        raise ValueError(
            "kill steps send SIGKILL to worker processes: pass processes=True (and run the "
            "job with processes=True), or leave 'kill' out of kinds"
        )
    return chosen


@st.composite
def _schedule(
    draw: Any,
    start_workers: int,
    max_workers: int,
    kinds: tuple[str, ...],
    min_steps: int,
    max_steps: int,
    records: tuple[int, int],
    end_with_stop: bool,
) -> list[At]:
    count = draw(st.integers(min_steps, max_steps))
    low, high = records
    dues = sorted(
        draw(st.lists(st.integers(low, high), min_size=count, max_size=count, unique=True))
    )
    workers = start_workers
    steps: list[At] = []
    for index, due in enumerate(dues):
        kind = draw(st.sampled_from(kinds))
        if kind == "rescale":
            if max_workers == 1:
                kind = "checkpoint"  # nowhere to rescale to
            else:
                target = draw(
                    st.sampled_from([w for w in range(1, max_workers + 1) if w != workers])
                )
                steps.append(at(rescale(target), records=due))
                workers = target
                continue
        if kind == "checkpoint":
            steps.append(at(checkpoint(), records=due))
        elif kind == "savepoint":
            steps.append(at(savepoint(f"savepoint-{index}"), records=due))
        elif kind == "rebalance":
            steps.append(at(rebalance(), records=due))
        elif kind == "kill":
            victim = draw(st.integers(0, workers - 1))
            during = draw(st.booleans())
            steps.append(at(kill_worker(victim, during_checkpoint=during), records=due))
    if end_with_stop:
        last = steps[-1].records if steps else low
        assert last is not None
        steps.append(at(stop(), records=last + draw(st.integers(1, max(1, high - low)))))
    return steps


def schedules(
    *,
    start_workers: int = 2,
    max_workers: int = 4,
    kinds: Sequence[str] = ("rescale", "checkpoint", "savepoint", "rebalance"),
    min_steps: int = 1,
    max_steps: int = 4,
    records: tuple[int, int] = (100, 20_000),
    processes: bool = False,
    end_with_stop: bool = True,
) -> st.SearchStrategy[list[At]]:
    """Timelines of ``min_steps``..``max_steps`` steps at increasing record counts in
    ``records``, each one of ``kinds``, ending with ``at(stop(), ...)`` (``end_with_stop``).

    A rescale goes to another count in ``1..max_workers`` (tracking the count from
    ``start_workers``, the job's ``workers``); a kill hits a worker that exists at that step;
    savepoints are named ``savepoint-<i>`` (relative: under the state directory).

    Raises:
        ValueError: an unknown kind, ``"kill"`` without ``processes=True``, or bounds that
            allow no schedule.
    """
    chosen = _check_kinds(kinds, processes)
    if type(start_workers) is not int or not 1 <= start_workers <= max_workers:
        raise ValueError(
            f"start_workers must be an int from 1 to max_workers={max_workers!r}; "
            f"got {start_workers!r}"
        )
    if not 0 <= min_steps <= max_steps:
        raise ValueError(f"need 0 <= min_steps <= max_steps; got {min_steps!r}, {max_steps!r}")
    low, high = records
    if not 0 <= low <= high or high - low + 1 < max_steps:
        raise ValueError(
            f"records=(low, high) must hold max_steps={max_steps} distinct counts; got {records!r}"
        )
    return _schedule(
        start_workers, max_workers, chosen, min_steps, max_steps, records, end_with_stop
    )


def faults(
    *,
    points: Sequence[str] = tuple(FAULT_POINTS),
    workers: int = 2,
    attempts: int = 1,
    max_hit: int = 3,
    actions: Sequence[str] = ("kill", "fail"),
    max_faults: int = 1,
) -> st.SearchStrategy[list[Fault]]:
    """Lists of up to ``max_faults`` :class:`~shoal.Fault` at ``points`` (default: every
    fault point), on workers ``0..workers-1``, in attempts ``0..attempts-1``, at hits
    ``1..max_hit``, with one of ``actions``; for ``run_job(faults=...)``.

    Raises:
        ValueError: an unknown point (see ``shoal.FAULT_POINTS``).
    """
    unknown = [point for point in points if point not in FAULT_POINTS]
    if unknown or not points:
        raise ValueError(
            f"unknown fault points {unknown!r}; known: {', '.join(sorted(FAULT_POINTS))}"
        )
    one = st.builds(
        Fault,
        point=st.sampled_from(tuple(points)),
        worker=st.integers(0, workers - 1),
        attempt=st.integers(0, attempts - 1),
        hit=st.integers(1, max_hit),
        action=st.sampled_from(tuple(actions)),
    )
    return st.lists(one, max_size=max_faults)
