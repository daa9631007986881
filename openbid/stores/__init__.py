"""State behind interfaces, one module per backend (Feast's pattern).

Serving code talks to `CounterStore` and `Catalog`; the embedded defaults (in-process memory,
SQLite) need nothing installed, Redis and PostgreSQL carry the same interfaces to scale out.
"""

from openbid.domain import DemandPartner, Placement, Publisher
from openbid.stores.base import CounterStore, StoreError, StoreUnavailable
from openbid.stores.catalog import Catalog
from openbid.stores.memory import DEFAULT_MAX_KEYS, MemoryCounterStore
from openbid.stores.redis import RedisCounterStore
from openbid.stores.redis_sets import RedisSetStore
from openbid.stores.sets import MemorySetStore, SegmentMembership, SetStore


def counter_store_from_config(
    kind: str,
    redis_url: str,
    *,
    redis_timeout_s: float = 0.05,
    redis_connect_timeout_s: float | None = None,
    redis_failure_threshold: int = 3,
    redis_cooldown_s: float = 2.0,
    memory_max_keys: int = DEFAULT_MAX_KEYS,
) -> CounterStore:
    """The counter store a config names (`memory` or `redis`)."""
    if kind == "redis":
        return RedisCounterStore(
            redis_url,
            timeout_s=redis_timeout_s,
            connect_timeout_s=redis_connect_timeout_s,
            failure_threshold=redis_failure_threshold,
            cooldown_s=redis_cooldown_s,
        )
    return MemoryCounterStore(max_keys=memory_max_keys)


def set_store_from_url(url: str, *, prefix: str = "openbid:", timeout_s: float = 0.05) -> SetStore:
    """The set store a URL names: `memory` (this process), or a `redis://` URL."""
    if url == "memory":
        return MemorySetStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisSetStore(url, prefix=prefix, timeout_s=timeout_s)
    raise StoreError(f"unknown set store {url!r}: expected 'memory' or a redis:// URL")


__all__ = [
    "Catalog",
    "CounterStore",
    "DemandPartner",
    "MemoryCounterStore",
    "MemorySetStore",
    "Placement",
    "Publisher",
    "RedisCounterStore",
    "RedisSetStore",
    "SegmentMembership",
    "SetStore",
    "StoreError",
    "StoreUnavailable",
    "counter_store_from_config",
    "set_store_from_url",
]
