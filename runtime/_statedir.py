"""Who owns a state directory: a small manifest, so a run never applies its input twice.

A state directory holds one job's state. The first run writes ``shoal-state.json`` into it
(the job's name, a run id, when it started); a later run that finds a manifest refuses the
directory instead of applying its input on top of the state already there. The manifest is
versioned (``format``) so that checkpoints can be recorded in it and a run can resume from
them (a later release): resuming is the one way to reuse a state directory.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ._exceptions import StateDirectoryInUseError

__all__ = ("MANIFEST_NAME", "StateManifest", "claim_state_dir", "read_manifest")

MANIFEST_NAME = "shoal-state.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True, slots=True)
class StateManifest:
    """What a state directory records about the job that owns it."""

    format: int
    job: str
    run_id: str
    created: str  # ISO 8601, UTC


def read_manifest(directory: Path) -> StateManifest | None:
    """The manifest of ``directory``, or None if it has none."""
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        return None
    return StateManifest(
        format=int(data.get("format", 0)),
        job=str(data.get("job", "?")),
        run_id=str(data.get("run_id", "?")),
        created=str(data.get("created", "?")),
    )


def claim_state_dir(directory: Path, job: str) -> StateManifest:
    """Make ``directory`` (created if missing) the state directory of a new run of ``job``.

    Raises:
        StateDirectoryInUseError: the directory already holds a run's state.
    """
    directory.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(directory)
    if previous is not None:
        raise StateDirectoryInUseError(
            f"state directory {str(directory)!r} already holds the state of job "
            f"{previous.job!r} (run {previous.run_id}, started {previous.created}); running "
            "into it again would apply the input twice. Pass a fresh state directory (or "
            "delete this one); resuming a job from its checkpoints is not supported yet"
        )
    manifest = StateManifest(
        format=MANIFEST_FORMAT,
        job=job,
        run_id=uuid.uuid4().hex[:12],
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    temporary = directory / f".{MANIFEST_NAME}.{os.getpid()}"
    temporary.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    os.replace(temporary, directory / MANIFEST_NAME)  # atomic: a manifest is whole or absent
    return manifest
