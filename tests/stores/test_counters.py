"""One suite for every CounterStore backend: in-process memory and real Redis."""

import asyncio
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


def test_async_methods_match_the_blocking_ones(store):
    async def scenario():
        assert await store.aget("imps") == 0
        assert await store.aadd("imps") == 1
        assert await store.aadd("imps", 41, ttl_s=60) == 42
        assert store.get("imps") == 42  # one store, either API
        assert await store.aget_many(["imps", "missing"]) == [42, 0]
        assert await store.aget_many([]) == []
        assert await store.areserve("budget", 600, limit=1000)
        assert not await store.areserve("budget", 600, limit=1000)
        assert await store.aget("budget") == 600
        assert await store.aset_once("billed:bid-1", ttl_s=60)
        assert not await store.aset_once("billed:bid-1", ttl_s=60)
        assert not store.set_once("billed:bid-1", ttl_s=60)
        await store.adelete("imps")
        assert await store.aget("imps") == 0
        assert await store.aping()
        await store.aclose()

    asyncio.run(scenario())


def test_concurrent_async_reservations_spend_exactly_the_budget(store):
    async def scenario():
        granted = await asyncio.gather(
            *(store.areserve("shared", 7, limit=1000) for _ in range(200))
        )
        total = await store.aget("shared")
        await store.aclose()
        return granted, total

    granted, total = asyncio.run(scenario())
    assert 7 * sum(granted) == total
    assert 1000 - 7 < total <= 1000


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


ERROR_REPLIES = [
    b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
    b"-READONLY You can't write against a read only replica.\r\n",
    b"-MISCONF Redis is configured to save RDB snapshots, but it's not able to persist\r\n",
    b"-LOADING Redis is loading the dataset in memory\r\n",
]


@pytest.mark.parametrize("reply", ERROR_REPLIES, ids=lambda r: r[1:].split()[0].decode())
def test_redis_error_replies_are_store_unavailable(fake_redis, reply):
    """A full, read-only or misconfigured Redis answers with an error: callers degrade."""
    fake_redis.reply = reply
    store = RedisCounterStore(fake_redis.url, timeout_s=1.0, failure_threshold=100)
    calls = {
        "add": lambda: store.add("x", ttl_s=5),
        "get": lambda: store.get("x"),
        "get_many": lambda: store.get_many(["x", "y"]),
        "reserve": lambda: store.reserve("x", 1, limit=2),
        "set_once": lambda: store.set_once("imp:1", ttl_s=60),
        "delete": lambda: store.delete("x"),
    }
    for name, call in calls.items():
        with pytest.raises(StoreUnavailable, match="redis at redis://127.0.0.1"):
            call()
            pytest.fail(f"{name} did not raise")
    assert not store.ping()

    async def scenario():
        for call in (
            store.aadd("x"),
            store.aget("x"),
            store.aget_many(["x"]),
            store.areserve("x", 1, limit=2),
            store.aset_once("imp:1", ttl_s=60),
            store.adelete("x"),
        ):
            with pytest.raises(StoreUnavailable, match="redis at redis://127.0.0.1"):
                await call
        assert not await store.aping()
        await store.aclose()

    asyncio.run(scenario())


def test_a_silent_redis_costs_one_short_timeout_per_call_and_no_retries(fake_redis):
    """redis-py retries by default; against a Redis that never answers that multiplies the
    wait. One connection attempt per call, then StoreUnavailable."""
    store = RedisCounterStore(fake_redis.url, timeout_s=0.02, failure_threshold=100)
    for attempt in range(1, 4):
        with pytest.raises(StoreUnavailable, match="Timeout"):
            store.set_once("imp:1", ttl_s=60)
        assert fake_redis.connections == attempt
    options = store._client.connection_pool.connection_kwargs
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.02, 0.02)
    store.close()
    store = RedisCounterStore(fake_redis.url, timeout_s=0.02, connect_timeout_s=0.005)
    options = store._client.connection_pool.connection_kwargs
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.02, 0.005)
    store.close()


def test_a_silent_redis_opens_the_circuit_then_calls_fail_without_waiting(fake_redis):
    store = RedisCounterStore(fake_redis.url, timeout_s=0.02, failure_threshold=2)
    for _ in range(2):
        with pytest.raises(StoreUnavailable, match="Timeout"):
            store.set_once("imp:1", ttl_s=60)
    assert store.circuit_state == "open"
    for _ in range(50):
        with pytest.raises(StoreUnavailable, match="circuit open after 2 failures"):
            store.set_once("imp:1", ttl_s=60)
    assert fake_redis.connections == 2  # the open circuit did not ask Redis again
    store.close()


def test_the_circuit_opens_after_failures_in_a_row_and_probes_after_the_cooldown(fake_redis):
    oom = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n"
    fake_redis.reply = oom
    clock = FakeClock()
    store = RedisCounterStore(
        fake_redis.url, timeout_s=1.0, failure_threshold=3, cooldown_s=2.0, clock=clock
    )
    for _ in range(3):
        with pytest.raises(StoreUnavailable, match="OutOfMemoryError"):
            store.set_once("imp:1", ttl_s=60)
    assert store.circuit_state == "open"
    asked = len(fake_redis.data_commands())
    for _ in range(50):  # fail fast: Redis is not asked
        with pytest.raises(StoreUnavailable, match="circuit open after 3 failures"):
            store.set_once("imp:1", ttl_s=60)
    assert not store.ping()
    clock.now += 1.9
    with pytest.raises(StoreUnavailable, match="circuit open"):
        store.get("x")
    assert len(fake_redis.data_commands()) == asked

    clock.now += 0.1  # one probe goes to Redis; it fails: open for another cooldown
    with pytest.raises(StoreUnavailable, match="OutOfMemoryError"):
        store.add("x")
    assert len(fake_redis.data_commands()) == asked + 1
    assert store.circuit_state == "open"
    with pytest.raises(StoreUnavailable, match="circuit open"):
        store.get("x")

    fake_redis.reply = b"+OK\r\n"  # Redis is back
    clock.now += 2.0
    assert store.set_once("imp:2", ttl_s=60)  # the probe succeeds: closed
    assert store.circuit_state == "closed"
    assert store.set_once("imp:3", ttl_s=60)
    assert fake_redis.data_commands()[-2:] == ["SET", "SET"]
    store.close()


def test_the_circuit_counts_failures_in_a_row_only(fake_redis):
    store = RedisCounterStore(fake_redis.url, timeout_s=1.0, failure_threshold=2)
    for _ in range(5):
        fake_redis.reply = b"-OOM command not allowed\r\n"
        with pytest.raises(StoreUnavailable, match="OutOfMemoryError"):
            store.set_once("imp:1", ttl_s=60)
        fake_redis.reply = b"+OK\r\n"
        assert store.set_once("imp:1", ttl_s=60)
    assert store.circuit_state == "closed"
    store.close()


def test_the_circuit_guards_the_async_methods(fake_redis):
    fake_redis.reply = b"-READONLY You can't write against a read only replica.\r\n"
    clock = FakeClock()
    store = RedisCounterStore(
        fake_redis.url, timeout_s=1.0, failure_threshold=2, cooldown_s=5.0, clock=clock
    )

    async def scenario():
        for _ in range(2):
            with pytest.raises(StoreUnavailable, match="ReadOnlyError"):
                await store.aset_once("imp:1", ttl_s=60)
        asked = len(fake_redis.data_commands())
        with pytest.raises(StoreUnavailable, match="circuit open"):
            await store.aset_once("imp:1", ttl_s=60)
        assert not await store.aping()
        assert len(fake_redis.data_commands()) == asked
        fake_redis.reply = b"+OK\r\n"
        clock.now += 5.0
        assert await store.aset_once("imp:1", ttl_s=60)
        assert store.circuit_state == "closed"
        await store.aclose()

    asyncio.run(scenario())


def test_async_calls_leave_the_event_loop_free_while_redis_is_silent(fake_redis):
    store = RedisCounterStore(fake_redis.url, timeout_s=0.3)

    async def scenario():
        waiting = asyncio.create_task(store.aset_once("imp:1", ttl_s=60))
        for _ in range(5):  # the loop keeps running other work meanwhile
            await asyncio.sleep(0)
        assert not waiting.done()
        with pytest.raises(StoreUnavailable, match="Timeout"):
            await waiting
        await store.aclose()

    asyncio.run(scenario())


def test_error_messages_do_not_show_the_redis_password():
    store = RedisCounterStore("redis://:s3cret@127.0.0.1:1/0", timeout_s=0.05)
    with pytest.raises(StoreUnavailable) as raised:
        store.get("x")
    assert "s3cret" not in str(raised.value)
    assert "redis://:***@127.0.0.1:1/0" in str(raised.value)
