"""Flows of the rescaling tests, importable by worker processes (which rebuild them): the
recovery tests' ``stats`` flow over a paced source, so a timeline can act while it runs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
from recovery_flows import records, stats_over
from shoal.runtime import SourceBatch, SplitReader
from shoal.storage import CheckpointStore

from shoal import (
    CollectingSink,
    Flow,
    IterableSource,
    TransactionalJsonlSink,
)


class PacedSource(IterableSource):
    """An IterableSource that reads at most ``rate`` records per second in total."""

    def __init__(self, items: list[Any], *, splits: int, rate: float) -> None:
        super().__init__(items, splits=splits)
        self._per_split = rate / splits

    def open_split(self, split: str, position: Any | None = None) -> SplitReader:
        return _Paced(super().open_split(split, position), self._per_split)


class _Paced:
    def __init__(self, reader: SplitReader, rate: float) -> None:
        self._reader = reader
        self._rate = rate

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        max_records = min(max_records, 256)
        await anyio.sleep(max_records / self._rate)  # before reading: cancel-safe
        return await self._reader.read_batch(max_records)

    async def aclose(self) -> None:
        await self._reader.aclose()


def paced_stats(
    seed: int = 0,
    n: int = 20_000,
    vocabulary: int = 300,
    splits: int = 4,
    key_groups: int = 16,
    stages: int = 1,
    rate: float = 20_000.0,
    output: str = "",
    collect: CollectingSink | None = None,
) -> Flow:
    """``recovery_flows.stats`` over a :class:`PacedSource` (same oracle); ``collect``: the
    sink to collect the output in (in one loop: a test watches it while the job runs)."""
    source = PacedSource(records(seed, n, vocabulary), splits=splits, rate=rate)
    return stats_over(source, key_groups=key_groups, stages=stages, output=output, collect=collect)


def read_records(p: dict[str, Any], checkpoint_dir: str) -> list[dict[str, Any]]:
    """The records the job read: each split's prefix up to its position in the final
    checkpoint (an IterableSource split ``i`` covers ``[i*n//splits, (i+1)*n//splits)`` and
    its position is the next index)."""
    final = CheckpointStore(checkpoint_dir).latest_complete()
    assert final is not None
    inputs = records(p["seed"], p["n"], p["vocabulary"])
    n, splits = p["n"], p["splits"]
    read: list[dict[str, Any]] = []
    for i in range(splits):
        start = i * n // splits
        position = final.positions.get(f"items:{i}")
        read += inputs[start : start if position is None else int(position)]
    return read


def oracle_of(read: list[dict[str, Any]], stages: int) -> dict[str, dict[Any, Any]]:
    out: dict[str, dict[Any, Any]] = {"count": {}, "sum": {}, "min": {}, "max": {}}
    for record in read:
        word, n = record["word"], record["n"]
        out["count"][word] = out["count"].get(word, 0) + 1
        out["sum"][word] = out["sum"].get(word, 0) + n
        out["min"][word] = min(out["min"].get(word, n), n)
        out["max"][word] = max(out["max"].get(word, n), n)
    if stages == 2:
        out["per_letter"] = dict(Counter(record["word"][-1] for record in read))
    return out


def check_output_of(read: list[dict[str, Any]], p: dict[str, Any]) -> None:
    """Every published running count exactly once: per key, ``1..n``."""
    key = (lambda r: r["word"][-1]) if p.get("stages", 1) == 2 else (lambda r: r["word"])
    expected = Counter(key(record) for record in read)
    published: dict[str, list[int]] = {}
    for word, count in TransactionalJsonlSink(p["output"]).read():
        published.setdefault(word, []).append(count)
    wrong = {
        k: n for k, n in expected.items() if sorted(published.get(k, [])) != list(range(1, n + 1))
    }
    assert not wrong, f"{len(wrong)} keys' published counts are not 1..n"
    assert set(published) == set(expected)
