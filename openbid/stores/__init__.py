"""State behind interfaces, one module per backend (Feast's pattern).

Serving code talks to `CounterStore` and `Catalog`; the embedded defaults (in-process memory,
SQLite) need nothing installed, Redis and PostgreSQL carry the same interfaces to scale out.
"""

from openbid.stores.base import CounterStore, StoreError, StoreUnavailable
from openbid.stores.catalog import Catalog, DemandPartner, Placement, Publisher
from openbid.stores.memory import MemoryCounterStore
from openbid.stores.redis import RedisCounterStore


def counter_store_from_config(kind: str, redis_url: str) -> CounterStore:
    """The counter store a config names (`memory` or `redis`)."""
    if kind == "redis":
        return RedisCounterStore(redis_url)
    return MemoryCounterStore()


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
