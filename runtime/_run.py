"""A blocking entry point for scripts: ``shoal.run(flow)``."""

from __future__ import annotations

import importlib.util
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
    return anyio.run(partial(run_job, flow, **options), backend_options=loop_options())


def loop_options() -> dict[str, Any]:
    """anyio's asyncio options: uvloop where it is installed (not on Windows)."""
    return {"use_uvloop": importlib.util.find_spec("uvloop") is not None}
