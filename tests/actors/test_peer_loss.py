"""Peer loss: nothing buffered for a lost peer disappears uncounted, and an orderly exit that
races a write is not reported as a loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from shoal.actors import PeerLostError, open_worker, open_worker_process
from shoal.actors._bootstrap import resolve_object
from structlog.testing import capture_logs

HERE = Path(__file__).parent
BOOT = f"{HERE / '_proc_actors.py'}:bootstrap"
Add = resolve_object(f"{HERE / '_proc_actors.py'}:Add")

DRIVER = -1


@pytest.mark.processes
@pytest.mark.asyncio
async def test_messages_buffered_for_a_killed_peer_are_counted_as_dead_letters(
    mesh_dir: Path,
) -> None:
    peers = [DRIVER, 0]
    args: dict[str, Any] = {"spawn": [["slow", "slow", 2]], "placement": {"slow": 0}}
    payload = b"x" * 65536
    sent = 0
    async with open_worker(DRIVER, mesh_dir=mesh_dir, peers=peers) as driver:
        driver.directory.place("slow", 0)
        async with open_worker_process(0, mesh_dir, peers, bootstrap=BOOT, args=args) as proc:
            slow = driver.ref("slow")
            assert await slow.ask("count") == [0, True]

            async def send_until_stuck() -> None:
                nonlocal sent
                with pytest.raises(PeerLostError, match="worker 0"):
                    await send_forever()

            async def send_forever() -> None:
                nonlocal sent
                while True:
                    await slow.tell([sent, payload])  # the gate is closed: nothing is read
                    sent += 1

            with capture_logs() as logs:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(send_until_stuck)
                    await anyio.wait_all_tasks_blocked()  # the link is over its high water
                    assert sent > 0
                    proc.kill()
                    await driver.wait_peer_lost(0)
        dropped = [e for e in logs if e["event"] == "messages undelivered: peer lost"]
        assert len(dropped) == 1
        assert dropped[0]["count"] > 0
        assert driver.statistics().dead_letters == dropped[0]["count"]


@pytest.mark.asyncio
async def test_a_write_that_races_a_peers_goodbye_is_not_a_loss(mesh_dir: Path) -> None:
    async with open_worker(0, mesh_dir=mesh_dir, peers=[0, 1, 2]) as worker:
        with capture_logs() as logs:
            # Peer 1's own connection to us is open: its reader will say how it ended.
            worker._readers.add(1)
            worker._link_broke(1, "connection to worker 1 broke: BrokenResourceError()")
            assert not worker.is_peer_lost(1)
            worker._peer_leaving(1)  # the reader then reads its goodbye ...
            worker._readers.discard(1)
            worker._peer_lost(1, "connection from worker 1 closed")  # ... and the end
            # Peer 2 never connected to us: the broken write is all we will learn.
            worker._link_broke(2, "connection to worker 2 broke: BrokenResourceError()")
        assert worker.is_peer_lost(1)
        assert worker.is_peer_lost(2)
        warnings = [(e["event"], e.get("peer")) for e in logs if e["log_level"] == "warning"]
        assert warnings == [("peer lost", 2)]
