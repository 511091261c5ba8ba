"""Fault injection: kill or fail a worker at a named point of the data path, deterministically.

Exactly-once recovery is only as good as the failures it was tested under. A :class:`Fault`
names a point in the engine (``FAULT_POINTS``), the worker, the run attempt (0 is the first
start, 1 the first restart, ...) and which hit of that point fires it. Tests and soak runs
build seeded random schedules of them and pass them to ``run_job(faults=...)``; every worker
gets the schedule with its arguments and checks its points with :meth:`Faults.hit`, which
costs one dict lookup when nothing is scheduled there.

Actions:

* ``"kill"``: in a worker process, ``SIGKILL`` itself (a real ``kill -9``: no cleanup, no
  flush, no goodbye on the socket); in a worker running in the driver's event loop, raise
  :class:`InjectedFault` (the actor fails, and with it that worker).
* ``"fail"``: raise :class:`InjectedFault` (an engine error in the actor at that point).
* ``"enospc"``: raise ``OSError(ENOSPC)`` (a full disk where the point writes files).
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ("FAULT_POINTS", "Fault", "Faults", "InjectedFault")

#: Where faults can be injected, and what is happening there.
FAULT_POINTS: Mapping[str, str] = {
    "source.batch": "a source actor has sent a batch downstream (mid-stream)",
    "keygroup.batch": "a key-group actor ran a batch and has not passed its output on",
    "keygroup.aligning": "a barrier arrived on one input channel of several (alignment)",
    "keygroup.committed": "a key group committed its epoch locally; the manifest is not written",
    "keygroup.restore": "a key group is being restored after a failure (recovery)",
    "checkpoint.write": "a worker writes a key group's checkpoint file",
    "sink.commit": "a transactional sink publishes a completed epoch's output",
    "keygroup.handoff": "a moving key group closed its store; its successor has not got it",
    "keygroup.takeover": "a moving key group's successor got the handoff, opens the store",
    "source.handoff": "a moving split's actor stopped reading; the new owner has not got it",
    "keygroup.ship": "a moving key group's copy is half sent to a worker with its own state dir",
}
_ACTIONS = ("kill", "fail", "enospc")


class InjectedFault(RuntimeError):
    """The failure a :class:`Fault` injected (a test's doing, never a real error)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One scheduled failure.

    Attributes:
        point: Where (a key of ``FAULT_POINTS``).
        worker: Which worker (its index).
        attempt: Which start of the job: 0 the first, 1 after the first recovery, ...
        hit: Fire at this hit of ``point`` on that worker in that attempt (1: the first).
        action: ``"kill"``, ``"fail"`` or ``"enospc"`` (see the module docstring).
    """

    point: str
    worker: int = 0
    attempt: int = 0
    hit: int = 1
    action: str = "kill"

    def __post_init__(self) -> None:
        if self.point not in FAULT_POINTS:
            raise ValueError(
                f"unknown fault point {self.point!r}; known: {', '.join(sorted(FAULT_POINTS))}"
            )
        if self.action not in _ACTIONS:
            raise ValueError(f"fault action must be one of {_ACTIONS}; got {self.action!r}")
        for name in ("worker", "attempt", "hit"):
            value = getattr(self, name)
            if type(value) is not int or value < (1 if name == "hit" else 0):
                least = int(name == "hit")
                raise ValueError(f"fault {name} must be an int >= {least}; got {value!r}")

    def to_data(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "worker": self.worker,
            "attempt": self.attempt,
            "hit": self.hit,
            "action": self.action,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Fault:
        return cls(**{k: data[k] for k in ("point", "worker", "attempt", "hit", "action")})


class Faults:
    """One worker's schedule for one attempt: counts hits, fires what is due."""

    __slots__ = ("_due", "_hits", "_in_process")

    def __init__(
        self,
        faults: Iterable[Fault] = (),
        *,
        worker: int = 0,
        attempt: int = 0,
        in_process: bool = False,
    ) -> None:
        self._due: dict[str, dict[int, str]] = {}
        for fault in faults:
            if fault.worker == worker and fault.attempt == attempt:
                self._due.setdefault(fault.point, {})[fault.hit] = fault.action
        self._hits: dict[str, int] = {}
        # True: this worker is a process of its own, and "kill" may SIGKILL it.
        self._in_process = in_process

    def __bool__(self) -> bool:
        return bool(self._due)

    def hit(self, point: str) -> None:
        """``point`` is reached: fire the fault scheduled for this hit, if any."""
        due = self._due.get(point)
        if due is None:
            return
        count = self._hits[point] = self._hits.get(point, 0) + 1
        action = due.get(count)
        if action is None:
            return
        if action == "kill" and self._in_process:
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "enospc":
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected at {point})")
        raise InjectedFault(f"fault injected at {point} (hit {count})")
