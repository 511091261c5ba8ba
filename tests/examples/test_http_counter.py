"""The example service (examples/http_counter) against the real server: uvicorn on loopback,
requests with httpx, a clean shutdown with a final checkpoint."""

from __future__ import annotations

import socket
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.http_counter.app import create_app


def _listening_socket() -> socket.socket:
    """A loopback socket on a free port, listening already: requests sent before uvicorn
    has started wait in its backlog (no race for the port, no wait for readiness)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.asyncio
async def test_the_service_counts_posted_events_and_stops_with_a_final_checkpoint(
    tmp_path: Path,
) -> None:
    app = create_app(tmp_path / "state")
    sock = _listening_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    users = ["ada", "bob", "ada", "cy", "ada", "bob"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(server.serve, sockets=[sock]))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            offsets = []
            for user in users:
                response = await client.post("/events", json={"user": user})
                assert response.status_code == 202
                offsets.append(response.json()["offset"])
            assert offsets == list(range(len(users)))
            bad = await client.post("/events", json={"name": "x"})
            assert bad.status_code == 422
            for user, count in Counter(users).items():
                response = await client.get(f"/counts/{user}", params={"fresh": "1"})
                assert response.json() == {"user": user, "count": count}
            assert (await client.get("/counts/nobody")).json() == {"user": "nobody", "count": 0}
            stats = (await client.get("/stats")).json()
            assert stats["records_in"] == len(users)
        server.should_exit = True
    result = app.state.result
    assert result.read_state("per_user", "value") == dict(Counter(users))
    assert result.checkpoints is not None
    assert result.checkpoints.last_completed >= 1  # the final checkpoint of the shutdown
    sock.close()
