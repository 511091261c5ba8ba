"""Metrics: the collector's families and labels, the loopback-only server, live job reports."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from shoal.runtime import _attempt
from shoal.runtime._checkpoint_stats import CheckpointFigures, CheckpointStatistics
from shoal.runtime._metrics import WorkerMetrics

from shoal import (
    AsyncIterableSource,
    CountingSink,
    Flow,
    JobCollector,
    ProcessContext,
    Progress,
    ValueStateSpec,
    run_job,
    serve_metrics,
)

REFUSED = r"[Rr]efused|timed out"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Family name -> type, and (sample name, labels) -> value."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def labels(**items: str) -> frozenset[tuple[str, str]]:
    return frozenset(items.items())


def snapshots() -> list[dict[str, Any]]:
    """Reports of two workers, shaped as ``WorkerEnv.report()`` makes them."""
    first = WorkerMetrics(worker=0, records_in=100, records_out=90, dead_letters=2)
    first.observe_operator("users", 100, 90, 0.5)
    first.state_size[("users", 3)] = (7, 4096)
    first.state_size[("users", 5)] = (1, 512)
    first.observe_flush(8, 0.25)
    first.records_crossing = 64
    second = WorkerMetrics(worker=1, records_in=50, records_out=50)
    second.observe_operator("users", 40, 40, 0.1)
    second.state_size[("users", 6)] = (3, 1024)
    reports = []
    loads = (
        [["users", 3, 80, 3, [["'alice'", 48, 0.6]]], ["users", 5, 20, 1, []]],
        [["users", 6, 40, 0, [["'bob'", 16, 0.4], ["'carol'", 16, 0.4]]]],
    )
    for metrics, depth, groups, load in ((first, 4, 2, loads[0]), (second, 0, 1, loads[1])):
        report = metrics.snapshot()
        report["mailbox_depth"] = depth
        report["key_groups"] = groups
        report["groups"] = load  # per key-group actor (see _load.group_reports)
        report["state_cache_bytes"] = 5_000 * (depth + 1)  # the state memory budget
        report["state_cache_limit"] = 1 << 20
        report["state_cache_evicted"] = 7 * depth
        report["state_cache_hits"] = 300 * depth
        report["state_cache_misses"] = 100 * depth
        reports.append(report)
    return reports


def scrape(collector: JobCollector) -> str:
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return prometheus_client.generate_latest(registry).decode()


def test_the_collector_exports_every_family_with_job_and_worker_labels() -> None:
    reports = snapshots()
    types, samples = parse(scrape(JobCollector("clicks", lambda: reports)))
    assert types == {
        "shoal_records_in": "counter",
        "shoal_records_out": "counter",
        "shoal_dead_letters": "counter",
        "shoal_records_crossing": "counter",
        "shoal_operator_records_in": "counter",
        "shoal_operator_records_out": "counter",
        "shoal_state_entries": "gauge",
        "shoal_state_bytes": "gauge",
        "shoal_state_access_seconds": "summary",
        "shoal_state_flush_seconds": "summary",
        "shoal_mailbox_depth": "gauge",
        "shoal_key_group_records": "counter",
        "shoal_key_group_mailbox_depth": "gauge",
        "shoal_hot_key_records": "gauge",
        "shoal_hot_key_share": "gauge",
        "shoal_state_cache_bytes": "gauge",
        "shoal_state_cache_limit_bytes": "gauge",
        "shoal_state_cache_evictions": "counter",
        "shoal_state_cache_hits": "counter",
        "shoal_state_cache_misses": "counter",
        "shoal_state_cache_hit_ratio": "gauge",
    }
    w0, w1 = labels(job="clicks", worker="0"), labels(job="clicks", worker="1")
    assert samples[("shoal_records_in_total", w0)] == 100
    assert samples[("shoal_records_in_total", w1)] == 50
    assert samples[("shoal_records_out_total", w0)] == 90
    assert samples[("shoal_dead_letters_total", w0)] == 2
    assert samples[("shoal_dead_letters_total", w1)] == 0
    assert samples[("shoal_records_crossing_total", w0)] == 64
    assert samples[("shoal_records_crossing_total", w1)] == 0
    assert samples[("shoal_operator_records_in_total", w0 | labels(operator="users"))] == 100
    assert samples[("shoal_operator_records_out_total", w1 | labels(operator="users"))] == 40
    assert samples[("shoal_state_entries", w0 | labels(operator="users", key_group="3"))] == 7
    assert samples[("shoal_state_bytes", w0 | labels(operator="users", key_group="3"))] == 4096
    assert samples[("shoal_state_entries", w0 | labels(operator="users", key_group="5"))] == 1
    assert samples[("shoal_state_bytes", w1 | labels(operator="users", key_group="6"))] == 1024
    assert samples[("shoal_state_flush_seconds_count", w0)] == 1
    assert samples[("shoal_state_flush_seconds_sum", w0)] == 0.25
    assert samples[("shoal_mailbox_depth", w0)] == 4
    assert samples[("shoal_mailbox_depth", w1)] == 0
    assert samples[("shoal_state_cache_bytes", w0)] == 25_000
    assert samples[("shoal_state_cache_limit_bytes", w1)] == 1 << 20
    assert samples[("shoal_state_cache_evictions_total", w0)] == 28
    assert samples[("shoal_state_cache_hits_total", w0)] == 1_200
    assert samples[("shoal_state_cache_misses_total", w0)] == 400
    assert samples[("shoal_state_cache_hit_ratio", w0)] == 0.75
    assert ("shoal_state_cache_hit_ratio", w1) not in samples  # no read yet: no ratio
    group3 = w0 | labels(operator="users", key_group="3")
    assert samples[("shoal_key_group_records_total", group3)] == 80
    assert samples[("shoal_key_group_mailbox_depth", group3)] == 3
    assert samples[("shoal_hot_key_records", group3 | labels(key="'alice'"))] == 48
    assert samples[("shoal_hot_key_share", group3 | labels(key="'alice'"))] == 0.6
    group6 = w1 | labels(operator="users", key_group="6")
    assert samples[("shoal_hot_key_share", group6 | labels(key="'carol'"))] == 0.4
    assert samples[("shoal_key_group_records_total", group6)] == 40
    for worker, report in ((w0, reports[0]), (w1, reports[1])):
        assert samples[("shoal_state_access_seconds_count", worker)] == report["access_samples"]
        assert samples[("shoal_state_access_seconds_sum", worker)] == report["access_seconds"]


def test_the_collector_reads_its_source_at_every_scrape() -> None:
    reports: list[dict[str, Any]] = []
    collector = JobCollector("clicks", lambda: reports)
    _types, samples = parse(scrape(collector))
    assert not any(name == "shoal_records_in_total" for name, _ in samples)
    reports[:] = snapshots()
    _types, samples = parse(scrape(collector))
    assert samples[("shoal_records_in_total", labels(job="clicks", worker="0"))] == 100


def checkpoint_statistics() -> CheckpointStatistics:
    """Two completed checkpoints (a full, then a delta), one failed, one recovery."""
    figures = CheckpointFigures()
    chain = [
        {"kind": "full", "epoch": 1, "size": 1000, "entries": 40},
        {"kind": "delta", "epoch": 2, "size": 100, "entries": 4},
    ]
    figures.add(
        1, 0.5, {"op#0": {"pause_s": 0.004, "alignment_s": 0.001, "record": {"chain": chain[:1]}}}
    )
    figures.add(
        2, 0.25, {"op#0": {"pause_s": 0.002, "alignment_s": 0.003, "record": {"chain": chain}}}
    )
    figures.recovered(0.75)
    return figures.statistics(failed=1, skipped=3)


def test_the_collector_exports_the_checkpoint_statistics_it_is_given() -> None:
    stats = checkpoint_statistics()
    types, samples = parse(scrape(JobCollector("clicks", lambda: [], lambda: stats)))
    checkpoint_types = {name: kind for name, kind in types.items() if "checkpoint" in name}
    assert checkpoint_types == {
        "shoal_checkpoints_completed": "counter",
        "shoal_checkpoints_failed": "counter",
        "shoal_checkpoints_skipped": "counter",
        "shoal_checkpoint_last_completed_epoch": "gauge",
        "shoal_checkpoint_duration_seconds": "summary",
        "shoal_checkpoint_pause_seconds": "summary",
        "shoal_checkpoint_pause_max_seconds": "gauge",
        "shoal_checkpoint_alignment_seconds": "summary",
        "shoal_checkpoint_alignment_max_seconds": "gauge",
        "shoal_checkpoint_written_bytes": "counter",
        "shoal_checkpoint_files": "counter",
        "shoal_checkpoint_written_entries": "counter",
    }
    assert types["shoal_recovery_seconds"] == "summary"
    job = labels(job="clicks")
    assert samples[("shoal_checkpoints_completed_total", job)] == 2
    assert samples[("shoal_checkpoints_failed_total", job)] == 1
    assert samples[("shoal_checkpoints_skipped_total", job)] == 3
    assert samples[("shoal_checkpoint_last_completed_epoch", job)] == 2
    assert samples[("shoal_checkpoint_duration_seconds", job | labels(quantile="0.5"))] == 0.25
    assert samples[("shoal_checkpoint_duration_seconds", job | labels(quantile="0.99"))] == 0.5
    assert samples[("shoal_checkpoint_duration_seconds_count", job)] == 2
    assert samples[("shoal_checkpoint_duration_seconds_sum", job)] == 0.75
    assert samples[("shoal_checkpoint_pause_seconds", job | labels(quantile="0.99"))] == 0.004
    assert samples[("shoal_checkpoint_pause_seconds_count", job)] == 2
    assert samples[("shoal_checkpoint_pause_seconds_sum", job)] == pytest.approx(0.006)
    assert samples[("shoal_checkpoint_pause_max_seconds", job)] == 0.004
    assert samples[("shoal_checkpoint_alignment_seconds", job | labels(quantile="0.99"))] == 0.003
    assert samples[("shoal_checkpoint_alignment_max_seconds", job)] == 0.003
    assert samples[("shoal_checkpoint_written_bytes_total", job | labels(kind="full"))] == 1000
    assert samples[("shoal_checkpoint_written_bytes_total", job | labels(kind="delta"))] == 100
    assert samples[("shoal_checkpoint_files_total", job | labels(kind="full"))] == 1
    assert samples[("shoal_checkpoint_files_total", job | labels(kind="delta"))] == 1
    assert samples[("shoal_checkpoint_written_entries_total", job | labels(kind="full"))] == 40
    assert samples[("shoal_checkpoint_written_entries_total", job | labels(kind="delta"))] == 4
    assert samples[("shoal_recovery_seconds_count", job)] == 1
    assert samples[("shoal_recovery_seconds_sum", job)] == 0.75


def test_before_any_checkpoint_completed_no_quantile_is_exported() -> None:
    stats = CheckpointFigures().statistics(failed=0, skipped=0)
    _types, samples = parse(scrape(JobCollector("j", lambda: [], lambda: stats)))
    assert samples[("shoal_checkpoints_completed_total", labels(job="j"))] == 0
    assert samples[("shoal_checkpoint_duration_seconds_count", labels(job="j"))] == 0
    assert not any("quantile" in dict(label) for _name, label in samples)


@pytest.mark.parametrize("checkpoints", [None, lambda: None], ids=["no-source", "off"])
def test_without_checkpoint_statistics_no_checkpoint_family_is_exported(checkpoints: Any) -> None:
    types, _samples = parse(scrape(JobCollector("j", snapshots, checkpoints)))
    assert not [name for name in types if "checkpoint" in name or "recover" in name]


def test_a_report_without_mailbox_depth_counts_as_empty_mailboxes() -> None:
    report = WorkerMetrics(worker=2).snapshot()
    _types, samples = parse(scrape(JobCollector("j", lambda: [report])))
    assert samples[("shoal_mailbox_depth", labels(job="j", worker="2"))] == 0


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The servers serve_metrics starts (it hands back only a stop function)."""
    started: list[Any] = []
    real = prometheus_client.start_http_server

    def spy(*args: Any, **kwargs: Any) -> Any:
        server, thread = real(*args, **kwargs)
        started.append(server)
        return server, thread

    monkeypatch.setattr(prometheus_client, "start_http_server", spy)
    return started


def test_serve_metrics_serves_the_collector_on_loopback_only(servers: list[Any]) -> None:
    reports = snapshots()
    port = free_port()
    stop = serve_metrics(JobCollector("clicks", lambda: reports), port)
    try:
        [server] = servers
        assert server.server_address[:2] == ("127.0.0.1", port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        _types, samples = parse(text)
        assert samples[("shoal_records_in_total", labels(job="clicks", worker="0"))] == 100
        assert samples[("shoal_mailbox_depth", labels(job="clicks", worker="0"))] == 4
        # Another loopback address of this host is not served: the socket is bound to
        # 127.0.0.1, not to every interface.
        with pytest.raises(OSError, match=REFUSED):
            socket.create_connection(("127.0.0.2", port), timeout=2).close()
    finally:
        stop()
    with pytest.raises(OSError, match=REFUSED):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_serve_metrics_does_not_touch_the_global_registry() -> None:
    before = set(prometheus_client.REGISTRY._names_to_collectors)
    stop = serve_metrics(JobCollector("clicks", snapshots), free_port())
    stop()
    assert set(prometheus_client.REGISTRY._names_to_collectors) == before


def count_clicks(key: int, value: int, ctx: ProcessContext) -> None:
    ctx.state.n.update(ctx.state.n.value() + 1)
    ctx.emit(value)


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]


@pytest.mark.anyio
async def test_progress_reports_of_a_running_job_feed_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reports arrive every _PROGRESS_INTERVAL_S; a short interval keeps the test fast. The
    # source holds back its second half until a report has shown the first half through the
    # sink, so one report is taken mid-job, whatever the machine's speed.
    monkeypatch.setattr(_attempt, "_PROGRESS_INTERVAL_S", 0.01)
    half = 10
    caught: list[Progress] = []
    first_half_done = anyio.Event()

    def on_progress(progress: Progress) -> None:
        if not caught and progress.records_in == half and progress.records_out == half:
            caught.append(progress)
            first_half_done.set()

    async def values() -> AsyncIterator[int]:
        for value in range(half):
            yield value
        await first_half_done.wait()
        for value in range(half, 2 * half):
            yield value

    flow = Flow("gated", num_key_groups=4)
    (
        flow.source(AsyncIterableSource(values))
        .key_by(lambda v: v % 3)
        .process(count_clicks, states=[ValueStateSpec("n", default=0)], name="counts")
        .sink(CountingSink())
    )
    with anyio.fail_after(30):
        result = await run_job(flow, state_dir=tmp_path, batch_size=half, on_progress=on_progress)
    assert result.records_in == result.records_out == 2 * half

    [progress] = caught
    assert progress.per_worker_in == (half,)
    assert len(progress.mailbox_depth) == 1
    [report] = progress.reports
    assert report["worker"] == 0
    assert report["key_groups"] == 4
    _types, samples = parse(scrape(JobCollector("gated", lambda: progress.reports)))
    worker = labels(job="gated", worker="0")
    assert samples[("shoal_records_in_total", worker)] == half
    assert samples[("shoal_records_out_total", worker)] == half
    assert samples[("shoal_operator_records_in_total", worker | labels(operator="counts"))] == half
    assert samples[("shoal_mailbox_depth", worker)] == progress.mailbox_depth[0]

    # the final reports feed it the same way
    _types, samples = parse(scrape(JobCollector("gated", lambda: result.reports)))
    assert samples[("shoal_records_in_total", worker)] == 2 * half
    assert (
        samples[("shoal_operator_records_in_total", worker | labels(operator="counts"))] == 2 * half
    )


@pytest.mark.anyio
@pytest.mark.parametrize("interval", [0.05, None], ids=["checkpoints", "off"])
async def test_progress_carries_the_checkpoint_statistics_of_the_running_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: float | None
) -> None:
    # As above: the source waits for one report mid-job, so one is always taken.
    monkeypatch.setattr(_attempt, "_PROGRESS_INTERVAL_S", 0.01)
    caught: list[Progress] = []
    reported = anyio.Event()

    def on_progress(progress: Progress) -> None:
        caught.append(progress)
        reported.set()

    async def values() -> AsyncIterator[int]:
        yield 1
        await reported.wait()
        yield 2

    flow = Flow("gated", num_key_groups=4)
    (
        flow.source(AsyncIterableSource(values))
        .key_by(lambda v: v % 3)
        .process(count_clicks, states=[ValueStateSpec("n", default=0)], name="counts")
        .sink(CountingSink())
    )
    with anyio.fail_after(30):
        result = await run_job(
            flow, state_dir=tmp_path, on_progress=on_progress, checkpoint_interval=interval
        )
    assert caught
    if interval is None:
        assert all(progress.checkpoints is None for progress in caught)
        return
    assert result.checkpoints is not None
    for progress in caught:
        assert isinstance(progress.checkpoints, CheckpointStatistics)
        assert progress.checkpoints.completed <= result.checkpoints.completed
