"""``configure_logging``: where log lines go."""

from __future__ import annotations

import io
import json

import pytest
import structlog
from shoal.runtime._logging import configure_logging


def test_log_lines_go_to_the_stderr_of_the_moment_not_the_one_logging_was_configured_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found under pytest-xdist: one test's captured stderr, bound when it configured logging,
    # was closed when that test ended, and every later test that logged failed with
    # "I/O operation on closed file".
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging("json", "info")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    try:
        structlog.get_logger("shoal.test").info("hello", worker=3)
    finally:
        configure_logging()  # as the runtime leaves it
    line = json.loads(second.getvalue())
    assert (line["event"], line["worker"], line["level"]) == ("hello", 3, "info")


def test_bad_log_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^log format must be 'console' or 'json'; got 'xml'$"):
        configure_logging("xml")
    with pytest.raises(ValueError, match=r"^log level must be one of debug, info, warning"):
        configure_logging("json", "loud")
