"""Names of the runtime's actors, derived from the plan: every process computes the same ones."""

from __future__ import annotations

__all__ = (
    "JOB_ACTOR",
    "checkpoint_writer_name",
    "controller_name",
    "exchange_name",
    "flow_control_name",
    "source_actor_name",
)

#: The driver's job supervisor.
JOB_ACTOR = "job"


def controller_name(worker: int) -> str:
    return f"ctl:{worker}"


def source_actor_name(split: str) -> str:
    return f"src:{split}"


def exchange_name(worker: int, stage: int) -> str:
    """The exchange of keyed ``stage`` on ``worker``: one per stage, so stages never share one
    queue (see ``_credits.py``)."""
    return f"xchg:{worker}:{stage}"


def flow_control_name(worker: int) -> str:
    return f"credits:{worker}"


def checkpoint_writer_name(worker: int) -> str:
    return f"ckpt-writer:{worker}"
