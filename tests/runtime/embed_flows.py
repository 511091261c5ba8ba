"""Flows the embedding tests run: a PushSource keyed by user, counted."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shoal import CollectingSink, Flow, PushSource


def user_of(event: dict[str, Any]) -> str:
    return str(event["user"])


def counting_flow(
    name: str = "clicks", *, capacity: int = 64, key_groups: int = 8
) -> tuple[Flow, PushSource]:
    """``PushSource -> key_by(user) -> count("per_user")``, and its source."""
    source = PushSource("events", capacity=capacity)
    flow = Flow(name, num_key_groups=key_groups)
    flow.source(source).key_by(user_of).count(name="per_user").sink(CollectingSink())
    return flow, source


def events(n: int, users: int = 13, start: int = 0) -> list[dict[str, Any]]:
    return [{"user": f"u{(i * 7) % users}", "i": i} for i in range(start, start + n)]


def oracle(sent: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(user_of(e) for e in sent))
