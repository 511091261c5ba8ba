"""A scenario whose checks function forgets to return or yield its checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shoal import CountingSink, Flow, IterableSource, JobResult, Scenario


def build(records: int) -> Flow:
    flow = Flow("checks_return_none", num_key_groups=2)
    flow.source(IterableSource(list(range(records)))).sink(CountingSink())
    return flow


def checks(result: JobResult, params: Mapping[str, Any]) -> None:
    assert result.records_in == params["records"]  # checked, but nothing returned


scenario = Scenario(
    name="checks_return_none",
    build=build,
    checks=checks,  # type: ignore[arg-type]
    params={"records": 4},
)
