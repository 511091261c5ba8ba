"""Windows scenario: clicks per user per second (1 s tumbling windows in event time).

    shoal run scenarios/windows.py --workers 4

Synthetic zipf-skewed clicks (``ClickstreamSource``); each split's clicks are stamped with the
millisecond of their position inside the split, so every split moves through the same event
time (0 .. events/splits ms) at its own pace and the watermark (the minimum over the splits)
follows them all. A tumbling window of 1,000 ms counts each user's clicks per second; windows
fire as the watermark passes their end and are removed once fired. Each fired window goes to a
transactional JSON-lines sink, published when the checkpoint after it completes.

The checks recompute every (user, second) count independently from the generator and compare
them with the sink's published output of the whole job (every run of it: a stopped or killed
run resumed with ``--resume`` is judged as one job), window by window; every click must be in
exactly one fired window, none late, and no window state may be left behind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from shoal.runtime._clickstream import BASE_TS

from shoal import (
    Check,
    ClickstreamSource,
    Flow,
    JobResult,
    Monotonous,
    Scenario,
    TransactionalJsonlSink,
    Tumbling,
)

WINDOW_MS = 1_000


def source(events: int, users: int, seed: int, splits: int) -> ClickstreamSource:
    return ClickstreamSource(events=events, users=users, seed=seed, splits=splits, zipf_s=0.9)


class SplitTime:
    """A click's event time: its millisecond inside its split (so the splits run in step)."""

    def __init__(self, events: int, splits: int) -> None:
        self.span = events // splits

    def __call__(self, click: tuple[int, str, int]) -> int:
        return (click[2] - BASE_TS) % self.span


def user_of(click: tuple[int, str, int]) -> int:
    return click[0]


def build(events: int, users: int, seed: int, splits: int, key_groups: int, output: str) -> Flow:
    flow = Flow("windows", num_key_groups=key_groups)
    (
        flow.source(
            source(events, users, seed, splits),
            timestamps=SplitTime(events, splits),
            watermarks=Monotonous(),
        )
        .key_by(user_of)
        .window(Tumbling(WINDOW_MS))
        .count(name="per_second")
        .sink(TransactionalJsonlSink(output))
    )
    return flow


def oracle(events: int, users: int, seed: int, splits: int) -> Counter[tuple[int, int, int, int]]:
    """Every (user, start, end, count) window, recomputed from the generator."""
    stamp = SplitTime(events, splits)
    counts: Counter[tuple[int, int]] = Counter()
    for click in source(events, users, seed, splits).iter_all():
        ts = stamp(click)
        counts[(click[0], ts - ts % WINDOW_MS)] += 1
    return Counter((user, start, start + WINDOW_MS, n) for (user, start), n in counts.items())


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    events = params["events"]
    expected = oracle(events, params["users"], params["seed"], params["splits"])
    # What the sink published, over every run of the job (not only this run's items).
    got: Counter[tuple[int, int, int, int]] = Counter(
        tuple(item) for item in TransactionalJsonlSink(params["output"]).read()
    )
    yield Check(
        "every event read", result.records_in == events, f"{result.records_in:,} of {events:,}"
    )
    yield Check(
        "no late records, no dead letters",
        result.dead_letters == 0,
        f"{result.dead_letters} dead letters",
    )
    in_windows = sum(item[3] for item in got.elements())
    yield Check(
        "every event counted in exactly one fired window",
        in_windows == events,
        f"{in_windows:,} events in {sum(got.values()):,} fired windows",
    )
    missing = expected - got
    extra = got - expected
    yield Check(
        "per-user per-second counts equal the oracle",
        not missing and not extra,
        f"{len(expected):,} windows compared; {sum(missing.values())} missing, "
        f"{sum(extra.values())} unexpected",
    )
    left = result.read_state("per_second", "_shoal_windows")
    yield Check("no window state left behind", not left, f"{len(left)} keys with open windows")


scenario = Scenario(
    name="windows",
    build=build,
    checks=checks,
    params={
        "events": 200_000,
        "users": 20_000,
        "seed": 3,
        "splits": 8,
        "key_groups": 64,
        "output": "{state_dir}/output",
    },
    description="per-user clicks per second (1 s tumbling event-time windows) against an oracle",
)
