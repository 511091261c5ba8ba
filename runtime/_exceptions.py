"""The runtime's exceptions."""

from __future__ import annotations

__all__ = (
    "HarnessError",
    "InputClosedError",
    "JobError",
    "JobStoppedError",
    "UnknownOperatorError",
    "LateRecordError",
    "UnreadOutputError",
    "ScenarioError",
    "StateDirectoryInUseError",
    "VirtualClockError",
    "WorkerFailedError",
    "WorkerLostError",
)


class JobError(Exception):
    """A job could not run to completion."""


class JobStoppedError(JobError):
    """The job has ended (or is stopping): it takes no more records, queries or actions."""


class InputClosedError(JobStoppedError):
    """A record was sent to a push source whose input was closed (``close_input``)."""


class UnreadOutputError(Exception):
    """A process function sent a value to an output that nothing reads: a side output no
    ``side_output(tag)`` reads, or the main output of a stream only read for its side outputs."""


class UnknownOperatorError(LookupError):
    """A query named an operator that the flow has no keyed operator of."""


class WorkerLostError(JobError):
    """A worker process died while the job was running, without saying why."""


class WorkerFailedError(JobError):
    """A worker process failed while the job was running; carries the worker's own exception.

    Attributes:
        worker: the worker index; ``pid`` its process id.
        error_type: the class name of the exception in the worker (e.g. ``"OSError"``).
        error_message: that exception's text.
        actor: the failing actor's name, when an actor's failure ended the worker.
        operator: the keyed operator of that actor, when it was a key-group actor.
        key_group: its key group, likewise.
        remote_traceback: the formatted traceback from the worker process.
    """

    def __init__(
        self,
        message: str,
        *,
        worker: int,
        pid: int,
        error_type: str,
        error_message: str,
        actor: str | None = None,
        operator: str | None = None,
        key_group: int | None = None,
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.worker = worker
        self.pid = pid
        self.error_type = error_type
        self.error_message = error_message
        self.actor = actor
        self.operator = operator
        self.key_group = key_group
        self.remote_traceback = remote_traceback


class StateDirectoryInUseError(ValueError):
    """The state directory already holds a job's state; a new run would apply its input twice."""


class ScenarioError(Exception):
    """A scenario file is malformed (missing flow, bad parameters, bad checks)."""


class LateRecordError(Exception):
    """A record arrived after every window it belongs to could no longer fire (a dead letter)."""


class VirtualClockError(RuntimeError):
    """A VirtualClock was used where it cannot work (installed twice, on uvloop, not installed)."""


class HarnessError(ValueError):
    """A test harness (``shoal.testing``) was used in a way it does not support."""
