"""Two Scenarios and neither is named ``scenario``: the loader cannot choose."""

from __future__ import annotations

from shoal import Check, CountingSink, Flow, IterableSource, Scenario


def build() -> Flow:
    flow = Flow("two")
    flow.source(IterableSource([1, 2, 3])).sink(CountingSink())
    return flow


first = Scenario(name="first", build=build, checks=lambda result, params: [Check("ok", True)])
second = Scenario(name="second", build=build, checks=lambda result, params: [Check("ok", True)])
