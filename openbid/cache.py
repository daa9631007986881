"""A cache bounded by entries and by bytes, for lookups keyed by what a request sends.

User agents, TC strings and GPP strings are chosen by whoever sends the request: a cache
bounded by entries alone holds as many 8 KiB strings as 100-byte ones (unique 8 KiB keys
took a worker from 238 to 579 MB). `BoundedCache` counts the bytes of each entry's key and
value (as its caller reckons them, plus `ENTRY_OVERHEAD_BYTES` for the cache's own
structures) and evicts until both bounds hold.

Eviction is segmented LRU: a new entry goes into a probation segment, and moves to the
protected one (at most `PROTECTED_SHARE` of either bound) when it is asked for again. A
flood of keys seen once (every request a new random string) only churns probation, so the
keys of normal traffic, asked for again and again, stay protected and keep hitting.

A hit is two C calls on an `OrderedDict` (`get`, `move_to_end`): no lock. Inserting,
promoting and evicting take a lock, so the byte count stays exact when threads share a
cache; they happen on misses, which cost far more (a parse or a decode) anyway.
"""

from __future__ import annotations

import functools
import sys
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import date, time, timedelta, tzinfo
from enum import Enum
from types import BuiltinFunctionType, FunctionType, MappingProxyType, ModuleType
from typing import Any, Generic, NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
E = TypeVar("E", bound=BaseException)

ENTRY_OVERHEAD_BYTES = 200
"""What one entry costs the cache itself, whatever it holds: its slot in the
`OrderedDict`'s hash table and linked list, and the (value, size) tuple (measured with
tracemalloc at 150-190 bytes on CPython 3.11; `tests/test_cache.py` checks the sum)."""

PROTECTED_SHARE = 0.8
"""The share of both bounds the protected segment (keys asked for twice or more) may hold."""

_MISSING: Any = object()


class CacheInfo(NamedTuple):
    """A cache's counters; `maxsize` and `currsize` are entries, as in `functools.lru_cache`."""

    hits: int
    misses: int
    maxsize: int
    currsize: int
    size_bytes: int
    max_bytes: int
    evictions: int
    refused: int


class BoundedCache(Generic[K, V]):
    """Segmented LRU holding at most `max_entries` entries and `max_bytes` bytes.

    >>> cache = BoundedCache(max_entries=100, max_bytes=10_000)
    >>> cache.put("ua", "desktop", size_bytes=300)
    >>> cache.get("ua"), cache.get("other")
    ('desktop', None)
    >>> cache.put("long", "x", size_bytes=5_000)  # more than probation (20%) can hold
    >>> cache.get("long") is None, cache.info().refused
    (True, 1)
    """

    __slots__ = (
        "max_entries",
        "max_bytes",
        "_protected",
        "_probation",
        "_protected_bytes",
        "_probation_bytes",
        "_protected_max_entries",
        "_protected_max_bytes",
        "_max_entry_bytes",
        "_lock",
        "hits",
        "misses",
        "evictions",
        "refused",
    )

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._protected: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._probation: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._protected_bytes = 0
        self._probation_bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.refused = 0
        self.resize(max_entries, max_bytes)

    def resize(self, max_entries: int, max_bytes: int) -> None:
        """New bounds, enforced at once (what no longer fits is evicted)."""
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(
                f"a cache needs room for an entry: max_entries={max_entries}, max_bytes={max_bytes}"
            )
        with self._lock:
            self.max_entries = max_entries
            self.max_bytes = max_bytes
            # Room for one new entry beside a full protected segment, however small the cache.
            self._protected_max_entries = min(int(max_entries * PROTECTED_SHARE), max_entries - 1)
            self._protected_max_bytes = int(max_bytes * PROTECTED_SHARE)
            # An entry bigger than probation's share would flush all of probation: refused.
            self._max_entry_bytes = max_bytes - self._protected_max_bytes
            self._shrink_protected()
            self._evict()

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value cached for `key` (now the most recently used), else `default`."""
        item = self._protected.get(key)
        if item is not None:
            # (not contextlib.suppress: it costs more than the whole hit)
            try:  # noqa: SIM105
                self._protected.move_to_end(key)
            except KeyError:  # evicted by another thread since the get: still a hit
                pass
            self.hits += 1
            return item[0]
        item = self._probation.get(key)
        if item is None:
            self.misses += 1
            return default
        self.hits += 1
        self._promote(key)
        return item[0]

    def put(self, key: K, value: V, size_bytes: int) -> None:
        """Caches `value` for `key`; `size_bytes` is what the key and value hold (the cache
        adds its own overhead). An entry too big for the probation segment is not kept."""
        charge = size_bytes + ENTRY_OVERHEAD_BYTES
        with self._lock:
            self._discard(key)
            if charge > self._max_entry_bytes:
                self.refused += 1
                return
            self._probation[key] = (value, charge)
            self._probation_bytes += charge
            self._evict()

    def __len__(self) -> int:
        return len(self._protected) + len(self._probation)

    def __contains__(self, key: object) -> bool:
        return key in self._protected or key in self._probation

    @property
    def size_bytes(self) -> int:
        """The bytes of every entry held, overhead included: never above `max_bytes`."""
        return self._protected_bytes + self._probation_bytes

    def info(self) -> CacheInfo:
        return CacheInfo(
            self.hits,
            self.misses,
            self.max_entries,
            len(self),
            self.size_bytes,
            self.max_bytes,
            self.evictions,
            self.refused,
        )

    def clear(self) -> None:
        with self._lock:
            self._protected.clear()
            self._probation.clear()
            self._protected_bytes = self._probation_bytes = 0
            self.hits = self.misses = self.evictions = self.refused = 0

    def _promote(self, key: K) -> None:
        with self._lock:
            item = self._probation.pop(key, None)
            if item is None:  # promoted or evicted by another thread meanwhile
                return
            self._probation_bytes -= item[1]
            self._protected[key] = item
            self._protected_bytes += item[1]
            self._shrink_protected()
            self._evict()

    def _shrink_protected(self) -> None:
        """Demotes protected entries, least recently used first, to probation's most
        recently used end until the protected segment is within its share."""
        protected = self._protected
        while protected and (
            len(protected) > self._protected_max_entries
            or self._protected_bytes > self._protected_max_bytes
        ):
            demoted_key, demoted = protected.popitem(last=False)
            self._protected_bytes -= demoted[1]
            self._probation[demoted_key] = demoted
            self._probation_bytes += demoted[1]

    def _discard(self, key: K) -> None:
        item = self._probation.pop(key, None)
        if item is not None:
            self._probation_bytes -= item[1]
        item = self._protected.pop(key, None)
        if item is not None:
            self._protected_bytes -= item[1]

    def _evict(self) -> None:
        """Drops least recently used entries, probation's first, until both bounds hold."""
        while (
            len(self._probation) + len(self._protected) > self.max_entries
            or self._probation_bytes + self._protected_bytes > self.max_bytes
        ):
            if self._probation:
                _, item = self._probation.popitem(last=False)
                self._probation_bytes -= item[1]
            else:
                _, item = self._protected.popitem(last=False)
                self._protected_bytes -= item[1]
            self.evictions += 1


_SHARED, _LEAF, _ITEMS, _MAPPING, _PROXY, _ERROR, _OBJECT = range(7)
_SHARED_TYPES = (
    type(None),
    bool,
    type,
    ModuleType,
    FunctionType,
    BuiltinFunctionType,
    Enum,
    tzinfo,
)
_LEAF_TYPES = (str, bytes, bytearray, int, float, complex, array, date, time, timedelta)

MAX_WALKED_OBJECTS = 100_000
"""`deep_sizeof` stops after this many objects: its own work stays bounded whatever it is
given (a decoded TC string is a few dozen objects, a hostile one a few thousand)."""


def deep_sizeof(*objects: object) -> int:
    """The bytes `objects` and everything they reach hold (each object counted once):
    containers, dataclasses with or without slots, msgspec Structs, exceptions (their
    arguments, cause and context; not their traceback, which a cache must not keep).
    Types, functions, modules, enum members, None and bools are shared and count nothing.
    Past `MAX_WALKED_OBJECTS` objects the walk stops and what it counted is doubled: an
    estimate on the high side, never an unbounded walk.

    >>> deep_sizeof("abc") == sys.getsizeof("abc")
    True
    >>> deep_sizeof(("abc", "abc")) == sys.getsizeof(("abc", "abc")) + sys.getsizeof("abc")
    True
    """
    kinds = _KINDS
    getsizeof = sys.getsizeof
    seen: set[int] = set()
    stack = list(objects)
    pop, push, extend = stack.pop, stack.append, stack.extend
    total = 0
    while stack:
        obj = pop()
        cls = type(obj)
        kind = kinds.get(cls)
        if kind is None:
            kind = kinds[cls] = _kind_of(cls)
        if kind == _SHARED:
            continue
        key = id(obj)
        if key in seen:
            continue
        seen.add(key)
        total += getsizeof(obj)
        if kind == _LEAF:
            continue
        if len(seen) > MAX_WALKED_OBJECTS:
            return total * 2
        if kind == _ITEMS:
            extend(obj)  # type: ignore[call-overload]
        elif kind == _OBJECT:
            attributes = getattr(obj, "__dict__", None)
            if attributes is not None:
                push(attributes)
            for name in _slot_names(cls):
                push(getattr(obj, name, None))
        elif kind in (_MAPPING, _PROXY):
            if kind == _PROXY:
                total += getsizeof(dict(obj))  # type: ignore[call-overload]
            extend(obj.keys())  # type: ignore[attr-defined]
            extend(obj.values())  # type: ignore[attr-defined]
        else:  # an exception
            extend(obj.args)  # type: ignore[attr-defined]
            push(obj.__cause__)  # type: ignore[attr-defined]
            push(obj.__context__)  # type: ignore[attr-defined]
            push(getattr(obj, "__dict__", None))
    return total


_KINDS: dict[type, int] = {}


def _kind_of(cls: type) -> int:
    if issubclass(cls, _SHARED_TYPES):
        return _SHARED
    if issubclass(cls, _LEAF_TYPES):
        return _LEAF
    if issubclass(cls, (tuple, list, set, frozenset)):
        return _ITEMS
    if issubclass(cls, dict):
        return _MAPPING
    if issubclass(cls, MappingProxyType):
        return _PROXY
    if issubclass(cls, BaseException):
        return _ERROR
    return _OBJECT


@functools.cache
def _slot_names(cls: type) -> tuple[str, ...]:
    """Every attribute a class keeps outside a `__dict__`: slots along the MRO, and the
    fields of a msgspec Struct."""
    names: list[str] = list(getattr(cls, "__struct_fields__", ()))
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend((slots,) if isinstance(slots, str) else slots)
    return tuple(dict.fromkeys(name for name in names if name not in ("__dict__", "__weakref__")))


def without_traceback(error: E) -> E:
    """`error` (and the exceptions it chains) without tracebacks, for a cache to keep: a
    traceback holds the frames of the decoder, with their locals (a TC string's bits are
    six times its length)."""
    seen: set[int] = set()
    current: BaseException | None = error
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        stack.append(current.__cause__)
        stack.append(current.__context__)
    return error


def memoize(
    max_entries: int, max_bytes: int, size_of: Callable[[Any, Any], int]
) -> Callable[[Callable[..., V]], Callable[..., V]]:
    """Memoises a function in a `BoundedCache`, like `functools.lru_cache` (`cache_info()`,
    `cache_clear()`, `__wrapped__`, `cache`); `size_of(key, value)` gives an entry's bytes,
    the key being the argument of a one-argument function, else the tuple of arguments.
    Positional arguments only; a result of None is not cached."""

    def decorate(function: Callable[..., V]) -> Callable[..., V]:
        cache: BoundedCache[Any, V] = BoundedCache(max_entries, max_bytes)
        # A hit in the protected segment (the common case) is looked up here, inline: a
        # call to `cache.get` would double the cost of a hit (~130 ns -> ~300 ns).
        protected, move_to_end = cache._protected, cache._protected.move_to_end
        get, put = cache.get, cache.put

        if function.__code__.co_argcount == 1:

            def memoised(argument: Any) -> V:
                item = protected.get(argument)
                if item is not None:
                    try:  # noqa: SIM105
                        move_to_end(argument)
                    except KeyError:
                        pass
                    cache.hits += 1
                    return item[0]
                value = get(argument, _MISSING)
                if value is _MISSING:
                    value = function(argument)
                    if value is not None:
                        put(argument, value, size_of(argument, value))
                return value

        else:

            def memoised(*arguments: Any) -> V:  # type: ignore[misc]
                item = protected.get(arguments)
                if item is not None:
                    try:  # noqa: SIM105
                        move_to_end(arguments)
                    except KeyError:
                        pass
                    cache.hits += 1
                    return item[0]
                value = get(arguments, _MISSING)
                if value is _MISSING:
                    value = function(*arguments)
                    if value is not None:
                        put(arguments, value, size_of(arguments, value))
                return value

        functools.update_wrapper(memoised, function)
        memoised.cache = cache  # type: ignore[attr-defined]
        memoised.cache_info = cache.info  # type: ignore[attr-defined]
        memoised.cache_clear = cache.clear  # type: ignore[attr-defined]
        return memoised

    return decorate
