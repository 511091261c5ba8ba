"""Random operation sequences with random flushes and reopens equal a plain-dict model."""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from shoal.storage import (
    KeyGroupStore,
    LmdbBackend,
    MapStateSpec,
    MemoryBackend,
    StateBackend,
    ValueStateSpec,
)

SPECS = (ValueStateSpec("value", default=-1), MapStateSpec("map"))

keys = st.sampled_from(["a", ("t", 1)])
user_keys = st.sampled_from([0, 300, "x"])
values = st.integers(-5, 5) | st.text(max_size=3)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("update"), keys, values),
        st.tuples(st.just("clear"), keys),
        st.tuples(st.just("put"), keys, user_keys, values),
        st.tuples(st.just("remove"), keys, user_keys),
        st.tuples(st.just("map_clear"), keys),
        st.tuples(st.just("flush")),
        st.tuples(st.just("reopen")),  # close without flushing: unflushed changes are lost
    ),
    max_size=40,
)


def _run(backend: StateBackend, ops: list[tuple[Any, ...]]) -> None:
    committed: dict[str, dict[Any, Any]] = {"value": {}, "map": {}}
    current: dict[str, dict[Any, Any]] = {"value": {}, "map": {}}
    store: KeyGroupStore = backend.open_store("op", 0, SPECS)

    def snapshot(model: dict[str, dict[Any, Any]]) -> dict[str, dict[Any, Any]]:
        return {"value": dict(model["value"]), "map": {k: dict(m) for k, m in model["map"].items()}}

    try:
        for op in ops:
            kind = op[0]
            if kind == "flush":
                store.flush()
                committed = snapshot(current)
                continue
            if kind == "reopen":
                store.close()
                store = backend.open_store("op", 0, SPECS)
                current = snapshot(committed)
                continue
            store.key = op[1]
            value_state, map_state = store.states.value, store.states.map
            user_map = current["map"].setdefault(op[1], {})
            if kind == "update":
                value_state.update(op[2])
                current["value"][op[1]] = op[2]
            elif kind == "clear":
                value_state.clear()
                current["value"].pop(op[1], None)
            elif kind == "put":
                map_state.put(op[2], op[3])
                user_map[op[2]] = op[3]
            elif kind == "remove":
                map_state.remove(op[2])
                user_map.pop(op[2], None)
            elif kind == "map_clear":
                map_state.clear()
                user_map.clear()
            # After every step, the current key reads exactly as the model says.
            assert value_state.value() == current["value"].get(op[1], -1)
            ordered = sorted(user_map.items(), key=lambda item: _order(item[0]))
            low, high = _order(1), _order("x")
            assert map_state.items(1, "x") == [i for i in ordered if low <= _order(i[0]) < high]
            for user_key in (0, 300, "x"):
                assert map_state.get(user_key, "none") == user_map.get(user_key, "none")
            assert map_state.items() == ordered
            assert map_state.is_empty() == (not user_map)
        expected_values = sorted(current["value"].items(), key=lambda item: _order(item[0]))
        expected_maps = sorted(
            ((k, m) for k, m in current["map"].items() if m), key=lambda item: _order(item[0])
        )
        assert list(store.items("value")) == expected_values
        assert list(store.items("map")) == expected_maps
        store.flush()
        store.close()
        store = backend.open_store("op", 0, SPECS)
        assert list(store.items("value")) == expected_values
        assert list(store.items("map")) == expected_maps
        assert store.statistics().entries == len(current["value"]) + sum(
            len(m) for m in current["map"].values()
        )
    finally:
        store.close()


def _order(key: Any) -> bytes:
    from shoal.storage import encode_key

    return encode_key(key)


@pytest.mark.parametrize("kind", ["lmdb", "memory"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, cache_limit=st.sampled_from([0, 3, 1000]))
# Regressions kept explicit: a flushed remove must delete the committed map entry, and a map
# clear must hide committed entries across a flush and a reopen.
@example(ops=[("put", "a", 0, 1), ("flush",), ("remove", "a", 0), ("flush",)], cache_limit=0)
@example(
    ops=[("put", "a", 0, 1), ("put", "a", "x", 2), ("flush",), ("map_clear", "a"), ("reopen",)],
    cache_limit=1000,
)
@example(
    ops=[("put", "a", 0, 1), ("flush",), ("map_clear", "a"), ("put", "a", 300, 3), ("flush",)],
    cache_limit=3,
)
def test_random_operations_match_a_dict_model(
    kind: str, ops: list[tuple[Any, ...]], cache_limit: int
) -> None:
    if kind == "memory":
        _run(MemoryBackend(cache_limit=cache_limit), ops)
        return
    with tempfile.TemporaryDirectory() as root:
        _run(LmdbBackend(root, map_size=1 << 20, cache_limit=cache_limit), ops)
