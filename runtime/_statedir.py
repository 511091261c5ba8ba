"""Who owns a state directory: a small manifest, so a run never applies its input twice.

A state directory holds one job's state. The first run writes ``shoal-state.json`` into it
(the job's name, a run id, when it started, where its checkpoints go); a later run that finds a
manifest refuses the directory instead of applying its input on top of the state already
there, unless it *resumes* (``resume=True``, ``shoal run --resume``): then it restores the
latest complete checkpoint recorded there and goes on from its source positions.

While a run uses the directory it holds an exclusive lock on ``shoal-state.lock`` (``flock``:
released by the kernel when the process exits, even by ``kill -9``), so two runs never share
it, resuming or not.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from ._exceptions import StateDirectoryInUseError

__all__ = (
    "MANIFEST_NAME",
    "StateClaim",
    "StateManifest",
    "claim_state_dir",
    "hold_as_worker",
    "read_manifest",
    "under_state_dir",
)

MANIFEST_NAME = "shoal-state.json"
LOCK_NAME = "shoal-state.lock"
# Held shared by every worker process while it lives: its driver's lock goes with the driver,
# and the workers of a driver killed with kill -9 take a moment to notice and exit.
WORKERS_LOCK_NAME = "shoal-state.workers.lock"
MANIFEST_FORMAT = 1


@dataclass(frozen=True, slots=True)
class StateManifest:
    """What a state directory records about the job that owns it."""

    format: int
    job: str
    run_id: str
    created: str  # ISO 8601, UTC
    checkpoint_dir: str | None = None  # where its checkpoints go (None: not recorded)
    runs: int = 1  # runs so far: the first and every resume


def under_state_dir(path: str | os.PathLike[str], state_dir: str | os.PathLike[str]) -> str:
    """Where a path a run names is: URLs and absolute paths as they are, relative paths under
    the run's state directory (never its working directory: a state directory is resumed
    from anywhere, and a copy of it is whole)."""
    text = os.fspath(path)
    if "://" in text or Path(text).is_absolute():
        return text
    return str(Path(state_dir) / text)


def read_manifest(directory: Path) -> StateManifest | None:
    """The manifest of ``directory``, or None if it has none."""
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        return None
    checkpoint_dir = data.get("checkpoint_dir")
    return StateManifest(
        format=int(data.get("format", 0)),
        job=str(data.get("job", "?")),
        run_id=str(data.get("run_id", "?")),
        created=str(data.get("created", "?")),
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
        runs=int(data.get("runs", 1)),
    )


class StateClaim:
    """A run's hold on its state directory: the manifest, and the lock (see :meth:`release`)."""

    def __init__(self, manifest: StateManifest, lock_fd: int, resumed: bool) -> None:
        self.manifest = manifest
        self.resumed = resumed
        self._fd: int | None = lock_fd

    def release(self) -> None:
        """Unlock the directory (idempotent); the process exiting does it too."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _try_lock(directory: Path) -> tuple[int, bool]:
    """Open the directory's lock file and try to lock it; (its fd, whether this process
    holds it now: then the file names this process's pid)."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return fd, False
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, True


def _lock(directory: Path) -> int:
    fd, locked = _try_lock(directory)
    if not locked:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StateDirectoryInUseError(
            f"state directory {str(directory)!r} is in use by a running job (pid {holder}); "
            "wait for it to end or stop it, or pass another state directory"
        )
    try:
        _check_no_workers(directory)
    except BaseException:
        os.close(fd)
        raise
    return fd


def hold_after_run(directory: Path) -> StateClaim | None:
    """Take the directory's lock again once a run has released it, for as long as its caller
    still reads the state (``shoal run``'s checks): a second run into the directory meanwhile
    is told it is in use, not that it may resume. None if another process took it first."""
    fd, locked = _try_lock(directory)
    if not locked:
        os.close(fd)
        return None
    manifest = read_manifest(directory)
    assert manifest is not None  # the run wrote it
    return StateClaim(manifest, fd, resumed=False)


def _check_no_workers(directory: Path) -> None:
    fd = os.open(directory / WORKERS_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StateDirectoryInUseError(
            f"state directory {str(directory)!r} is still in use by worker processes of an "
            "earlier run whose driver is gone (they notice within seconds and exit); try "
            "again in a few seconds"
        ) from None
    finally:
        os.close(fd)


_held: list[int] = []


def hold_as_worker(directory: Path) -> None:
    """A worker process shares the state directory for as long as it lives (the kernel drops
    the lock when it exits, however): no run can claim the directory meanwhile."""
    fd = os.open(directory / WORKERS_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _held.append(fd)


def claim_state_dir(
    directory: Path, job: str, *, resume: bool = False, checkpoint_dir: str | None = None
) -> StateClaim:
    """Make ``directory`` (created if missing) the state directory of a run of ``job``.

    A new run needs a directory without a manifest; ``resume=True`` needs one with the
    manifest of the same job (``checkpoint_dir``: where this run's checkpoints go; when
    resuming, None means where the earlier run's went).

    Raises:
        StateDirectoryInUseError: the directory is locked by a running job; or it holds a
            run's state and ``resume`` is False; or ``resume`` is True and it holds no state,
            or another job's.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = _lock(directory)
    try:
        previous = read_manifest(directory)
        if resume:
            manifest = _resumed(directory, job, previous, checkpoint_dir)
        else:
            manifest = _fresh(directory, job, previous, checkpoint_dir)
        _write(directory, manifest)
    except BaseException:
        os.close(fd)
        raise
    return StateClaim(manifest, fd, resumed=resume)


def _fresh(
    directory: Path, job: str, previous: StateManifest | None, checkpoint_dir: str | None
) -> StateManifest:
    if previous is not None:
        raise StateDirectoryInUseError(
            f"state directory {str(directory)!r} already holds the state of job "
            f"{previous.job!r} (run {previous.run_id}, started {previous.created}); running "
            "into it again would apply the input twice. Pass a fresh state directory (or "
            "delete this one), or resume the job from its last checkpoint (resume=True, "
            "shoal run --resume)"
        )
    return StateManifest(
        format=MANIFEST_FORMAT,
        job=job,
        run_id=uuid.uuid4().hex[:12],
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        checkpoint_dir=checkpoint_dir,
    )


def _resumed(
    directory: Path, job: str, previous: StateManifest | None, checkpoint_dir: str | None
) -> StateManifest:
    if previous is None:
        raise StateDirectoryInUseError(
            f"nothing to resume in {str(directory)!r}: it holds no shoal state (no "
            f"{MANIFEST_NAME}); run without resume to start the job afresh there"
        )
    if previous.job != job:
        raise StateDirectoryInUseError(
            f"state directory {str(directory)!r} holds the state of job {previous.job!r}, "
            f"not {job!r}: a job resumes only its own state"
        )
    return replace(
        previous,
        run_id=uuid.uuid4().hex[:12],
        checkpoint_dir=checkpoint_dir or previous.checkpoint_dir,
        runs=previous.runs + 1,
    )


def _write(directory: Path, manifest: StateManifest) -> None:
    temporary = directory / f".{MANIFEST_NAME}.{os.getpid()}"
    temporary.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    os.replace(temporary, directory / MANIFEST_NAME)  # atomic: a manifest is whole or absent
