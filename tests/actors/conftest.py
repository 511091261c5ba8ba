"""Every async actor test runs on the stock asyncio loop and on uvloop."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture
def mesh_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (tmp_path can exceed the ~100-byte path limit)."""
    path = Path(tempfile.mkdtemp(prefix="shoal-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
