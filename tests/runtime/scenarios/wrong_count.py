"""A scenario whose second check deliberately fails: it claims one record more than there are."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from shoal import Check, CountingSink, Flow, IterableSource, JobResult, Scenario


def build(records: int, claimed: int) -> Flow:
    flow = Flow("wrong_count", num_key_groups=4)
    flow.source(IterableSource(list(range(records)), splits=2)).key_by(lambda v: v % 5).count(
        name="counts"
    ).sink(CountingSink())
    return flow


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    yield Check(
        "every record read", result.records_in == params["records"], f"{result.records_in} read"
    )
    yield Check(
        "claimed count emitted",
        result.records_out == params["claimed"],
        f"{result.records_out} emitted, {params['claimed']} claimed",
    )


scenario = Scenario(
    name="wrong_count",
    build=build,
    checks=checks,
    params={"records": 50, "claimed": 51},
    description="fails on purpose: its check claims one record too many",
)
