"""The synthetic clickstream: determinism, split independence, skew, the oracle."""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

import anyio
import numpy as np
import pytest
from shoal.runtime._clickstream import BASE_TS, ClickstreamSource, _Tables, clickstream_oracle
from shoal.runtime._sources import Source

# Every async test here runs on asyncio and on uvloop (tests/conftest.py's anyio_backend).
pytestmark = pytest.mark.anyio


Event = tuple[int, str, int]


async def read_split(
    source: ClickstreamSource, split: str, rng: random.Random
) -> list[tuple[int, Event]]:
    out: list[tuple[int, Event]] = []
    reader = source.open_split(split)
    while (batch := await reader.read_batch(rng.choice([1, 3, 50, 700, 5000]))) is not None:
        assert batch.errors == []
        out.extend(zip(batch.offsets, batch.values, strict=True))
        assert batch.position == batch.offsets[-1] + 1
        if rng.random() < 0.2:
            await reader.aclose()
            reader = source.open_split(split, batch.position)
    await reader.aclose()
    return out


async def read_all(source: ClickstreamSource, seed: int) -> list[tuple[int, Event]]:
    rng = random.Random(seed)
    splits = list(source.splits())
    rng.shuffle(splits)
    out: list[tuple[int, Event]] = []
    for split in splits:
        out.extend(await read_split(source, split, rng))
    return sorted(out)


SMALL: dict[str, Any] = {"events": 20_000, "users": 500, "pages": 50, "chunk": 1000}


@pytest.mark.parametrize("seed", [0, 1])
async def test_splits_in_any_order_with_resumes_equal_iter_all(seed: int) -> None:
    source = ClickstreamSource(**SMALL, splits=7, seed=5)
    assert isinstance(source, Source)
    assert source.bounded
    assert list(source.splits()) == [f"clickstream:{i}" for i in range(7)]
    read = await read_all(source, seed)
    expected = list(source.iter_all())
    assert [offset for offset, _ in read] == list(range(SMALL["events"]))
    assert [event for _, event in read] == expected


def test_events_are_well_formed_and_deterministic() -> None:
    events = list(ClickstreamSource(**SMALL, seed=3).iter_all())
    assert events == list(ClickstreamSource(**SMALL, seed=3).iter_all())
    assert events != list(ClickstreamSource(**SMALL, seed=4).iter_all())
    assert [ts for _, _, ts in events] == list(range(BASE_TS, BASE_TS + SMALL["events"]))
    assert all(0 <= user < SMALL["users"] for user, _, _ in events)
    assert all(re.fullmatch(r"/p/00[0-4]\d", page) for _, page, _ in events)
    assert len({page for _, page, _ in events}) == SMALL["pages"]


def test_events_do_not_depend_on_splits_and_shorter_is_a_prefix() -> None:
    reference = list(ClickstreamSource(**SMALL, splits=1).iter_all())
    assert list(ClickstreamSource(**SMALL, splits=13).iter_all()) == reference
    shorter = {**SMALL, "events": 12_345}
    assert list(ClickstreamSource(**shorter, splits=4).iter_all()) == reference[:12_345]


async def test_split_ranges_cover_the_global_index_contiguously() -> None:
    source = ClickstreamSource(events=10, splits=4, chunk=3)
    ranges = [source.split_range(s) for s in source.splits()]
    assert ranges == [(0, 2), (2, 5), (5, 7), (7, 10)]
    reader = source.open_split("clickstream:1", 3)
    batch = await reader.read_batch(100)
    assert batch is not None
    assert batch.offsets == [3, 4]
    assert batch.position == 5
    assert await reader.read_batch(100) is None


async def test_more_splits_than_events() -> None:
    source = ClickstreamSource(events=3, splits=5, users=10, pages=2)
    read = await read_all(source, 0)
    assert [event for _, event in read] == list(source.iter_all())
    assert len(read) == 3


def test_users_are_zipf_skewed_and_permuted() -> None:
    source = ClickstreamSource(events=50_000, users=5_000, seed=1)
    counts = Counter(user for user, _, _ in source.iter_all())
    ranked = counts.most_common()
    median = sorted(counts.values())[len(counts) // 2]
    assert ranked[0][1] > 100 * median
    # The hottest users are spread over the id space, not 0, 1, 2, ...
    assert [user for user, _ in ranked[:5]] != [0, 1, 2, 3, 4]
    uniform = Counter(
        u for u, _, _ in ClickstreamSource(events=50_000, users=50, zipf_s=0).iter_all()
    )
    assert max(uniform.values()) < 1.5 * min(uniform.values())


@pytest.mark.parametrize(("users", "zipf_s"), [(1, 1.1), (7, 0.0), (5_000, 1.1), (3_000_000, 1.3)])
def test_guided_inverse_cdf_equals_searchsorted(users: int, zipf_s: float) -> None:
    tables = _Tables(0, users, 3, zipf_s)
    rng = np.random.default_rng(users)
    # Draws are in [0, 1): include the cdf's own values (ties) and both ends.
    edges = tables.cdf[:-1][:1000]
    u = np.concatenate([rng.random(20_000), edges[edges < 1.0], [0.0, np.nextafter(1.0, 0)]])
    expected = np.searchsorted(tables.cdf[:-1], u, side="right")
    assert expected.max() <= users - 1
    assert np.array_equal(tables.ranks(u), expected)


@pytest.mark.parametrize(
    ("count", "users", "zipf_s", "chunk"),
    [(5_000, 300, 1.1, 700), (5_000, 3, 0.0, 5_000), (1_234, 5_000, 0.5, 100), (1, 10, 1.1, 64)],
)
def test_oracle_matches_a_naive_recomputation(
    count: int, users: int, zipf_s: float, chunk: int
) -> None:
    source = ClickstreamSource(
        events=count, users=users, pages=20, splits=3, seed=9, chunk=chunk, zipf_s=zipf_s
    )
    events = list(source.iter_all())
    random.Random(0).shuffle(events)  # "last" must not depend on the order
    naive: dict[int, list[Event]] = {}
    for event in events:
        naive.setdefault(event[0], []).append(event)
    expected = {
        user: (len(evs), max(evs, key=lambda e: e[2])[1], max(e[2] for e in evs))
        for user, evs in naive.items()
    }
    assert clickstream_oracle(source) == expected
    assert sum(c for c, _, _ in expected.values()) == count


async def test_rate_caps_batches_and_keeps_the_events() -> None:
    paced = ClickstreamSource(events=40, users=10, splits=2, rate=2_000.0)
    reader = paced.open_split("clickstream:0")
    sizes = []
    values = []
    with anyio.fail_after(5):
        while (batch := await reader.read_batch(1000)) is not None:
            sizes.append(len(batch.values))
            values.extend(batch.values)
    # 1000 events/s per split: a batch holds at most 50 ms of events.
    assert max(sizes) <= 50
    assert values == list(ClickstreamSource(events=40, users=10).iter_all())[:20]


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"^ClickstreamSource: users must be >= 1; got 0$"):
        ClickstreamSource(users=0)
    with pytest.raises(ValueError, match=r"^ClickstreamSource: events must be >= 0; got -1$"):
        ClickstreamSource(events=-1)
    with pytest.raises(TypeError, match=r"^ClickstreamSource: splits must be an int; got float$"):
        ClickstreamSource(splits=2.0)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^ClickstreamSource: zipf_s must be a finite float >= 0; got -1.0$"
    ):
        ClickstreamSource(zipf_s=-1.0)
    with pytest.raises(
        ValueError, match=r"^ClickstreamSource: rate must be a finite float > 0 or None; got 0$"
    ):
        ClickstreamSource(rate=0)
    source = ClickstreamSource(events=10, splits=2)
    with pytest.raises(
        ValueError,
        match=r"^ClickstreamSource: unknown split 'x'; this source's splits are "
        r"'clickstream:0', 'clickstream:1'$",
    ):
        source.open_split("x")
    with pytest.raises(
        ValueError, match=r"^ClickstreamSource: position 2 is outside the split \[5, 10\]$"
    ):
        source.open_split("clickstream:1", 2)
