"""The key-group contract is frozen: fixed vectors, stability, and routing properties."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shoal.runtime import key_group_of, key_hash
from shoal.runtime._keys import KeyGroupRouter
from shoal.runtime._operators import DeadLetters, key_and_route

from shoal import CollectingSink, Flow, IterableSource, run

# Computed once when the contract was frozen. If one of these changes, every savepoint's keys
# land in other key groups: do not "fix" the vector, fix the code.
VECTORS: list[tuple[Any, int, int]] = [
    ("user-1", 0x1719FECB9B8B2C3F, 63),
    ("", 0xA0A482954FA7B32A, 42),
    ("ü", 0x8B0087FEA5FC7F54, 84),
    (b"\x00\xff", 0x700C3C996279B705, 5),
    (0, 0xC44BDFF4074EECDB, 91),
    (1, 0xE12EF9D2EB86CEEB, 107),
    (-1, 0xFC1537FC103CB7CF, 79),
    (2**63, 0xE47C1A18ACF010D8, 88),
    (-(2**64), 0x8725BAF4486215E4, 100),
    (123456789, 0xC5DF71BC9B63C72A, 42),
    (("a", 1), 0xE7272839147A66D7, 87),
    (("a", (b"b", -7)), 0x349FEF28F81B8A28, 40),
    ((), 0x6B148C0872500941, 65),
]


@pytest.mark.parametrize(("key", "expected_hash", "group_of_128"), VECTORS)
def test_fixed_vectors(key: Any, expected_hash: int, group_of_128: int) -> None:
    assert key_hash(key) == expected_hash
    assert key_group_of(key, 128) == group_of_128
    assert KeyGroupRouter(128).group_of(key) == group_of_128


def test_hash_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = "from shoal.runtime import key_hash; print(key_hash('user-1'), key_hash(('a', 1)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    ).stdout.split()
    assert [int(x) for x in out] == [VECTORS[0][1], VECTORS[10][1]]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            [1, 2],
            r"^key must be str, bytes, int or a tuple of those; got list — did you mean a tuple\?$",
        ),
        (1.5, r"^key must be str, bytes, int or a tuple of those; got float$"),
        (True, r"^key must be str, bytes, int or a tuple of those; got bool$"),
        (None, r"^key must be str, bytes, int or a tuple of those; got NoneType$"),
        (
            ("a", 1.0),
            r"^key must be str, bytes, int or a tuple of those; got float inside a tuple$",
        ),
    ],
)
def test_bad_keys_are_a_clear_type_error(key: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        key_hash(key)
    with pytest.raises(TypeError, match=message):
        KeyGroupRouter(8).group_of(key)


keys = st.recursive(
    st.one_of(st.integers(), st.text(max_size=10), st.binary(max_size=10)),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=8,
)


@given(st.lists(keys, max_size=200), st.integers(1, 512))
def test_routing_partitions_by_key_group_and_keeps_order(batch: list[Any], groups: int) -> None:
    router = KeyGroupRouter(groups)
    values = [("v", i) for i in range(len(batch))]
    routed = router.route(batch, values, list(range(len(batch))))
    seen: list[int] = []
    for group, (group_keys, group_values, offsets) in routed.items():
        assert 0 <= group < groups
        assert all(key_group_of(k, groups) == group for k in group_keys)
        assert offsets == sorted(offsets)  # input order kept within a group
        assert [values[o] for o in offsets] == group_values
        assert [batch[o] for o in offsets] == group_keys
        seen.extend(offsets)
    assert sorted(seen) == list(range(len(batch)))  # nothing lost, nothing doubled


def test_routing_stays_right_when_a_batch_fills_the_cache_past_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shoal.runtime._keys._CACHE_LIMIT", 8)
    router = KeyGroupRouter(16)
    for start in (0, 5, 3, 100):  # each batch mixes cached keys with new ones
        batch: list[Any] = [*range(start, start + 6), "a", ("t", start)]
        routed = router.route(batch, batch, list(range(len(batch))))
        for group, (group_keys, _values, _offsets) in routed.items():
            assert all(key_group_of(k, 16) == group for k in group_keys)
        assert sum(len(g[0]) for g in routed.values()) == len(batch)
        assert len(router._cache) <= 8


@pytest.mark.parametrize(
    "family",
    [
        lambda i: f"user-{i}",
        lambda i: i,
        lambda i: ("tenant", i % 7, i),
        lambda i: i.to_bytes(8, "big"),
    ],
    ids=["str", "int", "tuple", "bytes"],
)
def test_key_groups_are_roughly_uniform(family: Any) -> None:
    counts = [0] * 128
    for i in range(64_000):
        counts[key_group_of(family(i), 128)] += 1
    assert 500 * 0.8 < min(counts) <= max(counts) < 500 * 1.2


def _is_key(key: Any) -> bool:
    if type(key) is tuple:
        return all(_is_key(item) for item in key)
    return type(key) in (str, bytes, int)


# Keys that compare equal (or hash equal) across types: only the exact str/bytes/int ones, and
# tuples of those, are keys; bool and float are refused wherever they appear.
MIXED_KEYS: list[Any] = [
    1,
    True,
    1.0,
    0,
    False,
    -0.0,
    "1",
    b"1",
    (1, 2),
    (True, 2),
    (1.0, 2),
    ((1,), "a"),
    ((True,), "a"),
]
VALID_MIXED = {repr(key) for key in MIXED_KEYS if _is_key(key)}


@settings(max_examples=200)
@given(st.permutations(MIXED_KEYS), st.integers(1, 5))
def test_whether_a_key_is_accepted_never_depends_on_arrival_order(
    order: list[Any], batch: int
) -> None:
    router = KeyGroupRouter(16)  # one router for every batch: its cache outlives a batch
    dead = DeadLetters(worker=0)
    accepted: list[Any] = []
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        offsets = list(range(start, start + len(chunk)))
        routed = key_and_route("op", lambda value: value, router, chunk, offsets, "s", dead)
        for group, (group_keys, _values, group_offsets) in routed.items():
            assert [order[o] for o in group_offsets] == group_keys
            # The exact key object is routed, not an equal key of another type.
            assert [type(k) for k in group_keys] == [type(order[o]) for o in group_offsets]
            assert all(key_group_of(k, 16) == group for k in group_keys)
            accepted.extend(group_keys)
    assert {repr(key) for key in accepted} == VALID_MIXED
    letters = dead.take()
    assert sorted(repr(letter.record) for letter in letters) == sorted(
        repr(key) for key in MIXED_KEYS if repr(key) not in VALID_MIXED
    )
    assert all(letter.error_type == "InvalidKeyError" for letter in letters)


@pytest.mark.parametrize("order", [[1, True, 1.0], [True, 1, 1.0], [1.0, True, 1]])
def test_a_flow_counts_int_keys_and_dead_letters_bool_and_float_in_any_order(
    order: list[Any], tmp_path: Path
) -> None:
    flow = Flow("mixed", num_key_groups=8)
    flow.source(IterableSource(order)).key_by(lambda value: value).count().sink(CollectingSink())
    result = run(flow, state_dir=tmp_path, batch_size=8)
    assert result.read_state("count", "value") == {1: 1}
    assert result.dead_letters == 2
    assert sorted(letter.record for letter in result.dead_letter_sink.letters) == sorted(
        [True, 1.0]
    )


def test_a_cache_hit_still_refuses_an_equal_key_of_another_type() -> None:
    router = KeyGroupRouter(8)
    router.group_of(1)
    router.group_of((1, "a"))
    for key in (True, 1.0, (True, "a"), (1.0, "a")):
        with pytest.raises(TypeError, match=r"^key must be str, bytes, int or a tuple of those"):
            router.group_of(key)
        with pytest.raises(TypeError, match=r"^key must be str, bytes, int or a tuple of those"):
            router.route([key], [None], [0])
