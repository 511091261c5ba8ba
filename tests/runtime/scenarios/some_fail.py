"""A scenario in which the records divisible by ``every`` fail in a map (dead letters).

With ``every=1`` every record fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from shoal import Check, CountingSink, Flow, IterableSource, JobResult, Scenario


def build(records: int, every: int) -> Flow:
    def check(value: int) -> int:
        if value % every == 0:
            raise ValueError(f"{value} is divisible by {every}")
        return value

    flow = Flow("some_fail", num_key_groups=4)
    (
        flow.source(IterableSource(list(range(records)), splits=2))
        .map(check)
        .key_by(lambda v: v % 3)
        .count(name="counts")
        .sink(CountingSink())
    )
    return flow


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    failing = len(range(0, params["records"], params["every"]))
    yield Check(
        "the failing records are dead letters",
        result.dead_letters == failing,
        f"{result.dead_letters} dead letters",
    )


scenario = Scenario(
    name="some_fail", build=build, checks=checks, params={"records": 20, "every": 5}
)
