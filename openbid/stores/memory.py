"""In-process counters: the embedded default, exact for one process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from openbid.stores.base import CounterStore


class MemoryCounterStore(CounterStore):
    """Counters in a dict guarded by a lock; expired keys are dropped when touched.

    >>> store = MemoryCounterStore()
    >>> store.reserve("budget:c1", 600, limit=1000), store.reserve("budget:c1", 600, limit=1000)
    (True, False)
    >>> store.get("budget:c1")
    600
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._values: dict[str, tuple[int, float | None]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _live(self, key: str, now: float) -> tuple[int, float | None] | None:
        entry = self._values.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= now:
            del self._values[key]
            return None
        return entry

    def add(self, key: str, delta: int = 1, ttl_s: float | None = None) -> int:
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            if entry is None:
                value, expires = delta, (now + ttl_s if ttl_s else None)
            else:
                value = entry[0] + delta
                expires = entry[1] if entry[1] is not None or not ttl_s else now + ttl_s
            self._values[key] = (value, expires)
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
            self._values[key] = (current + amount, expires)
            return True

    def set_once(self, key: str, ttl_s: float) -> bool:
        with self._lock:
            now = self._clock()
            if self._live(key, now) is not None:
                return False
            self._values[key] = (1, now + ttl_s)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)

    def ping(self) -> bool:
        return True
