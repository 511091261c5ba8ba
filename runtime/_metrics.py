"""Metrics: plain counters on the hot path, exported to Prometheus at scrape time.

The data path only adds to ints and floats on a :class:`WorkerMetrics`; nothing there touches
prometheus-client. A :class:`JobCollector` turns the latest per-worker reports into Prometheus
metric families when a server scrapes ``/metrics`` (served on loopback by :func:`serve_metrics`,
and only when the user asks for a port). Checkpoint figures live on the driver (the checkpoint
coordinator's :class:`CheckpointStatistics`, which ``Progress.checkpoints`` carries): the
collector reads them from a second callable, and exports no checkpoint family while it returns
None (checkpoints off).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ._checkpoint_stats import CheckpointStatistics
from ._load import load_families

__all__ = ("JobCollector", "WorkerMetrics", "serve_metrics")


@dataclass(slots=True)
class WorkerMetrics:
    """Counters of one worker. Only the worker's own event loop writes them."""

    worker: int
    records_in: int = 0
    records_out: int = 0
    dead_letters: int = 0
    # records sent to key groups on other workers (through their exchanges)
    records_crossing: int = 0
    # operator -> [records in, records out, seconds busy]
    by_operator: dict[str, list[float]] = field(default_factory=dict)
    # (operator, key group) -> (entries, bytes) at the last flush
    state_size: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    flushes: int = 0
    flushed_entries: int = 0
    flush_seconds: float = 0.0
    # the longest single flush (an epoch commit, an early write-back, the final flush)
    flush_max_seconds: float = 0.0
    # sampled state reads (see KeyGroupActor): how many, and their total seconds
    access_samples: int = 0
    access_seconds: float = 0.0
    # process CPU seconds when the sources started (so a report can say CPU spent on the job)
    cpu_at_start: float = 0.0

    def observe_operator(
        self, operator: str, records_in: int, records_out: int, seconds: float
    ) -> None:
        counts = self.by_operator.get(operator)
        if counts is None:
            counts = self.by_operator[operator] = [0, 0, 0.0]
        counts[0] += records_in
        counts[1] += records_out
        counts[2] += seconds

    def observe_state_access(self, seconds: float) -> None:
        """One sampled state read (through the store: cache, unflushed overlay, then LMDB)."""
        self.access_samples += 1
        self.access_seconds += seconds

    def observe_flush(self, entries: int, seconds: float) -> None:
        self.flushes += 1
        self.flushed_entries += entries
        self.flush_seconds += seconds
        if seconds > self.flush_max_seconds:
            self.flush_max_seconds = seconds

    def snapshot(self) -> dict[str, Any]:
        """A CBOR-able copy for the driver."""
        return {
            "worker": self.worker,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "dead_letters": self.dead_letters,
            "records_crossing": self.records_crossing,
            "by_operator": {k: list(v) for k, v in self.by_operator.items()},
            "state_size": [[op, kg, n, b] for (op, kg), (n, b) in self.state_size.items()],
            "flushes": self.flushes,
            "flushed_entries": self.flushed_entries,
            "flush_seconds": self.flush_seconds,
            "flush_max_seconds": self.flush_max_seconds,
            "access_samples": self.access_samples,
            "access_seconds": self.access_seconds,
            "cpu_seconds": time.process_time() - self.cpu_at_start,
        }


class JobCollector(Collector):
    """Exports the latest worker snapshots (from ``source()``) as Prometheus metrics, and the
    job's checkpoint statistics (from ``checkpoints()``, when given and not None)."""

    def __init__(
        self,
        job: str,
        source: Callable[[], Iterable[dict[str, Any]]],
        checkpoints: Callable[[], CheckpointStatistics | None] | None = None,
    ) -> None:
        self._job = job
        self._source = source
        self._checkpoints = checkpoints

    def collect(self) -> Iterator[Any]:
        # Counters are named with their ``_total`` suffix, as Prometheus' naming rules ask; the
        # exposition's ``# TYPE`` line names the family without it (OpenMetrics).
        snaps = list(self._source())
        labels = ["job", "worker"]
        rin = CounterMetricFamily(
            "shoal_records_in_total", "Records read by sources", labels=labels
        )
        rout = CounterMetricFamily(
            "shoal_records_out_total", "Records written to the sink", labels=labels
        )
        dead = CounterMetricFamily(
            "shoal_dead_letters_total", "Records sent to the dead-letter sink", labels=labels
        )
        crossing = CounterMetricFamily(
            "shoal_records_crossing_total",
            "Records a worker sent to key groups on other workers",
            labels=labels,
        )
        op_in = CounterMetricFamily(
            "shoal_operator_records_in_total",
            "Records into a keyed operator",
            labels=[*labels, "operator"],
        )
        op_out = CounterMetricFamily(
            "shoal_operator_records_out_total",
            "Records out of a keyed operator",
            labels=[*labels, "operator"],
        )
        entries = GaugeMetricFamily(
            "shoal_state_entries",
            "State entries per key group",
            labels=[*labels, "operator", "key_group"],
        )
        size = GaugeMetricFamily(
            "shoal_state_bytes",
            "State bytes per key group",
            labels=[*labels, "operator", "key_group"],
        )
        access = SummaryMetricFamily(
            "shoal_state_access_seconds",
            "Sampled state reads through the store (cache, then LMDB)",
            labels=labels,
        )
        flush = SummaryMetricFamily(
            "shoal_state_flush_seconds", "State flushes to LMDB", labels=labels
        )
        depth = GaugeMetricFamily(
            "shoal_mailbox_depth", "Messages waiting in a worker's mailboxes", labels=labels
        )
        cache = GaugeMetricFamily(
            "shoal_state_cache_bytes",
            "Estimated bytes of a worker's cached state entries (its state memory in use)",
            labels=labels,
        )
        cache_limit = GaugeMetricFamily(
            "shoal_state_cache_limit_bytes", "A worker's state memory budget", labels=labels
        )
        evicted = CounterMetricFamily(
            "shoal_state_cache_evictions_total",
            "Clean state entries evicted to keep to the budget",
            labels=labels,
        )
        hits = CounterMetricFamily(
            "shoal_state_cache_hits_total",
            "State reads answered from a worker's cache",
            labels=labels,
        )
        misses = CounterMetricFamily(
            "shoal_state_cache_misses_total",
            "State reads that missed the cache and went to LMDB",
            labels=labels,
        )
        hit_ratio = GaugeMetricFamily(
            "shoal_state_cache_hit_ratio",
            "Share of a worker's state reads answered from its cache, since it started",
            labels=labels,
        )
        for snap in snaps:
            w = [self._job, str(snap["worker"])]
            rin.add_metric(w, snap["records_in"])
            rout.add_metric(w, snap["records_out"])
            dead.add_metric(w, snap["dead_letters"])
            crossing.add_metric(w, snap.get("records_crossing", 0))
            for op, (n_in, n_out, _busy) in snap["by_operator"].items():
                op_in.add_metric([*w, op], n_in)
                op_out.add_metric([*w, op], n_out)
            for op, kg, n, b in snap["state_size"]:
                entries.add_metric([*w, op, str(kg)], n)
                size.add_metric([*w, op, str(kg)], b)
            access.add_metric(w, snap["access_samples"], snap["access_seconds"])
            flush.add_metric(w, snap["flushes"], snap["flush_seconds"])
            depth.add_metric(w, snap.get("mailbox_depth", 0))
            cache.add_metric(w, snap.get("state_cache_bytes", 0))
            if snap.get("state_cache_limit") is not None:
                cache_limit.add_metric(w, snap["state_cache_limit"])
            evicted.add_metric(w, snap.get("state_cache_evicted", 0))
            n_hits = snap.get("state_cache_hits", 0)
            n_misses = snap.get("state_cache_misses", 0)
            hits.add_metric(w, n_hits)
            misses.add_metric(w, n_misses)
            if n_hits + n_misses:
                hit_ratio.add_metric(w, n_hits / (n_hits + n_misses))
        yield from (rin, rout, dead, crossing, op_in, op_out, entries, size, access, flush, depth)
        yield from (cache, cache_limit, evicted, hits, misses, hit_ratio)
        yield from load_families(self._job, snaps)
        stats = None if self._checkpoints is None else self._checkpoints()
        if stats is not None:
            yield from checkpoint_families(self._job, stats)


def _summary(name: str, doc: str, job: str, quantiles: dict[str, float | None]) -> Metric:
    """A summary family with quantile samples (prometheus-client's SummaryMetricFamily takes
    only count and sum); the caller adds ``_count`` and ``_sum``."""
    family = Metric(name, doc, "summary")
    for q, value in quantiles.items():
        if value is not None:
            family.add_sample(name, {"job": job, "quantile": q}, value)
    return family


def checkpoint_families(job: str, stats: CheckpointStatistics) -> list[Metric]:
    """The checkpoint coordinator's figures as Prometheus metric families (label ``job``).

    Durations are a summary (p50 and p99 of the recent window, count and sum of every completed
    checkpoint); pauses and alignment a summary of their p99 (one sample per key group per
    checkpoint) beside a gauge of the run's maximum; bytes and files written are counters by
    ``kind`` (``full`` or ``delta``).
    """
    label = [job]
    completed = CounterMetricFamily(
        "shoal_checkpoints_completed_total",
        "Checkpoints whose manifest was written",
        labels=["job"],
    )
    completed.add_metric(label, stats.completed)
    failed = CounterMetricFamily(
        "shoal_checkpoints_failed_total", "Checkpoints aborted", labels=["job"]
    )
    failed.add_metric(label, stats.failed)
    skipped = CounterMetricFamily(
        "shoal_checkpoints_skipped_total",
        "Checkpoint triggers skipped while one was in flight",
        labels=["job"],
    )
    skipped.add_metric(label, stats.skipped)
    last = GaugeMetricFamily(
        "shoal_checkpoint_last_completed_epoch",
        "The newest completed checkpoint's epoch",
        labels=["job"],
    )
    last.add_metric(label, stats.last_completed)
    duration = _summary(
        "shoal_checkpoint_duration_seconds",
        "Checkpoint trigger to manifest written",
        job,
        {"0.5": stats.duration_p50_s, "0.99": stats.duration_p99_s},
    )
    duration.add_sample("shoal_checkpoint_duration_seconds_count", {"job": job}, stats.completed)
    duration.add_sample("shoal_checkpoint_duration_seconds_sum", {"job": job}, stats.duration_sum_s)
    pause = _summary(
        "shoal_checkpoint_pause_seconds",
        "Processing pause of one key group for a checkpoint (its local epoch commit)",
        job,
        {"0.99": stats.pause_p99_s},
    )
    pause.add_sample("shoal_checkpoint_pause_seconds_count", {"job": job}, stats.pause_samples)
    pause.add_sample("shoal_checkpoint_pause_seconds_sum", {"job": job}, stats.pause_sum_s)
    max_pause = GaugeMetricFamily(
        "shoal_checkpoint_pause_max_seconds",
        "The longest processing pause of one key group for a checkpoint",
        labels=["job"],
    )
    max_pause.add_metric(label, stats.max_pause_s)
    alignment = _summary(
        "shoal_checkpoint_alignment_seconds",
        "Barrier alignment of one key group (first barrier to the last input channel's)",
        job,
        {"0.99": stats.alignment_p99_s},
    )
    alignment.add_sample(
        "shoal_checkpoint_alignment_seconds_count", {"job": job}, stats.alignment_samples
    )
    alignment.add_sample(
        "shoal_checkpoint_alignment_seconds_sum", {"job": job}, stats.alignment_sum_s
    )
    max_alignment = GaugeMetricFamily(
        "shoal_checkpoint_alignment_max_seconds",
        "The longest barrier alignment of one key group",
        labels=["job"],
    )
    max_alignment.add_metric(label, stats.max_alignment_s)
    written = CounterMetricFamily(
        "shoal_checkpoint_written_bytes_total",
        "Bytes of key-group checkpoint files written, by kind",
        labels=["job", "kind"],
    )
    written.add_metric([job, "full"], stats.full_bytes)
    written.add_metric([job, "delta"], stats.delta_bytes)
    files = CounterMetricFamily(
        "shoal_checkpoint_files_total",
        "Key-group checkpoint files written, by kind",
        labels=["job", "kind"],
    )
    files.add_metric([job, "full"], stats.full_files)
    files.add_metric([job, "delta"], stats.delta_files)
    entries = CounterMetricFamily(
        "shoal_checkpoint_written_entries_total",
        "State entries in the key-group checkpoint files written, by kind",
        labels=["job", "kind"],
    )
    entries.add_metric([job, "full"], stats.full_entries)
    entries.add_metric([job, "delta"], stats.delta_entries)
    recovery = SummaryMetricFamily(
        "shoal_recovery_seconds",
        "Failure noticed to every worker processing again from the last completed checkpoint",
        labels=["job"],
    )
    recovery.add_metric(label, len(stats.recoveries_s), sum(stats.recoveries_s))
    return [
        completed,
        failed,
        skipped,
        last,
        duration,
        pause,
        max_pause,
        alignment,
        max_alignment,
        written,
        files,
        entries,
        recovery,
    ]


def serve_metrics(collector: Collector, port: int, addr: str = "127.0.0.1") -> Callable[[], None]:
    """Serve ``collector`` on http://addr:port/metrics (loopback unless told otherwise).

    Returns a function that stops the server.
    """
    from prometheus_client import start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, thread = start_http_server(port, addr=addr, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
