"""Per-worker state directories: each worker keeps its key groups' LMDB environments apart,
as it would on a host of its own (``run_job(per_worker_state=True)``,
``shoal run --per-worker-state``).

Layout: ``<state_dir>/workers/w00003/<operator>/kg-00017/`` for worker 3's environments (the
same layout as a shared state directory, one level down). A key group that moves between
workers is shipped (``_ship.py``): pre-copied while it runs, then the changes since at cutover;
its old owner deletes its copy once the handoff is sent.

Before every attempt the driver tidies the directories (no worker runs then): a worker keeps
only the environments of the key groups it owns in the attempt's placement (recovery then
finds them locally when the epoch fits) and half-shipped copies are dropped; a worker id that
is not part of the attempt loses its directory. So after a job each key group's environment
is in exactly one worker's directory, which is where :class:`WorkerDirsBackend` reads it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from shoal.storage import KeyGroupStore, LmdbBackend, MemoryBackend, StateSpec, StorageError

from ._placement import Placement
from ._plan import Plan

__all__ = ("WORKERS_DIR", "WorkerDirsBackend", "tidy_worker_state", "worker_state_root")

WORKERS_DIR = "workers"


def worker_state_root(state_dir: Path, worker: int) -> Path:
    """Where worker ``worker`` keeps its environments."""
    return state_dir / WORKERS_DIR / f"w{worker:05d}"


def _worker_roots(state_dir: Path) -> dict[int, Path]:
    roots: dict[int, Path] = {}
    base = state_dir / WORKERS_DIR
    if not base.is_dir():
        return roots
    for path in base.iterdir():
        name = path.name
        if path.is_dir() and name.startswith("w") and name[1:].isdigit():
            roots[int(name[1:])] = path
    return roots


def tidy_worker_state(state_dir: Path, plan: Plan, placement: Placement) -> int:
    """Keep in each worker's directory only what it owns in ``placement`` (see the module
    docstring); return how many environments were removed. Call while no worker runs."""
    removed = 0
    operators = [stage.name for stage in plan.keyed_stages]
    for worker, root in _worker_roots(state_dir).items():
        if worker not in placement.workers:
            shutil.rmtree(root)
            continue
        backend = LmdbBackend(root)
        backend.discard_shipments()
        for operator in operators:
            if not (root / operator).is_dir():
                continue
            for group, owner in enumerate(placement.group_owner):
                if owner != worker and backend.path_for(operator, group).exists():
                    backend.remove(operator, group)
                    removed += 1
    return removed


class WorkerDirsBackend:
    """Opens each key group's store from the worker directory that holds it (the driver's
    reading after a job: ``JobResult.read_state``).

    A key group no worker holds (it never had state) opens empty, in memory. Two workers
    holding the same key group would mean the tidying rule was broken: refused, naming both.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._empty = MemoryBackend()

    def __repr__(self) -> str:
        return f"WorkerDirsBackend({str(self.state_dir)!r})"

    def open_store(
        self, operator: str, key_group: int, specs: Sequence[StateSpec]
    ) -> KeyGroupStore:
        holders = [
            LmdbBackend(root)
            for _worker, root in sorted(_worker_roots(self.state_dir).items())
            if (LmdbBackend(root).path_for(operator, key_group) / "data.mdb").exists()
        ]
        if not holders:
            return self._empty.open_store(operator, key_group, specs)
        if len(holders) > 1:
            where = ", ".join(str(h.path_for(operator, key_group)) for h in holders)
            raise StorageError(
                f"store {operator}/kg-{key_group:05d} is in more than one worker directory "
                f"({where}): which one is current is unknown"
            )
        return holders[0].open_store(operator, key_group, specs)
