"""Micro-benchmark: should the transactional sink's staging writes run on the loop or a thread?

    python benchmarks/txn_sink.py                    # 8192-item batches, 40 per mode (~25 s)
    python benchmarks/txn_sink.py --batches 100 --batch 1024

One batch = ``--batch`` small dicts (``{"user": 123456, "page": "/p/42", "ts": ..., "n": 7}``,
~60 bytes a line), staged as one epoch's output. Three ways of staging it, each measured with
the loop idle and with the loop busy (a task that spins on ``anyio.sleep(0)``, standing in for
the key-group actors a worker's loop runs meanwhile):

* ``loop``: what ``TransactionalPartition.write_epoch`` does: encode and ``write`` on the loop.
* ``thread``: encode and write in ``anyio.to_thread.run_sync``.
* ``write-thread``: encode on the loop, ``write`` in a thread.

Printed per mode: median and p99 wall time per batch (until the ``await`` returns), and the
longest the loop went without a turn while batches were staged (``stall``: the largest gap
between two iterations of the spinning task; busy runs only). The staging task yields once
between batches, as an actor does when it goes back to its mailbox. Then the two commit phases:
``pre_commit`` (fsync + close + directory fsync) of an epoch of ``--epoch-batches`` batches,
and ``commit`` (rename + directory fsync) of it, medians over ``--epochs`` epochs.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
from shoal.runtime._sinks import _encode_lines
from shoal.runtime._txn_sink import TransactionalJsonlSink


def batch_of(n: int, seed: int) -> list[dict[str, Any]]:
    return [
        {"user": 100_000 + (i * 7919 + seed) % 100_000, "page": f"/p/{i % 97}", "ts": i, "n": 7}
        for i in range(n)
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def write_all(f: io.FileIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[f.write(view) :]


def stager(mode: str, f: io.FileIO) -> Callable[[list[Any]], Awaitable[None]]:
    async def on_loop(items: list[Any]) -> None:
        write_all(f, _encode_lines("bench", items))

    async def in_thread(items: list[Any]) -> None:
        await anyio.to_thread.run_sync(lambda: write_all(f, _encode_lines("bench", items)))

    async def write_in_thread(items: list[Any]) -> None:
        data = _encode_lines("bench", items)
        await anyio.to_thread.run_sync(write_all, f, data)

    return {"loop": on_loop, "thread": in_thread, "write-thread": write_in_thread}[mode]


async def stage(mode: str, busy: bool, batches: list[list[Any]], root: Path) -> dict[str, float]:
    times: list[float] = []
    stall = 0.0
    done = anyio.Event()

    async def spin() -> None:
        nonlocal stall
        last = time.perf_counter()
        while not done.is_set():
            await anyio.lowlevel.checkpoint()
            now = time.perf_counter()
            stall = max(stall, now - last)
            last = now

    with open(root / f"{mode}-{busy}.jsonl", "wb", buffering=0) as f:  # noqa: ASYNC230
        write = stager(mode, f)
        async with anyio.create_task_group() as tg:
            if busy:
                tg.start_soon(spin)
                await anyio.lowlevel.checkpoint()
            for items in batches:
                start = time.perf_counter()
                await write(items)
                times.append(time.perf_counter() - start)
                # an actor goes back to its mailbox between batches: the loop turns here
                await anyio.lowlevel.checkpoint()
            done.set()
    return {"median": statistics.median(times), "p99": pct(times, 0.99), "stall": stall}


def split_costs(batches: list[list[Any]]) -> tuple[float, float]:
    """Median encode time and median write time of one batch (page cache, no fsync)."""
    encodes: list[float] = []
    writes: list[float] = []
    with tempfile.TemporaryFile(buffering=0) as f:
        for items in batches * 3:
            start = time.perf_counter()
            data = _encode_lines("bench", items)
            encodes.append(time.perf_counter() - start)
            start = time.perf_counter()
            write_all(f, data)  # type: ignore[arg-type]
            writes.append(time.perf_counter() - start)
    return statistics.median(encodes), statistics.median(writes)


async def commit_phases(
    root: Path, batches: list[list[Any]], epochs: int, per_epoch: int
) -> tuple[float, float, int]:
    sink = TransactionalJsonlSink(root / "txn")
    sink.recover(None)
    partition = sink.open_partition(0, 1)
    pre: list[float] = []
    com: list[float] = []
    for epoch in range(1, epochs + 1):
        for i in range(per_epoch):
            await partition.write_epoch(epoch, batches[(epoch + i) % len(batches)])
        start = time.perf_counter()
        await partition.pre_commit(epoch)
        pre.append(time.perf_counter() - start)
        start = time.perf_counter()
        await partition.commit(epoch)
        com.append(time.perf_counter() - start)
    await partition.aclose()
    size = sink.published_files()[0].stat().st_size
    return statistics.median(pre), statistics.median(com), size


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--epoch-batches", type=int, default=4)
    args = parser.parse_args()
    batches = [batch_of(args.batch, seed) for seed in range(8)]
    size = len(_encode_lines("bench", batches[0]))
    print(f"batch: {args.batch} items, {size} bytes; {args.batches} batches per mode")
    encode_s, write_s = split_costs(batches)
    print(f"one batch on the loop: encode {encode_s * 1e3:.2f} ms, write {write_s * 1e3:.2f} ms")
    # For comparison only (the sinks use the stdlib encoder: msgspec would also encode sets,
    # bytes and dataclasses, which JsonlSink refuses, and NaN as null).
    encoder = msgspec.json.Encoder()
    times = []
    for items in batches * 3:
        start = time.perf_counter()
        encoder.encode_lines(items)
        times.append(time.perf_counter() - start)
    msgspec_ms = statistics.median(times) * 1e3
    print(f"the same batch with msgspec.json.Encoder.encode_lines: {msgspec_ms:.2f} ms")
    with tempfile.TemporaryDirectory(prefix="shoal-txn-bench-") as tmp:
        root = Path(tmp)
        work = [batches[i % len(batches)] for i in range(args.batches)]
        # interleaved: every mode sees the same machine state, round by round
        results: dict[tuple[str, bool], list[dict[str, float]]] = {}
        for _round in range(2):
            for busy in (False, True):
                for mode in ("loop", "thread", "write-thread"):
                    r = await stage(mode, busy, work, root)
                    results.setdefault((mode, busy), []).append(r)
        print(f"{'mode':<14}{'loop':<6}{'median ms':>10}{'p99 ms':>9}{'stall ms':>10}")
        for (mode, busy), rs in results.items():
            median = statistics.median(r["median"] for r in rs) * 1e3
            p99 = statistics.median(r["p99"] for r in rs) * 1e3
            stall = max(r["stall"] for r in rs) * 1e3
            label = "busy" if busy else "idle"
            shown = f"{stall:10.2f}" if busy else f"{'-':>10}"
            print(f"{mode:<14}{label:<6}{median:10.2f}{p99:9.2f}{shown}")
        pre, com, fsize = await commit_phases(root, batches, args.epochs, args.epoch_batches)
        print(
            f"epoch of {args.epoch_batches} batches ({fsize / 1e6:.1f} MB): "
            f"pre_commit {pre * 1e3:.2f} ms, commit {com * 1e3:.2f} ms (medians of {args.epochs})"
        )


if __name__ == "__main__":
    anyio.run(main)
