"""A scenario that checks the types its parameters arrive with (after ``--param`` coercion)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from shoal import Check, CountingSink, Flow, IterableSource, JobResult, Scenario


def build(records: int, ratio: float, flag: bool, label: str, note: Any) -> Flow:
    flow = Flow("typed_params", num_key_groups=2)
    flow.source(IterableSource(list(range(records)))).sink(CountingSink())
    return flow


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    for name, kind in (("records", int), ("ratio", float), ("flag", bool), ("label", str)):
        value = params[name]
        yield Check(f"{name} is {kind.__name__}", type(value) is kind, repr(value))
    yield Check("every record read", result.records_in == params["records"], f"{result.records_in}")


scenario = Scenario(
    name="typed_params",
    build=build,
    checks=checks,
    params={"records": 10, "ratio": 0.5, "flag": False, "label": "x", "note": None},
)
