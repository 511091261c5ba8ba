"""A Python file that defines a flow builder but no Scenario."""

from __future__ import annotations

from shoal import CountingSink, Flow, IterableSource


def build() -> Flow:
    flow = Flow("no_scenario")
    flow.source(IterableSource([1, 2, 3])).sink(CountingSink())
    return flow
