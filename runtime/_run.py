"""A blocking entry point for scripts: ``shoal.run(flow)``."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio

from ._dataflow import Flow
from ._job import JobResult, run_job

__all__ = ("run",)


def run(flow: Flow | str, **options: Any) -> JobResult:
    """Run ``flow`` to completion in a new event loop (uvloop where available).

    Takes the same keyword arguments as :func:`run_job`. Inside a running event loop, await
    :func:`run_job` instead.
    """
    return anyio.run(partial(run_job, flow, **options), backend_options={"use_uvloop": True})
