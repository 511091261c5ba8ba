"""A malformed scenario: its checks yield something that is not a Check."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from shoal import CountingSink, Flow, IterableSource, JobResult, Scenario


def build(records: int) -> Flow:
    flow = Flow("bad_checks", num_key_groups=2)
    flow.source(IterableSource(list(range(records)))).sink(CountingSink())
    return flow


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Any]:
    yield ("records read", True)  # a tuple, not a Check


scenario = Scenario(name="bad_checks", build=build, checks=checks, params={"records": 10})
