"""State behind interfaces, one module per backend (Feast's pattern).

Serving code talks to `CounterStore` and `Catalog`; the embedded defaults (in-process memory,
SQLite) need nothing installed, Redis and PostgreSQL carry the same interfaces to scale out.
"""

from openbid.domain import DemandPartner, Placement, Publisher
from openbid.stores.base import CounterStore, StoreError, StoreUnavailable
from openbid.stores.catalog import Catalog
from openbid.stores.memory import DEFAULT_MAX_KEYS, MemoryCounterStore
from openbid.stores.redis import RedisCounterStore


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


__all__ = [
    "Catalog",
    "CounterStore",
    "DemandPartner",
    "MemoryCounterStore",
    "Placement",
    "Publisher",
    "RedisCounterStore",
    "StoreError",
    "StoreUnavailable",
    "counter_store_from_config",
]
