"""Fixtures of the buy-side tests: a `CounterStore` per backend (in process, and the real
Redis under a fresh key prefix), so one suite runs against both."""

import secrets

import pytest

from openbid.stores import MemoryCounterStore, RedisCounterStore


@pytest.fixture(params=["memory", "redis"])
def counter_store(request):
    if request.param == "memory":
        yield MemoryCounterStore()
        return
    url = request.getfixturevalue("redis_url")
    store = RedisCounterStore(url, prefix=f"test:{secrets.token_hex(4)}:", timeout_s=1.0)
    yield store
    store.close()
