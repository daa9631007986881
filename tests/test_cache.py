"""The bounded cache: both bounds hold under floods of big unique keys, by its own count
and by tracemalloc; normal keys keep hitting through a flood; memoize behaves like
functools.lru_cache."""

import random
import sys
import threading
import tracemalloc
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.cache import (
    ENTRY_OVERHEAD_BYTES,
    MAX_WALKED_OBJECTS,
    BoundedCache,
    deep_sizeof,
    memoize,
    without_traceback,
)


def _unique_strings(count, length, seed):
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 ;()/."
    return ["".join(rng.choices(alphabet, k=length)) for _ in range(count)]


def _accounted(cache):
    """The sum of the sizes the cache holds, read from its segments."""
    return sum(size for _, size in cache._protected.values()) + sum(
        size for _, size in cache._probation.values()
    )


def test_get_returns_what_put_stored_and_default_for_the_rest():
    cache = BoundedCache(max_entries=10, max_bytes=100_000)
    cache.put("a", 1, size_bytes=10)
    assert cache.get("a") == 1
    assert cache.get("b") is None
    assert cache.get("b", "default") == "default"
    info = cache.info()
    assert (info.hits, info.misses, info.currsize) == (1, 2, 1)
    assert info.size_bytes == 10 + ENTRY_OVERHEAD_BYTES


def test_the_entry_bound_evicts_the_least_recently_used():
    cache = BoundedCache(max_entries=3, max_bytes=1 << 20)
    for key in "abc":
        cache.put(key, key.upper(), size_bytes=1)
    cache.get("a")  # a is now more recent than b
    cache.put("d", "D", size_bytes=1)
    assert len(cache) == 3
    assert "b" not in cache
    assert all(key in cache for key in "acd")
    assert cache.info().evictions == 1


def test_the_byte_bound_evicts_until_the_bytes_fit():
    cache = BoundedCache(max_entries=1_000, max_bytes=10_000)
    for index in range(20):
        cache.put(index, index, size_bytes=800)  # 1,000 with the overhead
    assert cache.size_bytes <= 10_000
    assert len(cache) == 10
    assert list(range(10, 20)) == [key for key in range(20) if key in cache]


def test_an_entry_too_big_for_probation_is_refused_and_evicts_nothing():
    cache = BoundedCache(max_entries=100, max_bytes=10_000)
    cache.put("small", 1, size_bytes=100)
    cache.put("huge", 2, size_bytes=5_000)  # probation holds at most 20%: 2,000
    assert "huge" not in cache
    assert cache.get("small") == 1
    assert cache.info().refused == 1


def test_putting_a_key_again_replaces_its_value_and_its_size():
    cache = BoundedCache(max_entries=10, max_bytes=100_000)
    cache.put("a", 1, size_bytes=1_000)
    cache.put("a", 2, size_bytes=10)
    assert cache.get("a") == 2
    assert cache.size_bytes == 10 + ENTRY_OVERHEAD_BYTES == _accounted(cache)


def test_unique_8_kib_keys_never_take_the_cache_past_its_byte_bound():
    max_bytes = 256 << 10
    cache = BoundedCache(max_entries=16_384, max_bytes=max_bytes)
    for key in _unique_strings(400, 8192, seed=1):
        cache.put(key, len(key), size_bytes=deep_sizeof(key, len(key)))
        assert cache.size_bytes <= max_bytes
    assert cache.size_bytes == _accounted(cache)
    assert cache.info().evictions > 300  # the bound, not the entry count, evicted them


def test_keys_asked_for_again_keep_hitting_through_a_flood_of_unique_keys():
    cache = BoundedCache(max_entries=1_000, max_bytes=1 << 20)
    normal = [f"normal user agent {index}" for index in range(200)]
    for key in normal:
        cache.put(key, key, size_bytes=deep_sizeof(key))
        cache.get(key)  # asked for twice: protected
    for index, key in enumerate(_unique_strings(3_000, 2048, seed=2)):
        cache.put(key, key, size_bytes=deep_sizeof(key))
        assert cache.get(normal[index % len(normal)]) is not None
    assert all(cache.get(key) == key for key in normal)


def test_resize_enforces_the_new_bounds_at_once():
    cache = BoundedCache(max_entries=100, max_bytes=1 << 20)
    for index in range(100):
        cache.put(index, index, size_bytes=100)
        cache.get(index)
    cache.resize(max_entries=10, max_bytes=1 << 20)
    assert len(cache) == 10
    cache.resize(max_entries=10, max_bytes=1_000)
    assert cache.size_bytes <= 1_000
    with pytest.raises(ValueError, match="max_bytes=0"):
        cache.resize(max_entries=10, max_bytes=0)


def test_tracemalloc_growth_under_unique_8_kib_keys_stays_within_the_byte_bound():
    """The cache's count covers what Python really allocates for it (keys, values, the
    OrderedDict's slots and the entry tuples): measured, not assumed."""
    max_bytes = 1 << 20
    keys = _unique_strings(600, 8192, seed=3)

    @memoize(max_entries=16_384, max_bytes=max_bytes, size_of=deep_sizeof)
    def reverse(text):
        return text[::-1]  # a value as big as its key, allocated by the function

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            reverse(key)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    keys_held = sum(sys.getsizeof(key) for key in keys if key in reverse.cache)
    # the keys were allocated before: only the values and the cache's own structures grew
    assert reverse.cache.size_bytes <= max_bytes
    assert grown <= reverse.cache.size_bytes - keys_held + (16 << 10)
    assert len(reverse.cache) < len(keys) / 2  # the byte bound held it, not the entry bound


def test_the_entry_overhead_covers_what_an_entry_costs_the_cache():
    count = 20_000
    keys = [f"key {index}" for index in range(count)]
    value = object()
    cache = BoundedCache(max_entries=count, max_bytes=1 << 40)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index, key in enumerate(keys):
            cache.put(key, value, size_bytes=1_000 + index)  # sizes past the small-int cache
        for key in keys[::2]:
            cache.get(key)  # half promoted: both segments' tables
        grown, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (peak - before) / count <= ENTRY_OVERHEAD_BYTES
    assert (grown - before) / count >= ENTRY_OVERHEAD_BYTES / 2  # not a wild overestimate


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["put", "get"]), st.integers(0, 40), st.integers(0, 3_000)),
        max_size=300,
    ),
    st.integers(1, 20),
    st.integers(1, 20_000),
)
def test_any_sequence_of_operations_keeps_both_bounds_and_an_exact_count(
    operations, max_entries, max_bytes
):
    cache = BoundedCache(max_entries=max_entries, max_bytes=max_bytes)
    for operation, key, size in operations:
        if operation == "put":
            cache.put(key, -key, size_bytes=size)
            fits = size + ENTRY_OVERHEAD_BYTES <= cache._max_entry_bytes
            assert (cache.get(key) == -key) if fits else key not in cache
        else:
            value = cache.get(key)
            assert value is None or value == -key
        assert len(cache) <= max_entries
        assert cache.size_bytes <= max_bytes
        assert cache.size_bytes == _accounted(cache)


def test_threads_sharing_a_cache_keep_its_count_exact():
    cache = BoundedCache(max_entries=300, max_bytes=200_000)
    errors = []

    def hammer(seed):
        rng = random.Random(seed)
        try:
            for _ in range(20_000):
                key = rng.randrange(1_000)
                if cache.get(key) is None:
                    cache.put(key, key, size_bytes=rng.randrange(2_000))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 300
    assert cache.size_bytes <= 200_000
    assert cache.size_bytes == _accounted(cache)


def test_memoize_caches_results_like_lru_cache():
    calls = []

    @memoize(max_entries=8, max_bytes=1 << 20, size_of=deep_sizeof)
    def double(value):
        calls.append(value)
        return value * 2

    assert double(21) == double(21) == 42
    assert calls == [21]
    assert double.__wrapped__(21) == 42
    assert double.__name__ == "double"
    info = double.cache_info()
    assert (info.hits, info.misses, info.currsize) == (1, 1, 1)
    double.cache_clear()
    assert double.cache_info().currsize == 0


def test_memoize_keys_several_arguments_by_their_tuple():
    @memoize(max_entries=8, max_bytes=1 << 20, size_of=deep_sizeof)
    def join(first, second):
        return f"{first}-{second}"

    assert join("a", "b") is join("a", "b")
    assert join("b", "a") == "b-a"
    assert ("a", "b") in join.cache


def test_memoize_caches_neither_exceptions_nor_none():
    calls = []

    @memoize(max_entries=8, max_bytes=1 << 20, size_of=deep_sizeof)
    def check(value):
        calls.append(value)
        if value < 0:
            raise ValueError("negative")
        return None if value == 0 else value

    for _ in range(2):
        with pytest.raises(ValueError, match="negative"):
            check(-1)
        assert check(0) is None
    assert calls == [-1, 0, -1, 0]


@dataclass(frozen=True, slots=True)
class _Slotted:
    name: str
    parts: tuple


class _Plain:
    def __init__(self, payload):
        self.payload = payload


def test_deep_sizeof_follows_slots_dicts_and_containers_counting_shared_objects_once():
    text = "x" * 1_000
    slotted = _Slotted(text, (text, text))
    assert deep_sizeof(slotted) == (
        sys.getsizeof(slotted) + sys.getsizeof(text) + sys.getsizeof(slotted.parts)
    )
    plain = _Plain({"k": text})
    assert deep_sizeof(plain) >= sys.getsizeof(text) + sys.getsizeof(plain.__dict__)
    assert deep_sizeof(None, True, len, _Plain) == 0


def test_deep_sizeof_stops_walking_past_its_object_limit_with_a_high_estimate():
    items = [str(index) * 3 for index in range(MAX_WALKED_OBJECTS * 2)]
    real = sys.getsizeof(items) + sum(sys.getsizeof(item) for item in items)
    assert deep_sizeof(items) >= real * 0.9


def test_deep_sizeof_of_an_error_counts_its_message_and_its_cause():
    cause = ValueError("c" * 5_000)
    error = KeyError("e" * 5_000)
    error.__cause__ = cause
    assert deep_sizeof(error) >= 10_000


def test_without_traceback_drops_the_frames_of_an_error_and_of_its_chain():
    def fail():
        try:
            raise ValueError("inner")
        except ValueError as inner:
            raise KeyError("outer") from inner

    with pytest.raises(KeyError) as caught:
        fail()
    error = without_traceback(caught.value)
    assert error.__traceback__ is None
    assert error.__cause__.__traceback__ is None
    assert error.__context__.__traceback__ is None
