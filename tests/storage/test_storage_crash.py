"""A real kill -9 while a process commits epochs: the state, its epoch and its undo log agree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _storage_helpers import SPECS
from shoal.storage import KeyGroupStore, LmdbBackend

KEYS = 3000

# Every epoch n sets every key's count to n and adds n to its list: after any crash the
# committed state must be exactly epoch e's for the e in its meta, and one rollback must give
# exactly epoch e-1's.
CHILD = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from _storage_helpers import SPECS
from shoal.storage import LmdbBackend

backend = LmdbBackend(sys.argv[1], map_size=1 << 24)
store = backend.open_store("op", 0, SPECS)
epoch = 0
while True:
    epoch += 1
    for key in range({KEYS}):
        store.key = key
        store.states.count.update(epoch)
        if key % 10 == 0:
            store.states.seen.add(epoch)
    store.flush_epoch(epoch)
    if epoch % 5 == 0:
        store.prune_undo(epoch - 2)
    print(epoch, flush=True)
"""


def _check_epoch(store: KeyGroupStore, epoch: int) -> None:
    assert dict(store.items("count")) == dict.fromkeys(range(KEYS), epoch)
    expected = {key: list(range(1, epoch + 1)) for key in range(0, KEYS, 10)}
    assert dict(store.items("seen")) == expected


@pytest.mark.processes
@pytest.mark.parametrize("after", [3, 8, 13])
def test_a_kill_during_epoch_commits_leaves_state_epoch_and_undo_log_consistent(
    tmp_path: Path, after: int
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    for _ in range(after):  # wait until it committed `after` epochs, then kill it mid-run
        assert child.stdout.readline()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    with LmdbBackend(tmp_path, map_size=1 << 24).open_store("op", 0, SPECS) as store:
        epoch = store.epoch
        assert epoch is not None
        assert epoch >= after
        _check_epoch(store, epoch)
        floor = store.undo_floor
        assert floor is not None
        assert floor <= epoch - 1
        store.rollback_to(epoch - 1)
        _check_epoch(store, epoch - 1)
        assert store.epoch == epoch - 1
