"""Key-partitioned sources: each split is read where its key groups are, nothing crosses."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shoal.runtime._placement import Placement, split_homes
from shoal.runtime._plan import compile_plan

from shoal import CountingSink, Flow, IterableSource, key_group_of, key_partition, run_job

KEYS = 500


def key_of(value: int) -> int:
    return value % KEYS


def records(n: int) -> list[int]:
    return [(i * 7919) % 100_003 for i in range(n)]


def build(n: int = 20_000, splits: int = 4, partitioned: bool = True, key_groups: int = 32) -> Flow:
    """A keyed count over ``records(n)``: its splits partitioned by key or not."""
    flow = Flow("partitioned", num_key_groups=key_groups)
    source = IterableSource(
        records(n),
        splits=splits,
        partition_by=key_of if partitioned else None,
        num_key_groups=key_groups,
    )
    flow.source(source).key_by(key_of).count(name="n").sink(CountingSink())
    return flow


def test_key_partition_is_the_key_groups_range_and_checks_its_arguments() -> None:
    for key in range(200):
        group = key_group_of(key, 64)
        assert key_partition(key, 4, 64) == group * 4 // 64
    assert key_partition("user-1", 1) == 0
    with pytest.raises(ValueError, match="partitions must be an int >= 1; got 0"):
        key_partition(1, 0)
    with pytest.raises(ValueError, match="num_key_groups must be an int from 1"):
        key_partition(1, 2, 0)


def test_an_iterable_source_partitioned_by_key_holds_each_keys_records_in_one_split() -> None:
    items = records(5_000)
    source = IterableSource(items, splits=3, partition_by=key_of, num_key_groups=16)
    assert source.key_partitioned
    assert not IterableSource(items, splits=3).key_partitioned
    seen: list[int] = []
    for index, split in enumerate(source.splits()):
        start, end = source._ranges[index]
        assert end is not None
        part = list(source._items)[start:end]  # type: ignore[call-overload]
        assert all(key_partition(key_of(v), 3, 16) == index for v in part)
        assert part == [v for v in items if key_partition(key_of(v), 3, 16) == index]
        seen += part
        assert split == f"items:{index}"
    assert Counter(seen) == Counter(items)
    with pytest.raises(TypeError, match="partition_by needs a Sequence"):
        IterableSource(iter(items), partition_by=key_of)
    with pytest.raises(TypeError, match="partition_by must be a function"):
        IterableSource(items, partition_by=3)  # type: ignore[arg-type]


@given(
    groups=st.integers(1, 200),
    splits=st.integers(1, 12),
    workers=st.integers(1, 6),
    after=st.lists(st.integers(0, 9), min_size=1, max_size=6, unique=True),
)
def test_a_partitioned_split_is_placed_with_its_key_groups_and_follows_them(
    groups: int, splits: int, workers: int, after: list[int]
) -> None:
    plan = compile_plan(build(n=0, splits=splits, key_groups=groups))
    homes = split_homes(plan)
    assert len(homes) == splits
    for index, home in enumerate(homes):
        in_range = [g for g in range(groups) if g * splits // groups == index]
        assert (home is None) == (not in_range)
        if home is not None:
            assert home in in_range
    table = Placement.initial(groups, splits, workers, homes)
    for index, home in enumerate(homes):
        if home is not None:
            assert table.split_owner[index] == table.group_owner[home]
            if splits % workers == 0:  # each split's range lies in one worker's range
                owners = {
                    table.group_owner[g] for g in range(groups) if g * splits // groups == index
                }
                assert owners == {table.split_owner[index]}
    moved = table.rescaled(after, homes)
    for index, home in enumerate(homes):
        if home is not None:
            assert moved.split_owner[index] == moved.group_owner[home]
    plain = split_homes(compile_plan(build(n=0, splits=splits, partitioned=False)))
    assert plain == (None,) * splits


def _counts(result: Any) -> dict[int, int]:
    return {int(k): int(v) for k, v in result.read_state("n", "value").items()}


@pytest.mark.processes
@pytest.mark.asyncio
async def test_with_worker_processes_no_record_of_a_partitioned_source_crosses(
    tmp_path: Path,
) -> None:
    expected = Counter(key_of(v) for v in records(20_000))
    crossing = {}
    for partitioned in (True, False):
        with await run_job(
            f"{__file__}:build",
            params={"partitioned": partitioned},
            workers=2,
            processes=True,
            state_dir=tmp_path / str(partitioned),
            checkpoint_interval=0.2,
        ) as result:
            assert _counts(result) == expected
            crossing[partitioned] = sum(int(r["records_crossing"]) for r in result.reports)
    assert crossing[True] == 0
    assert crossing[False] > 5_000  # about half of 20,000 without the partitioning
