"""Per-key-group load: measured on the data path, reported by workers, turned into rates on
the driver, exported to Prometheus.

On the data path (a key-group actor's batch) the only work is :meth:`KeyGroupLoad.observe`: a
counter add per batch, and every batch a strided sample of its keys (one key in
:data:`SAMPLE_STRIDE`, weighted by the stride) into a heavy-hitters sketch, Apache
DataSketches' *frequent items* sketch (Misra-Gries with a purge, error bound
``3.5 / 2**lg_max_map_size`` of the sampled weight). A key whose estimated share of its key
group's records passes :data:`HOT_KEY_SHARE` is logged once per key-group actor, at info level
(the actor's ``log`` callable): a skewed workload (zipf, as in the clickstream scenario) is
expected to have hot keys, and one line per key would bury the rest of the log. At the end of
an attempt the driver logs at most one warning that sums them up (:func:`hot_key_summary` over
the workers' final reports): how many keys hold more than :data:`HOT_KEY_SHARE` of their key
group's records, the hottest few, and why a rebalance cannot help. The figures themselves
(:class:`HotKey` in ``job.loads()``, the ``shoal_hot_key_*`` metrics) are unchanged.

A worker's report carries, per key-group actor it hosts, ``[operator, key group, records,
mailbox depth, top keys]`` (:func:`group_reports`; state bytes are already in the report's
``state_size``). The driver's :class:`LoadMonitor` turns two readings into records per second
per key group (summed over the keyed operators: a key group moves with all its operators).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datasketches import (  # type: ignore[import-untyped]  # no stubs or py.typed
    frequent_items_error_type,
    frequent_items_sketch,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from ._placement import Placement
    from ._worker import WorkerEnv

__all__ = (
    "HOT_KEY_SHARE",
    "SAMPLE_STRIDE",
    "GroupLoad",
    "HotKey",
    "KeyGroupLoad",
    "LoadMonitor",
    "group_reports",
    "hot_key_summary",
    "load_families",
    "worker_loads",
)

#: One key in this many of a batch goes into the sketch (weighted by it): the sketch's update
#: is a C++ call of ~0.3-0.6 µs, so every key would cost about as much as processing it.
SAMPLE_STRIDE = 32
#: The sketch keeps at most ``0.75 * 2**LG_MAP`` counters; its error is ~3.5 / 64 (5.5 %) of
#: the sampled weight: enough to tell a key with a tenth of a key group's records.
LG_MAP = 6
#: A key estimated to carry more than this share of its key group's records is hot: logged once
#: (info) by its actor, and counted in the attempt's summary (one warning).
HOT_KEY_SHARE = 0.5
#: ... once the key group has seen at least this many records (a share of ten is noise).
HOT_KEY_MIN_RECORDS = 10_000
#: The hot-key check runs every this many batches (it sorts the sketch's counters).
HOT_KEY_CHECK_EVERY = 64
#: Top keys a report carries per key-group actor, and the length their ``repr`` is cut to.
TOP_KEYS = 3
KEY_REPR_MAX = 48
#: The hot keys an attempt's summary names (the hottest first); it counts all of them.
SUMMARY_KEYS = 3


def key_repr(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= KEY_REPR_MAX else text[: KEY_REPR_MAX - 3] + "..."


@dataclass(frozen=True, slots=True)
class HotKey:
    """A frequent key of a key group: its ``repr`` (truncated), its estimated records and its
    estimated share of the key group's records (both from a sample: estimates)."""

    key: str
    records: int
    share: float


class GroupLoad:
    """One key-group actor's load counters. Written only by the actor, on its event loop.

    Args:
        log: called once per hot key the actor finds (``log(event, key=, share=, records=)``);
            the key-group actor passes its logger's ``info`` (see the module docstring).
    """

    __slots__ = ("_batches", "_log", "_sketch", "_warned", "records")

    def __init__(self, log: Callable[..., Any] | None = None) -> None:
        self.records = 0
        self._batches = 0
        self._sketch: Any = None  # created at the first sample
        self._warned: set[str] = set()
        self._log = log

    def observe(self, keys: Sequence[Any]) -> None:
        """One batch of ``keys`` processed (called once per batch, never per record)."""
        self.records += len(keys)
        self._batches += 1
        sketch = self._sketch
        if sketch is None:
            sketch = self._sketch = frequent_items_sketch(LG_MAP)
        # A rotating offset: a batch shorter than the stride is sampled with probability
        # len / stride, so every record has the same expected weight.
        for key in keys[self._batches % SAMPLE_STRIDE :: SAMPLE_STRIDE]:
            sketch.update(key, SAMPLE_STRIDE)
        if self._batches % HOT_KEY_CHECK_EVERY == 0 and self._log is not None:
            self._check_hot()

    @property
    def sampled(self) -> int:
        """The records the sketch stands for (sampled keys times the stride)."""
        return 0 if self._sketch is None else int(self._sketch.total_weight)

    def top(self, n: int = TOP_KEYS) -> list[HotKey]:
        """The ``n`` most frequent keys by estimate, most frequent first."""
        sketch = self._sketch
        if sketch is None or sketch.is_empty():
            return []
        total = sketch.total_weight
        items = sketch.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES)
        return [
            HotKey(key_repr(item), int(estimate), estimate / total)
            for item, estimate, _lower, _upper in items[:n]
        ]

    def _check_hot(self) -> None:
        sketch = self._sketch
        total = sketch.total_weight
        if total < HOT_KEY_MIN_RECORDS:
            return
        # Lower bounds: a key is called hot only when its share surely passes the threshold.
        for item, estimate, lower, _upper in sketch.get_frequent_items(
            frequent_items_error_type.NO_FALSE_POSITIVES, int(HOT_KEY_SHARE * total)
        ):
            text = key_repr(item)
            if lower > HOT_KEY_SHARE * total and text not in self._warned:
                self._warned.add(text)
                assert self._log is not None
                self._log(
                    "hot key: most of its key group's records (one actor processes them "
                    "in order: rebalancing cannot spread them)",
                    key=text,
                    share=round(estimate / total, 3),
                    records=int(estimate),
                )

    def to_data(self) -> list[list[Any]]:
        return [[hot.key, hot.records, round(hot.share, 4)] for hot in self.top()]


def hot_key_summary(reports: Iterable[Mapping[str, Any]]) -> str | None:
    """One line on the hot keys in workers' reports (``None``: there are none): a key is hot
    when its estimated share of its key-group actor's records passes :data:`HOT_KEY_SHARE`
    and the actor has processed at least :data:`HOT_KEY_MIN_RECORDS` records (the actors'
    own test, on the estimate the report carries).

    For example: ``3 hot keys hold more than 50% of their key group's records: per_user 118886
    (kg 48, 74%), ...; rebalancing cannot spread a single key (one actor processes it in
    order)``.
    """
    hot: list[tuple[float, str, int, str]] = []
    for report in reports:
        for op, group, records, _waiting, top in report.get("groups", ()):
            if records < HOT_KEY_MIN_RECORDS:
                continue
            hot.extend(
                (float(share), str(op), int(group), str(key))
                for key, _estimate, share in top
                if share > HOT_KEY_SHARE
            )
    if not hot:
        return None
    hot.sort(key=lambda entry: (-entry[0], entry[1], entry[2]))
    named = ", ".join(
        f"{op} {key} (kg {group}, {share:.0%})" for share, op, group, key in hot[:SUMMARY_KEYS]
    )
    more = f", and {len(hot) - SUMMARY_KEYS} more" if len(hot) > SUMMARY_KEYS else ""
    keys = (
        "1 hot key holds more than {:.0%} of its"
        if len(hot) == 1
        else f"{len(hot)} hot keys hold more than {{:.0%}} of their"
    ).format(HOT_KEY_SHARE)
    return (
        f"{keys} key group's records: {named}{more}; "
        f"rebalancing cannot spread a single key (one actor processes it in order)"
    )


def group_reports(env: WorkerEnv, depths: Mapping[str, int]) -> list[list[Any]]:
    """Per key-group actor hosted by ``env``: ``[operator, key group, records, mailbox depth,
    top keys]`` (the part of a worker's report the driver's :class:`LoadMonitor` reads)."""
    return [
        [
            actor.stage.name,
            actor.key_group,
            actor.load.records,
            depths.get(name, 0),
            actor.load.to_data(),
        ]
        for name, actor in env.key_groups.items()
    ]


@dataclass(frozen=True, slots=True)
class KeyGroupLoad:
    """One key group's load (over all its keyed operators), as the driver measured it.

    Attributes:
        key_group: the key group.
        worker: the worker hosting it at the reading (-1: none reported it, e.g. mid-move).
        records: records processed since it started on that worker.
        records_per_s: records processed per second since the previous reading: the load
            the default placement policy balances.
        state_bytes: its state's size at its last flush or epoch commit.
        mailbox_depth: messages waiting in its actors' mailboxes.
        hot_keys: its most frequent keys (estimates from a sample), per operator.
    """

    key_group: int
    worker: int
    records: int
    records_per_s: float
    state_bytes: int
    mailbox_depth: int
    hot_keys: tuple[tuple[str, HotKey], ...] = ()

    @property
    def load(self) -> float:
        """The figure placement balances: records per second."""
        return self.records_per_s

    def to_json(self) -> dict[str, Any]:
        return {
            "key_group": self.key_group,
            "worker": self.worker,
            "records": self.records,
            "records_per_s": round(self.records_per_s, 1),
            "state_bytes": self.state_bytes,
            "mailbox_depth": self.mailbox_depth,
            "hot_keys": [
                {"operator": op, "key": hot.key, "records": hot.records, "share": hot.share}
                for op, hot in self.hot_keys
            ],
        }


class LoadMonitor:
    """Turns successive worker reports into per-key-group rates (one per attempt: counters
    restart with the workers). A key group that changed worker since the previous reading is
    measured from zero on its new worker (its counter started there)."""

    def __init__(self, num_key_groups: int, clock: Callable[[], float] = time.perf_counter):
        self._groups = num_key_groups
        self._clock = clock
        self._at = clock()
        self._previous: dict[tuple[str, int, int], int] = {}

    def measure(self, reports: Iterable[Mapping[str, Any]]) -> tuple[KeyGroupLoad, ...]:
        """Every key group's load since the previous call (or since this monitor was made)."""
        now = self._clock()
        elapsed = max(now - self._at, 1e-9)
        records = [0] * self._groups
        delta = [0] * self._groups
        worker = [-1] * self._groups
        depth = [0] * self._groups
        size = [0] * self._groups
        hot: list[list[tuple[str, HotKey]]] = [[] for _ in range(self._groups)]
        counts: dict[tuple[str, int, int], int] = {}
        for report in reports:
            index = int(report["worker"])
            for op, group, n, waiting, top in report.get("groups", ()):
                key = (op, group, index)
                counts[key] = n
                before = self._previous.get(key, 0)
                delta[group] += n - before if n >= before else n
                records[group] += n
                worker[group] = index
                depth[group] += waiting
                hot[group].extend((op, HotKey(k, int(r), float(s))) for k, r, s in top)
            for _op, group, _entries, nbytes in report.get("state_size", ()):
                size[group] += nbytes
        self._previous, self._at = counts, now
        return tuple(
            KeyGroupLoad(
                g, worker[g], records[g], delta[g] / elapsed, size[g], depth[g], tuple(hot[g])
            )
            for g in range(self._groups)
        )


def worker_loads(
    loads: Sequence[KeyGroupLoad], placement: Placement, workers: Sequence[int]
) -> dict[int, float]:
    """Each of ``workers``' load under ``placement``: the sum of its key groups' loads."""
    total = dict.fromkeys(workers, 0.0)
    for load in loads:
        owner = placement.group_owner[load.key_group]
        if owner in total:
            total[owner] += load.load
    return total


def load_families(job: str, snaps: Iterable[Mapping[str, Any]]) -> Iterator[Any]:
    """The per-key-group load in worker snapshots as Prometheus metric families."""
    labels = ["job", "worker", "operator", "key_group"]
    records = CounterMetricFamily(
        "shoal_key_group_records_total",
        "Records processed by a key-group actor since it started on this worker",
        labels=labels,
    )
    depth = GaugeMetricFamily(
        "shoal_key_group_mailbox_depth",
        "Messages waiting in a key-group actor's mailbox",
        labels=labels,
    )
    hot = GaugeMetricFamily(
        "shoal_hot_key_records",
        "Estimated records of one of a key group's most frequent keys (sampled sketch)",
        labels=[*labels, "key"],
    )
    share = GaugeMetricFamily(
        "shoal_hot_key_share",
        "Estimated share of its key group's records of one of its most frequent keys",
        labels=[*labels, "key"],
    )
    for snap in snaps:
        worker = str(snap["worker"])
        for op, group, n, waiting, top in snap.get("groups", ()):
            where = [job, worker, op, str(group)]
            records.add_metric(where, n)
            depth.add_metric(where, waiting)
            for key, estimate, fraction in top:
                hot.add_metric([*where, key], estimate)
                share.add_metric([*where, key], fraction)
    yield from (records, depth, hot, share)
