"""The columnar running count (runtime/_operators.py ``KeyedRunner._run_count``): the same
output, record for record, and the same state as counting one record at a time, on random
batches of every key type, over state already on disk and in the cache, on both backends."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoal.runtime._operators import DeadLetters, KeyedRunner
from shoal.runtime._plan import compile_plan
from shoal.storage import LmdbBackend, MemoryBackend, StateBackend

from shoal import CollectingSink, Flow, IterableSource

KEYS = st.one_of(
    st.integers(-5, 40),
    st.text(alphabet="abc", max_size=3),
    st.tuples(st.integers(0, 3), st.sampled_from(["x", "y"])),
)


def count_op(*, columnar: bool = True) -> Any:
    flow = Flow("f")
    keyed = flow.source(IterableSource([1])).key_by(lambda x: x)
    keyed.count(name="c", columnar=columnar).sink(CollectingSink())
    return compile_plan(flow).stages[1].operator


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    batches=st.lists(st.lists(KEYS, max_size=60), min_size=1, max_size=6),
    flushes=st.lists(st.booleans(), min_size=6, max_size=6),
    lmdb=st.booleans(),
)
def test_the_columnar_count_equals_counting_record_by_record(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[Any]],
    flushes: list[bool],
    lmdb: bool,
) -> None:
    """Both paths side by side on the same batches, each on a store of its own, and both
    against counting in Python."""
    ops = {"c": count_op(), "p": count_op(columnar=False)}
    backend: StateBackend = LmdbBackend(tmp_path_factory.mktemp("c")) if lmdb else MemoryBackend()
    seen: Counter[Any] = Counter()
    stores = {name: backend.open_store(name, 0, op.states) for name, op in ops.items()}
    try:
        for batch, flush in zip(batches, flushes, strict=False):
            offsets = list(range(100, 100 + len(batch)))
            outputs = [
                # a fresh runner per batch: nothing is kept in it
                KeyedRunner(ops[name], stores[name], 0, None).run(
                    batch, batch, offsets, "s", DeadLetters(0)
                )
                for name in ops
            ]
            expected = []
            for key in batch:
                seen[key] += 1
                expected.append((key, seen[key]))
            assert outputs[0] == outputs[1] == (expected, offsets, None)
            if flush:
                for name, op in ops.items():
                    stores[name].flush()
                    stores[name].close()  # the next batch reads its counts from the disk
                    stores[name] = backend.open_store(name, 0, op.states)
        for store in stores.values():
            store.flush()
            assert dict(store.items("value")) == dict(seen)
    finally:
        for store in stores.values():
            store.close()


def test_the_columnar_count_is_the_path_count_takes(tmp_path: Path) -> None:
    """count() runs through the columnar path: keys that would need ``store.key`` per record
    never set it (the per-record path leaves the last key there)."""
    op = count_op()
    with LmdbBackend(tmp_path).open_store("c", 0, op.states) as store:
        runner = KeyedRunner(op, store, 0, None)
        runner.run(["a", "b", "a"], [1, 2, 3], [0, 1, 2], "s", DeadLetters(0))
        assert store.key is None


def test_columnar_takes_a_bool() -> None:
    keyed = Flow("f").source(IterableSource([1])).key_by(lambda x: x)
    with pytest.raises(TypeError, match=r"^columnar must be True or False; got 'no'$"):
        keyed.count(columnar="no")  # type: ignore[arg-type]
