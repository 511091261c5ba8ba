"""The suite's promise: every async test runs on the stock asyncio loop and on uvloop."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

# Collects the suite in a fresh interpreter and writes, for every test item, its node id and
# whether the test function is a coroutine function (anyio and pytest-asyncio tests both are).
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
            self.items.append([item.nodeid, inspect.iscoroutinefunction(fn)])

code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", sys.argv[1]],
                   plugins=[Recorder()])
with open(sys.argv[2], "w") as out:
    json.dump(Recorder.items, out)
sys.exit(code)
"""


def test_every_async_test_runs_on_asyncio_and_on_uvloop(tmp_path: Path) -> None:
    pytest.importorskip("uvloop")  # a dependency wherever it builds (not on Windows)
    out = tmp_path / "items.json"
    subprocess.run(
        [sys.executable, "-c", _COLLECT, str(TESTS), str(out)],
        check=True,
        capture_output=True,
        cwd=TESTS.parent,
    )
    items: list[tuple[str, bool]] = json.loads(out.read_text())
    loops: dict[str, set[str]] = {}
    for nodeid, is_async in items:
        if not is_async:
            continue
        # The loop is one dash-separated part of the parametrization id: "[asyncio-3]".
        base, _, ids = nodeid.partition("[")
        parts = [p for p in re.split(r"[-\]]", ids) if p]
        rest = "-".join(p for p in parts if p not in ("asyncio", "uvloop"))
        loops.setdefault(f"{base}[{rest}]", set()).update(set(parts) & {"asyncio", "uvloop"})
    assert loops, "no async tests collected"
    one_loop = sorted(name for name, seen in loops.items() if seen != {"asyncio", "uvloop"})
    assert one_loop == []
