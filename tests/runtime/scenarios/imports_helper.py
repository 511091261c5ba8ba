"""A scenario that imports a helper module from its own folder (in every process)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from scenario_helper_words import WORDS, word_of

from shoal import Check, CountingSink, Flow, IterableSource, JobResult, Scenario


def build(repeat: int) -> Flow:
    flow = Flow("imports_helper", num_key_groups=8)
    (
        flow.source(IterableSource(list(WORDS) * repeat, splits=2))
        .key_by(word_of)
        .count(name="words")
        .sink(CountingSink())
    )
    return flow


def checks(result: JobResult, params: Mapping[str, Any]) -> Iterator[Check]:
    expected = {word: n * params["repeat"] for word, n in Counter(WORDS).items()}
    counted = result.read_state("words", "value")
    yield Check("counts equal the oracle", counted == expected, f"{counted}")


scenario = Scenario(name="imports_helper", build=build, checks=checks, params={"repeat": 10})
