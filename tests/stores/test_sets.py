"""One suite for every SetStore backend: in-process memory and real Redis; and the audience
lookup (`SegmentMembership.segments_of`) on each, degrading to "no segment" when the store
fails."""

import asyncio
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.stores import (
    MemorySetStore,
    RedisSetStore,
    SegmentMembership,
    StoreError,
    set_store_from_url,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemorySetStore()
        return
    url = request.getfixturevalue("redis_url")
    backend = RedisSetStore(
        url, prefix=f"test:{secrets.token_hex(4)}:", timeout_s=1.0, batch_keys=3
    )
    yield backend
    backend.close()


def test_apply_adds_and_removes(store):
    assert store.members("u1") == frozenset()
    store.apply({"u1": ["a", "b"], "u2": ["a"]})
    assert store.members("u1") == {"a", "b"}
    store.apply({"u2": ["c"]}, removes={"u1": ["a"], "u2": ["a"]})
    assert store.members("u1") == {"b"}
    assert store.members("u2") == {"c"}


def test_a_member_both_removed_and_added_stays(store):
    store.apply({"u1": ["a"]})
    store.apply({"u1": ["a"]}, removes={"u1": ["a"]})
    assert store.members("u1") == {"a"}


def test_members_many_in_key_order_across_batches(store):
    store.apply({f"u{i}": [f"s{i}"] for i in range(10)})
    keys = [f"u{i}" for i in (9, 0, 5, 11)]
    assert store.members_many(keys) == [{"s9"}, {"s0"}, {"s5"}, frozenset()]
    assert store.members_many([]) == []


def test_delete_removes_whole_sets(store):
    store.apply({"u1": ["a"], "u2": ["b"]})
    store.delete(["u1", "missing"])
    assert store.members("u1") == frozenset()
    assert store.members("u2") == {"b"}


def test_async_members_equal_blocking(store):
    store.apply({"u1": ["x", "y"]})

    async def read():
        try:
            return await store.amembers("u1"), await store.amembers("nobody")
        finally:
            await store.aclose()

    assert asyncio.run(read()) == ({"x", "y"}, frozenset())


def test_ping(store):
    assert store.ping()


def test_memory_sets_expire_on_their_ttl():
    clock = FakeClock()
    store = MemorySetStore(clock=clock)
    store.apply({"u1": ["a"]}, ttl_s=10)
    clock.now += 9
    assert store.members("u1") == {"a"}
    clock.now += 2
    assert store.members("u1") == frozenset()


def test_redis_sets_expire_on_their_ttl(redis_url):
    store = RedisSetStore(redis_url, prefix=f"test:{secrets.token_hex(4)}:", timeout_s=1.0)
    try:
        store.apply({"u1": ["a"]}, ttl_s=60)
        ttl_ms = store._client.pttl(store._key("u1"))
        assert 0 < ttl_ms <= 60_000
    finally:
        store.delete(["u1"])
        store.close()


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["u1", "u2", "u3"]),
            st.sets(st.sampled_from("abcd")),
            st.sets(st.sampled_from("abcd")),
        ),
        max_size=12,
    )
)
def test_memory_store_equals_a_model_of_sets(steps):
    store = MemorySetStore()
    model: dict[str, set[str]] = {}
    for key, added, removed in steps:
        store.apply({key: added}, removes={key: removed})
        model[key] = (model.get(key, set()) - removed) | added
    for key in ("u1", "u2", "u3"):
        assert store.members(key) == model.get(key, set())


def test_segments_of_reads_the_users_set(store):
    membership = SegmentMembership(store)
    assert membership.update(added={"sport": ["u1", "u2"], "news": ["u1"]}) == 2
    assert membership.segments_of("u1") == {"sport", "news"}
    membership.update(removed={"sport": ["u1"]})
    assert membership.segments_of("u1") == {"news"}
    assert membership.segments_of("u2") == {"sport"}
    assert membership.segments_of("") == frozenset()
    assert asyncio.run(membership.asegments_of("u2")) == {"sport"}


def test_segments_of_answers_no_segment_when_redis_fails(fake_redis):
    fake_redis.reply = b"-OOM command not allowed\r\n"
    store = RedisSetStore(fake_redis.url, timeout_s=0.2)
    membership = SegmentMembership(store)
    try:
        assert membership.segments_of("u1") == frozenset()
        assert asyncio.run(membership.asegments_of("u1")) == frozenset()
    finally:
        store.close()


def test_segments_of_answers_no_segment_when_redis_is_silent(fake_redis):
    fake_redis.reply = None  # reads commands, answers nothing
    store = RedisSetStore(fake_redis.url, timeout_s=0.1)
    try:
        assert SegmentMembership(store).segments_of("u1") == frozenset()
    finally:
        store.close()


def test_set_store_from_url_names_its_backends(redis_url):
    assert isinstance(set_store_from_url("memory"), MemorySetStore)
    redis_store = set_store_from_url(redis_url)
    assert isinstance(redis_store, RedisSetStore)
    redis_store.close()
    with pytest.raises(StoreError, match="unknown set store 'postgres://x'"):
        set_store_from_url("postgres://x")
