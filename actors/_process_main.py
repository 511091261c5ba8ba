"""Entry point of a worker process: ``python -m shoal.actors._process_main`` (see _process)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import cbor2

from ._bootstrap import resolve_object
from ._codec import default_codec
from ._exceptions import ActorFailedError, BootstrapError, PeerLostError
from ._messages import ProcessFailure
from ._worker import Worker, open_worker

__all__ = ("main",)


async def _wait_control(fd: int) -> str:
    """Wait on the control pipe: ``"stop"`` if the parent asked, ``"orphaned"`` if it closed."""
    os.set_blocking(fd, False)
    data = b""
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            return "stop" if data.startswith(b"stop") else "orphaned"
        data += chunk
        if data.startswith(b"stop"):
            return "stop"


async def _wait_terminate(worker: Worker) -> str:
    """Wait for SIGTERM (an abort).

    A plain signal handler, not the loop's: it runs at the next bytecode, even in the middle
    of a long batch, and marks the worker as aborting at once. Peers die at the same moment,
    and a loop-dispatched handler could see their connections close first and report every
    consequence as a warning.
    """
    loop = asyncio.get_running_loop()
    terminated = asyncio.Event()

    def on_sigterm(signum: int, frame: object) -> None:
        worker.aborting = True
        loop.call_soon_threadsafe(terminated.set)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        await terminated.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return "terminate"


def _ignore_cancelled_read_race(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Drop one known, harmless teardown race; hand everything else to the default handler.

    anyio's Unix socket streams wait for readability with ``loop.add_reader(sock,
    future.set_result, None)``. When the reading task is cancelled at teardown, uvloop may
    still run the already-scheduled callback on the cancelled future and log
    ``InvalidStateError`` (the same race as agronholm/anyio#1267). Nothing is lost: the reader
    was being cancelled anyway.
    """
    exc = context.get("exception")
    handle = context.get("handle")
    if (
        isinstance(exc, asyncio.InvalidStateError)
        and handle is not None
        and "set_result" in repr(handle)
    ):
        return
    loop.default_exception_handler(context)


async def _serve(
    worker_id: int,
    mesh_dir: str,
    peers: list[int],
    bootstrap: str,
    args: Any,
    ready_fd: int,
    control_fd: int,
    stop_timeout: float,
    link_buffer: int | None,
) -> str:
    asyncio.get_running_loop().set_exception_handler(_ignore_cancelled_read_race)
    reason = "stop"
    options: dict[str, Any] = {} if link_buffer is None else {"link_buffer": link_buffer}
    async with open_worker(
        worker_id, mesh_dir=mesh_dir, peers=peers, stop_timeout=stop_timeout, **options
    ) as worker:
        try:
            function = resolve_object(bootstrap)
            await function(worker, args)
        except Exception as exc:
            if not isinstance(exc, BootstrapError):  # its message says all: no traceback
                traceback.print_exc()
            # The parent may have stopped waiting (see below): then nobody is told.
            with contextlib.suppress(BrokenPipeError):
                os.write(ready_fd, f"error {type(exc).__name__}: {exc}\n".encode())
            raise _BootstrapFailed from exc
        try:
            os.write(ready_fd, b"ok\n")
        except BrokenPipeError:
            # The parent stopped waiting for this process (another worker of the same start
            # failed first, and the parent is ending them all): nothing to serve, no news.
            worker.aborting = True
            worker.stop_timeout = 0
            return "abandoned"
        async with anyio.create_task_group() as tg:

            async def stop_on(wait: Callable[[], Awaitable[str]]) -> None:
                nonlocal reason
                reason = await wait()
                worker.aborting = reason != "stop"
                tg.cancel_scope.cancel()

            tg.start_soon(stop_on, partial(_wait_control, control_fd))
            tg.start_soon(stop_on, partial(_wait_terminate, worker))
        if reason != "stop":
            # An abort (SIGTERM, or the parent is gone): cancel the actors now, do not wait for
            # the message each has in hand. Their on_stop still runs.
            worker.stop_timeout = 0
    return reason


class _BootstrapFailed(Exception):
    """The bootstrap raised; it has been reported on the ready pipe already."""


def _report_failure(fd: int, exc: BaseException) -> None:
    """Tell the parent why this process fails (a ProcessFailure on the status pipe)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    failure = ProcessFailure(
        type_name=type(exc).__name__,
        message=str(exc),
        actor=exc.actor if isinstance(exc, ActorFailedError) else None,
        traceback="".join(traceback.format_exception(exc)),
    )
    line = b"failed " + cbor2.dumps(failure.to_cbor_list()).hex().encode() + b"\n"
    with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
        os.write(fd, line)


def _lost_a_peer(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, PeerLostError):
            return True
        exc = exc.__cause__
    return False


def _orphaned(reason: str, parent: int) -> bool:
    return reason == "orphaned" or os.getppid() != parent


def main(argv: list[str] | None = None) -> int:
    """Run one worker process until told to stop; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m shoal.actors._process_main")
    parser.add_argument("--worker-id", type=int, required=True)
    parser.add_argument("--mesh-dir", required=True)
    parser.add_argument("--peers", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--args", default=default_codec.encode(None).hex())
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--stop-timeout", type=float, default=10.0)
    parser.add_argument("--cleanup", action="append", default=[])
    parser.add_argument("--link-buffer", type=int, default=None)
    options = parser.parse_args(argv)
    # A terminal's Ctrl-C reaches the whole process group; the parent decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    peers = [int(p) for p in options.peers.split(",") if p]
    args = default_codec.decode(bytes.fromhex(options.args))
    try:
        import uvloop  # noqa: F401
    except ImportError:
        use_uvloop = False
    else:
        use_uvloop = True
    reason = "failed"
    try:
        reason = anyio.run(
            _serve,
            options.worker_id,
            options.mesh_dir,
            peers,
            options.bootstrap,
            args,
            options.ready_fd,
            options.control_fd,
            options.stop_timeout,
            options.link_buffer,
            backend="asyncio",
            backend_options={"use_uvloop": use_uvloop},
        )
    except _BootstrapFailed:
        return 1
    except Exception as exc:
        if not _lost_a_peer(exc):
            # Losing a peer is the consequence of another process ending (the driver names the
            # first cause), and is reported on the status pipe only: an aborted job prints no
            # traceback per worker.
            traceback.print_exc()
        _report_failure(options.ready_fd, exc)
        return 1
    finally:
        if _orphaned(reason, parent):
            # Nobody else is left to remove what this mesh leaves on disk.
            for path in [options.mesh_dir, *options.cleanup]:
                shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # No interpreter finalization: everything of the worker's is closed or given up by now,
    # and finalizing a worker whose driver is gone printed ~600 lines of extension-module leak
    # reports ("nanobind: leaked ...", from the hot-key sketches) into the user's terminal.
    os._exit(code)
