"""Fixtures of the actor kernel's tests (the loops every async test runs on: tests/conftest.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def mesh_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (tmp_path can exceed the ~100-byte path limit)."""
    path = Path(tempfile.mkdtemp(prefix="shoal-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
