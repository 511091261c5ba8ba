"""A scenario whose worker process kills itself (SIGKILL) on its first keyed record.

Only a worker process dies: the process function checks that it runs under the worker
entry point, so running this file in-process does nothing drastic (the job just finishes).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from shoal import Check, CountingSink, Flow, IterableSource, JobResult, ProcessContext, Scenario


def _in_worker_process() -> bool:
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return spec is not None and spec.name == "shoal.actors._process_main"


def die(key: int, value: int, ctx: ProcessContext) -> None:
    if _in_worker_process():
        os.kill(os.getpid(), signal.SIGKILL)
    ctx.emit(value)


def build(records: int) -> Flow:
    flow = Flow("worker_dies", num_key_groups=2)
    flow.source(IterableSource(list(range(records)))).key_by(lambda v: v % 2).process(
        die, name="die"
    ).sink(CountingSink())
    return flow


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    yield Check("every record read", result.records_in == params["records"], f"{result.records_in}")


scenario = Scenario(name="worker_dies", build=build, checks=checks, params={"records": 10})
