"""The runtime's exceptions."""

from __future__ import annotations

__all__ = ("JobError", "ScenarioError", "WorkerLostError")


class JobError(Exception):
    """A job could not run to completion."""


class WorkerLostError(JobError):
    """A worker process died while the job was running."""


class ScenarioError(Exception):
    """A scenario file is malformed (missing flow, bad parameters, bad checks)."""
