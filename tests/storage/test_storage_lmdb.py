"""LMDB specifics: layout on disk, no leaked descriptors, map growth, reopening."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from _storage_helpers import SPECS
from shoal.storage import LmdbBackend, MemoryBackend, StoreBusyError, ValueStateSpec


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _mapped_lmdb_files() -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if line.rstrip().endswith(("data.mdb", "lock.mdb")))


def test_environment_layout(tmp_path: Path) -> None:
    backend = LmdbBackend(tmp_path / "root")
    with backend.open_store("clicks.v2", 42, SPECS) as store:
        assert store.path == tmp_path / "root" / "clicks.v2" / "kg-00042"
        assert sorted(p.name for p in store.path.iterdir()) == [
            "data.mdb",
            "lock.mdb",
            "shoal-owner.lock",
        ]
    assert backend.path_for("clicks.v2", 42) == store.path
    assert MemoryBackend().open_store("op", 0, SPECS).path is None


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_no_descriptor_or_mapping_leaks_after_close(tmp_path: Path) -> None:
    backend = LmdbBackend(tmp_path, map_size=1 << 20)
    fds, maps = _open_fds(), _mapped_lmdb_files()
    for key_group in range(50):
        with backend.open_store("op", key_group, SPECS) as store:
            store.key = "k"
            store.states.count.update(key_group)
            store.states.by_page.put(1, 2)
            store.flush(meta={"epoch": 1})
            list(store.items("by_page"))
    assert _open_fds() == fds
    assert _mapped_lmdb_files() == maps
    with backend.open_store("op", 49, SPECS) as store:  # a closed env reopens with its data
        assert store.get("count", "k") == 49
        assert store.read_meta("epoch") == 1


def test_map_grows_when_a_flush_fills_it(tmp_path: Path) -> None:
    backend = LmdbBackend(tmp_path, map_size=64 * 1024)
    with backend.open_store("op", 0, [ValueStateSpec("blob")]) as store:
        for i in range(2000):
            store.key = i
            store.states.blob.update("x" * 200)
        assert store.flush() == 2000
        assert store.statistics().bytes > 64 * 1024
    with backend.open_store("op", 0, [ValueStateSpec("blob")]) as store:
        assert store.statistics().entries == 2000
        assert store.get("blob", 1999) == "x" * 200


def test_bad_operator_and_key_group_are_refused(tmp_path: Path) -> None:
    for backend in (LmdbBackend(tmp_path), MemoryBackend()):
        for operator in ["", "a/b", "..", "a b"]:
            message = (
                "^"
                + re.escape(
                    "operator name must match [A-Za-z0-9_.-]+ (it names a directory); "
                    f"got {operator!r}"
                )
                + "$"
            )
            if operator == "..":
                message = r"^operator name must not be '\.\.' \(it names a directory\)$"
            with pytest.raises(ValueError, match=message):
                backend.open_store(operator, 0, SPECS)
        for key_group in [-1, True, 1.0]:
            with pytest.raises(
                ValueError, match=rf"^key_group must be an int >= 0; got {key_group!r}$"
            ):
                backend.open_store("op", key_group, SPECS)  # type: ignore[arg-type]


def test_backend_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^map_size must be a positive int; got 0$"):
        LmdbBackend(tmp_path, map_size=0)
    with pytest.raises(ValueError, match=r"^cache_limit must be an int >= 0; got -1$"):
        MemoryBackend(cache_limit=-1)


def test_two_backends_on_one_root_cannot_open_the_same_store(tmp_path: Path) -> None:
    first, second = LmdbBackend(tmp_path), LmdbBackend(tmp_path)
    busy = r"^store op/kg-00000 is already open in this process$"
    with first.open_store("op", 0, SPECS), pytest.raises(StoreBusyError, match=busy):
        second.open_store("op", 0, SPECS)


def test_sync_backend_commits(tmp_path: Path) -> None:
    backend = LmdbBackend(tmp_path, sync=True)
    with backend.open_store("op", 0, SPECS) as store:
        store.key = "k"
        store.states.count.update(1)
        store.flush()
    with backend.open_store("op", 0, SPECS) as store:
        assert store.get("count", "k") == 1


def test_another_process_cannot_open_a_store_that_is_open(tmp_path: Path) -> None:
    """The ownership fence: one writer per environment across processes; it is released at
    close (and by the kernel when the holder dies, even by kill -9)."""
    import subprocess
    import sys

    probe = (
        "import sys; from shoal.storage import LmdbBackend, ValueStateSpec, StoreBusyError\n"
        "try:\n"
        "    spec = ValueStateSpec('count', default=0)\n"
        "    LmdbBackend(sys.argv[1]).open_store('op', 0, [spec]).close()\n"
        "except StoreBusyError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    backend = LmdbBackend(tmp_path)
    with backend.open_store("op", 0, SPECS):
        busy = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True
        )
    assert busy.returncode == 3, busy.stderr
    assert busy.stdout.strip() == (
        f"store op/kg-00000 is already open by another process (pid {os.getpid()})"
    )
    free = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True)
    assert free.returncode == 0, free.stderr
