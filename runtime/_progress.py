"""Live progress on a terminal (stderr), drawn with rich."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ._job import Progress

__all__ = ("ProgressDisplay",)


class ProgressDisplay:
    """Records/s, per-worker load and elapsed time, refreshed as progress arrives."""

    def __init__(self, name: str, workers: int) -> None:
        self._name = name
        self._workers = workers
        self._live = Live(
            self._render(None),
            console=Console(file=sys.stderr),
            refresh_per_second=4,
            transient=True,
        )

    def _render(self, progress: Progress | None) -> Table:
        table = Table(title=f"shoal: {self._name}", show_edge=False, min_width=72)
        table.add_column("worker")
        table.add_column("records in", justify="right")
        table.add_column("share", justify="right")
        table.add_column("mailbox", justify="right")
        if progress is None:
            table.caption = "starting workers..."
            return table
        total = max(progress.records_in, 1)
        for index, (count, depth) in enumerate(
            zip(progress.per_worker_in, progress.mailbox_depth, strict=True)
        ):
            table.add_row(str(index), f"{count:,}", f"{100 * count / total:.0f}%", str(depth))
        table.caption = (
            f"{progress.elapsed_s:6.1f} s   {progress.events_per_s:,.0f} records/s   "
            f"{progress.records_out:,} out   {progress.dead_letters:,} dead letters"
        )
        return table

    def start(self) -> None:
        self._live.start()

    def update(self, progress: Progress) -> None:
        self._live.update(self._render(progress))

    def stop(self) -> None:
        self._live.stop()
