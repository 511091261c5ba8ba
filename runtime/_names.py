"""Names of the runtime's actors, derived from the plan: every process computes the same ones."""

from __future__ import annotations

__all__ = (
    "DRIVER_ID",
    "JOB_ACTOR",
    "checkpoint_writer_name",
    "controller_name",
    "exchange_name",
    "flow_control_name",
    "handoffs_name",
    "shipments_name",
    "shipper_name",
    "source_actor_name",
)

#: The driver's job supervisor.
JOB_ACTOR = "job"

#: The driver's worker id in a job's mesh: apart from the workers' ids (0, 1, ... and the ids a
#: rescale adds), so a worker started later can never collide with it.
DRIVER_ID = 65_535


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


def shipper_name(worker: int) -> str:
    """The actor copying the environments of key groups leaving ``worker`` to their new
    owners (workers with state directories of their own; see ``_ship.py``)."""
    return f"shipper:{worker}"


def shipments_name(worker: int) -> str:
    """The actor writing the environment copies shipped to ``worker``."""
    return f"shipments:{worker}"


def handoffs_name(worker: int) -> str:
    """The actor taking the key groups and splits handed over to ``worker`` (live
    migration): apart from the controller, so a handoff never waits behind control work."""
    return f"handoffs:{worker}"


def checkpoint_writer_name(worker: int) -> str:
    return f"ckpt-writer:{worker}"
