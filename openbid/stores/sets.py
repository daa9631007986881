"""The set store interface: named sets of strings (which audience segments a user is in),
written in batches by a job and read one key at a time by serving code; and
`SegmentMembership`, the audience lookup the exchange's targeting asks (`segments_of`).

One interface, one module per backend (Feast's pattern): `MemorySetStore` here (in-process,
the embedded default and the tests'), `RedisSetStore` in `redis_sets.py` (shared by every
process). A backend that cannot be reached raises `StoreUnavailable`; the lookup degrades to
"in no segment" rather than failing a request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import Counter

from openbid.obs import REGISTRY
from openbid.stores.base import StoreUnavailable

log = logging.getLogger(__name__)

LOOKUP_FAILURES = Counter(
    "openbid_segment_lookup_failures",
    "Audience segment lookups answered 'no segment' because the set store was unavailable",
    registry=REGISTRY,
)


class SetStore(ABC):
    """Sets of strings by key. `apply` changes many sets at once (one round trip where the
    backend allows); a `ttl_s` there (re)starts the expiry of every key it touches, so
    sets a stopped job no longer refreshes disappear by themselves."""

    @abstractmethod
    def apply(
        self,
        adds: Mapping[str, Iterable[str]],
        removes: Mapping[str, Iterable[str]] | None = None,
        ttl_s: float | None = None,
    ) -> None:
        """Adds `adds[key]` to and removes `removes[key]` from each key's set (removes first,
        so a member in both ends up in the set)."""

    @abstractmethod
    def members(self, key: str) -> frozenset[str]:
        """The set at `key` (empty for a missing or expired key)."""

    def members_many(self, keys: Sequence[str]) -> list[frozenset[str]]:
        """The sets of several keys at once."""
        return [self.members(key) for key in keys]

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Removes whole sets."""

    @abstractmethod
    def ping(self) -> bool:
        """Whether the backend answers."""

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Releases connections."""

    async def amembers(self, key: str) -> frozenset[str]:
        """`members` without blocking the event loop (a network backend overrides it)."""
        return await asyncio.to_thread(self.members, key)

    async def aclose(self) -> None:
        self.close()


class MemorySetStore(SetStore):
    """Sets in a dict guarded by a lock: exact for one process.

    >>> store = MemorySetStore()
    >>> store.apply({"u1": ["sport", "news"]}); sorted(store.members("u1"))
    ['news', 'sport']
    >>> store.apply({}, removes={"u1": ["news"]}); sorted(store.members("u1"))
    ['sport']
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._sets: dict[str, tuple[frozenset[str], float | None]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def __len__(self) -> int:
        return len(self._sets)

    def _live(self, key: str, now: float) -> frozenset[str]:
        entry = self._sets.get(key)
        if entry is None:
            return frozenset()
        if entry[1] is not None and entry[1] <= now:
            del self._sets[key]
            return frozenset()
        return entry[0]

    def apply(self, adds, removes=None, ttl_s=None) -> None:
        removes = removes or {}
        with self._lock:
            now = self._clock()
            for key in set(adds) | set(removes):
                current = set(self._live(key, now))
                current.difference_update(removes.get(key, ()))
                current.update(adds.get(key, ()))
                if not current:
                    self._sets.pop(key, None)
                    continue
                previous = self._sets.get(key)
                expires = now + ttl_s if ttl_s else (previous[1] if previous else None)
                self._sets[key] = (frozenset(current), expires)

    def members(self, key: str) -> frozenset[str]:
        with self._lock:
            return self._live(key, self._clock())

    def delete(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._sets.pop(key, None)

    def ping(self) -> bool:
        return True

    async def amembers(self, key: str) -> frozenset[str]:
        return self.members(key)  # microseconds under the lock: no thread needed


USER_KEY_PREFIX = "aud:u:"
"""Set store keys of the audience lookup: `aud:u:<user id>` holds the user's segment ids."""
AUDIENCE_DATA_ID = "openbid"
"""The data source our segments carry in targeting, which names a segment as OpenRTB's
`data.id:segment.id` (`openbid:travel-buyers`) beside the request's own `user.data`."""


class SegmentMembership:
    """Which audience segments a user is in, as the buy side's targeting asks it: one set
    per user id (`aud:u:<user id>`), written by the audience refresh job
    (`openbid.insights.audiences`), read here with one lookup per request.

    A store that fails answers "in no segment" (counted in
    `openbid_segment_lookup_failures_total`): a line item targeting a segment then does not
    buy, which is the safe side of a missing signal.

    >>> membership = SegmentMembership(MemorySetStore())
    >>> membership.update(added={"sport": ["u1", "u2"], "news": ["u1"]})  # users touched
    2
    >>> sorted(membership.segments_of("u1")), sorted(membership.segments_of("u3"))
    (['news', 'sport'], [])
    """

    def __init__(
        self, store: SetStore, *, ttl_s: float | None = None, data_id: str = AUDIENCE_DATA_ID
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.data_id = data_id

    @staticmethod
    def key(user_id: str) -> str:
        return USER_KEY_PREFIX + user_id

    def segments_of(self, user_id: str) -> frozenset[str]:
        """The segment ids `user_id` is in (empty for an unknown user or a failing store)."""
        if not user_id:
            return frozenset()
        try:
            return self.store.members(self.key(user_id))
        except StoreUnavailable as exc:
            LOOKUP_FAILURES.inc()
            log.debug("segment lookup failed", extra={"error": str(exc)})
            return frozenset()

    def targeting_keys(self, user_id: str) -> tuple[str, ...]:
        """The user's segments as line-item targeting names them (`openbid:<segment id>`),
        sorted: what the exchange adds to the request's own segments.

        >>> membership = SegmentMembership(MemorySetStore())
        >>> _ = membership.update(added={"sport": ["u1"]})
        >>> membership.targeting_keys("u1")
        ('openbid:sport',)
        """
        return tuple(sorted(f"{self.data_id}:{s}" for s in self.segments_of(user_id)))

    async def asegments_of(self, user_id: str) -> frozenset[str]:
        """`segments_of` for code on an event loop."""
        if not user_id:
            return frozenset()
        try:
            return await self.store.amembers(self.key(user_id))
        except StoreUnavailable as exc:
            LOOKUP_FAILURES.inc()
            log.debug("segment lookup failed", extra={"error": str(exc)})
            return frozenset()

    def update(
        self,
        added: Mapping[str, Iterable[str]] | None = None,
        removed: Mapping[str, Iterable[str]] | None = None,
    ) -> int:
        """Applies membership changes given by segment (`{segment: user ids}`); returns the
        number of users touched. Raises `StoreUnavailable` (the job retries)."""
        adds: dict[str, list[str]] = {}
        removes: dict[str, list[str]] = {}
        for segment, users in (added or {}).items():
            for user in users:
                adds.setdefault(self.key(user), []).append(segment)
        for segment, users in (removed or {}).items():
            for user in users:
                removes.setdefault(self.key(user), []).append(segment)
        if adds or removes:
            self.store.apply(adds, removes, self.ttl_s)
        return len(set(adds) | set(removes))
