"""shoal's loggers: the host's structlog configuration if it has one, else quiet defaults.

shoal never calls ``structlog.configure`` in a host process (issue 10, item 20): that is global
state, and it is the application's. A host that has configured structlog gets shoal's events
through its own configuration. A host that has not (a script calling ``shoal.run``) would get
structlog's built-in defaults, which print every level to stdout; shoal's loggers then use a
configuration of their own instead, local to these loggers: warnings and up, to stderr.
Worker processes and the CLI configure structlog for themselves (they own their process).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ("get_logger",)


def _quiet(name: str) -> Any:
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_name=name,
    )


class _Logger:
    """A lazy logger: decides at each use (or bind) between the host's config and the quiet one."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def _resolve(self) -> Any:
        if structlog.is_configured():
            return structlog.get_logger(self._name)
        return _quiet(self._name)

    def bind(self, **values: Any) -> Any:
        return self._resolve().bind(**values)

    def __getattr__(self, method: str) -> Any:
        return getattr(self._resolve(), method)


def get_logger(name: str) -> Any:
    """A structlog logger named ``name`` that never needs (or makes) a global configuration."""
    return _Logger(name)
