"""The placement table: which worker hosts each key group and each split, versioned.

The job supervisor owns the one table of a running attempt. Workers never compute placement:
they are given the table when they start and apply every change from a
:class:`~shoal.runtime._messages.PlacementUpdate` (see ``_moves.py`` for the handoff protocol
that moves a key group while the rest of the job runs). Worker ids are never reused within an
attempt: a worker started by a rescale gets the next id, a retired worker's id stays retired.

Pure data and arithmetic: no I/O, no awaiting, testable alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._plan import Plan, place_key_groups

__all__ = ("Move", "Placement", "balance", "split_homes")


@dataclass(frozen=True, slots=True)
class Move:
    """One key group (an int) or split (a str) changing worker."""

    item: int | str
    source: int
    target: int

    def to_data(self) -> list[Any]:
        return [self.item, self.source, self.target]


@dataclass(frozen=True, slots=True)
class Placement:
    """One version of the table.

    Attributes:
        version: 0 at the start of an attempt, +1 per applied change.
        workers: the active worker ids, ascending.
        group_owner: key group -> worker id.
        split_owner: split (by its index in the plan) -> worker id.
    """

    version: int
    workers: tuple[int, ...]
    group_owner: tuple[int, ...]
    split_owner: tuple[int, ...]

    @classmethod
    def initial(
        cls,
        num_key_groups: int,
        num_splits: int,
        workers: int,
        homes: Sequence[int | None] = (),
    ) -> Placement:
        """Contiguous ranges of key groups, splits round-robin, on workers ``0..workers-1``;
        a split with a home key group (``homes``, see :func:`split_homes`) goes where its
        home is."""
        group_owner = tuple(place_key_groups(num_key_groups, workers))
        return cls(
            0,
            tuple(range(workers)),
            group_owner,
            _follow_homes(
                [index % workers for index in range(num_splits)], homes, group_owner
            ),  # as place_splits
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "workers": list(self.workers),
            "group_owner": list(self.group_owner),
            "split_owner": list(self.split_owner),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Placement:
        return cls(
            int(data["version"]),
            tuple(int(w) for w in data["workers"]),
            tuple(int(w) for w in data["group_owner"]),
            tuple(int(w) for w in data["split_owner"]),
        )

    def groups_of(self, worker: int) -> list[int]:
        return [group for group, owner in enumerate(self.group_owner) if owner == worker]

    def rescaled(self, workers: Sequence[int], homes: Sequence[int | None] = ()) -> Placement:
        """The table over ``workers`` with the fewest moves that balance it (the version is
        not changed: the caller applies the moves, maybe in several steps); a split with a
        home key group follows it."""
        ids = tuple(sorted(set(workers)))
        if not ids:
            raise ValueError("a job needs at least one worker")
        group_owner = tuple(balance(self.group_owner, ids))
        return Placement(
            self.version,
            ids,
            group_owner,
            _follow_homes(balance(self.split_owner, ids), homes, group_owner),
        )

    def group_moves(self, other: Placement) -> list[Move]:
        return [
            Move(group, old, new)
            for group, (old, new) in enumerate(
                zip(self.group_owner, other.group_owner, strict=True)
            )
            if old != new
        ]

    def split_moves(self, other: Placement, splits: Sequence[str]) -> list[Move]:
        return [
            Move(splits[index], old, new)
            for index, (old, new) in enumerate(
                zip(self.split_owner, other.split_owner, strict=True)
            )
            if old != new
        ]

    def applied(
        self, groups: Sequence[Move], splits: Sequence[Move], split_ids: Sequence[str]
    ) -> Placement:
        """This table with ``groups`` and ``splits`` moved, as the next version."""
        group_owner = list(self.group_owner)
        for move in groups:
            group_owner[int(move.item)] = move.target
        split_owner = list(self.split_owner)
        index = {split: i for i, split in enumerate(split_ids)}
        for move in splits:
            split_owner[index[str(move.item)]] = move.target
        workers = set(self.workers) | set(group_owner) | set(split_owner)
        return Placement(
            self.version + 1, tuple(sorted(workers)), tuple(group_owner), tuple(split_owner)
        )


def balance(owner: Sequence[int], workers: Sequence[int]) -> list[int]:
    """Reassign items so each of ``workers`` owns ``floor`` or ``ceil(len(owner) / workers)``,
    moving as few items as possible: a worker keeps up to its quota of what it owns (its
    lowest-numbered items), the rest (and the items of workers not in ``workers``) go to the
    workers below quota, lowest id first. Workers that own more keep the larger quotas."""
    ids = sorted(set(workers))
    count = len(owner)
    base, extra = divmod(count, len(ids))
    held = {worker: [i for i, w in enumerate(owner) if w == worker] for worker in ids}
    # The larger quotas go to the workers holding the most already (fewer moves); ties by id.
    ranked = sorted(ids, key=lambda w: (-len(held[w]), w))
    quota = {worker: base + (1 if rank < extra else 0) for rank, worker in enumerate(ranked)}
    result = list(owner)
    loose: list[int] = [i for i, w in enumerate(owner) if w not in quota]
    for worker in ids:
        loose.extend(held[worker][quota[worker] :])
        held[worker] = held[worker][: quota[worker]]
    loose.sort()
    for worker in ids:
        while len(held[worker]) < quota[worker]:
            item = loose.pop(0)
            held[worker].append(item)
            result[item] = worker
    return result


def split_homes(plan: Plan) -> tuple[int | None, ...]:
    """Per split of ``plan``, its *home* key group if its source is key-partitioned (the
    middle of the key groups its keys belong to: see :func:`~shoal.runtime.key_partition`),
    else None. A split goes where its home key group is, so its records reach the first keyed
    operator without crossing workers."""
    inputs = plan.flow.inputs
    siblings: dict[int, list[str]] = {}
    for split in plan.splits:
        index = 0 if plan.split_inputs is None else plan.split_inputs.get(split, 0)
        siblings.setdefault(index, []).append(split)
    groups = plan.num_key_groups
    homes: list[int | None] = []
    for split in plan.splits:
        index = 0 if plan.split_inputs is None else plan.split_inputs.get(split, 0)
        if not getattr(inputs[index].source, "key_partitioned", False):
            homes.append(None)
            continue
        mine = siblings[index]
        i, n = mine.index(split), len(mine)
        low, high = -(-i * groups // n), -(-(i + 1) * groups // n)  # g * n // groups == i
        homes.append((low + high - 1) // 2 if high > low else None)
    return tuple(homes)


def _follow_homes(
    split_owner: list[int], homes: Sequence[int | None], group_owner: Sequence[int]
) -> tuple[int, ...]:
    for index, home in enumerate(homes):
        if home is not None:
            split_owner[index] = group_owner[home]
    return tuple(split_owner)
