"""A scenario whose build function raises for its default parameters."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from shoal import Check, CountingSink, Flow, IterableSource, JobResult, Scenario


def build(records: int) -> Flow:
    if records % 2:
        raise ValueError(f"records must be even; got {records}")
    flow = Flow("build_raises", num_key_groups=2)
    flow.source(IterableSource(list(range(records)))).sink(CountingSink())
    return flow


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    yield Check("every record read", result.records_in == params["records"])


scenario = Scenario(name="build_raises", build=build, checks=checks, params={"records": 3})
