"""In-process counters: the embedded default, exact for one process, bounded in memory."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Sequence

from prometheus_client import Counter

from openbid.obs import REGISTRY
from openbid.stores.base import CounterStore, StoreUnavailable

EVICTIONS = Counter(
    "openbid_counter_store_evictions",
    "Keys a full in-process counter store dropped before their expiry (soonest-expiring first)",
    registry=REGISTRY,
)

DEFAULT_MAX_KEYS = 500_000
"""About 135 MB at ~270 B a key (an `imp:<bid id>` mark: dict slot, key string, value tuple,
expiry heap slot; measured with tracemalloc). At 1,000 impressions/s a full store still
deduplicates the last ~8 minutes of impressions; duplicates of older ones get through."""


class MemoryCounterStore(CounterStore):
    """Counters in a dict guarded by a lock.

    Memory is bounded two ways. Expired keys go even when nothing reads them again (impression
    dedup marks are written once): every write purges up to `purge_per_write` keys from an
    expiry heap, so purging keeps pace with writes at a bounded cost each (plus an amortised
    O(1) rebuild of the heap when deletes have left it mostly stale). And at most
    `max_keys` keys are held: a new key past that evicts the soonest-expiring one (Redis's
    `volatile-ttl` policy), counted in `openbid_counter_store_evictions_total`; when no key
    has an expiry to evict by, the write is refused with `StoreUnavailable` (Redis answers
    -OOM), because dropping a budget counter would let spend pass its limit.

    >>> store = MemoryCounterStore()
    >>> store.reserve("budget:c1", 600, limit=1000), store.reserve("budget:c1", 600, limit=1000)
    (True, False)
    >>> store.get("budget:c1")
    600
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        purge_per_write: int = 4,
    ) -> None:
        if max_keys < 1 or purge_per_write < 2:
            # Each write adds at most one expiry, so purging two keeps the backlog shrinking.
            raise ValueError("max_keys must be >= 1 and purge_per_write >= 2")
        self._values: dict[str, tuple[int, float | None]] = {}
        # (expires, key) for every key with an expiry; an entry whose key was since deleted or
        # re-created is stale and skipped when popped.
        self._expiries: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._clock = clock
        self.max_keys = max_keys
        self.purge_per_write = purge_per_write
        self.evictions = 0

    def __len__(self) -> int:
        """Keys held, expired ones not yet purged included."""
        return len(self._values)

    def _live(self, key: str, now: float) -> tuple[int, float | None] | None:
        entry = self._values.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= now:
            del self._values[key]
            return None
        return entry

    def _pop_expiry(self) -> tuple[float, str] | None:
        """The soonest expiry that still belongs to its key, removed from the heap."""
        while self._expiries:
            expires, key = heapq.heappop(self._expiries)
            entry = self._values.get(key)
            if entry is not None and entry[1] == expires:
                return expires, key
        return None

    def _purge(self, now: float) -> None:
        """Drops expired keys, at most `purge_per_write` heap entries' worth."""
        for _ in range(self.purge_per_write):
            if not self._expiries or self._expiries[0][0] > now:
                return
            expires, key = heapq.heappop(self._expiries)
            entry = self._values.get(key)
            if entry is not None and entry[1] == expires:
                del self._values[key]

    def _store(self, key: str, value: int, expires: float | None, now: float) -> None:
        """Writes `key`, making room first when it is new and the store is full."""
        self._purge(now)
        if key not in self._values and len(self._values) >= self.max_keys:
            victim = self._pop_expiry()
            if victim is None:
                raise StoreUnavailable(
                    f"memory counter store full: {len(self._values)} keys, none with an expiry"
                )
            del self._values[victim[1]]
            if victim[0] > now:
                self.evictions += 1
                EVICTIONS.inc()
        previous = self._values.get(key)
        self._values[key] = (value, expires)
        if expires is not None and (previous is None or previous[1] != expires):
            heapq.heappush(self._expiries, (expires, key))
            if len(self._expiries) > 2 * len(self._values) + 64:
                # Deleted keys left stale entries behind: rebuild, O(n) once per n writes.
                self._expiries = [(e, k) for k, (_, e) in self._values.items() if e is not None]
                heapq.heapify(self._expiries)

    def add(self, key: str, delta: int = 1, ttl_s: float | None = None) -> int:
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            if entry is None:
                value, expires = delta, (now + ttl_s if ttl_s else None)
            else:
                value = entry[0] + delta
                expires = entry[1] if entry[1] is not None or not ttl_s else now + ttl_s
            self._store(key, value, expires, now)
            return value

    def get(self, key: str) -> int:
        with self._lock:
            entry = self._live(key, self._clock())
            return entry[0] if entry else 0

    def reserve(self, key: str, amount: int, limit: int, ttl_s: float | None = None) -> bool:
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            current = entry[0] if entry else 0
            if current + amount > limit:
                return False
            expires = entry[1] if entry and entry[1] is not None else None
            if expires is None and ttl_s:
                expires = now + ttl_s
            self._store(key, current + amount, expires, now)
            return True

    def set_once(self, key: str, ttl_s: float) -> bool:
        with self._lock:
            now = self._clock()
            if self._live(key, now) is not None:
                return False
            self._store(key, 1, now + ttl_s, now)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)

    def ping(self) -> bool:
        return True

    # The loop twins call straight through: each operation holds the lock for microseconds.

    async def aadd(self, key: str, delta: int = 1, ttl_s: float | None = None) -> int:
        return self.add(key, delta, ttl_s)

    async def aget(self, key: str) -> int:
        return self.get(key)

    async def aget_many(self, keys: Sequence[str]) -> list[int]:
        return self.get_many(keys)

    async def areserve(self, key: str, amount: int, limit: int, ttl_s: float | None = None) -> bool:
        return self.reserve(key, amount, limit, ttl_s)

    async def aset_once(self, key: str, ttl_s: float) -> bool:
        return self.set_once(key, ttl_s)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    async def aping(self) -> bool:
        return True
