"""An HTTP service that embeds a shoal job: POST events, GET live per-key counts.

    pip install 'shoal[examples]'
    uvicorn --factory examples.http_counter.app:create_app --port 8000
    curl -X POST localhost:8000/events -d '{"user": "ada"}'
    curl localhost:8000/counts/ada

The job runs in the server's own event loop for the app's lifetime (Starlette's lifespan):
``POST /events`` pushes each event into the flow's PushSource (waiting while its buffer is
full: backpressure reaches the HTTP client), ``GET /counts/{user}`` asks the key-group actor
that owns the user for its count (live state, not a copy), and shutting the server down stops
the job: what was accepted is processed and a final checkpoint is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shoal import CollectingSink, Flow, Job, PushSource, open_job


def user_of(event: dict[str, Any]) -> str:
    return str(event["user"])


def build_flow() -> Flow:
    """``PushSource -> key_by(user) -> count("per_user")``."""
    flow = Flow("http_counter", num_key_groups=16)
    source = PushSource("events", capacity=1024)
    flow.source(source).key_by(user_of).count(name="per_user").sink(CollectingSink())
    return flow


def create_app(state_dir: str | os.PathLike[str] | None = None) -> Starlette:
    """The app; its job keeps state in ``state_dir`` (default: a new temporary folder)."""
    directory = Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp()) / "state"
    job: Job | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal job
        async with open_job(build_flow(), state_dir=directory, checkpoint_interval=5.0) as job:
            yield
            await job.stop()  # drain what was accepted, take the final checkpoint
        app.state.result = job.result

    async def post_event(request: Request) -> JSONResponse:
        assert job is not None
        event = await request.json()
        if not isinstance(event, dict) or not isinstance(event.get("user"), str):
            return JSONResponse({"error": 'send {"user": "<name>"}'}, status_code=422)
        offset = await job.send(event)
        return JSONResponse({"offset": offset}, status_code=202)

    async def get_count(request: Request) -> JSONResponse:
        assert job is not None
        if request.query_params.get("fresh") == "1":
            await job.wait_processed()  # read your writes: every accepted event counted
        user = request.path_params["user"]
        count = await job.query("per_user", "value", user, default=0)
        return JSONResponse({"user": user, "count": count})

    async def get_stats(request: Request) -> JSONResponse:
        assert job is not None
        stats = await job.statistics()
        return JSONResponse(
            {
                "records_in": stats.records_in,
                "checkpoints": stats.checkpoints_completed,
                "workers": stats.workers,
            }
        )

    return Starlette(
        routes=[
            Route("/events", post_event, methods=["POST"]),
            Route("/counts/{user}", get_count),
            Route("/stats", get_stats),
        ],
        lifespan=lifespan,
    )
