"""Worker processes: launch ``python -m shoal.actors._process_main`` and manage its life.

Bootstrap contract: the child opens ``open_worker(worker_id, mesh_dir=..., peers=...)``,
resolves ``bootstrap`` (``"package.module:function"`` or ``"path/to/file.py:function"``, the
file loaded under a deterministic module name), awaits ``bootstrap(worker, args)`` (it spawns
actors and returns), reports ready, and serves until it is told to stop: its stdin closes (the
driver left the block, or died) or it gets SIGTERM/SIGINT. ``args`` travels as CBOR (hex on
argv), never pickle. The child's stdout goes to the driver's stderr, so the driver's stdout stays
clean, and its stderr is inherited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from ._codec import default_codec
from ._exceptions import WorkerProcessError

__all__ = ("WorkerProcess", "open_worker_process")

#: How long a child may take from exec to "ready" (imports, bootstrap, on_start of its actors).
READY_TIMEOUT_S = 60.0


class WorkerProcess:
    """A running worker process, as seen by the driver."""

    def __init__(self, worker_id: int, process: Process) -> None:
        self.worker_id = worker_id
        self._process = process
        self._exited = anyio.Event()

    async def _reap(self) -> None:
        # The only waiter on the OS process, never cancelled before the process exits: a
        # cancelled wait() leaves uvloop completing an abandoned future ("invalid state").
        await self._process.wait()
        self._exited.set()

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.worker_id} pid={self.pid} returncode={self.returncode}>"

    @property
    def pid(self) -> int:
        """The OS process id."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while running."""
        return self._process.returncode

    def kill(self) -> None:
        """SIGKILL the process (no cleanup runs in it)."""
        if self._process.returncode is None:
            self._process.kill()

    def terminate(self) -> None:
        """SIGTERM the process: it stops its worker gracefully."""
        if self._process.returncode is None:
            self._process.terminate()

    async def wait(self) -> int:
        """Wait for the process to exit; return its exit code (-9 after kill()).

        Safe to cancel: the process is reaped by its own task either way.
        """
        await self._exited.wait()
        code = self._process.returncode
        assert code is not None
        return code


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(path).absolute()


async def _read_ready(fd: int, process: WorkerProcess, worker_id: int) -> None:
    data = b""
    with anyio.fail_after(READY_TIMEOUT_S):
        while not data.endswith(b"\n"):
            await anyio.wait_readable(fd)
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
    if data == b"ok\n":
        return
    code = await process.wait() if not data else None
    detail = data.decode(errors="replace").strip().removeprefix("error ")
    if not detail:
        detail = f"exited with code {code} before it was ready (see its stderr)"
    raise WorkerProcessError(f"worker process {worker_id} failed to start: {detail}")


@asynccontextmanager
async def open_worker_process(
    worker_id: int,
    mesh_dir: str | os.PathLike[str],
    peers: Iterable[int],
    *,
    bootstrap: str,
    args: Any = None,
    env: Mapping[str, str] | None = None,
    stop_timeout: float = 10.0,
) -> AsyncIterator[WorkerProcess]:
    """Start a worker process in the mesh and yield once its bootstrap has returned.

    Args:
        worker_id: the child's worker id.
        mesh_dir: the mesh's socket directory.
        peers: every worker id in the mesh, the driver's included if it takes part.
        bootstrap: ``"package.module:function"`` or ``"path/to/file.py:function"``; the
            function is ``async def bootstrap(worker: Worker, args) -> None``.
        args: CBOR-encodable value handed to the bootstrap.
        env: variables added to (overriding) this process's environment for the child.
        stop_timeout: on leaving, how long to wait for a graceful exit before SIGKILL.

    Raises:
        WorkerProcessError: the child failed or exited before it was ready.
    """
    module_part, sep, attr = bootstrap.rpartition(":")
    if not sep or not module_part or not attr:
        raise ValueError(
            f"bootstrap must be 'package.module:function' or 'path/to/file.py:function';"
            f" got {bootstrap!r}"
        )
    if module_part.endswith(".py") or "/" in module_part:
        bootstrap = f"{_absolute(module_part)}:{attr}"
    child_env = dict(os.environ)
    if env:
        child_env.update(env)
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    command = [
        sys.executable,
        "-m",
        "shoal.actors._process_main",
        f"--worker-id={worker_id}",
        f"--mesh-dir={_absolute(mesh_dir)}",
        "--peers=" + ",".join(str(p) for p in peers),
        f"--bootstrap={bootstrap}",
        "--args=" + default_codec.encode(args).hex(),
        f"--ready-fd={write_fd}",
    ]
    try:
        process = await anyio.open_process(
            command,
            stdin=subprocess.PIPE,
            stdout=sys.__stderr__.fileno() if sys.__stderr__ is not None else None,
            stderr=None,
            env=child_env,
            pass_fds=(write_fd,),
        )
    finally:
        os.close(write_fd)
    proc = WorkerProcess(worker_id, process)
    # Errors are re-raised after the reaper's task group, so callers see them unwrapped.
    error: Exception | None = None
    async with anyio.create_task_group() as reaper:
        reaper.start_soon(proc._reap)
        try:
            try:
                await _read_ready(read_fd, proc, worker_id)
            finally:
                os.close(read_fd)
        except Exception as exc:
            error = exc
        else:
            try:
                yield proc
            except Exception as exc:
                error = exc
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    if process.stdin is not None:
                        await process.stdin.aclose()  # the child's signal to stop
                    with anyio.move_on_after(stop_timeout):
                        await proc.wait()
                    if process.returncode is None:
                        process.send_signal(signal.SIGKILL)
                await proc.wait()
                await process.aclose()
    if error is not None:
        raise error
