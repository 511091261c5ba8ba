"""The seeded clickstream of ``ClickstreamSource``, rebuilt from numpy alone (no shoal import).

``benchmarks/bytewax_compare.py`` runs the same workload on shoal and on Bytewax. Bytewax runs
in its own virtual environment, which has numpy but not shoal, so its job generates the events
with this module; ``tests/test_bytewax_compare.py`` checks that this module yields exactly the
events of ``shoal.ClickstreamSource`` (same seed, same chunks, same ``(user, page, ts)``
tuples). Both engines thus generate their input in-process, chunk by chunk, with the same
vectorized numpy code, instead of one reading a file the other does not.

The algorithm is ``runtime/_clickstream.py``'s: chunk ``k`` draws its users from
``PCG64(SeedSequence(seed, spawn_key=(1, k, 0)))`` through the inverse CDF of a Zipf law
over popularity ranks, a seeded permutation maps ranks to user ids, and pages come from a
second stream. The inverse CDF uses the same guide-table search, so that generating costs the
same on both sides.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BASE_TS = 1_700_000_000_000
"""The timestamp (ms) of global event 0; event ``i`` has ``ts = BASE_TS + i``."""

Event = tuple[int, str, int]

# The spawn-key domains of runtime/_clickstream.py: part of the workload's identity.
_PERMUTATION_KEY = 0
_CHUNK_KEY = 1
_USERS_STREAM, _PAGES_STREAM = 0, 1
_MAX_GUIDE = 1 << 20
_CORRECTION_ROUNDS = 4


class ClickstreamEvents:
    """The events ``[0, events)`` of a seeded clickstream, generated chunk by chunk.

    Args:
        events: total number of events.
        users: number of distinct users (Zipf-skewed by popularity rank).
        pages: number of distinct pages (uniform).
        zipf_s: Zipf exponent (>= 0).
        seed: the workload's seed.
        chunk: events per generated chunk (part of the workload's identity, like ``seed``).
    """

    def __init__(
        self,
        *,
        events: int,
        users: int,
        pages: int = 1000,
        zipf_s: float = 1.1,
        seed: int = 0,
        chunk: int = 8192,
    ) -> None:
        self.events = events
        self.users = users
        self.pages = pages
        self.seed = seed
        self.chunk = chunk
        weights = 1.0 / np.arange(1, users + 1, dtype=np.float64) ** float(zipf_s)
        cdf = np.cumsum(weights)
        cdf /= cdf[-1]
        cdf[-1] = 1.0
        # A sentinel above every draw lets the correction loop index one past the last user.
        self._cdf: npt.NDArray[np.float64] = np.append(cdf, 2.0)
        # Guide table: guide[j] = #{cdf <= j/M}, M a power of two (exact in floating point).
        m = min(_MAX_GUIDE, 1 << max(10, (users - 1).bit_length() + 1))
        self._guide_scale = float(m)
        self._guide: npt.NDArray[np.intp] = np.searchsorted(
            cdf, np.arange(m, dtype=np.float64) / m, side="right"
        ).astype(np.intp)
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(_PERMUTATION_KEY,)))
        )
        self._perm: npt.NDArray[np.int64] = rng.permutation(users).astype(np.int64)
        width = max(4, len(str(pages - 1)))
        self._page_names: npt.NDArray[np.object_] = np.array(
            [f"/p/{p:0{width}d}" for p in range(pages)], dtype=object
        )

    @property
    def chunks(self) -> int:
        """The number of chunks (the last one may be short)."""
        return -(-self.events // self.chunk)

    def chunk_users(self, k: int) -> npt.NDArray[np.int64]:
        """The users of chunk ``k`` as an array."""
        n = min(self.chunk, self.events - k * self.chunk)
        ss = np.random.SeedSequence(self.seed, spawn_key=(_CHUNK_KEY, k, _USERS_STREAM))
        u = np.random.Generator(np.random.PCG64(ss)).random(n)
        return self._perm[self._ranks(u)]

    def _ranks(self, u: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
        """Inverse CDF: exactly ``searchsorted(cdf, u, side="right")``, via the guide table."""
        cdf = self._cdf
        r = self._guide[(u * self._guide_scale).astype(np.intp)]
        idx = np.flatnonzero(cdf[r] <= u)
        for _ in range(_CORRECTION_ROUNDS):
            if not idx.size:
                return r
            r[idx] += 1
            idx = idx[cdf[r[idx]] <= u[idx]]
        if idx.size:
            r[idx] = np.searchsorted(cdf[:-1], u[idx], side="right")
        return r

    def chunk_columns(self, k: int) -> tuple[list[int], list[str]]:
        """The users and pages of chunk ``k`` as lists (what a reader zips into tuples)."""
        n = min(self.chunk, self.events - k * self.chunk)
        ss = np.random.SeedSequence(self.seed, spawn_key=(_CHUNK_KEY, k, _PAGES_STREAM))
        page_idx = np.random.Generator(np.random.PCG64(ss)).integers(0, self.pages, n)
        users: list[int] = self.chunk_users(k).tolist()
        pages: list[str] = self._page_names[page_idx].tolist()
        return users, pages

    def split_ranges(self, splits: int) -> list[tuple[int, int]]:
        """The global index range of each of ``splits`` splits (as ``ClickstreamSource``)."""
        return [(i * self.events // splits, (i + 1) * self.events // splits) for i in range(splits)]

    def read(self, start: int, stop: int) -> list[Event]:
        """The events with global indexes ``[start, stop)``, as ``(user, page, ts)`` tuples."""
        out: list[Event] = []
        p = start
        while p < stop:
            k = p // self.chunk
            users, pages = self.chunk_columns(k)
            base = k * self.chunk
            a, b = p - base, min(stop, base + self.chunk) - base
            ts0 = BASE_TS + p
            out.extend(zip(users[a:b], pages[a:b], range(ts0, ts0 + (b - a)), strict=True))
            p = base + b
        return out

    def oracle_counts(self) -> dict[int, int]:
        """Each user's number of events, from whole-array counts over the chunks."""
        counts = np.zeros(self.users, dtype=np.int64)
        for k in range(self.chunks):
            counts += np.bincount(self.chunk_users(k), minlength=self.users)
        active = np.flatnonzero(counts)
        return dict(zip(active.tolist(), counts[active].tolist(), strict=True))
