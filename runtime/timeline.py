"""Scenario timelines: actions on a running job at record counts or times.

    from shoal.runtime.timeline import (
        at, checkpoint, kill_worker, rebalance, rescale, resume, savepoint, stop,
    )

    timeline = [
        at(kill_worker(1), records=200_000),
        at(rescale(4), records=300_000),
        at(rebalance(), records=400_000),
        at(stop(savepoint="half"), records=500_000),
        resume(workers=3, savepoint="half"),
    ]

See ``Scenario(timeline=...)`` and ``run_job(timeline=...)``; the semantics of each step are in
the documentation of :mod:`shoal.runtime._timeline`.
"""

from __future__ import annotations

from ._timeline import At as At
from ._timeline import Resume as Resume
from ._timeline import Step as Step
from ._timeline import at as at
from ._timeline import checkpoint as checkpoint
from ._timeline import kill_worker as kill_worker
from ._timeline import rebalance as rebalance
from ._timeline import rescale as rescale
from ._timeline import resume as resume
from ._timeline import savepoint as savepoint
from ._timeline import stop as stop

__all__ = (
    "At",
    "Resume",
    "Step",
    "at",
    "checkpoint",
    "kill_worker",
    "rebalance",
    "rescale",
    "resume",
    "savepoint",
    "stop",
)
