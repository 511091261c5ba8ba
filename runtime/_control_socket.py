"""A running job's control socket: ``shoal rescale`` and ``shoal status`` reach a job started
by ``shoal run`` through a Unix socket in its state directory.

A Unix socket, not TCP: nothing listens on the network, and who may control the job is who
may open the state directory (the socket is created with the directory's permissions). One
request per connection, one JSON object per line each way::

    {"command": "rescale", "workers": 4}   ->  {"ok": true, "seconds": 1.8, "moves": 70, ...}
    {"command": "status"}                  ->  {"ok": true, "workers": 4, "records_in": ...}
    {"command": "rebalance"}               ->  {"ok": true, "moves": [[3, 0, 1], ...], ...}

A request that cannot be served answers ``{"ok": false, "error": "..."}`` naming why.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketStream
from shoal.actors import ActorStoppedError, PeerLostError
from shoal.actors._log import get_logger
from shoal.storage import CheckpointError

from ._control import JobControl
from ._rescale import RescaleError
from ._statedir import LOCK_NAME

__all__ = ("CONTROL_SOCKET", "request", "running_pid", "serve_control")

log = get_logger("shoal.control")

#: The control socket's name in the state directory.
CONTROL_SOCKET = "shoal-control.sock"
# A Unix socket path is limited to ~108 bytes.
_MAX_PATH = 100
_MAX_REQUEST = 64 * 1024
_ENDED = (
    "the job's run ended (it finished, was stopped, or lost a worker and restarts) before "
    "the request was done"
)


async def serve_control(path: Path, control: JobControl) -> None:
    """Serve control requests on ``path`` until cancelled (a companion of the attempt).

    A Unix socket path is limited to about 100 bytes: when ``path`` is longer (a deep state
    directory), the socket goes to a short private directory under /tmp and
    ``<path>.where`` (beside it, in the state directory) names it for :func:`request`.
    """
    pointer = _pointer(path)
    listen_at, short = path, None
    if len(str(path).encode()) > _MAX_PATH:
        short = Path(tempfile.mkdtemp(prefix="shoal-ctl-", dir="/tmp"))
        listen_at = short / "s.sock"
    _remove(path)  # a previous run's (a socket file outlives a killed process)
    listener = await anyio.create_unix_listener(listen_at)
    try:
        if short is not None:
            pointer.write_text(str(listen_at))  # a tiny file: not worth a thread
        async with listener, anyio.create_task_group() as tg:
            while True:
                stream = await listener.accept()
                tg.start_soon(_serve_one, stream, control)
    finally:
        _remove(listen_at)
        if short is not None:
            _remove(pointer)
            with contextlib.suppress(OSError):
                os.rmdir(short)


def _pointer(path: Path) -> Path:
    return path.with_name(path.name + ".where")


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)  # a tiny call: not worth a thread


async def _serve_one(stream: SocketStream, control: JobControl) -> None:
    async with stream:
        request: Any = None
        rescaler = control.supervisor.rescaler
        workers_before = None if rescaler is None else rescaler.scaling.workers
        try:
            request = json.loads(await _read_line(stream))
            answer = await _answer(request, control)
        except anyio.get_cancelled_exc_class():
            # The attempt ended (the job finished or stopped, or a worker was lost): say so.
            with anyio.CancelScope(shield=True):
                await _send(stream, _ended(request, control, workers_before))
            raise
        except (PeerLostError, ActorStoppedError):  # a worker was lost under the request
            answer = _ended(request, control, workers_before)
        except Exception as exc:  # the request's fault or the job's: say which
            answer = {"ok": False, "error": _error_text(exc)}
        await _send(stream, answer)


def _error_text(exc: Exception) -> str:
    """A request's error for the user: the message of a bad argument or of a move the job
    refused; anything else (unexpected) with its kind."""
    if isinstance(exc, ValueError | TypeError | RescaleError | CheckpointError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _ended(request: Any, control: JobControl, workers_before: int | None) -> dict[str, Any]:
    """The answer to a request whose attempt ended under it: for a rescale, whether it had
    started (a restart of the job starts at the new size) or not (nothing changed: the
    client may send it again to the restarted job, ``retry``)."""
    rescaler = control.supervisor.rescaler
    if isinstance(request, dict) and request.get("command") == "rescale" and rescaler:
        target = request.get("workers")
        if rescaler.scaling.workers == target != workers_before:
            return {
                "ok": False,
                "started": True,
                "error": (
                    f"the job's run ended during the rescale to {target} workers (a worker "
                    f"was lost, or the job stopped or finished): a restart of the job starts "
                    f"with {target} workers (`shoal status` says when it is back)"
                ),
            }
        return {
            "ok": False,
            "retry": True,
            "error": (
                "the job's run ended before the rescale started (a worker was lost, or the "
                "job stopped or finished): nothing changed"
            ),
        }
    return {"ok": False, "retry": True, "error": _ENDED}


async def _send(stream: SocketStream, answer: dict[str, Any]) -> None:
    with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send((json.dumps(answer) + "\n").encode())


async def _read_line(stream: SocketStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive()
        data += chunk
        if len(data) > _MAX_REQUEST:
            raise ValueError("request too long")
    return data.decode()


async def _answer(request: Any, control: JobControl) -> dict[str, Any]:
    if not isinstance(request, dict) or "command" not in request:
        raise ValueError(f"a request is a JSON object with a 'command'; got {request!r}")
    command = request["command"]
    if command == "status":
        placement = control.supervisor.placement
        return {
            "ok": True,
            "workers": control.workers,
            "worker_ids": list(placement.workers),
            "placement_version": placement.version,
            "records_in": await control.records_in(),
        }
    if command == "rescale":
        workers = request.get("workers")
        record = await control.rescale(workers)  # type: ignore[arg-type]
        return {
            "ok": True,
            "workers_before": record.workers_before,
            "workers_after": record.workers_after,
            "seconds": round(record.seconds, 3),
            "moves": record.moves,
        }
    if command == "rebalance":
        return {"ok": True, **(await control.rebalance()).to_json()}
    raise ValueError(f"unknown command {command!r}; known: 'rebalance', 'rescale', 'status'")


async def request(state_dir: Path, message: dict[str, Any], timeout: float = 120.0) -> Any:  # noqa: ASYNC109
    """Send one request to the job running in ``state_dir``; return its answer.

    Raises:
        ConnectionError: no job is listening there (none runs, or it was not started by
            ``shoal run``).
    """
    path = state_dir / CONTROL_SOCKET
    pointer = _pointer(path)
    if pointer.exists():  # the job listens at a short path elsewhere (see serve_control)
        path = Path(pointer.read_text().strip())
    try:
        stream = await anyio.connect_unix(path)
    except OSError as exc:
        pid = running_pid(state_dir)
        if pid is not None:
            raise ConnectionError(
                f"the job in {state_dir} (pid {pid}) is not listening right now: it is "
                "starting, restarting after a lost worker, or finishing"
            ) from None
        raise ConnectionError(
            f"no running job listens at {path} ({os.strerror(exc.errno or 0) or exc}): "
            "start one with `shoal run ... --state-dir` first"
        ) from None
    async with stream:
        await stream.send((json.dumps(message) + "\n").encode())
        with anyio.fail_after(timeout):
            try:
                return json.loads(await _read_line(stream))
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return {"ok": False, "error": _ENDED}


def running_pid(state_dir: Path) -> int | None:
    """The pid of the ``shoal run`` holding ``state_dir`` if that process is alive (the pid
    its lock file names; the lock itself is left alone), else None."""
    try:
        text = (state_dir / LOCK_NAME).read_text().strip()
        pid = int(text)
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, another user's
    return pid
