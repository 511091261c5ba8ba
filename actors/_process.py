"""Worker processes: launch ``python -m shoal.actors._process_main`` and manage its life.

Bootstrap contract: the child opens ``open_worker(worker_id, mesh_dir=..., peers=...)``,
resolves ``bootstrap`` (``"package.module:function"`` or ``"path/to/file.py:function"``, the
file loaded under a deterministic module name), awaits ``bootstrap(worker, args)`` (it spawns
actors and returns), reports ready, and serves until it is told to stop. ``args`` travels as
CBOR (hex on argv), never pickle. The child's stdout goes to the driver's stderr, so the
driver's stdout stays clean, and its stderr is inherited.

How a child is told to stop, and what it does:

* ``stop\n`` on its stdin (:meth:`WorkerProcess.request_stop`, and leaving the block
  normally): an orderly stop; its actors are halted together under one deadline
  (``stop_timeout``).
* SIGTERM (leaving the block by an error or cancellation): an abort; its actors are cancelled at
  once (their ``on_stop`` still runs). SIGKILL follows after ``ABORT_GRACE_S``.
* its stdin closing without ``stop``: the parent died. The child aborts as for SIGTERM and
  removes ``cleanup`` paths (the mesh directory at least), so a killed driver leaves neither
  processes nor socket folders behind.
* SIGINT is ignored: a terminal's Ctrl-C goes to the whole process group, and what it means is
  the driver's decision (typically an orderly stop of the job).

The status pipe: the child writes ``ok`` once ready, or ``error <text>`` if its bootstrap failed;
if it later fails, it writes ``failed <hex CBOR>`` (a :class:`ProcessFailure`) before it exits,
so the parent can name the root cause (:attr:`WorkerProcess.failure`) rather than an exit status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import cbor2
from anyio.abc import Process

from ._codec import default_codec
from ._exceptions import WorkerProcessError
from ._messages import ProcessFailure

__all__ = ("WorkerProcess", "describe_exit", "open_worker_process")

#: How long a child may take from exec to "ready" (imports, bootstrap, on_start of its actors).
READY_TIMEOUT_S = 60.0
#: After SIGTERM, how long a child has to exit before SIGKILL. Aborting cancels its actors at
#: once, so this is only the time to run their on_stop and close sockets.
ABORT_GRACE_S = 1.0
#: After the child's own stop deadline, how long to wait before SIGTERM (exit and teardown).
STOP_MARGIN_S = 1.0


def describe_exit(code: int) -> str:
    """``"exited with status 1"``, or ``"was killed by SIGKILL"`` for a negative (signal) code."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class WorkerProcess:
    """A running worker process, as seen by the driver."""

    def __init__(self, worker_id: int, process: Process, status_fd: int, control_fd: int) -> None:
        self.worker_id = worker_id
        self._process = process
        self._status_fd = status_fd
        self._control_fd: int | None = control_fd
        self._exited = anyio.Event()
        self._status_closed = anyio.Event()
        self._ready = anyio.Event()
        self._ready_line = b""
        self._failure: ProcessFailure | None = None
        self._stop_requested = False
        self._signalled = False

    async def wait_ready(self) -> None:
        """Wait until the child's bootstrap has returned.

        Raises:
            WorkerProcessError: the child failed or exited before it was ready.
        """
        await _wait_ready(self, self.worker_id)

    async def _reap(self) -> None:
        # The only waiter on the OS process. Shielded: it must outlive a cancellation of the
        # caller, or nothing would ever set _exited and the teardown (which waits for it) would
        # hang. The teardown always ends the process, so this returns.
        with anyio.CancelScope(shield=True):
            await self._process.wait()
            # The status pipe reaches EOF when the process exits; its last report is read
            # before wait() returns (bounded: a grandchild could hold the pipe open).
            with anyio.move_on_after(1.0):
                await self._status_closed.wait()
        self._exited.set()

    async def _read_status(self) -> None:
        fd = self._status_fd
        buffer = b""
        try:
            while True:
                await anyio.wait_readable(fd)
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._status_line(line)
        finally:
            os.close(fd)
            self._ready.set()
            self._status_closed.set()

    def _status_line(self, line: bytes) -> None:
        if not self._ready.is_set():
            self._ready_line = line
            self._ready.set()
        elif line.startswith(b"failed "):
            try:
                fields = cbor2.loads(bytes.fromhex(line[7:].decode()))
                self._failure = ProcessFailure.from_cbor_list(fields)
            except Exception as exc:  # a garbled report must not hide the exit itself
                self._failure = ProcessFailure(
                    type_name="MessageDecodeError",
                    message=f"unreadable failure report: {exc}",
                    actor=None,
                    traceback="",
                )

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

    @property
    def failure(self) -> ProcessFailure | None:
        """What the child reported before it exited with an error (None if it did not)."""
        return self._failure

    @property
    def signalled_by_parent(self) -> bool:
        """Whether this side sent the process SIGTERM or SIGKILL (so its exit was expected)."""
        return self._signalled

    def describe_exit(self) -> str:
        """How the process ended, e.g. ``"was killed by SIGKILL"`` (``"running"`` if it has not)."""
        code = self._process.returncode
        return "running" if code is None else describe_exit(code)

    def request_stop(self) -> None:
        """Ask the child for an orderly stop (it halts its actors and exits); returns at once."""
        fd, self._control_fd = self._control_fd, None
        if fd is None:
            return
        try:
            # A pipe write of a few bytes into an empty pipe never blocks.
            os.write(fd, b"stop\n")
        except OSError:
            pass  # the child is gone already
        finally:
            os.close(fd)

    def _close_control(self) -> None:
        fd, self._control_fd = self._control_fd, None
        if fd is not None:
            os.close(fd)

    def kill(self) -> None:
        """SIGKILL the process (no cleanup runs in it)."""
        if self._process.returncode is None:
            self._signalled = True
            self._process.kill()

    def terminate(self) -> None:
        """SIGTERM the process: it aborts (cancels its actors, runs their on_stop) and exits."""
        if self._process.returncode is None:
            self._signalled = True
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


async def _wait_ready(proc: WorkerProcess, worker_id: int) -> None:
    with anyio.fail_after(READY_TIMEOUT_S):
        await proc._ready.wait()
    line = proc._ready_line
    if line == b"ok":
        return
    code = await proc.wait() if not line else None
    detail = line.decode(errors="replace").strip().removeprefix("error ")
    if not detail:
        detail = f"{describe_exit(code or 0)} before it was ready (see its stderr)"
    raise WorkerProcessError(f"worker process {worker_id} failed to start: {detail}")


async def _end(
    proc: WorkerProcess, process: Process, *, orderly: bool, stop_timeout: float
) -> None:
    """Stop the child (orderly, or abort), escalating to SIGTERM and SIGKILL on deadlines."""
    if process.returncode is None and orderly:
        proc.request_stop()
        with anyio.move_on_after(stop_timeout + STOP_MARGIN_S):
            await proc.wait()
    if process.returncode is None:
        proc.terminate()
        with anyio.move_on_after(ABORT_GRACE_S):
            await proc.wait()
    if process.returncode is None:
        proc.kill()
    await proc.wait()


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
    cleanup: Sequence[str | os.PathLike[str]] = (),
    link_buffer: int | None = None,
    wait_ready: bool = True,
) -> AsyncIterator[WorkerProcess]:
    """Start a worker process in the mesh and yield once its bootstrap has returned.

    ``wait_ready=False`` yields as soon as the process is spawned: start several that way,
    then ``await proc.wait_ready()`` on each, and they boot in parallel (an interpreter's
    start-up and imports take most of a second).

    Leaving the block normally stops the child in order (it halts its actors under one deadline
    of ``stop_timeout``); leaving it by an error or a cancellation aborts the child (SIGTERM,
    then SIGKILL after ``ABORT_GRACE_S``). Either way the process has exited when the block is
    left. If this process dies, the child notices (its control pipe closes), aborts within about
    a second, and removes ``mesh_dir`` and the ``cleanup`` paths.

    Args:
        worker_id: the child's worker id.
        mesh_dir: the mesh's socket directory.
        peers: every worker id in the mesh, the driver's included if it takes part.
        bootstrap: ``"package.module:function"`` or ``"path/to/file.py:function"``; the
            function is ``async def bootstrap(worker: Worker, args) -> None``.
        args: CBOR-encodable value handed to the bootstrap.
        env: variables added to (overriding) this process's environment for the child.
        stop_timeout: on an orderly stop, how long the child's actors may take to stop; the
            child is terminated if it has not exited a second after that.
        cleanup: more paths the child removes if this process dies without stopping it (for
            example a temporary state directory).
        link_buffer: the child's ``open_worker(link_buffer=...)`` (None: its default).

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
    status_read, status_write = os.pipe()
    control_read, control_write = os.pipe()
    os.set_blocking(status_read, False)
    command = [
        sys.executable,
        "-m",
        "shoal.actors._process_main",
        f"--worker-id={worker_id}",
        f"--mesh-dir={_absolute(mesh_dir)}",
        "--peers=" + ",".join(str(p) for p in peers),
        f"--bootstrap={bootstrap}",
        "--args=" + default_codec.encode(args).hex(),
        f"--ready-fd={status_write}",
        f"--control-fd={control_read}",
        f"--stop-timeout={stop_timeout}",
        *(f"--cleanup={_absolute(path)}" for path in cleanup),
        *([] if link_buffer is None else [f"--link-buffer={link_buffer}"]),
    ]
    try:
        process = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sys.__stderr__.fileno() if sys.__stderr__ is not None else None,
            stderr=None,
            env=child_env,
            pass_fds=(status_write, control_read),
            # A session of its own: a terminal's Ctrl-C (SIGINT to the foreground process
            # group) reaches only the parent, which decides what it means. The child ignores
            # SIGINT too, but only once its interpreter has started: a Ctrl-C during start-up
            # killed it ("killed by SIGINT before it was ready"). It still notices the parent's
            # death: its control pipe closes.
            start_new_session=True,
        )
    except BaseException:
        for fd in (status_read, control_write):
            os.close(fd)
        raise
    finally:
        os.close(status_write)
        os.close(control_read)
    proc = WorkerProcess(worker_id, process, status_read, control_write)
    # Errors are re-raised after the reaper's task group, so callers see them unwrapped.
    error: Exception | None = None
    orderly = False
    async with anyio.create_task_group() as reaper:
        reaper.start_soon(proc._reap)
        reaper.start_soon(proc._read_status)
        try:
            try:
                if wait_ready:
                    await proc.wait_ready()
            except Exception as exc:
                error = exc
            else:
                try:
                    yield proc
                except Exception as exc:
                    error = exc
                else:
                    orderly = True
        finally:
            with anyio.CancelScope(shield=True):
                await _end(proc, process, orderly=orderly, stop_timeout=stop_timeout)
                proc._close_control()
                await process.aclose()
            # The status reader ends at EOF, which the exit brought (or is cancelled here).
            reaper.cancel_scope.cancel()
    if error is not None:
        raise error
