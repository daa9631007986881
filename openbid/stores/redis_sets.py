"""Sets in Redis, shared by every process: a Redis set per key (SADD/SREM/SMEMBERS).

Writes come in batches from a job (pipelined, `batch_keys` keys a round trip); reads come
one key at a time from serving code, through a blocking client or, on an event loop, an
asyncio one. Every Redis error is `StoreUnavailable` after at most the socket timeout, and
the counter store's circuit breaker fails calls fast while Redis keeps failing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from openbid.stores.base import StoreUnavailable
from openbid.stores.redis import _Circuit, _without_password
from openbid.stores.sets import SetStore

_UNAVAILABLE = (RedisError, OSError)


def _text(values: Iterable[bytes | str]) -> frozenset[str]:
    return frozenset(v.decode() if isinstance(v, bytes) else v for v in values)


class RedisSetStore(SetStore):
    """Sets in Redis under `prefix`. `timeout_s` bounds each reply (serving reads want a
    few milliseconds; a job writing large batches wants seconds)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "openbid:",
        timeout_s: float = 0.05,
        batch_keys: int = 1000,
        failure_threshold: int = 3,
        cooldown_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0 or batch_keys < 1:
            raise ValueError("timeout_s must be positive and batch_keys >= 1")
        self.url = url
        self._where = _without_password(url)
        self._prefix = prefix
        self._timeout_s = timeout_s
        self.batch_keys = batch_keys
        self._client = redis.Redis.from_url(
            url,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self._async: tuple[asyncio.AbstractEventLoop, redis.asyncio.Redis] | None = None
        self._circuit = _Circuit(failure_threshold, cooldown_s, clock)

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _call(self, operation):
        if not self._circuit.allow():
            raise StoreUnavailable(f"redis at {self._where}: circuit open")
        try:
            result = operation()
        except _UNAVAILABLE as exc:
            self._circuit.record_failure()
            raise StoreUnavailable(f"redis at {self._where}: {type(exc).__name__}: {exc}") from exc
        self._circuit.record_success()
        return result

    def apply(self, adds, removes=None, ttl_s=None) -> None:
        removes = removes or {}
        keys = sorted(set(adds) | set(removes))
        ttl_ms = int(ttl_s * 1000) if ttl_s else 0
        for start in range(0, len(keys), self.batch_keys):
            chunk = keys[start : start + self.batch_keys]

            def write(chunk=chunk) -> None:
                pipe = self._client.pipeline(transaction=False)
                for key in chunk:
                    gone = list(removes.get(key, ()))
                    new = list(adds.get(key, ()))
                    if gone:
                        pipe.srem(self._key(key), *gone)
                    if new:
                        pipe.sadd(self._key(key), *new)
                    if ttl_ms and new:
                        pipe.pexpire(self._key(key), ttl_ms)
                pipe.execute()

            self._call(write)

    def members(self, key: str) -> frozenset[str]:
        return _text(self._call(lambda: self._client.smembers(self._key(key))))

    def members_many(self, keys: Sequence[str]) -> list[frozenset[str]]:
        if not keys:
            return []

        def read() -> list:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.smembers(self._key(key))
            return pipe.execute()

        return [_text(values) for values in self._call(read)]

    def delete(self, keys: Iterable[str]) -> None:
        names = [self._key(k) for k in keys]
        if names:
            self._call(lambda: self._client.delete(*names))

    def ping(self) -> bool:
        try:
            return bool(self._call(self._client.ping))
        except StoreUnavailable:
            return False

    def _loop_client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            client = redis.asyncio.Redis.from_url(
                self.url,
                retry=AsyncRetry(NoBackoff(), 0),
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
            )
            self._async = (loop, client)
        return self._async[1]

    async def amembers(self, key: str) -> frozenset[str]:
        if not self._circuit.allow():
            raise StoreUnavailable(f"redis at {self._where}: circuit open")
        try:
            values = await self._loop_client().smembers(self._key(key))
        except _UNAVAILABLE as exc:
            self._circuit.record_failure()
            raise StoreUnavailable(f"redis at {self._where}: {type(exc).__name__}: {exc}") from exc
        self._circuit.record_success()
        return _text(values)

    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        current, self._async = self._async, None
        if current is not None and current[0] is asyncio.get_running_loop():
            await current[1].aclose()
        self._client.close()
