"""Shared helpers for the storage tests (imported by conftest and test modules)."""

from __future__ import annotations

from collections.abc import Callable

from shoal.storage import (
    AggregatingStateSpec,
    KeyGroupStore,
    ListStateSpec,
    MapStateSpec,
    ReducingStateSpec,
    StateSpec,
    ValueStateSpec,
)


def _mean_add(acc: list[int], value: int) -> list[int]:
    return [acc[0] + value, acc[1] + 1]


def _mean_result(acc: list[int]) -> float:
    return acc[0] / acc[1]


SPECS: tuple[StateSpec, ...] = (
    ValueStateSpec("count", default=0),
    ListStateSpec("seen"),
    MapStateSpec("by_page"),
    ReducingStateSpec("total", reduce=lambda acc, value: acc + value),
    AggregatingStateSpec("mean", create=lambda: [0, 0], add=_mean_add, result=_mean_result),
)


Opener = Callable[..., KeyGroupStore]


def reopen(store: KeyGroupStore, open_store: Opener) -> KeyGroupStore:
    """Close ``store`` without flushing and open it again with the same specs."""
    store.close()
    return open_store(store.key_group)
