"""A seeded synthetic clickstream: the default scenario's and the benchmarks' workload.

Event ``i`` (its *global index*) is a pure function of ``(seed, users, pages, zipf_s, chunk, i)``:
events are generated in chunks of ``chunk`` consecutive global indexes, and chunk ``k`` is drawn
from its own ``numpy.random.Generator(PCG64)`` seeded by ``SeedSequence(seed, spawn_key=...k...)``.
Hence any chunk can be regenerated alone (resuming a split regenerates one chunk and skips into
it), the events do not depend on ``splits``, on the order splits are read in, on batch sizes, or
on the number of workers, and a source with fewer ``events`` yields a prefix of a longer one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt

from ._sources import SourceBatch, SplitReader

__all__ = ("ClickstreamSource", "clickstream_oracle", "BASE_TS")

BASE_TS = 1_700_000_000_000
"""The timestamp (ms) of global event 0; event ``i`` has ``ts = BASE_TS + i``."""

Event = tuple[int, str, int]

# spawn_key domains, so the permutation and the chunks never share a random stream.
_PERMUTATION_KEY = 0
_CHUNK_KEY = 1
_USERS_STREAM, _PAGES_STREAM = 0, 1
# Guide-table size cap: 2**20 entries (8 MiB). Beyond ~1M users the tail buckets hold several
# users each and the (exact) correction below falls back to searchsorted for those few draws.
_MAX_GUIDE = 1 << 20
_CORRECTION_ROUNDS = 4


class _Tables:
    """Precomputed sampling tables for one configuration (built on first use)."""

    __slots__ = ("cdf", "guide", "guide_scale", "page_names", "perm")

    def __init__(self, seed: int, users: int, pages: int, zipf_s: float) -> None:
        weights = 1.0 / np.arange(1, users + 1, dtype=np.float64) ** zipf_s
        cdf = np.cumsum(weights)
        cdf /= cdf[-1]
        cdf[-1] = 1.0
        # A sentinel above every draw lets the correction loop index one past the last user.
        self.cdf: npt.NDArray[np.float64] = np.append(cdf, 2.0)
        # Guide table (Chen & Asau's indexed search): guide[j] = #{cdf <= j/M}. M is a power of
        # two so u*M and j/M are exact in floating point and guide[floor(u*M)] never overshoots.
        m = min(_MAX_GUIDE, 1 << max(10, (users - 1).bit_length() + 1))
        self.guide_scale = float(m)
        self.guide: npt.NDArray[np.intp] = np.searchsorted(
            cdf, np.arange(m, dtype=np.float64) / m, side="right"
        ).astype(np.intp)
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(_PERMUTATION_KEY,)))
        )
        # rank -> user id, so the hottest users are not simply 0, 1, 2, ...
        self.perm: npt.NDArray[np.int64] = rng.permutation(users).astype(np.int64)
        width = max(4, len(str(pages - 1)))
        self.page_names: npt.NDArray[np.object_] = np.array(
            [f"/p/{p:0{width}d}" for p in range(pages)], dtype=object
        )

    def ranks(self, u: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
        """Inverse CDF: exactly ``searchsorted(cdf, u, side="right")``, ~4x faster.

        The guide table gives a lower bound; the few draws whose bucket holds a user boundary
        are stepped up one user at a time, and any left after a few rounds are searched.
        """
        cdf = self.cdf
        r = self.guide[(u * self.guide_scale).astype(np.intp)]
        idx = np.flatnonzero(cdf[r] <= u)
        for _ in range(_CORRECTION_ROUNDS):
            if not idx.size:
                return r
            r[idx] += 1
            idx = idx[cdf[r[idx]] <= u[idx]]
        if idx.size:
            r[idx] = np.searchsorted(cdf[:-1], u[idx], side="right")
        return r


class ClickstreamSource:
    """Seeded synthetic click events ``(user, page, ts)``, vectorized with numpy.

    * ``user`` in ``[0, users)``, Zipf-skewed: the user of popularity rank ``r`` is drawn with
      probability proportional to ``1/(r+1)**zipf_s`` (``zipf_s=0`` is uniform), and a seeded
      permutation maps ranks to user ids. Sampling is the inverse CDF of that distribution.
    * ``page`` is ``"/p/0042"``-style, uniform over ``pages`` pages (uniform keeps per-page
      aggregates easy to sanity-check; the user key carries the skew).
    * ``ts = BASE_TS + i`` ms, where ``i`` is the global event index: unique and increasing.

    Split ``i`` (id ``"clickstream:<i>"``) covers the global indexes
    ``[i*events//splits, (i+1)*events//splits)``. Offsets are global indexes; a position is the
    next global index to read. See the module docstring for what the events depend on.

    ``rate`` paces the source at that many events per second in total, ``rate/splits`` per split,
    with ``anyio.sleep`` on the event loop's clock; a paced batch holds at most 50 ms of events
    so latency stays low at small rates. ``rate=None`` generates as fast as possible (over 5M
    events/s per core as tuples).

    Args:
        events: total number of events.
        users: number of distinct users.
        pages: number of distinct pages.
        zipf_s: Zipf exponent of user popularity (>= 0).
        seed: the workload's seed (>= 0).
        splits: number of splits.
        rate: events per second for the whole source, or None.
        chunk: events per generated chunk (part of the workload's identity, like ``seed``).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range (the message names it).
    """

    bounded: bool

    def __init__(
        self,
        *,
        events: int = 1_000_000,
        users: int = 100_000,
        pages: int = 1000,
        zipf_s: float = 1.1,
        seed: int = 0,
        splits: int = 8,
        rate: float | None = None,
        chunk: int = 8192,
    ) -> None:
        owner = "ClickstreamSource"
        for name, value, minimum in (
            ("events", events, 0),
            ("users", users, 1),
            ("pages", pages, 1),
            ("seed", seed, 0),
            ("splits", splits, 1),
            ("chunk", chunk, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{owner}: {name} must be an int; got {type(value).__name__}")
            if value < minimum:
                raise ValueError(f"{owner}: {name} must be >= {minimum}; got {value}")
        if isinstance(zipf_s, bool) or not isinstance(zipf_s, int | float):
            raise TypeError(f"{owner}: zipf_s must be a float; got {type(zipf_s).__name__}")
        if not (math.isfinite(zipf_s) and zipf_s >= 0):
            raise ValueError(f"{owner}: zipf_s must be a finite float >= 0; got {zipf_s}")
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise TypeError(f"{owner}: rate must be a float or None; got {type(rate).__name__}")
            if not (math.isfinite(rate) and rate > 0):
                raise ValueError(f"{owner}: rate must be a finite float > 0 or None; got {rate}")
        self.bounded = True
        self.events = events
        self.users = users
        self.pages = pages
        self.zipf_s = float(zipf_s)
        self.seed = seed
        self.rate = None if rate is None else float(rate)
        self.chunk = chunk
        self._ranges = [(i * events // splits, (i + 1) * events // splits) for i in range(splits)]
        self._ids = tuple(f"clickstream:{i}" for i in range(splits))
        self._tables: _Tables | None = None

    def __repr__(self) -> str:
        return (
            f"ClickstreamSource(events={self.events}, users={self.users}, pages={self.pages}, "
            f"zipf_s={self.zipf_s}, seed={self.seed}, splits={len(self._ids)}, "
            f"rate={self.rate}, chunk={self.chunk})"
        )

    def splits(self) -> Sequence[str]:
        """Return ``("clickstream:0", ..., "clickstream:<splits-1>")``."""
        return self._ids

    def split_range(self, split: str) -> tuple[int, int]:
        """Return the global index range ``[start, end)`` that ``split`` covers."""
        try:
            return self._ranges[self._ids.index(split)]
        except ValueError:
            shown = ", ".join(repr(s) for s in self._ids[:5])
            raise ValueError(
                f"ClickstreamSource: unknown split {split!r}; this source's splits are {shown}"
                + (", ..." if len(self._ids) > 5 else "")
            ) from None

    def open_split(self, split: str, position: Any | None = None) -> SplitReader:
        """Open ``split`` at its start or at ``position`` (the next global index to read).

        Raises:
            ValueError: unknown split, or a position outside ``[start, end]`` of the split.
            TypeError: a position that is not an int.
        """
        start, end = self.split_range(split)
        if position is None:
            pos = start
        else:
            if isinstance(position, bool) or not isinstance(position, int):
                raise TypeError(
                    f"ClickstreamSource: position must be an int; got {type(position).__name__}"
                )
            if not start <= position <= end:
                raise ValueError(
                    f"ClickstreamSource: position {position} is outside the split [{start}, {end}]"
                )
            pos = position
        split_rate = None if self.rate is None else self.rate / len(self._ids)
        return _ClickstreamReader(self, pos, end, split_rate)

    def _chunk_columns(self, k: int) -> tuple[list[int], list[str]]:
        """Return the users and pages of chunk ``k`` (global indexes ``k*chunk`` onwards)."""
        users, page_idx = self._chunk_arrays(k)
        tables = self._tables
        assert tables is not None
        return users.tolist(), tables.page_names[page_idx].tolist()

    def _chunk_arrays(self, k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The users and page indexes of chunk ``k``, as arrays."""
        tables = self._tables
        if tables is None:
            tables = self._tables = _Tables(self.seed, self.users, self.pages, self.zipf_s)
        n = min(self.chunk, self.events - k * self.chunk)
        # Users and pages come from two streams so a short last chunk is a prefix of a full
        # one (a source with fewer events yields a prefix of a longer one).
        users_ss = np.random.SeedSequence(self.seed, spawn_key=(_CHUNK_KEY, k, _USERS_STREAM))
        pages_ss = np.random.SeedSequence(self.seed, spawn_key=(_CHUNK_KEY, k, _PAGES_STREAM))
        u = np.random.Generator(np.random.PCG64(users_ss)).random(n)
        users = tables.perm[tables.ranks(u)]
        page_idx = np.random.Generator(np.random.PCG64(pages_ss)).integers(0, self.pages, n)
        return users, page_idx

    def iter_all(self) -> Iterator[Event]:
        """Yield every event of every split in global index order (for oracles and checks).

        Uses the same chunk generator as the splits, so it equals the union of the splits.
        """
        for k in range(-(-self.events // self.chunk)):
            users, pages = self._chunk_columns(k)
            base = BASE_TS + k * self.chunk
            yield from zip(users, pages, range(base, base + len(users)), strict=True)


class _ClickstreamReader:
    __slots__ = ("_cached", "_cached_k", "_emitted", "_end", "_pos", "_rate", "_source", "_t0")

    def __init__(self, source: ClickstreamSource, pos: int, end: int, rate: float | None) -> None:
        self._source = source
        self._pos = pos
        self._end = end
        self._rate = rate
        self._cached_k = -1
        self._cached: tuple[list[int], list[str]] = ([], [])
        self._t0: float | None = None
        self._emitted = 0

    async def read_batch(self, max_records: int) -> SourceBatch | None:
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise ValueError(f"max_records must be an int >= 1; got {max_records!r}")
        pos = self._pos
        if pos >= self._end:
            return None
        rate = self._rate
        if rate is not None:
            max_records = min(max_records, max(1, int(rate * 0.05)))
        stop = min(pos + max_records, self._end)
        chunk = self._source.chunk
        values: list[Event] = []
        p = pos
        while p < stop:
            k = p // chunk
            if k != self._cached_k:
                self._cached = self._source._chunk_columns(k)
                self._cached_k = k
            users, pages = self._cached
            base = k * chunk
            a, b = p - base, min(stop, base + chunk) - base
            ts0 = BASE_TS + p
            part = zip(users[a:b], pages[a:b], range(ts0, ts0 + (b - a)), strict=False)
            if values:
                values.extend(part)
            else:
                values = list(part)
            p = base + b
        if rate is not None:
            now = anyio.current_time()
            if self._t0 is None:
                self._t0 = now
            delay = self._t0 + (self._emitted + stop - pos) / rate - now
            if delay > 0:
                # Cancel-safe: a stop during the wait finds the reader not yet advanced.
                await anyio.sleep(delay)
            self._emitted += stop - pos
        self._pos = stop
        return SourceBatch(values, list(range(pos, stop)), stop)

    async def aclose(self) -> None:
        self._pos = self._end
        self._cached_k, self._cached = -1, ([], [])


def clickstream_oracle(source: ClickstreamSource) -> dict[int, tuple[int, str, int]]:
    """Recompute, from the generator's chunks, each user's ``(clicks, last page, last ts)``.

    "Last" is the event with the largest ``ts``, a definition independent of arrival order, so
    the result is what any correct keyed aggregation of the source must produce. Computed with
    whole-array operations over each chunk (3M events in well under a second, against ~7 s one
    event at a time; ``tests/runtime/test_clickstream.py`` compares it with a plain loop over
    ``iter_all()``).
    """
    counts = np.zeros(source.users, dtype=np.int64)
    last_index = np.full(source.users, -1, dtype=np.int64)  # global index of the latest click
    last_page = np.zeros(source.users, dtype=np.int64)
    for k in range(-(-source.events // source.chunk)):
        users, page_idx = source._chunk_arrays(k)
        counts += np.bincount(users, minlength=source.users)
        # Each user's last position in the chunk: its first in the reversed chunk.
        seen, first_reversed = np.unique(users[::-1], return_index=True)
        at = len(users) - 1 - first_reversed
        last_index[seen] = k * source.chunk + at
        last_page[seen] = page_idx[at]
    tables = source._tables
    assert tables is not None or source.events == 0
    active = np.flatnonzero(counts)
    pages = [] if tables is None else tables.page_names[last_page[active]].tolist()
    return {
        user: (count, page, BASE_TS + index)
        for user, count, page, index in zip(
            active.tolist(),
            counts[active].tolist(),
            pages,
            last_index[active].tolist(),
            strict=True,
        )
    }
