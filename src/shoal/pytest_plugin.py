"""shoal's pytest plugin (registered by the ``pytest11`` entry point): fixtures for testing
stateful stream logic.

* ``virtual_clock``: a :class:`~shoal.testing.VirtualClock` with autojump, installed in the
  test's event loop for the test's duration (an async fixture: pytest-asyncio, strict mode
  included). asyncio's own loop only: on uvloop it raises ``VirtualClockError`` (see
  docs/guides/testing.md).
* ``keyed_harness``: a factory, ``keyed_harness(flow_or_function, **options)`` ->
  :class:`~shoal.testing.KeyedHarness` (a Flow: ``KeyedHarness(flow, ...)``; a process
  function: ``KeyedHarness.for_function(fn, ...)``).
* ``shoal_state_dir``: an empty state directory in the test's ``tmp_path``.
* ``shoal_test_job``: :func:`~shoal.testing.open_test_job` (``async with
  shoal_test_job(flow, workers=2) as job:``), for a test that takes its tools as fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.runtime._dataflow import Flow
from shoal.runtime._harness import KeyedHarness
from shoal.runtime._test_job import open_test_job
from shoal.runtime._virtual_clock import VirtualClock

__all__ = ("keyed_harness", "shoal_state_dir", "shoal_test_job", "virtual_clock")


def _make_harness(target: Any, **options: Any) -> KeyedHarness:
    if isinstance(target, Flow):
        return KeyedHarness(target, **options)
    return KeyedHarness.for_function(target, **options)


@pytest.fixture
def keyed_harness() -> Callable[..., KeyedHarness]:
    """``keyed_harness(flow, operator=None, ...)`` or ``keyed_harness(fn, states=...,
    on_timer=..., ...)``: a new :class:`~shoal.testing.KeyedHarness`."""
    return _make_harness


@pytest.fixture
def shoal_state_dir(tmp_path: Path) -> Path:
    """An empty directory for a job's state (``run_job(state_dir=...)``), removed with
    ``tmp_path``."""
    path = tmp_path / "shoal-state"
    path.mkdir()
    return path


@pytest.fixture
def shoal_test_job() -> Callable[..., Any]:
    """``shoal_test_job(flow, **options)``: :func:`~shoal.testing.open_test_job`, an async
    context manager yielding a :class:`~shoal.testing.TestJob` (workers in the test's loop,
    a temporary state directory, checkpoints on, virtual time on asyncio)."""
    return open_test_job


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is in shoal's test extra

    @pytest.fixture
    def virtual_clock() -> VirtualClock:
        """Needs pytest-asyncio (an async fixture installs the clock in the test's loop)."""
        raise RuntimeError(
            "the virtual_clock fixture needs pytest-asyncio: pip install pytest-asyncio "
            "(or use shoal.testing.run_virtual in a plain test)"
        )

else:

    @pytest_asyncio.fixture
    async def virtual_clock() -> AsyncIterator[VirtualClock]:  # type: ignore[misc]
        """A ``VirtualClock(autojump=True)`` installed in the test's loop (asyncio's own;
        ``VirtualClockError`` on uvloop), uninstalled after the test."""
        with VirtualClock(autojump=True) as clock:
            yield clock
