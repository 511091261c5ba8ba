"""The parts of benchmarks/bytewax_compare.py that need no Bytewax: the shared generator and checks.

Nothing here installs or imports Bytewax; the benchmark itself does that, in its own virtual
environment, when it is run.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from shoal import ClickstreamSource, clickstream_oracle

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The benchmark's modules, imported as the script sees them (its folder on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _clickstream_events
    import bytewax_compare

    class Modules:
        events: ModuleType = _clickstream_events
        compare: ModuleType = bytewax_compare

    return Modules


@pytest.mark.parametrize(
    ("events", "users", "zipf_s", "seed", "chunk"),
    [
        (20_001, 1_000, 1.1, 11, 8192),  # the benchmark's parameters, scaled down
        (5_000, 300, 0.0, 3, 777),  # uniform users, chunks that splits cut through
        (3_000, 50_000, 1.5, 0, 1024),  # more users than events
    ],
)
def test_shared_generator_yields_exactly_the_events_of_clickstream_source(
    bench: Any, events: int, users: int, zipf_s: float, seed: int, chunk: int
) -> None:
    ours = bench.events.ClickstreamEvents(
        events=events, users=users, zipf_s=zipf_s, seed=seed, chunk=chunk
    )
    theirs = ClickstreamSource(
        events=events, users=users, zipf_s=zipf_s, seed=seed, chunk=chunk, splits=8
    )
    assert ours.read(0, events) == list(theirs.iter_all())
    # Split by split, as each engine's source reads them.
    ranges = ours.split_ranges(8)
    assert ranges == [theirs.split_range(split) for split in theirs.splits()]
    pieces = [event for start, end in ranges for event in ours.read(start, end)]
    assert pieces == list(theirs.iter_all())


def test_oracle_counts_each_users_events(bench: Any) -> None:
    generator = bench.events.ClickstreamEvents(events=30_000, users=2_000, seed=11)
    counted = Counter(user for user, _page, _ts in generator.read(0, 30_000))
    assert generator.oracle_counts() == dict(counted)
    source = ClickstreamSource(events=30_000, users=2_000, seed=11)
    assert generator.oracle_counts() == {
        user: n for user, (n, _page, _ts) in clickstream_oracle(source).items()
    }


def test_check_run_accepts_the_oracle_and_names_a_wrong_count(bench: Any) -> None:
    oracle = {1: 3, 2: 1}
    case = ("bytewax", "stateful_map", 1.0, 2)
    bench.compare.check_run(case, {"final": dict(oracle), "records_out": 4}, oracle, 4)
    with pytest.raises(AssertionError, match=r"final counts differ from the oracle for 1 keys"):
        bench.compare.check_run(case, {"final": {1: 3, 2: 2}, "records_out": 4}, oracle, 4)
    with pytest.raises(AssertionError, match=r"final counts differ .* 2: None != 1"):
        bench.compare.check_run(case, {"final": {1: 3}, "records_out": 4}, oracle, 4)
    with pytest.raises(AssertionError, match=r"emitted 3 records, not 4"):
        bench.compare.check_run(case, {"final": dict(oracle), "records_out": 3}, oracle, 4)
    # count_final emits one record per key, not per event.
    final_case = ("bytewax", "count_final", None, 1)
    bench.compare.check_run(final_case, {"final": dict(oracle), "records_out": 2}, oracle, 4)


def test_rounds_alternate_the_engines(bench: Any) -> None:
    args = bench.compare.parse(["--quick", "--workers", "1", "--checkpoint-interval", "off"])
    assert args.events == 200_000
    assert args.repeat == 1
    assert [(engine, op) for engine, op, _interval, _workers in bench.compare.interleave(args)] == [
        ("shoal", "count"),
        ("bytewax", "stateful_map"),
        ("shoal", "process"),
        ("bytewax", "count_final"),
    ]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_bytewax_stays_out_of_shoal_and_shoal_out_of_the_bytewax_job(bench: Any) -> None:
    # The Bytewax side runs in an environment without shoal.
    assert "shoal" not in _imported_modules(BENCHMARKS / "_bytewax_job.py")
    assert "shoal" not in _imported_modules(BENCHMARKS / "_clickstream_events.py")
    # Bytewax is no dependency of shoal: no module of the package imports it.
    root = BENCHMARKS.parent
    for layer in ("src", "runtime", "actors", "storage"):
        for module in (root / layer).rglob("*.py"):
            assert "bytewax" not in _imported_modules(module), module
    # Its environment is made outside the source tree.
    assert root not in bench.compare.default_venv("0.21.1").parents
