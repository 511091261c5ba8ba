"""Throughput of the kernel: local tell+receive, idle wake-ups, remote tells to a worker process.

Run: /tmp/venv/bin/python tests/actors/bench_throughput.py [--local N] [--wake N] [--remote N]
[--big N] (0 skips a part). Prints messages/s; not part of the test suite (speed targets live
here, not in assertions).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from anyio.lowlevel import checkpoint
from shoal.actors import Actor, open_worker, open_worker_process

BOOT = f"{Path(__file__).parent / '_proc_actors.py'}:bootstrap"


class Sink(Actor):
    def __init__(self) -> None:
        self.count = 0

    async def receive(self, message: Any) -> Any:
        if message == "count":
            return self.count
        self.count += 1
        return None


async def local(n: int) -> None:
    async with open_worker(0) as worker:
        ref = await worker.spawn(Sink, name="sink", mailbox_size=1024)
        start = time.perf_counter()
        for i in range(n):
            await ref.tell(i)
        assert await ref.ask("count") == n
        elapsed = time.perf_counter() - start
    print(f"local tell+receive: {n / elapsed:,.0f} messages/s ({n:,} in {elapsed:.2f} s)")


async def wake(n: int, actors: int) -> None:
    """The idle-receiver path: every message finds its actor parked on an empty mailbox.

    Like the streaming engine's key-group actors fed one batch at a time: the driver tells each
    of ``actors`` idle actors one message, then yields until every one of them has handled it
    and parked again (two checkpoints: the anyio stream's receive() yielded once before it
    parked), so no message ever finds a busy receiver or a non-empty mailbox.
    """
    async with open_worker(0) as worker:
        refs = [await worker.spawn(Sink, name=f"k{i}") for i in range(actors)]
        rounds = max(1, n // actors)
        await checkpoint()
        await checkpoint()
        start = time.perf_counter()
        for _ in range(rounds):
            for ref in refs:
                await ref.tell(1)
            await checkpoint()
            await checkpoint()
        elapsed = time.perf_counter() - start
        for ref in refs:
            assert await ref.ask("count") == rounds
    total = rounds * actors
    print(
        f"idle wake-up, {actors} actors: {total / elapsed:,.0f} messages/s,"
        f" {elapsed / total * 1e6:.2f} us/message ({total:,} in {elapsed:.2f} s)"
    )


async def remote(n: int, payload_size: int) -> None:
    mesh = Path(tempfile.mkdtemp(prefix="shoal-bench-", dir="/tmp"))
    peers = [-1, 0]
    payload: Any = b"x" * payload_size if payload_size else 1
    try:
        async with (
            open_worker(-1, mesh_dir=mesh, peers=peers) as driver,
            open_worker_process(
                0,
                mesh,
                peers,
                bootstrap=BOOT,
                args={"spawn": [["sink", "sink", 1024]], "placement": {}},
            ),
        ):
            driver.directory.place("sink", 0)
            ref = driver.ref("sink")
            await ref.ask("count")  # connected both ways
            start = time.perf_counter()
            for _ in range(n):
                await ref.tell(payload)
            count = await ref.ask("count")
            elapsed = time.perf_counter() - start
            stats = driver.statistics()
    finally:
        shutil.rmtree(mesh, ignore_errors=True)
    assert count == n, count
    mb = stats.bytes_out / elapsed / 1e6
    print(
        f"remote tell ({payload_size} B payload): {n / elapsed:,.0f} envelopes/s,"
        f" {mb:,.1f} MB/s on the wire, {stats.remote_frames_out:,} frames"
        f" ({n:,} in {elapsed:.2f} s)"
    )


async def main(args: argparse.Namespace) -> None:
    if args.local:
        await local(args.local)
    if args.wake:
        await wake(args.wake, 1)
        await wake(args.wake, 64)
    if args.remote:
        await remote(args.remote, 0)
    if args.big:
        await remote(args.big, 8192)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--local", type=int, default=1_000_000)
    parser.add_argument("--wake", type=int, default=300_000)
    parser.add_argument("--remote", type=int, default=300_000)
    parser.add_argument("--big", type=int, default=50_000)
    options = parser.parse_args()
    for backend_options in ({"use_uvloop": True},):
        anyio.run(main, options, backend="asyncio", backend_options=backend_options)
