"""Every async test in the suite runs on the stock asyncio loop and on uvloop.

Tests marked ``pytest.mark.asyncio`` get both loops from the ``pytest_asyncio_loop_factories``
hook (pytest-asyncio >= 1.4); tests marked ``pytest.mark.anyio`` get both from the
``anyio_backend`` fixture below. A module must not override either with one loop.
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


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    uvloop_factory = _uvloop_factory()
    if uvloop_factory is not None:
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
