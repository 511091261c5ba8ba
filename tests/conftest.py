"""Every in-loop async test runs on the stock asyncio loop and on uvloop; a test that starts
worker processes runs its async body on the stock asyncio loop only.

Tests marked ``pytest.mark.asyncio`` get their loops from the ``pytest_asyncio_loop_factories``
hook (pytest-asyncio >= 1.4); tests marked ``pytest.mark.anyio`` get theirs from the
``anyio_backend`` fixture below. A module must not override either with one loop.

The rule for the loop of a test marked ``processes``: the code under test in such a test runs
mostly in worker processes, and a worker process always runs uvloop where it is installed
(``actors/_process_main.py`` picks it; a test cannot change it). The test's own loop runs only
the driver, so one run covers both loops: the driver on stock asyncio (this loop), the workers
on uvloop. The other pairing, the driver on uvloop in process mode, is what ``shoal run`` does:
the CLI tests run it as a subprocess. A second run of the same test on uvloop would repeat the
workers' half and change only the driver's loop, which every in-loop test already runs on both
loops. A processes test is marked ``pytest.mark.asyncio`` (a fixture's parameters cannot
depend on a marker, so an anyio test always gets both loops). ``tests/test_async_loops.py``
checks both halves of this rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def starts_processes(item: pytest.Item | pytest.Function) -> bool:
    """Whether ``item`` is marked ``processes`` (on the test, its class or its module)."""
    return item.get_closest_marker("processes") is not None


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    uvloop_factory = _uvloop_factory()
    if uvloop_factory is not None and not starts_processes(item):
        factories["uvloop"] = uvloop_factory
    return factories


_ANYIO_BACKENDS = [pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio")]
if _uvloop_factory() is not None:
    _ANYIO_BACKENDS.append(pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"))


@pytest.fixture(params=_ANYIO_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """anyio's pytest plugin: run each ``pytest.mark.anyio`` test on asyncio and on uvloop."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend
