"""Placement policies: where key groups should live given their load, and when to move them.

The plug-in point is :class:`PlacementPolicy`: given the placement table in force, every key
group's measured load (:class:`~shoal.runtime._load.KeyGroupLoad`) and the active worker ids, it
returns the table it wants (key group -> worker). ``job.rebalance(policy)`` applies the
difference through the same placement versions as a rescale (``Rescaler.rebalance``). The
default, :class:`BalanceLoad`, moves as few key groups as it can, and none unless that lowers
the most loaded worker's load by a margin.

:class:`AutoRebalance` (``run_job(auto_rebalance=...)``, off by default) rebalances on its own
when one worker stays overloaded; :class:`AutoTrigger` is its decision, pure and clock-driven
(readings in, "rebalance now" out), so its hysteresis is tested without a job.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio
from shoal.actors._log import get_logger

from ._load import KeyGroupLoad, worker_loads
from ._placement import Move, Placement

if TYPE_CHECKING:
    from ._control import JobControl

__all__ = (
    "AutoRebalance",
    "AutoTrigger",
    "BalanceLoad",
    "PlacementPolicy",
    "RebalanceRecord",
    "check_table",
    "plan_rebalance",
    "run_auto_rebalance",
)

log = get_logger("shoal.rebalance")


@runtime_checkable
class PlacementPolicy(Protocol):
    """Decides where key groups live (a plug-in: pass one to ``rebalance`` or
    :class:`AutoRebalance`). Must be pure: it is called on the driver's event loop, between
    readings, and must not block or await."""

    def place(
        self,
        placement: Placement,
        loads: Sequence[KeyGroupLoad],
        workers: Sequence[int],
    ) -> Sequence[int]:
        """Return the wanted owner of every key group (``len == num_key_groups``), each one of
        ``workers``. ``loads[g]`` is key group ``g``'s load; returning
        ``placement.group_owner`` moves nothing."""
        ...


@dataclass(frozen=True, slots=True)
class BalanceLoad:
    """The default policy: lower the most loaded worker's load with the fewest moves.

    Repeatedly moves one key group from the most loaded worker to the least loaded one,
    choosing the group that leaves the lower maximum of the two, while that lowers it by at
    least a quarter of ``margin`` of the mean worker load (smaller steps are churn). The
    result is kept only when the most loaded worker's load drops by more than ``margin``
    (a fraction): a placement within the margin of the best it can reach is left alone, so
    a noisy or already balanced load moves nothing. A single key group hotter than a worker's
    fair share stays where it is alone (its records are processed in order by one actor:
    placement cannot split it; the hot-key metrics show why).
    """

    margin: float = 0.1
    #: At most this many moves per rebalance (each pauses one key group briefly).
    max_moves: int = 64

    def place(
        self,
        placement: Placement,
        loads: Sequence[KeyGroupLoad],
        workers: Sequence[int],
    ) -> list[int]:
        owner = list(placement.group_owner)
        load = [0.0] * len(owner)
        for item in loads:
            load[item.key_group] = max(item.load, 0.0)
        ids = sorted(set(workers))
        # Key groups of workers not in ``workers`` go to the least loaded first (as a rescale).
        per: dict[int, float] = dict.fromkeys(ids, 0.0)
        for group, worker in enumerate(owner):
            if worker in per:
                per[worker] += load[group]
        for group in sorted(
            (g for g, w in enumerate(owner) if w not in per), key=lambda g: -load[g]
        ):
            target = min(ids, key=lambda w: (per[w], w))
            owner[group] = target
            per[target] += load[group]
        before = max(per.values())
        # Each move must lower the peak by a quarter of the margin of the mean load: moves that
        # shave a few records/s off it (a cold key group back and forth) are churn.
        step = self.margin / 4 * sum(per.values()) / len(ids)
        moves = 0
        while moves < self.max_moves:
            source = max(ids, key=lambda w: (per[w], -w))
            target = min(ids, key=lambda w: (per[w], w))
            if source == target:
                break
            best: tuple[float, int] | None = None
            for group, worker in enumerate(owner):
                if worker != source or load[group] <= 0.0:
                    continue
                peak = max(per[source] - load[group], per[target] + load[group])
                if best is None or peak < best[0]:
                    best = (peak, group)
            if best is None or best[0] > per[source] - step:
                break  # no single move lowers the peak enough
            group = best[1]
            owner[group] = target
            per[source] -= load[group]
            per[target] += load[group]
            moves += 1
        after = max(per.values())
        if before > 0 and after >= before * (1 - self.margin):
            # Not worth it: keep every key group where it is (beyond the displaced ones).
            return [w if w in ids else owner[g] for g, w in enumerate(placement.group_owner)]
        return owner


def check_table(
    policy: PlacementPolicy, table: Sequence[int], num_key_groups: int, workers: Sequence[int]
) -> list[int]:
    """``table`` as returned by ``policy``, checked.

    Raises:
        ValueError: it does not name one of ``workers`` for each of the key groups.
    """
    name = type(policy).__name__
    try:
        owner = [int(w) for w in table]
    except (TypeError, ValueError):
        raise ValueError(
            f"placement policy {name} must return a sequence of worker ids; got {table!r}"
        ) from None
    if len(owner) != num_key_groups:
        raise ValueError(
            f"placement policy {name} returned {len(owner)} owners; the job has "
            f"{num_key_groups} key groups: return one worker id per key group"
        )
    unknown = sorted(set(owner) - set(workers))
    if unknown:
        raise ValueError(
            f"placement policy {name} placed key groups on workers {unknown}; the job's "
            f"workers are {sorted(workers)}"
        )
    return owner


def plan_rebalance(
    placement: Placement,
    loads: Sequence[KeyGroupLoad],
    workers: Sequence[int],
    policy: PlacementPolicy,
) -> list[Move]:
    """The key-group moves that take ``placement`` to what ``policy`` wants."""
    table = check_table(
        policy, policy.place(placement, loads, workers), len(placement.group_owner), workers
    )
    return [
        Move(group, old, new)
        for group, (old, new) in enumerate(zip(placement.group_owner, table, strict=True))
        if old != new
    ]


@dataclass(frozen=True, slots=True)
class RebalanceRecord:
    """One completed rebalance: the key groups moved, and each worker's load (records/s)
    before and as the policy predicted it after (measured over the reading before it)."""

    moves: tuple[Move, ...]
    seconds: float
    load_before: tuple[tuple[int, float], ...]
    load_after: tuple[tuple[int, float], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "moves": [m.to_data() for m in self.moves],
            "seconds": round(self.seconds, 3),
            "load_before": {str(w): round(x, 1) for w, x in self.load_before},
            "load_after": {str(w): round(x, 1) for w, x in self.load_after},
        }


def predicted(
    placement: Placement, moves: Sequence[Move], loads: Sequence[KeyGroupLoad], workers: Any
) -> tuple[tuple[tuple[int, float], ...], tuple[tuple[int, float], ...]]:
    """Per-worker load before ``moves`` and after them (the same loads, moved)."""
    after = placement.applied(moves, [], ())
    return (
        tuple(sorted(worker_loads(loads, placement, workers).items())),
        tuple(sorted(worker_loads(loads, after, workers).items())),
    )


@dataclass(frozen=True, slots=True)
class AutoRebalance:
    """Rebalance automatically (``run_job(auto_rebalance=AutoRebalance(...))``; off by default).

    Every ``interval`` seconds the driver reads every key group's load. When the most loaded
    worker exceeds the mean by more than ``threshold`` (a fraction: 0.25 is 25 % above the
    mean) in ``readings`` consecutive readings, it rebalances with ``policy`` (default
    :class:`BalanceLoad`), then ignores the load for ``cooldown`` seconds and starts counting
    afresh. Hysteresis on three levels: a skew must persist (``readings``), a rebalance is
    followed by a quiet period (``cooldown``), and the policy moves nothing unless that helps
    by its margin. Loads under ``min_rate`` records/s per worker are idle, never skewed.
    """

    interval: float = 5.0
    threshold: float = 0.25
    readings: int = 3
    cooldown: float = 30.0
    min_rate: float = 100.0
    policy: PlacementPolicy | None = None

    def __post_init__(self) -> None:
        for name in ("interval", "threshold", "cooldown", "min_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"AutoRebalance({name}=...) must be a number >= 0; got {value!r}")
        if self.interval <= 0:
            raise ValueError(f"AutoRebalance(interval=...) must be > 0; got {self.interval!r}")
        if type(self.readings) is not int or self.readings < 1:
            raise ValueError(
                f"AutoRebalance(readings=...) must be an int >= 1; got {self.readings!r}"
            )
        if self.policy is not None and not isinstance(self.policy, PlacementPolicy):
            raise TypeError(
                "AutoRebalance(policy=...) takes an object with a place(placement, loads, "
                f"workers) method; got {self.policy!r}"
            )


def skew(per_worker: dict[int, float]) -> float:
    """How far the most loaded worker is above the mean, as a fraction of the mean."""
    if not per_worker:
        return 0.0
    mean = sum(per_worker.values()) / len(per_worker)
    return 0.0 if mean <= 0 else max(per_worker.values()) / mean - 1.0


class AutoTrigger:
    """:class:`AutoRebalance`'s decision: feed it each reading; it says when to rebalance."""

    def __init__(self, auto: AutoRebalance) -> None:
        self.auto = auto
        self.streak = 0
        self.quiet_until = float("-inf")

    def observe(self, per_worker: dict[int, float], now: float) -> bool:
        """One reading (each worker's records/s) at ``now``; True: rebalance now."""
        auto = self.auto
        if now < self.quiet_until:
            self.streak = 0
            return False
        mean = sum(per_worker.values()) / max(len(per_worker), 1)
        if len(per_worker) < 2 or mean < auto.min_rate or skew(per_worker) <= auto.threshold:
            self.streak = 0
            return False
        self.streak += 1
        return self.streak >= auto.readings

    def rebalanced(self, now: float) -> None:
        """A rebalance ended at ``now``: quiet for the cooldown, then count afresh."""
        self.streak = 0
        self.quiet_until = now + self.auto.cooldown


async def run_auto_rebalance(auto: AutoRebalance, control: JobControl) -> None:
    """The driver's companion task that applies ``auto`` to a running attempt."""
    from ._rescale import RescaleError  # _rescale imports this module

    supervisor = control.supervisor
    await supervisor.sources_started.wait()
    trigger = AutoTrigger(auto)
    await control.loads()  # the first window starts now
    while not supervisor.finished.is_set():
        await anyio.sleep(auto.interval)
        loads = await control.loads()
        placement = supervisor.placement
        per_worker = worker_loads(loads, placement, sorted(supervisor.members))
        if not trigger.observe(per_worker, time.perf_counter()):
            continue
        if supervisor.finished.is_set():
            return
        try:
            record = await control.rebalance(auto.policy, loads=loads)
        except RescaleError:
            return  # the job drained meanwhile: nothing left to balance
        trigger.rebalanced(time.perf_counter())
        log.info(
            "automatic rebalance",
            skew=round(skew(per_worker), 3),
            moves=len(record.moves),
            seconds=round(record.seconds, 3),
        )
