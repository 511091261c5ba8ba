"""The key-group contract is frozen: fixed vectors, stability, and routing properties."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shoal.runtime import key_group_of, key_hash
from shoal.runtime._keys import KeyGroupRouter

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
