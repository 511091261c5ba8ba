"""A process that drives a TransactionalJsonlSink like the engine does, for a test to SIGKILL.

    python txn_sink_child.py DIRECTORY WORKERS EPOCHS

For each epoch ``e`` in ``1..EPOCHS``: every partition writes the second half of its items of
``e`` and the first half of its items of ``e + 1`` (two epochs open at once, as when key groups
pass a barrier at different times), pre-commits ``e``, then the "manifest" (``DIRECTORY/../
manifest``, written atomically and fsynced) records ``e`` as the last completed checkpoint, then
every partition commits ``e``. A line goes to stdout before every step, so the test can kill the
process at a chosen step (it lands somewhere after it). ``items(e, w, workers)`` is what
partition ``w`` writes for epoch ``e``: the test recomputes it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
from shoal.runtime._txn_sink import TransactionalJsonlSink

ITEMS = 40  # per (epoch, partition): several batches, so a file takes several writes


def items(epoch: int, worker: int, workers: int) -> list[Any]:
    """Partition ``worker``'s items of ``epoch`` (partition 1 of 3 writes nothing in epoch 2)."""
    if workers == 3 and worker == 1 and epoch == 2:
        return []  # an empty epoch on one partition: no file
    return [{"e": epoch, "w": worker, "i": i, "pad": "x" * (i % 7)} for i in range(ITEMS)]


def manifest_path(directory: Path) -> Path:
    return directory.parent / "manifest"


def write_manifest(directory: Path, epoch: int) -> None:
    path = manifest_path(directory)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(str(epoch))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def step(text: str) -> None:
    print(text, flush=True)


async def main(directory: Path, workers: int, epochs: int) -> None:
    sink = TransactionalJsonlSink(directory)
    sink.recover(None)
    parts = [sink.open_partition(w, workers) for w in range(workers)]
    half = ITEMS // 2
    for w, part in enumerate(parts):
        await part.write_epoch(1, items(1, w, workers)[:half])
    for epoch in range(1, epochs + 1):
        for w, part in enumerate(parts):
            step(f"write {epoch} p{w}")
            now, later = items(epoch, w, workers), items(epoch + 1, w, workers)
            for i in range(half, ITEMS, 5):
                await part.write_epoch(epoch, now[i : i + 5])
                if epoch < epochs:
                    j = i - half
                    await part.write_epoch(epoch + 1, later[j : j + 5])
        for w, part in enumerate(parts):
            step(f"pre_commit {epoch} p{w}")
            await part.pre_commit(epoch)
        step(f"manifest {epoch}")
        write_manifest(directory, epoch)
        for w, part in enumerate(parts):
            step(f"commit {epoch} p{w}")
            await part.commit(epoch)
    for part in parts:
        await part.aclose()
    step("done")


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
