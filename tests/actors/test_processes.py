"""Worker processes in a mesh over Unix sockets: messaging, backpressure, kill -9, migration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from shoal.actors import (
    PeerLostError,
    RemoteActorError,
    UnknownActorError,
    WorkerProcessError,
    open_worker,
    open_worker_process,
)
from shoal.actors._bootstrap import resolve_object

HERE = Path(__file__).parent
BOOT = f"{HERE / '_proc_actors.py'}:bootstrap"
Add = resolve_object(f"{HERE / '_proc_actors.py'}:Add")  # same module, same registration

DRIVER = -1
pytestmark = [pytest.mark.processes, pytest.mark.asyncio]

PLACEMENT = {"c0": 0, "c1": 1, "slow": 0, "gate": 0}


def _args(*spawn: list[Any]) -> dict[str, Any]:
    return {"spawn": list(spawn), "placement": PLACEMENT}


async def test_tell_ask_between_driver_and_two_processes(mesh_dir: Path) -> None:
    peers = [DRIVER, 0, 1]
    async with (
        open_worker(DRIVER, mesh_dir=mesh_dir, peers=peers) as driver,
        open_worker_process(0, mesh_dir, peers, bootstrap=BOOT, args=_args(["counter", "c0", 8])),
        open_worker_process(1, mesh_dir, peers, bootstrap=BOOT, args=_args(["counter", "c1", 8])),
    ):
        for name, worker_id in PLACEMENT.items():
            driver.directory.place(name, worker_id)
        c0 = driver.ref("c0")
        for i in range(200):
            await c0.tell(Add(i, "n"))
        state = await c0.ask(["get"])
        assert state == {"total": sum(range(200)), "order": list(range(200)), "worker": 0}
        # process 0 talks to process 1, asks included
        await c0.tell(["relay", "c1", Add(5, "r")])
        assert await c0.ask(["ask-relay", "c1", ["get"]]) == {
            "total": 5,
            "order": [5],
            "worker": 1,
        }
        assert await c0.ask(["echo", 3]) == Add(3, "echo")
        with pytest.raises(RemoteActorError, match=r"^actor 'c0' raised ValueError: boom$") as e:
            await c0.ask(["boom"])
        assert (e.value.type_name, e.value.remote_message) == ("ValueError", "boom")
        with pytest.raises(
            UnknownActorError, match=r"^no actor named 'nope' on worker 0, and the directory"
        ):
            await c0.ask(["ask-relay", "nope", ["get"]])
        stats = driver.statistics()
        assert stats.remote_frames_out >= 1
        assert stats.remote_frames_out < stats.messages_out  # coalesced
        assert stats.bytes_in > 0


async def test_backpressure_across_the_socket(mesh_dir: Path) -> None:
    peers = [DRIVER, 0, 1]
    payload = b"x" * 8192
    total = 3000  # ~25 MB: more than the link buffer (4 MiB), both socket buffers and the mailbox
    done = anyio.Event()
    sent = 0
    async with (
        open_worker(DRIVER, mesh_dir=mesh_dir, peers=peers) as driver,
        open_worker_process(
            0,
            mesh_dir,
            peers,
            bootstrap=BOOT,
            args=_args(["slow", "slow", 4], ["gatekeeper", "gate", 4]),
        ),
        open_worker_process(1, mesh_dir, peers, bootstrap=BOOT, args=_args(["counter", "c1", 4])),
    ):
        for name, worker_id in PLACEMENT.items():
            driver.directory.place(name, worker_id)
        slow = driver.ref("slow")

        async def send_all() -> None:
            nonlocal sent
            for i in range(total):
                await slow.tell([i, payload])
                sent += 1
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_all)
            # The receiver is gated: the sender must get stuck (bounded wait for a non-event).
            with anyio.move_on_after(1.0):
                await done.wait()
            assert not done.is_set()
            assert 0 < sent < total
            # open the gate through process 1 (the driver's own connection is backed up)
            await driver.ref("c1").tell(["relay", "gate", "open"])
            await done.wait()
        count, in_order = await slow.ask("count")
        while count < total:
            count, in_order = await slow.ask("count")
        assert (count, in_order) == (total, True)


async def test_a_killed_process_is_detected(mesh_dir: Path) -> None:
    peers = [DRIVER, 0]
    async with open_worker(DRIVER, mesh_dir=mesh_dir, peers=peers) as driver:
        driver.directory.place("slow", 0)
        async with open_worker_process(
            0, mesh_dir, peers, bootstrap=BOOT, args=_args(["slow", "slow", 4])
        ) as proc:
            slow = driver.ref("slow")
            assert await slow.ask("count") == [0, True]
            outcome: list[BaseException] = []

            async def ask_forever() -> None:
                try:
                    await slow.ask([0, b""])  # blocks at the closed gate
                except PeerLostError as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(ask_forever)
                await anyio.wait_all_tasks_blocked()
                proc.kill()
                assert await proc.wait() == -9
                await driver.wait_peer_lost(0)
            assert proc.returncode == -9
            assert driver.is_peer_lost(0)
            assert driver.statistics().lost_peers == (0,)
            assert [str(e) for e in outcome] == ["connection from worker 0 closed"]
            with pytest.raises(PeerLostError, match=r"^connection from worker 0 closed$"):
                await slow.tell("count")
        # a restarted worker 0 is reachable again once the driver reconnects
        async with open_worker_process(
            0, mesh_dir, peers, bootstrap=BOOT, args=_args(["slow", "slow", 4])
        ):
            driver.reconnect(0)
            assert not driver.is_peer_lost(0)
            assert await slow.ask("count") == [0, True]


async def test_migrate_across_processes(mesh_dir: Path) -> None:
    peers = [DRIVER, 0, 1]
    async with (
        open_worker(DRIVER, mesh_dir=mesh_dir, peers=peers) as driver,
        open_worker_process(
            0,
            mesh_dir,
            peers,
            bootstrap=BOOT,
            args=_args(["counter", "c0", 8], ["counter", "m", 8]),
        ),
        open_worker_process(1, mesh_dir, peers, bootstrap=BOOT, args=_args(["counter", "c1", 8])),
    ):
        for name, worker_id in {**PLACEMENT, "m": 0}.items():
            driver.directory.place(name, worker_id)
        m = driver.ref("m")
        for i in range(50):
            await m.tell(Add(i, ""))
        await driver.ref("c0").ask(["migrate", "m", 1])
        for i in range(50, 60):
            await m.tell(Add(i, ""))  # the driver's directory is stale: worker 0 forwards
        state = await m.ask(["get"])
        assert state == {"total": sum(range(60)), "order": list(range(60)), "worker": 1}
        driver.directory.place("m", 1)
        await m.tell(Add(60, ""))
        assert (await m.ask(["get"]))["order"] == list(range(61))


async def test_a_failing_bootstrap_is_reported(mesh_dir: Path) -> None:
    with pytest.raises(
        WorkerProcessError,
        match=r"^worker process 0 failed to start: KeyError: 'nope'$",
    ):
        async with open_worker_process(
            0, mesh_dir, [0], bootstrap=BOOT, args={"spawn": [["nope", "x", 1]]}
        ):
            pass  # pragma: no cover


async def test_a_worker_process_is_out_of_reach_of_the_terminals_ctrl_c(mesh_dir: Path) -> None:
    """A terminal sends SIGINT to its foreground process group. A child in that group could be
    killed by it while its interpreter starts (before it can ignore SIGINT): the newcomer trial
    saw "killed by SIGINT before it was ready" in 3 of 7 early Ctrl-Cs. The child runs in a
    session of its own, so only the parent gets the terminal's signals."""
    peers = [DRIVER, 0]
    async with (
        open_worker(DRIVER, mesh_dir=mesh_dir, peers=peers),
        open_worker_process(0, mesh_dir, peers, bootstrap=BOOT, args=_args()) as proc,
    ):
        assert os.getpgid(proc.pid) != os.getpgid(0)
        assert os.getsid(proc.pid) != os.getsid(0)
