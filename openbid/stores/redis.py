"""Counters in Redis, shared by every process: scripts make each operation atomic."""

from __future__ import annotations

from collections.abc import Sequence

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from openbid.stores.base import CounterStore, StoreUnavailable

# ttl (ms) applies only when the key has none yet: the window starts at creation.
_ADD = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""
_RESERVE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[3]) > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def _ms(ttl_s: float | None) -> int:
    return int(ttl_s * 1000) if ttl_s else 0


class RedisCounterStore(CounterStore):
    """Counters in Redis under `prefix`; a dead Redis raises `StoreUnavailable`."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "openbid:",
        timeout_s: float = 0.05,
    ) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._prefix = prefix
        self._add = self._client.register_script(_ADD)
        self._reserve = self._client.register_script(_RESERVE)
        self.url = url

    def _key(self, key: str) -> str:
        return self._prefix + key

    def add(self, key: str, delta: int = 1, ttl_s: float | None = None) -> int:
        try:
            return int(self._add(keys=[self._key(key)], args=[delta, _ms(ttl_s)]))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis at {self.url}: {exc}") from exc

    def get(self, key: str) -> int:
        try:
            value = self._client.get(self._key(key))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis at {self.url}: {exc}") from exc
        return int(value) if value is not None else 0

    def get_many(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        try:
            values = self._client.mget([self._key(k) for k in keys])
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis at {self.url}: {exc}") from exc
        return [int(v) if v is not None else 0 for v in values]

    def reserve(self, key: str, amount: int, limit: int, ttl_s: float | None = None) -> bool:
        try:
            return bool(self._reserve(keys=[self._key(key)], args=[amount, limit, _ms(ttl_s)]))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis at {self.url}: {exc}") from exc

    def set_once(self, key: str, ttl_s: float) -> bool:
        try:
            return bool(self._client.set(self._key(key), 1, nx=True, px=_ms(ttl_s)))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis at {self.url}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self._client.delete(self._key(key))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis at {self.url}: {exc}") from exc

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except _UNAVAILABLE:
            return False

    def close(self) -> None:
        self._client.close()
