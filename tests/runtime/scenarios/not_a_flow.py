"""A malformed scenario: its build function returns a dict instead of a Flow."""

from __future__ import annotations

from typing import Any

from shoal import Check, Scenario


def build(records: int) -> Any:
    return {"records": records}


scenario = Scenario(
    name="not_a_flow",
    build=build,
    checks=lambda result, params: [Check("unreachable", True)],
    params={"records": 10},
)
