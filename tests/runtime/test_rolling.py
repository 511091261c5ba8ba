"""Running sum, min and max (``KeyedStream.sum/min/max`` and ``reduce`` of ``operator.add``,
``min`` or ``max``; runtime/_rolling.py): the columnar path gives the same output, dead letters
and state as folding record by record, on random batches of ints (huge ones too), floats
(signed zeros, infinities, NaN) and bad values; and jobs of them keep exact state through
worker processes, a kill and rescales."""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import recovery_flows
import rolling_flows as flows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rescale_flows import oracle_of, read_records
from shoal.runtime._faults import Fault
from shoal.runtime._operators import DeadLetters, KeyedRunner
from shoal.runtime._plan import compile_plan
from shoal.runtime.timeline import at, rescale, stop
from shoal.storage import LmdbBackend, MemoryBackend, StateBackend

from shoal import CollectingSink, Flow, IterableSource, run_job

FLOWS = str(Path(flows.__file__).resolve())
BUILTINS: dict[str, Callable[[Any, Any], Any]] = {
    "sum": operator.add,
    "min": min,
    "max": max,
}
#: Every kind that runs as columns: the reduces above and ``mean``.
KINDS = (*BUILTINS, "mean")


def canon(value: Any) -> Any:
    """``value`` with every float as its hex (``-0.0`` and ``0.0`` differ, NaN equals NaN)
    and every type told apart (``1``, ``1.0`` and ``True`` differ)."""
    if type(value) is float:
        return ("float", value.hex())
    if type(value) in (tuple, list):
        return (type(value).__name__, *map(canon, value))
    return (type(value).__name__, repr(value))


def keyed_op(build: Callable[[Any], Any]) -> Any:
    flow = Flow("f")
    build(flow.source(IterableSource([1])).key_by(lambda x: x)).sink(CollectingSink())
    return compile_plan(flow).stages[1].operator


def letters(dead: DeadLetters) -> list[Any]:
    return [
        (d.operator, d.error_type, d.error, d.split, d.offset, canon(d.record), canon(d.key))
        for d in dead.take()
    ]


def fold(kind: str, items: list[tuple[Any, Any, int]], seen: dict[Any, Any]) -> tuple[Any, Any]:
    """The oracle: ``kind`` over ``(key, value, offset)`` in input order, in plain Python from
    ``seen`` (each key's value so far; updated); returns the outputs and the dead letters'
    ``(offset, error_type)``."""
    out, dead = [], []
    for key, value, offset in items:
        if type(value) not in (int, float):
            dead.append((offset, "TypeError"))
            continue
        try:
            if kind == "mean":  # [count, total], the total as sum keeps it
                count, total = seen.get(key, (0, None))
                acc = [count + 1, value if total is None else total + value]
                emitted = acc[1] / acc[0]
            else:
                acc = value if key not in seen else BUILTINS[kind](seen[key], value)
                emitted = acc
        except OverflowError:
            dead.append((offset, "OverflowError"))
            continue
        seen[key] = acc
        out.append((key, emitted))
    return out, dead


INTS = st.one_of(st.integers(-1000, 1000), st.integers(-(2**70), 2**70))
FLOATS = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, float("inf"), float("-inf")]))
BAD = st.one_of(st.booleans(), st.text(alphabet="ab", max_size=2), st.none())
VALUES = {
    "int": INTS,
    "float": FLOATS,
    "mixed": st.one_of(INTS, FLOATS, BAD),
    "numbers": st.one_of(INTS, FLOATS),
}
KEYS = st.one_of(st.integers(0, 12), st.sampled_from(["a", "b", ("t", 1)]))


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[list[Any], list[Any]]]:
    """Batches of ``(keys, values)``; each batch all ints, all floats, ints and floats, or
    anything (so columnar and per-record batches alternate on the same keys)."""
    out = []
    for _ in range(draw(st.integers(1, 5))):
        values = VALUES[draw(st.sampled_from(sorted(VALUES)))]
        pairs = draw(st.lists(st.tuples(KEYS, values), max_size=40))
        out.append(([k for k, _ in pairs], [v for _, v in pairs]))
    return out


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    kind=st.sampled_from(sorted(KINDS)),
    work=batches(),
    picked=st.booleans(),
    timed=st.booleans(),
    lmdb=st.booleans(),
    reopen=st.booleans(),
)
def test_the_columnar_paths_equal_folding_record_by_record(
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    work: list[tuple[list[Any], list[Any]]],
    picked: bool,
    timed: bool,
    lmdb: bool,
    reopen: bool,
) -> None:
    """Side by side on the same batches, each on a store of its own: ``sum()`` etc. as
    columns and record by record, against the Python oracle; ``reduce(operator.add | min |
    max)`` (recognised, columnar) against ``reduce`` of a lambda doing the same (the plain
    per-record path), bad values and all (``mean`` has no reduce of its own). With
    ``picked``, the records are ``(key, value)`` tuples (or a bare ``(key,)``, whose value
    function raises) and ``sum(itemgetter(1))``."""
    take: Any = operator.itemgetter(1) if picked else None

    def builtin(columnar: bool) -> Any:
        return keyed_op(lambda k: getattr(k, kind)(take, name="op", columnar=columnar))

    ops = {"columns": builtin(True), "records": builtin(False)}
    if kind in BUILTINS:
        fn = BUILTINS[kind]
        ops["reduce"] = keyed_op(lambda k: k.reduce(fn, name="op"))
        ops["lambda"] = keyed_op(lambda k: k.reduce(lambda a, b: fn(a, b), name="op"))
        assert ops["reduce"].rolling == kind
        assert ops["lambda"].rolling is None
    backend: StateBackend = LmdbBackend(tmp_path_factory.mktemp("r")) if lmdb else MemoryBackend()
    stores = {name: backend.open_store(name, 0, op.states) for name, op in ops.items()}
    seen: dict[Any, Any] = {}
    offset = 100
    try:
        for keys, values in work:
            offsets = list(range(offset, offset + len(keys)))
            offset += len(keys)
            stamps = [o * 10 for o in offsets] if timed else None
            records = values
            if picked:  # every seventh record has no value: its value function raises
                records = [
                    (k,) if o % 7 == 0 else (k, v)
                    for k, v, o in zip(keys, values, offsets, strict=True)
                ]
            got = {}
            for name, op in ops.items():
                dead = DeadLetters(0)
                runner = KeyedRunner(op, stores[name], 0, None)
                out, out_offsets, out_stamps = runner.run(
                    keys,
                    records if name in ("columns", "records") else values,
                    offsets,
                    "s",
                    dead,
                    stamps,
                )
                got[name] = (canon(out), out_offsets, out_stamps, letters(dead))
            assert got["columns"] == got["records"]
            assert got.get("reduce") == got.get("lambda")
            items = list(zip(keys, values, offsets, strict=True))
            missing = []
            if picked:
                missing = [(o, "IndexError") for _k, _v, o in items if o % 7 == 0]
                items = [item for item in items if item[2] % 7]
            expected, dead = fold(kind, items, seen)
            out, out_offsets, out_stamps, got_dead = got["columns"]
            assert out == canon(expected)
            assert sorted((d[4], d[1]) for d in got_dead) == sorted(missing + dead)
            kept = sorted(set(offsets) - {d[4] for d in got_dead})
            assert out_offsets == kept
            assert out_stamps == (None if stamps is None else [o * 10 for o in kept])
            if reopen:
                for name, op in ops.items():
                    stores[name].flush()
                    stores[name].close()  # the next batch reads its values from the disk
                    stores[name] = backend.open_store(name, 0, op.states)
        state = {}
        for name, store in stores.items():
            store.flush()
            state[name] = sorted(map(canon, store.items("value")))
        assert state["columns"] == state["records"] == sorted(map(canon, seen.items()))
        assert state.get("reduce") == state.get("lambda")
    finally:
        for store in stores.values():
            store.close()


def test_a_batch_of_numbers_runs_as_columns_and_any_other_record_by_record(
    tmp_path: Path,
) -> None:
    """The columnar path never sets ``store.key`` (the per-record path leaves the last key
    there); a batch with a bool in it goes record by record, its bool a dead letter."""
    op = keyed_op(lambda k: k.sum(name="s"))
    with LmdbBackend(tmp_path).open_store("s", 0, op.states) as store:
        runner = KeyedRunner(op, store, 0, None)
        dead = DeadLetters(0)
        out = runner.run(["a", "b", "a"], [1, 2, 3], [0, 1, 2], "s", dead)
        assert out == ([("a", 1), ("b", 2), ("a", 4)], [0, 1, 2], None)
        assert store.key is None
        out = runner.run(["a", "b", "a"], [1, True, 2.5], [3, 4, 5], "s", dead)
        assert out == ([("a", 5), ("a", 7.5)], [3, 5], None)
        assert store.key == "a"
        [letter] = dead.take()
        assert (letter.operator, letter.error, letter.offset, letter.key) == (
            "s",
            "sum takes int or float values; got bool True",
            4,
            "b",
        )


def test_a_running_mean_goes_as_columns_where_nothing_can_fail(tmp_path: Path) -> None:
    """``mean`` keeps ``[count, total]``: an all-int batch as columns (``store.key`` never
    set); a batch whose ``int / int`` overflows a float goes record by record, that record a
    dead letter and its key's mean as it was; a mixed batch record by record too."""
    op = keyed_op(lambda k: k.mean(name="m"))
    assert (op.rolling, op.numbers) == ("mean", True)
    with LmdbBackend(tmp_path).open_store("m", 0, op.states) as store:
        runner = KeyedRunner(op, store, 0, None)
        dead = DeadLetters(0)
        out = runner.run(["a", "b", "a", "a"], [1, 2, 4, 7], [0, 1, 2, 3], "s", dead)
        assert out == ([("a", 1.0), ("b", 2.0), ("a", 2.5), ("a", 4.0)], [0, 1, 2, 3], None)
        assert store.key is None
        huge = 10**400
        out = runner.run(["b", "a", "b"], [4, huge, 9], [4, 5, 6], "s", dead)
        assert out == ([("b", 3.0), ("b", 5.0)], [4, 6], None)
        assert store.key == "b"  # record by record
        [letter] = dead.take()
        assert (letter.error_type, letter.offset, letter.key) == ("OverflowError", 5, "a")
        out = runner.run(["a", "a"], [0.5, "x"], [7, 8], "s", dead)
        assert out == ([("a", 12.5 / 4)], [7], None)
        [letter] = dead.take()
        assert letter.error == "mean takes int or float values; got str 'x'"
        store.flush()
        assert dict(store.items("value")) == {"a": [4, 12.5], "b": [3, 15]}


def test_sum_min_max_and_mean_check_their_arguments() -> None:
    keyed = Flow("f").source(IterableSource([1])).key_by(lambda x: x)
    with pytest.raises(
        TypeError,
        match=r"^sum takes a function from a record to its number \(e\.g\. "
        r"operator\.itemgetter\(1\)\) or None for the record itself; got 1$",
    ):
        keyed.sum(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^columnar must be True or False; got 'no'$"):
        keyed.max(columnar="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^mean takes a function from a record to its number"):
        keyed.mean("amount")  # type: ignore[arg-type]

    async def amount(record: Any) -> Any:
        return record

    with pytest.raises(TypeError, match=r"^min value function must be a plain function: "):
        keyed.min(amount)


@pytest.mark.asyncio
async def test_a_job_in_one_loop_rescales_2_4_1_with_exact_builtin_aggregates(
    tmp_path: Path,
) -> None:
    """count, sum, min and max through live rescales with checkpoints: the final state equals
    the oracle of what the final checkpoint says was read."""
    p = {"seed": 3, "n": 40_000, "vocabulary": 300, "splits": 4, "key_groups": 16}
    result = await run_job(
        flows.builtin_stats(**p, rate=20_000.0),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        checkpoint_interval=0.1,
        timeline=[
            at(rescale(4), records=2_000),
            at(rescale(1), records=4_000),
            at(stop(), records=6_000),
        ],
    )
    assert [(r.workers_before, r.workers_after) for r in result.rescales] == [(2, 4), (4, 1)]
    assert result.checkpoint_dir is not None
    read = read_records(p, result.checkpoint_dir)
    assert len(read) == result.records_in >= 6_000
    assert flows.final_state(result) == oracle_of(read, 1)


@pytest.mark.asyncio
async def test_builtin_aggregates_restored_after_a_failure_equal_the_oracle(
    tmp_path: Path,
) -> None:
    """A worker fails mid-run: the job restarts from its last checkpoint and every key's
    count, sum, min and max equal the oracle (each record's effect once)."""
    p = {"seed": 5, "n": 6_000, "vocabulary": 300, "splits": 3, "key_groups": 8}
    result = await run_job(
        flows.builtin_stats(**p),
        workers=2,
        processes=False,
        state_dir=tmp_path / "state",
        batch_size=64,
        checkpoint_interval=0.02,
        restart_backoff=0.0,
        faults=[Fault("keygroup.batch", worker=1, hit=400, action="fail")],
    )
    assert len(result.recoveries) == 1
    # Key groups came back from a checkpoint (not from empty state, at the start).
    assert sum(n for report in result.reports for n in report["restores"].values()) > 0
    assert flows.final_state(result) == recovery_flows.oracle(p)


def mixed_oracle(p: dict[str, Any]) -> dict[str, tuple[Any, Any, Any]]:
    """Per operator: each key's running values, the dead letters' ``(offset, error_type)``
    and the final state, from the input alone."""
    records = flows.mixed_records(p["seed"], p["n"], p["vocabulary"])
    out = {}
    for kind in KINDS:
        seen: dict[Any, Any] = {}
        items = [(key, value, i) for i, (key, value) in enumerate(records)]
        emitted, dead = fold(kind, items, seen)
        per_key: dict[Any, list[Any]] = {}
        for key, value in emitted:
            per_key.setdefault(key, []).append(canon(value))
        out[kind] = (per_key, sorted(dead), {k: canon(v) for k, v in seen.items()})
    return out


def mixed_outcome(result: Any) -> dict[str, tuple[Any, Any, Any]]:
    """What a run of ``rolling_flows.mixed`` gave, in :func:`mixed_oracle`'s shape."""
    out = {}
    for index, kind in enumerate(KINDS):
        per_key: dict[Any, list[Any]] = {}
        for key, value in result.sink.sinks[index].items:
            per_key.setdefault(key, []).append(canon(value))
        dead = sorted(
            (d.offset, d.error_type) for d in result.dead_letter_records if d.operator == kind
        )
        state = {k: canon(v) for k, v in result.read_state(kind, "value").items()}
        out[kind] = (per_key, dead, state)
    return out


@pytest.mark.processes
@pytest.mark.asyncio
async def test_mixed_values_across_processes_equal_record_by_record_and_the_oracle(
    tmp_path: Path,
) -> None:
    """Columnar sum, min, max and mean on two worker processes, and the same record by
    record in one loop: each key's running values (types and float bits included), the dead letters
    (every bad value, none lost) and the final state equal the oracle's."""
    p = {"seed": 8, "n": 4_000, "vocabulary": 40, "key_groups": 8}
    columns = await run_job(
        f"{FLOWS}:mixed",
        params=p,
        workers=2,
        state_dir=tmp_path / "columns",
        batch_size=256,
    )
    records = await run_job(
        flows.mixed(**p, columnar=False), state_dir=tmp_path / "records", batch_size=256
    )
    expected = mixed_oracle(p)
    assert mixed_outcome(columns) == expected
    assert mixed_outcome(records) == expected
    assert all(d.split == "items:0" for d in columns.dead_letter_records)
    assert columns.dead_letters == sum(len(dead) for _, dead, _ in expected.values()) > 0
