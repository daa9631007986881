"""One suite for every CounterStore backend: in-process memory and real Redis."""

import secrets
import threading

import pytest

from openbid.stores import MemoryCounterStore, RedisCounterStore, StoreUnavailable


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemoryCounterStore()
        return
    url = request.getfixturevalue("redis_url")
    backend = RedisCounterStore(url, prefix=f"test:{secrets.token_hex(4)}:", timeout_s=1.0)
    yield backend
    backend.close()


def test_add_and_get(store):
    assert store.get("imps") == 0
    assert store.add("imps") == 1
    assert store.add("imps", 41) == 42
    assert store.get("imps") == 42
    assert store.add("imps", -2) == 40
    assert store.get_many(["imps", "missing"]) == [40, 0]
    store.delete("imps")
    assert store.get("imps") == 0


def test_reserve_never_exceeds_the_limit(store):
    assert store.reserve("budget", 400, limit=1000)
    assert store.reserve("budget", 600, limit=1000)
    assert not store.reserve("budget", 1, limit=1000)
    assert store.get("budget") == 1000
    store.add("budget", -300)  # unspent budget returned
    assert store.reserve("budget", 300, limit=1000)
    assert not store.reserve("budget", 1, limit=1000)


def test_concurrent_reservations_spend_exactly_the_budget(store):
    granted = []

    def worker() -> None:
        for _ in range(50):
            if store.reserve("shared", 7, limit=1000):
                granted.append(7)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == store.get("shared")
    assert 1000 - 7 < store.get("shared") <= 1000


def test_set_once_is_idempotency(store):
    assert store.set_once("billed:bid-1", ttl_s=60)
    assert not store.set_once("billed:bid-1", ttl_s=60)
    assert store.set_once("billed:bid-2", ttl_s=60)


def test_ping(store):
    assert store.ping()


def test_expiry_in_memory_starts_with_the_window():
    clock = FakeClock()
    store = MemoryCounterStore(clock)
    store.add("cap", 1, ttl_s=10)
    clock.now += 5
    store.add("cap", 1, ttl_s=10)  # does not extend the window
    assert store.get("cap") == 2
    clock.now += 5
    assert store.get("cap") == 0
    assert store.set_once("mark", ttl_s=1)
    clock.now += 2
    assert store.set_once("mark", ttl_s=1)


def test_expiry_in_redis_starts_with_the_window(redis_url):
    store = RedisCounterStore(redis_url, prefix=f"test:{secrets.token_hex(4)}:", timeout_s=1.0)
    store.add("cap", 1, ttl_s=30)
    ttl_ms = store._client.pttl(store._key("cap"))
    assert 0 < ttl_ms <= 30_000
    store.add("cap", 1, ttl_s=300)
    assert store._client.pttl(store._key("cap")) <= 30_000
    assert store.reserve("fresh", 1, limit=5, ttl_s=30)
    assert 0 < store._client.pttl(store._key("fresh")) <= 30_000
    store.close()


def test_dead_redis_raises_store_unavailable():
    store = RedisCounterStore("redis://127.0.0.1:1/0", timeout_s=0.05)
    assert not store.ping()
    with pytest.raises(StoreUnavailable, match="redis at redis://127.0.0.1:1/0"):
        store.add("x")
    with pytest.raises(StoreUnavailable):
        store.reserve("x", 1, limit=2)
