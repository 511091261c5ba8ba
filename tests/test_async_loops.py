"""The suite's promise: every in-loop async test runs on the stock asyncio loop and on uvloop;
a test that starts worker processes (marked ``processes``) runs its driver on the stock asyncio
loop, its workers on uvloop (the rule is in tests/conftest.py's docstring)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

# Collects the suite in a fresh interpreter and writes, for every test item, its node id,
# whether the test function is a coroutine function (anyio and pytest-asyncio tests both are)
# and whether it is marked ``processes``.
_COLLECT = """
import inspect, json, sys
import pytest

class Recorder:
    items = []

    def pytest_collection_finish(self, session):
        for item in session.items:
            fn = getattr(item, "function", None)
            inner = getattr(fn, "hypothesis", None)
            if inner is not None:
                fn = inner.inner_test
            processes = item.get_closest_marker("processes") is not None
            self.items.append([item.nodeid, inspect.iscoroutinefunction(fn), processes])

code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", sys.argv[1]],
                   plugins=[Recorder()])
with open(sys.argv[2], "w") as out:
    json.dump(Recorder.items, out)
sys.exit(code)
"""


def test_every_in_loop_async_test_runs_on_both_loops_and_a_processes_test_on_one(
    tmp_path: Path,
) -> None:
    pytest.importorskip("uvloop")  # a dependency wherever it builds (not on Windows)
    out = tmp_path / "items.json"
    subprocess.run(
        [sys.executable, "-c", _COLLECT, str(TESTS), str(out)],
        check=True,
        capture_output=True,
        cwd=TESTS.parent,
    )
    items: list[tuple[str, bool, bool]] = json.loads(out.read_text())
    loops: dict[str, list[str]] = {}
    runs: dict[str, int] = {}
    processes: set[str] = set()
    for nodeid, is_async, marked in items:
        if not is_async:
            continue
        # The loop is one dash-separated part of the parametrization id: "[asyncio-3]"; a
        # single loop's id is hidden (pytest-asyncio), an anyio backend's is not.
        base, _, ids = nodeid.partition("[")
        parts = [p for p in re.split(r"[-\]]", ids) if p]
        rest = "-".join(p for p in parts if p not in ("asyncio", "uvloop"))
        name = f"{base}[{rest}]"
        loops.setdefault(name, []).extend(p for p in parts if p in ("asyncio", "uvloop"))
        runs[name] = runs.get(name, 0) + 1
        if marked:
            processes.add(name)
    assert loops, "no async tests collected"
    assert processes, "no processes test collected"
    in_loop_on_one = sorted(
        name
        for name, seen in loops.items()
        if name not in processes and sorted(seen) != ["asyncio", "uvloop"]
    )
    assert in_loop_on_one == []
    # One run each, on asyncio: a hidden id (pytest-asyncio), or "asyncio" (an anyio backend).
    processes_on_more = sorted(
        name for name in processes if runs[name] != 1 or loops[name] not in ([], ["asyncio"])
    )
    assert processes_on_more == []


@pytest.mark.processes
@pytest.mark.asyncio
async def test_a_processes_test_runs_its_driver_on_the_stock_asyncio_loop() -> None:
    loop = asyncio.get_running_loop()
    assert type(loop).__module__.startswith("asyncio"), type(loop)
