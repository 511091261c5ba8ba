"""A memory budget for cached state, shared by every store a backend opens (one worker's).

LMDB holds the state; each store's handles keep a cache of decoded entries in front of it
(reads hit the cache, writes stay there until the next flush). Without a bound that cache is
all of the state in Python objects. A :class:`CacheBudget` bounds it in bytes for all the
stores of a backend together (a worker hosts many key groups; what matters is the process):

* A store's cache size is *estimated*: its cached entries times an entry's cost, the average
  encoded size of what it flushed (key and value bytes, a moving average) plus
  :data:`ENTRY_OVERHEAD` for the Python objects (the key and value objects, the dict slot).
  An estimate, not a measurement: measuring objects per access would cost more than the
  cache saves.
* Only **clean** entries are evicted (an unflushed change never is), and only right after
  a store's own flush, when all its entries are clean: the oldest-loaded first, the keys that
  flush wrote last (a second chance: they are in use). A read after
  an eviction goes to LMDB and returns the committed value.
* When the budget's total is over the limit at a store's flush, that store gives up its share
  of the way down to three quarters of the limit (its bytes over the total: hysteresis, so a
  store at the edge does not evict at every flush), and at least what brings the total back
  under the limit, as far as its own cache goes (the other stores may hold unflushed changes
  just then). Every store flushes at each checkpoint, so each gives up its share within an
  interval.
* **Dirty** entries are the owner's to write back: :meth:`CacheBudget.dirty_over` tells a
  runtime that the unflushed changes alone exceed the budget, so it flushes early (a plain
  flush, undo-logged once checkpoints run).
"""

from __future__ import annotations

import math
import time
import weakref
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._store import KeyGroupStore

__all__ = ("DEFAULT_STATE_MEMORY", "ENTRY_OVERHEAD", "CacheBudget")

#: Bytes of Python objects a cached entry costs beyond its encoded key and value: an int or
#: short str key (~50), the decoded value (~30-100 for a number or short tuple) and the cache
#: dict's slot with its share of free space (~60). A deliberate round figure.
ENTRY_OVERHEAD: Final = 200

#: The default budget of a worker's cached state.
DEFAULT_STATE_MEMORY: Final = 256 * 1024 * 1024


class CacheBudget:
    """Bytes of cached state entries allowed for the stores of one backend together.

    Attributes:
        limit: The budget, in bytes.
        evicted: Entries evicted so far (all stores).
    """

    __slots__ = ("_checked_at", "_over", "_stores", "evicted", "limit")

    def __init__(self, limit: int = DEFAULT_STATE_MEMORY) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"the state memory budget must be an int of bytes >= 1; got {limit!r}")
        self.limit = limit
        self.evicted = 0
        self._stores: weakref.WeakSet[KeyGroupStore] = weakref.WeakSet()
        self._checked_at = -math.inf
        self._over = False

    def __repr__(self) -> str:
        return f"CacheBudget(limit={self.limit}, cached={self.cached_bytes()})"

    def attach(self, store: KeyGroupStore) -> None:
        self._stores.add(store)

    def detach(self, store: KeyGroupStore) -> None:
        self._stores.discard(store)

    def cached_bytes(self) -> int:
        """The estimated bytes every attached store's cache holds."""
        return sum(store.cached_bytes() for store in self._stores)

    def dirty_over(self, max_age: float = 0.05) -> bool:
        """Whether the unflushed changes alone are estimated over the budget (flush early).

        The answer is reused for ``max_age`` seconds: summing every store's dirty entries
        costs ~0.5 µs a store, and the runtime asks after every batch of every key group
        (asking afresh each time cost more than half of a keyed count's throughput)."""
        now = time.perf_counter()
        if now - self._checked_at >= max_age:
            self._over = sum(store.dirty_bytes() for store in self._stores) > self.limit
            self._checked_at = now
        return self._over

    def after_flush(self, store: KeyGroupStore) -> int:
        """``store`` has just flushed (all its entries are clean): evict its share of what the
        stores hold over the budget; return how many entries it evicted."""
        total = self.cached_bytes()
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
