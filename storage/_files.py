"""Whole-file reads and writes under one root, on a local directory or any fsspec filesystem.

Checkpoint and savepoint files are written whole and never appended to, so all this layer needs
is: write a file (optionally atomically: readers see the old state or the complete new file),
read a file, list, delete. On a local filesystem a write is fsynced (unless ``sync=False``) and
an atomic write goes through a temporary name and ``rename`` (then the directory is fsynced);
elsewhere (object stores, fsspec's memory filesystem) one ``pipe_file`` is one put of a
complete object, which those stores make atomic.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

import fsspec  # type: ignore[import-untyped]
import xxhash
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

__all__ = ("Location", "checksum")


def checksum(data: bytes) -> str:
    """Return the checksum every checkpoint and savepoint file is recorded with.

    XXH3-128 as 32 hex digits: it detects torn, truncated and bit-flipped files at memory
    speed (tens of GB/s, far below the cost of the CBOR encoding); it is not a defence against
    someone forging files, which a checkpoint store does not try to be.
    """
    return xxhash.xxh3_128_hexdigest(data)


class Location:
    """A root directory (a path or an fsspec URL such as ``memory://ckpt`` or ``s3://b/p``).

    Relative names use ``/``. Thread-safe as far as the filesystem is: every call is one
    self-contained filesystem operation.

    Args:
        url: A local path or an fsspec URL.
        fs: A filesystem to use instead of the one the URL names (``url`` is then a path on
            it); tests pass filesystems that fail on purpose.
        sync: On a local filesystem, fsync each written file (and the directory after a
            rename) so that a machine crash cannot lose a completed checkpoint.
    """

    __slots__ = ("fs", "local", "root", "sync", "url")

    def __init__(self, url: str | os.PathLike[str], *, fs: Any = None, sync: bool = True) -> None:
        self.url = os.fspath(url)
        if fs is None:
            fs, root = fsspec.core.url_to_fs(self.url)
        else:
            root = self.url
        self.fs: Any = fs
        self.root: str = str(root).rstrip("/")
        self.local = isinstance(fs, LocalFileSystem)
        self.sync = sync

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def path(self, name: str) -> str:
        """Return the filesystem path of the relative name ``name``."""
        return f"{self.root}/{name}" if name else self.root

    def write(self, name: str, data: bytes, *, atomic: bool = False) -> None:
        """Write ``data`` as the whole file ``name``, replacing it if it exists.

        On failure the file (or its temporary) is removed as far as the filesystem allows,
        and the error propagates.

        Raises:
            OSError: The filesystem failed (for example ``ENOSPC``).
        """
        path = self.path(name)
        parent = path.rsplit("/", 1)[0]
        target = f"{path}.tmp-{uuid.uuid4().hex}" if atomic and self.local else path
        try:
            self.fs.makedirs(parent, exist_ok=True)
            if self.local:
                with self.fs.open(target, "wb") as file:
                    file.write(data)
                    if self.sync:
                        file.flush()
                        os.fsync(file.fileno())
                if target != path:
                    os.replace(target, path)
                    if self.sync:
                        self._sync_directory(parent)
            else:
                self.fs.pipe_file(target, data)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(target)
            raise

    @staticmethod
    def _sync_directory(path: str) -> None:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def read(self, name: str) -> bytes:
        """Return the whole file ``name``.

        Raises:
            FileNotFoundError: It does not exist.
        """
        data: bytes = self.fs.cat_file(self.path(name))
        return data

    def size(self, name: str) -> int:
        """Return the size of file ``name`` in bytes."""
        return int(self.fs.size(self.path(name)))

    def exists(self, name: str) -> bool:
        """Whether file ``name`` exists."""
        return bool(self.fs.exists(self.path(name)))

    def files(self, name: str = "") -> list[str]:
        """Return the names (relative to the root) of every file under ``name``, sorted."""
        base = self.path(name)
        if not self.fs.exists(base):
            return []
        # fsspec strips the protocol from what find() returns, as it did from the root.
        prefix = self.root + "/"
        return sorted(
            str(path)[len(prefix) :] for path in self.fs.find(base) if str(path).startswith(prefix)
        )

    def delete(self, name: str) -> None:
        """Delete file ``name`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(name))

    def delete_tree(self, name: str) -> None:
        """Delete the directory ``name`` with everything under it, if it exists."""
        path = self.path(name)
        if self.fs.exists(path):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path, recursive=True)
