"""Entry point of a worker process: ``python -m shoal.actors._process_main`` (see _process)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import traceback
from typing import Any

import anyio

from ._bootstrap import resolve_object
from ._codec import default_codec
from ._worker import open_worker

__all__ = ("main",)


async def _wait_stdin_closed() -> None:
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    while True:
        await anyio.wait_readable(fd)
        try:
            if not os.read(fd, 4096):
                return
        except BlockingIOError:
            continue


async def _wait_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


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
    worker_id: int, mesh_dir: str, peers: list[int], bootstrap: str, args: Any, ready_fd: int
) -> None:
    asyncio.get_running_loop().set_exception_handler(_ignore_cancelled_read_race)
    async with open_worker(worker_id, mesh_dir=mesh_dir, peers=peers) as worker:
        try:
            function = resolve_object(bootstrap)
            await function(worker, args)
        except Exception as exc:
            traceback.print_exc()
            os.write(ready_fd, f"error {type(exc).__name__}: {exc}\n".encode())
            os.close(ready_fd)
            raise
        os.write(ready_fd, b"ok\n")
        os.close(ready_fd)
        async with anyio.create_task_group() as tg:

            async def stop_on(wait: Any) -> None:
                await wait()
                tg.cancel_scope.cancel()

            tg.start_soon(stop_on, _wait_stdin_closed)
            tg.start_soon(stop_on, _wait_signal)


def main(argv: list[str] | None = None) -> int:
    """Run one worker process until told to stop; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m shoal.actors._process_main")
    parser.add_argument("--worker-id", type=int, required=True)
    parser.add_argument("--mesh-dir", required=True)
    parser.add_argument("--peers", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--args", default=default_codec.encode(None).hex())
    parser.add_argument("--ready-fd", type=int, required=True)
    options = parser.parse_args(argv)
    peers = [int(p) for p in options.peers.split(",") if p]
    args = default_codec.decode(bytes.fromhex(options.args))
    try:
        import uvloop  # noqa: F401
    except ImportError:
        use_uvloop = False
    else:
        use_uvloop = True
    try:
        anyio.run(
            _serve,
            options.worker_id,
            options.mesh_dir,
            peers,
            options.bootstrap,
            args,
            options.ready_fd,
            backend="asyncio",
            backend_options={"use_uvloop": use_uvloop},
        )
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
