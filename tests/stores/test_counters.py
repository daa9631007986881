"""One suite for every CounterStore backend: in-process memory and real Redis."""

import secrets
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def _evictions() -> float:
    from openbid.obs import REGISTRY

    return REGISTRY.get_sample_value("openbid_counter_store_evictions_total") or 0.0


def test_memory_purges_expired_keys_nobody_reads_again():
    """Impression dedup marks are written once and never read: later writes purge them."""
    clock = FakeClock()
    store = MemoryCounterStore(clock, purge_per_write=4)
    for i in range(10_000):
        store.set_once(f"imp:{i}", ttl_s=1)
    clock.now += 2
    assert len(store) == 10_000  # nothing purges without writes
    for i in range(2_500):
        store.set_once(f"imp:new-{i}", ttl_s=3600)
    assert len(store) == 2_500  # 4 expired marks went with each write
    assert len(store._expiries) == 2_500


def test_memory_purging_never_drops_a_live_key():
    clock = FakeClock()
    store = MemoryCounterStore(clock, purge_per_write=2)
    for i in range(100):
        store.set_once(f"short:{i}", ttl_s=1)
        store.add(f"long:{i}", i + 1, ttl_s=100)
        store.add(f"forever:{i}", i + 1)
    clock.now += 50
    for i in range(100):
        store.set_once(f"fresh:{i}", ttl_s=10)
    assert len(store) == 300  # the 100 short ones purged, nothing else
    assert [store.get(f"long:{i}") for i in range(100)] == list(range(1, 101))
    assert [store.get(f"forever:{i}") for i in range(100)] == list(range(1, 101))


def test_memory_store_full_evicts_the_soonest_expiring_key():
    clock = FakeClock()
    store = MemoryCounterStore(clock, max_keys=100)
    before = _evictions()
    for i in range(150):
        assert store.set_once(f"imp:{i}", ttl_s=1000 + i)
    store.add("budget", 5)  # no expiry: never evicted
    assert len(store) == 100
    assert store.evictions == 51
    assert _evictions() - before == 51
    assert [store.get(f"imp:{i}") for i in range(150)] == [0] * 51 + [1] * 99
    assert store.get("budget") == 5


def test_memory_store_full_makes_room_from_expired_keys_without_counting_evictions():
    clock = FakeClock()
    store = MemoryCounterStore(clock, max_keys=2, purge_per_write=2)
    for stale in ("x", "y"):  # deleted: their heap entries use up the purge of the next write
        store.set_once(stale, ttl_s=1)
        store.delete(stale)
    store.set_once("a", ttl_s=2)
    store.set_once("b", ttl_s=3)
    clock.now += 5
    assert store.set_once("c", ttl_s=1)  # the full store drops an expired key: no eviction
    assert store.set_once("d", ttl_s=1)
    assert store.evictions == 0
    assert (store.get("a"), store.get("c"), store.get("d")) == (0, 1, 1)


def test_memory_store_full_of_keys_without_expiry_refuses_new_keys():
    """Like Redis under `volatile-ttl` answering -OOM: a budget counter is never dropped."""
    store = MemoryCounterStore(max_keys=2)
    store.add("budget:a", 10)
    assert store.reserve("budget:b", 10, limit=100)
    with pytest.raises(StoreUnavailable, match="memory counter store full"):
        store.add("budget:c", 1)
    with pytest.raises(StoreUnavailable, match="memory counter store full"):
        store.set_once("imp:1", ttl_s=60)
    assert store.add("budget:a", 1) == 11  # existing keys keep working
    assert store.reserve("budget:b", 10, limit=100)


def test_memory_expiry_heap_stays_bounded_under_deletes():
    clock = FakeClock()
    store = MemoryCounterStore(clock)
    for i in range(10_000):
        store.set_once(f"k:{i}", ttl_s=3600)
        store.delete(f"k:{i}")
    assert len(store) == 0
    assert len(store._expiries) <= 64 + 1


def test_memory_store_refuses_a_bound_that_cannot_hold():
    with pytest.raises(ValueError):
        MemoryCounterStore(max_keys=0)
    with pytest.raises(ValueError):
        MemoryCounterStore(purge_per_write=1)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "add_ttl", "reserve", "set_once", "delete", "get", "tick"]),
        st.integers(0, 5),
        st.integers(1, 20),
    ),
    max_size=200,
)


@given(_OPS)
def test_memory_store_matches_a_model_of_expiring_counters(ops):
    """Purging and eviction under `max_keys` agree with a plain model of expiring counters."""
    clock = FakeClock()
    store = MemoryCounterStore(clock, max_keys=4, purge_per_write=2)
    model: dict[str, tuple[int, float | None]] = {}

    def live(key):
        entry = model.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= clock.now:
            del model[key]
            return None
        return entry

    def room(key):
        for k in list(model):
            live(k)
        if key in model or len(model) < 4:
            return True
        expiring = [(e, k) for k, (_, e) in model.items() if e is not None]
        if not expiring:
            return False
        del model[min(expiring)[1]]
        return True

    for op, k, n in ops:
        key = f"k{k}"
        if op == "tick":
            clock.now += n
            continue
        if op == "get":
            entry = live(key)
            assert store.get(key) == (entry[0] if entry else 0)
            continue
        if op == "delete":
            store.delete(key)
            model.pop(key, None)
            continue
        entry = live(key)
        if op == "set_once" and entry is not None:
            assert not store.set_once(key, ttl_s=n)
            continue
        if op == "reserve" and (entry[0] if entry else 0) + n > 30:
            assert not store.reserve(key, n, limit=30, ttl_s=n)
            continue
        if not room(key):
            with pytest.raises(StoreUnavailable):
                store.add(key, n) if op == "add" else store.set_once(key, ttl_s=n)
            continue
        value, expires = entry if entry else (0, None)
        ttl = None if op == "add" else n
        if expires is None and ttl:
            expires = clock.now + ttl
        model[key] = (1 if op == "set_once" else value + n, expires)
        if op == "add":
            assert store.add(key, n) == value + n
        elif op == "add_ttl":
            assert store.add(key, n, ttl_s=n) == value + n
        elif op == "reserve":
            assert store.reserve(key, n, limit=30, ttl_s=n)
        else:
            assert store.set_once(key, ttl_s=n)
    for k in range(6):
        entry = live(f"k{k}")
        assert store.get(f"k{k}") == (entry[0] if entry else 0)
