"""The transactional JSON-lines sink: a job's output published once per completed checkpoint.

Each epoch's output is staged in its own file and becomes visible only when the checkpoint
that covers it completes, so a reader sees every record exactly once across crashes and
restores. Output of epoch ``n`` is what the job emits before barrier ``n`` (checkpoint ``n``
covers it). Two phases, driven by the engine:

1. ``write_epoch(n, items)`` appends to ``.staging/epoch-<n>-p<w>of<W>.jsonl`` (opened on the
   first item of that epoch in that partition: an empty epoch makes no file).
2. ``pre_commit(n)``, once every writer has passed barrier ``n`` and before the checkpoint's
   manifest is written: every staged file of an epoch ``<= n`` is fsynced and closed, and the
   staging directory is fsynced.
3. ``commit(n)``, once the manifest of checkpoint ``n`` is written: every pre-committed file
   of an epoch ``<= n`` is renamed into the sink's directory (``os.replace``, atomic), in epoch
   order, and the directory is fsynced.
4. ``recover(committed)``, on the driver before any worker starts: staged files of epochs
   ``<= committed`` are published (the crash fell between manifest and commit), staged files
   of later epochs are deleted (their records will be replayed), and so are published files
   of later epochs (a restore from an older checkpoint replays them too).

Published names sort in (epoch, partition) order: ``epoch-0000000012-p0001of0002.jsonl``, so
``cat directory/epoch-*.jsonl`` reads what :meth:`TransactionalJsonlSink.read` returns.
docs/architecture.md ("The transactional JSONL sink") lists what happens at each crash point.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import anyio

from ._sinks import _check_worker, _encode_lines

__all__ = ("SinkRecovery", "TransactionalJsonlSink", "TransactionalPartition")

_OWNER: Final = "TransactionalJsonlSink"
#: Subfolder of the sink's directory holding staged files (hidden: ``epoch-*.jsonl`` globs in
#: the directory see only published output). Same filesystem, so publishing is one rename.
STAGING: Final = ".staging"
# Widths of the numbers in file names: a plain sorted listing is then (epoch, partition) order.
_EPOCH_DIGITS: Final = 10
_WORKER_DIGITS: Final = 4
MAX_EPOCH: Final = 10**_EPOCH_DIGITS - 1
MAX_WORKERS: Final = 10**_WORKER_DIGITS - 1
_NAME: Final = re.compile(r"epoch-(\d{10})-p(\d{4})of(\d{4})\.jsonl")

# The file-system operations that change the sink's directories, as module globals so a test
# can interrupt them at the k-th call (a simulated crash in the middle of a commit or a recover).
_replace = os.replace
_unlink = os.unlink


def file_name(epoch: int, worker: int, workers: int) -> str:
    """Return the name of ``worker``'s file for ``epoch`` (staged and published alike)."""
    return f"epoch-{epoch:010d}-p{worker:04d}of{workers:04d}.jsonl"


def parse_name(name: str) -> tuple[int, int, int] | None:
    """Return ``(epoch, workers, worker)`` of a sink file name (its sort key), or None."""
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    return int(m[1]), int(m[3]), int(m[2])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_epoch(method: str, epoch: object, name: str = "epoch") -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise TypeError(f"{_OWNER}.{method}: {name} must be an int; got {type(epoch).__name__}")
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"{_OWNER}.{method}: {name} must be in [0, {MAX_EPOCH}]; got {epoch}")
    return epoch


@dataclass(frozen=True, slots=True)
class SinkRecovery:
    """What :meth:`TransactionalJsonlSink.recover` did (counts of files, for logging).

    Attributes:
        published: staged files of committed epochs it published.
        discarded: staged files of uncommitted epochs it deleted.
        retracted: published files of epochs after ``committed`` it deleted (a restore from an
            older checkpoint, or a fresh run over an old run's output).
    """

    published: int = 0
    discarded: int = 0
    retracted: int = 0


class TransactionalJsonlSink:
    """Exactly-once JSON-lines output: each epoch is published when its checkpoint completes.

    One file per (epoch, partition) that produced output. With ``gather=False`` each worker
    writes its own files where its records are; with ``gather=True`` the engine ships every
    worker's output to one partition on the driver. The directory belongs to one job: after
    ``recover(c)`` it holds exactly the output of epochs ``<= c``.

    Lines are compact JSON (UTF-8, ``ensure_ascii=False``, tuples become arrays), encoded like
    :class:`JsonlSink`'s. Readers should list the directory (or call :meth:`read`): a published
    file is complete and never changes; an epoch appears partition by partition.

    Args:
        directory: where published files go; staged files go to its ``.staging`` subfolder.
            Both are created when a partition opens or the sink recovers.
        gather: ship every worker's output to the driver and write it there.

    Raises:
        TypeError: ``directory`` is not a str or os.PathLike.
    """

    #: The engine drives a transactional sink with epochs, pre-commits and commits.
    transactional: ClassVar[bool] = True
    gather: bool

    def __init__(self, directory: str | os.PathLike[str], *, gather: bool = False) -> None:
        if not isinstance(directory, str | os.PathLike):
            raise TypeError(
                f"{_OWNER}: directory must be a str or os.PathLike; got {type(directory).__name__}"
            )
        self.directory = Path(directory)
        self.staging = self.directory / STAGING
        self.gather = bool(gather)

    def __repr__(self) -> str:
        return f"{_OWNER}({str(self.directory)!r}, gather={self.gather})"

    def open_partition(self, worker: int, workers: int) -> TransactionalPartition:
        """Create the directories and return ``worker``'s partition among ``workers``.

        Raises:
            TypeError, ValueError: bad ``worker`` / ``workers`` (``workers`` at most 9999).
        """
        _check_worker(_OWNER, worker, workers)
        if workers > MAX_WORKERS:
            raise ValueError(
                f"{_OWNER}: workers must be <= {MAX_WORKERS} (file names hold four digits); "
                f"got {workers}"
            )
        self.staging.mkdir(parents=True, exist_ok=True)
        return TransactionalPartition(self, worker, workers)

    def recover(self, committed: int | None) -> SinkRecovery:
        """Bring the directory to exactly the output of epochs ``<= committed``.

        Call it on the driver before any partition opens, at every start and restart, with the
        epoch of the last completed checkpoint (None: none completed, so nothing is kept).
        Publishes every staged file of an epoch ``<= committed`` (a crash between the
        checkpoint's manifest and the sink's commit; a file already published is kept and the
        staged copy deleted), deletes every staged file of a later epoch (those records are
        replayed) and every published file of a later epoch. Blocking (renames, unlinks, two
        directory fsyncs); idempotent; crash-safe: every step is one atomic rename or unlink
        that a second call completes. Names that are not the sink's files are left alone.

        Raises:
            TypeError, ValueError: ``committed`` is not None or an int in [0, 9999999999].
        """
        if committed is not None:
            _check_epoch("recover", committed, "committed")
        last = -1 if committed is None else committed
        self.staging.mkdir(parents=True, exist_ok=True)
        published = discarded = retracted = 0
        for name in sorted(os.listdir(self.staging)):
            key = parse_name(name)
            if key is None:
                continue
            staged = self.staging / name
            if key[0] > last:
                _unlink(staged)
                discarded += 1
            elif _publish(staged, self.directory / name):
                published += 1
        for name in sorted(os.listdir(self.directory)):
            key = parse_name(name)
            if key is not None and key[0] > last:
                _unlink(self.directory / name)
                retracted += 1
        _fsync_dir(self.staging)
        _fsync_dir(self.directory)
        return SinkRecovery(published, discarded, retracted)

    def published_files(self) -> list[Path]:
        """Return the published files in (epoch, partition) order (plain name order)."""
        if not self.directory.is_dir():
            return []
        keyed = [(key, name) for name in os.listdir(self.directory) if (key := parse_name(name))]
        return [self.directory / name for _, name in sorted(keyed)]

    def read(self) -> list[Any]:
        """Return every published item, in (epoch, partition, order) order: what a reader sees.

        Items come back JSON-decoded (tuples as lists).
        """
        items: list[Any] = []
        for path in self.published_files():
            with open(path, encoding="utf-8") as f:
                items.extend(json.loads(line) for line in f)
        return items


def _publish(staged: Path, published: Path) -> bool:
    """Rename ``staged`` to ``published``; if that exists already, delete ``staged`` instead.

    Returns whether it renamed. The existing file has the same content (the same epoch of the
    same partition, replayed deterministically or published by an earlier call); keeping it
    means a reader never sees a published file change.
    """
    if published.exists():
        _unlink(staged)
        return False
    _replace(staged, published)
    return True


class TransactionalPartition:
    """One partition of a :class:`TransactionalJsonlSink`: one worker's files (or the driver's).

    Several epochs may be open at once (key groups of one worker pass a barrier at different
    times). Calls for different epochs may interleave freely; ``pre_commit`` and ``commit``
    serialize with each other. Staging writes run on the event loop (encode, then one
    ``write`` to the page cache; see docs/benchmarks.md, "Transactional sink"); fsyncs and
    renames run in a worker thread.

    An ``OSError`` from a write, fsync or rename fails the partition: every later call except
    ``aclose`` raises ``RuntimeError`` (after a failed fsync the kernel may have dropped the
    pages, so retrying cannot make the epoch durable). The job then recovers from its last
    completed checkpoint, and ``recover`` discards what this partition staged since.
    """

    __slots__ = (
        "_closed",
        "_durable",
        "_failed",
        "_lock",
        "_open",
        "_precommitted",
        "_sink",
        "worker",
        "workers",
    )

    def __init__(self, sink: TransactionalJsonlSink, worker: int, workers: int) -> None:
        self._sink = sink
        self.worker = worker
        self.workers = workers
        # epoch -> its staged file, open for appending (unbuffered: one write per batch)
        self._open: dict[int, io.FileIO] = {}
        # epoch -> its staged file, fsynced and closed, not yet published
        self._durable: dict[int, Path] = {}
        self._precommitted = -1  # highest epoch given to pre_commit: later writes must be above
        self._failed: str | None = None
        self._closed = False
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return (
            f"TransactionalPartition(p{self.worker}of{self.workers}, open={sorted(self._open)}, "
            f"durable={sorted(self._durable)})"
        )

    @property
    def open_epochs(self) -> list[int]:
        """Epochs with staged output that is not pre-committed yet."""
        return sorted(self._open)

    @property
    def pending_epochs(self) -> list[int]:
        """Pre-committed epochs this partition has not published yet."""
        return sorted(self._durable)

    def _check_usable(self, method: str) -> None:
        if self._failed is not None:
            raise RuntimeError(
                f"{_OWNER}.{method}: partition p{self.worker}of{self.workers} failed earlier "
                f"({self._failed}); recover() the sink and open a new partition"
            )

    async def write_epoch(self, epoch: int, items: list[Any]) -> None:
        """Stage ``items`` as output of ``epoch``, after this partition's earlier items of it.

        An empty ``items`` stages nothing. Encoding is all or nothing: a batch with an item that
        is not JSON-serializable stages none of it.

        Raises:
            TypeError: ``epoch`` is not an int, ``items`` not a list, or an item is not
                JSON-serializable.
            ValueError: ``epoch`` is out of range.
            RuntimeError: ``epoch`` is already pre-committed, the partition is closed, or it
                failed earlier.
        """
        _check_epoch("write_epoch", epoch)
        if not isinstance(items, list):
            raise TypeError(
                f"{_OWNER}.write_epoch: items must be a list; got {type(items).__name__}"
            )
        self._check_usable("write_epoch")
        if self._closed:
            raise RuntimeError(f"{_OWNER}.write_epoch: the partition is closed")
        if epoch <= self._precommitted:
            raise RuntimeError(
                f"{_OWNER}.write_epoch: epoch {epoch} is already pre-committed (up to "
                f"{self._precommitted}); output of a pre-committed epoch cannot change"
            )
        if not items:
            return
        data = _encode_lines(_OWNER, items)
        try:
            f = self._open.get(epoch)
            if f is None:
                path = self._sink.staging / file_name(epoch, self.worker, self.workers)
                # On the loop, once per epoch and partition: a create costs microseconds, less
                # than a thread round trip. "wb": a leftover from a run that crashed before
                # recover() is replaced, not appended to.
                f = self._open[epoch] = open(path, "wb", buffering=0)  # noqa: SIM115, ASYNC230
            view = memoryview(data)
            while view:
                view = view[f.write(view) :]
        except OSError as exc:
            self._failed = f"{type(exc).__name__}: {exc}"
            raise

    async def write_batch(self, items: list[Any]) -> None:
        """Refuse: a transactional sink needs to know each batch's epoch.

        Raises:
            TypeError: always.
        """
        raise TypeError(
            f"{_OWNER}: write_batch has no epoch; a transactional sink takes "
            "write_epoch(epoch, items), driven by checkpoints (use JsonlSink for output "
            "without checkpoints)"
        )

    async def pre_commit(self, epoch: int) -> None:
        """Make every staged item of epochs ``<= epoch`` durable (phase 1).

        Fsyncs and closes their files, then fsyncs the staging directory (in a worker thread).
        Afterwards ``write_epoch`` refuses those epochs. Call it once every writer of this
        partition has passed barrier ``epoch``, before the checkpoint's manifest is written.
        A second call for the same epoch does nothing.

        Raises:
            TypeError, ValueError: a bad ``epoch``.
            RuntimeError: the partition is closed or failed earlier.
            OSError: an fsync failed (the partition fails with it).
        """
        _check_epoch("pre_commit", epoch)
        self._check_usable("pre_commit")
        if self._closed:
            raise RuntimeError(f"{_OWNER}.pre_commit: the partition is closed")
        # Before any await: a write of these epochs that arrives meanwhile is refused.
        self._precommitted = max(self._precommitted, epoch)
        due = {e: f for e, f in self._open.items() if e <= epoch}
        for e in due:
            del self._open[e]
        try:
            async with self._lock:
                if not due:
                    return
                staging = self._sink.staging
                try:
                    await anyio.to_thread.run_sync(_make_durable, list(due.values()), staging)
                except OSError as exc:
                    self._failed = f"{type(exc).__name__}: {exc}"
                    raise
                for e in due:
                    self._durable[e] = staging / file_name(e, self.worker, self.workers)
        except BaseException:
            # Cancelled while waiting for the lock (an attempt torn down), or failed: these
            # files are out of _open, so aclose() would not see them; close them here (a
            # second close is harmless). What they staged stays for recover().
            for f in due.values():
                f.close()
            raise

    async def commit(self, epoch: int) -> None:
        """Publish every pre-committed epoch ``<= epoch`` (phase 2), in epoch order.

        Each file is renamed into the sink's directory (atomic), then the directory is fsynced
        (in a worker thread). Idempotent: a second commit, or a commit of an epoch that
        ``recover`` published, does nothing. Allowed after :meth:`aclose` (pre-committed
        files are already closed).

        Raises:
            TypeError, ValueError: a bad ``epoch``.
            RuntimeError: an epoch ``<= epoch`` has staged output that was never pre-committed
                (the engine committed a checkpoint it did not pre-commit), or the partition
                failed earlier.
            OSError: a rename failed (the partition fails with it).
        """
        _check_epoch("commit", epoch)
        self._check_usable("commit")
        early = [e for e in self._open if e <= epoch]
        if early:
            raise RuntimeError(
                f"{_OWNER}.commit: epoch {min(early)} has staged output that was never "
                f"pre-committed; call pre_commit({epoch}) before commit({epoch})"
            )
        async with self._lock:
            due = sorted(e for e in self._durable if e <= epoch)
            if due:
                files = [self._durable[e] for e in due]
                try:
                    await anyio.to_thread.run_sync(_publish_all, files, self._sink.directory)
                except OSError as exc:
                    self._failed = f"{type(exc).__name__}: {exc}"
                    raise
                for e in due:
                    del self._durable[e]

    async def aclose(self) -> None:
        """Close open staged files WITHOUT publishing them; idempotent.

        Pre-committed files stay staged (``commit`` or the next ``recover`` publishes them);
        the rest stays staged until ``recover`` deletes it.
        """
        self._closed = True
        files, self._open = list(self._open.values()), {}
        for f in files:
            f.close()


def _make_durable(files: list[io.FileIO], staging: Path) -> None:
    """Fsync and close ``files``, then fsync their directory. Runs in a worker thread."""
    try:
        for f in files:
            os.fsync(f.fileno())
    finally:
        for f in files:
            f.close()
    _fsync_dir(staging)


def _publish_all(staged: list[Path], directory: Path) -> None:
    """Publish ``staged`` in order, then fsync ``directory``. Runs in a worker thread."""
    for path in staged:
        if path.exists():
            _publish(path, directory / path.name)
        elif not (directory / path.name).exists():
            raise FileNotFoundError(
                f"{_OWNER}.commit: staged file {path} is gone and was never published "
                "(did recover() run while this partition was open?)"
            )
    _fsync_dir(directory)
