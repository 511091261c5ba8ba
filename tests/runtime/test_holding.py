"""The held queues of a worker for moving key groups (``runtime/_holding.py``), directly."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from shoal.runtime._holding import Holds
from shoal.runtime._messages import Throttle


def _holds(limit: int = 2) -> tuple[Holds, list[tuple[Any, ...]]]:
    delivered: list[tuple[Any, ...]] = []

    async def deliver(stage: int, channel: str, split: str, group: int, columns: Any) -> None:
        delivered.append((stage, group, channel, split, columns))

    return Holds(limit, deliver), delivered


def test_a_throttle_for_a_version_not_applied_yet_holds_from_when_it_is_applied() -> None:
    # Found as a hang (tiny buffers, rescale schedules): a successor's throttle reached a worker
    # before that worker applied the move's placement update; the worker then held records
    # it still routed to the old owner, its controller waited for the hold's release before
    # applying the update, and the release waited for that update (the move could not start).
    holds, _delivered = _holds()
    holds.throttle(Throttle(1, 7, True, 5), applied=4)
    assert not holds.holding(1, 7)
    assert not holds
    holds.applied(5)
    assert holds.holding(1, 7)
    assert holds.hold(1, 7, "c", "s", ([1, 2, 3],)) is not None  # past its limit: wait


def test_a_throttle_for_an_applied_version_holds_at_once() -> None:
    holds, _delivered = _holds()
    holds.throttle(Throttle(0, 3, True, 5), applied=5)
    assert holds.holding(0, 3)
    assert holds.hold(0, 3, "c", "s", ([1],)) is None  # within its limit: go on


def test_a_release_before_its_version_is_applied_leaves_nothing_pending() -> None:
    holds, delivered = _holds()
    holds.throttle(Throttle(1, 7, True, 6), applied=5)
    anyio.run(holds.release, Throttle(1, 7, False, 6))
    holds.applied(6)
    assert not holds.holding(1, 7)
    assert delivered == []


def test_pending_throttles_of_an_older_version_are_forgotten() -> None:
    holds, _delivered = _holds()
    holds.throttle(Throttle(1, 7, True, 6), applied=5)
    holds.applied(7)  # version 6's move is over (a newer one applies)
    assert not holds.holding(1, 7)
    holds.applied(6)
    assert not holds.holding(1, 7)


@pytest.mark.asyncio
async def test_a_release_delivers_what_was_held_in_order_and_wakes_the_senders() -> None:
    holds, delivered = _holds(limit=1)
    holds.throttle(Throttle(1, 2, True, 3), applied=3)
    assert holds.hold(1, 2, "a", "s0", (["x"],)) is None
    wait = holds.hold(1, 2, "b", "s1", (["y", "z"],))
    assert wait is not None
    assert not wait.is_set()
    await holds.release(Throttle(1, 2, False, 3))
    assert wait.is_set()
    assert delivered == [(1, 2, "a", "s0", (["x"],)), (1, 2, "b", "s1", (["y", "z"],))]
    assert not holds
    with anyio.fail_after(1):
        await holds.drain()
