"""A memory budget for cached state, shared by every store a backend opens (one worker's).

LMDB holds the state; each store's handles keep a cache of decoded entries in front of it
(reads hit the cache, writes stay there until the next flush). Without a bound that cache is
all of the state in Python objects. A :class:`CacheBudget` bounds it in bytes for all the
stores of a backend together (a worker hosts many key groups; what matters is the process):

* A store's cache size is *estimated*: its cached entries times an entry's cost, the average
  encoded size of what it flushed (key and value bytes, a moving average) plus
  :data:`ENTRY_OVERHEAD` for the Python objects (the key object, the dict slot, the slots of
  the sets of dirty and recently read keys). An estimate, not a measurement: measuring
  objects per access would cost more than the cache saves.
* The budget keeps **running totals** of the cached and of the unflushed (dirty) bytes: each
  store reports the change of its own two figures (``KeyGroupStore.report_usage``, a few
  ``len()`` calls) when it flushes, evicts, drops its state or closes, and whenever its owner
  asks (the runtime does after every batch). Nothing sums over all stores, so a flush or a
  batch costs the same with 4 key groups or 4,000. Between two reports a store's growth is
  not in the totals: at most one batch's new entries per store.
* Only **clean** entries are evicted (an unflushed change never is): the oldest first, the
  keys read from the cache since the last pass and the dirty ones last (a second chance, as
  in CLOCK: those it passes over move to the back). A read after an eviction goes to LMDB
  and returns the committed value.
* When the total is over the limit, at a store's flush (:meth:`CacheBudget.after_flush`) and
  after a batch of its owner's (:meth:`CacheBudget.trim`, which the runtime calls when
  :meth:`CacheBudget.over` says so: the cache grows between checkpoints by every key a batch
  loads), that store gives up its share of the way down to three quarters of the limit (its
  bytes over the total: hysteresis, so a store at the edge does not evict at every batch),
  and at least what brings the total back under the limit, as far as its own clean entries
  go (the other stores may hold unflushed changes just then).
* **Dirty** entries are the owner's to write back: :meth:`CacheBudget.dirty_over` tells a
  runtime that the unflushed changes alone exceed the budget, so it flushes early (a plain
  flush, undo-logged once checkpoints run).
* Reads are counted: ``hits`` (answered from the cache) and ``misses`` (read from LMDB),
  reported with the sizes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._store import KeyGroupStore

__all__ = ("DEFAULT_STATE_MEMORY", "ENTRY_OVERHEAD", "CacheBudget")

#: Bytes of Python objects a cached entry costs beyond its encoded key and value: an int or
#: short str key (~32-60), the decoded value (0 for a small int, ~30-100 for a number or a
#: short tuple), the cache dict's slot with its share of free space (~40-80), and a slot in
#: the sets of dirty and recently read keys (~30-60). A deliberate round figure.
ENTRY_OVERHEAD: Final = 200

#: The default budget of a worker's cached state.
DEFAULT_STATE_MEMORY: Final = 256 * 1024 * 1024


class CacheBudget:
    """Bytes of cached state entries allowed for the stores of one backend together.

    Attributes:
        limit: The budget, in bytes.
        evicted: Entries evicted so far (all stores).
        hits: Reads answered from a cache, as reported so far (all stores).
        misses: Reads that went to the engine (LMDB), as reported so far (all stores).
    """

    __slots__ = ("_cached", "_dirty", "evicted", "hits", "limit", "misses")

    def __init__(self, limit: int = DEFAULT_STATE_MEMORY) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"the state memory budget must be an int of bytes >= 1; got {limit!r}")
        self.limit = limit
        self.evicted = 0
        self.hits = 0
        self.misses = 0
        self._cached = 0
        self._dirty = 0

    def __repr__(self) -> str:
        return f"CacheBudget(limit={self.limit}, cached={self._cached}, dirty={self._dirty})"

    def charge(self, cached: int, dirty: int) -> None:
        """Add a store's change of estimated cached and dirty bytes to the running totals
        (``KeyGroupStore.report_usage`` calls it with the difference since its last call)."""
        self._cached += cached
        self._dirty += dirty

    def cached_bytes(self) -> int:
        """The estimated bytes every store's cache holds, as last reported."""
        return self._cached

    def dirty_bytes(self) -> int:
        """The estimated bytes of every store's unflushed entries, as last reported."""
        return self._dirty

    def dirty_over(self) -> bool:
        """Whether the unflushed changes alone are over the budget (flush early)."""
        return self._dirty > self.limit

    def over(self) -> bool:
        """Whether the cached entries are over the budget (call :meth:`trim`)."""
        return self._cached > self.limit

    @property
    def hit_rate(self) -> float | None:
        """``hits / (hits + misses)``, or None before any read."""
        reads = self.hits + self.misses
        return None if reads == 0 else self.hits / reads

    def after_flush(self, store: KeyGroupStore) -> int:
        """``store`` has just flushed and reported (all its entries are clean): evict its
        share of what the stores hold over the budget; return how many entries it evicted."""
        return self.trim(store)

    def trim(self, store: KeyGroupStore) -> int:
        """Evict ``store``'s share of what the stores hold over the budget from its clean
        entries (it has just reported its usage); return how many entries it evicted."""
        total = self._cached
        if total <= self.limit:
            return 0
        mine = store.cached_bytes()
        if mine <= 0:
            return 0
        # Its share of the way down to three quarters of the limit, and at least what brings
        # the total back under the limit (the other stores may be holding unflushed changes
        # now, which cannot go).
        share = math.ceil((total - self.limit * 3 // 4) * mine / total)
        evicted = store.evict_bytes(min(mine, max(total - self.limit, share)))
        self.evicted += evicted
        return evicted
