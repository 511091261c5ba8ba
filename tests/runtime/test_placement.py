"""The placement table: balanced, fewest moves, versioned."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shoal.runtime._placement import Placement, balance


def test_initial_placement_is_contiguous_and_round_robin() -> None:
    table = Placement.initial(8, 5, 2)
    assert table.version == 0
    assert table.workers == (0, 1)
    assert table.group_owner == (0, 0, 0, 0, 1, 1, 1, 1)
    assert table.split_owner == (0, 1, 0, 1, 0)
    assert Placement.from_data(table.to_data()) == table


@given(
    groups=st.integers(1, 300),
    before=st.integers(1, 9),
    after=st.lists(st.integers(0, 12), min_size=1, max_size=9, unique=True),
)
def test_balance_is_balanced_and_moves_only_what_it_must(
    groups: int, before: int, after: list[int]
) -> None:
    owner = Placement.initial(groups, 1, before).group_owner
    result = balance(owner, after)
    counts = Counter(result)
    assert set(counts) <= set(after)
    quota_low, quota_high = groups // len(after), -(-groups // len(after))
    assert all(quota_low <= counts.get(w, 0) <= quota_high for w in after)
    # A worker that stays keeps its items up to its quota: nothing moves between two
    # workers that are both within quota.
    moved = sum(1 for a, b in zip(owner, result, strict=True) if a != b)
    kept_possible = sum(min(Counter(owner).get(w, 0), quota_high) for w in after)
    assert moved <= groups - kept_possible + len(after)


def test_rescale_2_to_4_to_1_to_3_keeps_every_group_placed_once() -> None:
    table = Placement.initial(128, 6, 2)
    splits = [f"s{i}" for i in range(6)]
    ids = iter(range(2, 100))
    for count in (4, 1, 3):
        keep = list(table.workers[:count])
        workers = keep + [next(ids) for _ in range(count - len(keep))]
        target = table.rescaled(workers)
        groups, moved_splits = table.group_moves(target), table.split_moves(target, splits)
        table = table.applied(groups, moved_splits, splits)
        table = Placement(
            table.version, tuple(sorted(workers)), table.group_owner, table.split_owner
        )
        counts = Counter(table.group_owner)
        assert sorted(counts) == sorted(workers)
        assert max(counts.values()) - min(counts.values()) <= 1
        assert set(table.split_owner) <= set(workers)


def test_balance_needs_a_worker() -> None:
    with pytest.raises(ValueError, match=r"^a job needs at least one worker$"):
        Placement.initial(4, 1, 2).rescaled([])


def test_balance_is_deterministic() -> None:
    owner = [random.Random(7).randrange(3) for _ in range(50)]
    assert balance(owner, [0, 1, 2, 3]) == balance(owner, [3, 2, 1, 0])
