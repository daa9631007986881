"""Counters in Redis, shared by every process: scripts make each operation atomic.

A Redis that is down, full (-OOM), read-only after a failover, or silent costs its callers at
most a short socket timeout: every Redis error is `StoreUnavailable`, and a circuit breaker
fails calls fast while Redis keeps failing, probing it again after a cooldown.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from prometheus_client import Counter, Gauge
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from openbid.obs import REGISTRY
from openbid.stores.base import CounterStore, StoreUnavailable

log = logging.getLogger(__name__)

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
# Every error redis-py raises (connection, timeout, and error replies: -OOM, -READONLY,
# -MISCONF, -LOADING, -NOAUTH ...), and the OS's socket errors.
_UNAVAILABLE = (RedisError, OSError)

CIRCUIT_STATE = Gauge(
    "openbid_counter_store_circuit_state",
    "Redis counter store circuit breaker (0 closed, 1 half-open, 2 open)",
    registry=REGISTRY,
)
FAILURES = Counter(
    "openbid_counter_store_failures",
    "Redis counter store calls that raised StoreUnavailable: Redis failed (error) or the "
    "circuit was open and Redis was not asked (circuit_open)",
    ("outcome",),
    registry=REGISTRY,
)

T = TypeVar("T")


def _ms(ttl_s: float | None) -> int:
    return int(ttl_s * 1000) if ttl_s else 0


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class _Circuit:
    """Opens after `failure_threshold` failures in a row: calls then fail fast for
    `cooldown_s`, after which one probe goes through (half-open). Its success closes the
    circuit, its failure opens it for another cooldown; a probe that never reports back (a
    cancelled coroutine) frees the slot after `cooldown_s`. Thread-safe, since the blocking
    methods may run in worker threads while the loop uses the asynchronous ones.

    >>> now = [0.0]
    >>> circuit = _Circuit(failure_threshold=2, cooldown_s=10, clock=lambda: now[0])
    >>> circuit.record_failure(), circuit.record_failure(), circuit.allow()
    (False, True, False)
    >>> now[0] = 10.0
    >>> circuit.allow(), circuit.allow(), circuit.state
    (True, False, 1)
    >>> circuit.record_success(); circuit.state
    0
    """

    CLOSED, HALF_OPEN, OPEN = 0, 1, 2

    def __init__(
        self,
        failure_threshold: int,
        cooldown_s: float,
        clock: Callable[[], float],
        on_state: Callable[[int], None] = lambda state: None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.state = self.CLOSED
        self.failures = 0
        self._clock = clock
        self._on_state = on_state
        self._since = 0.0  # when it opened, or when the probe left
        self._lock = threading.Lock()

    def _become(self, state: int) -> None:
        if state != self.state:
            self.state = state
            self._on_state(state)

    def allow(self) -> bool:
        """Takes the right to call Redis now: always when closed, the one probe otherwise."""
        if self.state == self.CLOSED:
            return True
        with self._lock:
            now = self._clock()
            if self.state == self.CLOSED:
                return True
            if now - self._since < self.cooldown_s:
                return False
            self._become(self.HALF_OPEN)
            self._since = now
            return True

    def record_success(self) -> None:
        if self.state == self.CLOSED and self.failures == 0:
            return
        with self._lock:
            self.failures = 0
            self._become(self.CLOSED)

    def record_failure(self) -> bool:
        """Counts a failure; True when it opened a closed circuit (an outage begins)."""
        with self._lock:
            self.failures += 1
            if self.state == self.OPEN:
                return False  # a call that left before the circuit opened
            if self.state == self.HALF_OPEN or self.failures >= self.failure_threshold:
                opened = self.state == self.CLOSED
                self._become(self.OPEN)
                self._since = self._clock()
                return opened
            return False


class _LoopClient:
    """A redis.asyncio client and its scripts, usable only on the loop that created them."""

    __slots__ = ("loop", "pool", "client", "add", "reserve")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, pool: redis.asyncio.BlockingConnectionPool
    ) -> None:
        self.loop = loop
        self.pool = pool
        self.client = client = redis.asyncio.Redis(connection_pool=pool)
        self.add = client.register_script(_ADD)
        self.reserve = client.register_script(_RESERVE)


class RedisCounterStore(CounterStore):
    """Counters in Redis under `prefix`.

    Any Redis failure raises `StoreUnavailable` after at most `timeout_s` (a reply) or
    `connect_timeout_s` (a new connection; defaults to `timeout_s`), with no retries: callers
    on the serving path degrade rather than wait. After `failure_threshold` failures in a row
    the circuit opens: calls raise `StoreUnavailable` at once, without asking Redis, for
    `cooldown_s`; then one call probes Redis and its outcome closes or reopens the circuit.
    State in `openbid_counter_store_circuit_state`, failures in
    `openbid_counter_store_failures_total`.

    The blocking methods use redis-py; the `a` methods use redis.asyncio, never blocking the
    event loop. Each concurrent `a` call holds one of at most `max_connections` connections;
    past that, calls wait for a free one up to `timeout_s`. The asynchronous client belongs to
    the loop that first used it (a call from another loop gets a new one); release it with
    `await aclose()` on that loop.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "openbid:",
        timeout_s: float = 0.05,
        connect_timeout_s: float | None = None,
        failure_threshold: int = 3,
        cooldown_s: float = 2.0,
        max_connections: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0 or (connect_timeout_s is not None and connect_timeout_s <= 0):
            raise ValueError("Redis timeouts must be positive")
        self.url = url
        self._where = _without_password(url)
        self._prefix = prefix
        self._options = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s if connect_timeout_s is None else connect_timeout_s,
        }
        # A redis.Redis built without a URL retries 10 times with backoff in redis-py 8 (~5 s
        # against a silent Redis at a 50 ms timeout): say explicitly that one attempt it is.
        self._client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **self._options)
        self._add = self._client.register_script(_ADD)
        self._reserve = self._client.register_script(_RESERVE)
        self._max_connections = max_connections
        self._loop_client: _LoopClient | None = None
        self._circuit = _Circuit(failure_threshold, cooldown_s, clock, CIRCUIT_STATE.set)

    def _key(self, key: str) -> str:
        return self._prefix + key

    @property
    def circuit_state(self) -> str:
        """`closed`, `half_open` or `open`."""
        return ("closed", "half_open", "open")[self._circuit.state]

    def _admit(self) -> None:
        if not self._circuit.allow():
            FAILURES.labels("circuit_open").inc()
            raise StoreUnavailable(
                f"redis at {self._where}: circuit open after {self._circuit.failures} failures"
                f" in a row, next probe within {self._circuit.cooldown_s:g} s"
            )

    def _failed(self, exc: Exception) -> StoreUnavailable:
        FAILURES.labels("error").inc()
        if self._circuit.record_failure():
            log.warning(
                "redis circuit opened: failing fast",
                extra={
                    "redis": self._where,
                    "error": str(exc),
                    "cooldown_s": self._circuit.cooldown_s,
                },
            )
        return StoreUnavailable(f"redis at {self._where}: {type(exc).__name__}: {exc}")

    def _succeeded(self) -> None:
        if self._circuit.state != _Circuit.CLOSED:
            log.info("redis circuit closed: redis answers again", extra={"redis": self._where})
        self._circuit.record_success()

    def _call(self, operation: Callable[[], T]) -> T:
        self._admit()
        try:
            result = operation()
        except _UNAVAILABLE as exc:
            raise self._failed(exc) from exc
        self._succeeded()
        return result

    async def _acall(self, operation: Callable[[_LoopClient], Awaitable[T]]) -> T:
        self._admit()
        try:
            result = await operation(self._on_this_loop())
        except _UNAVAILABLE as exc:
            raise self._failed(exc) from exc
        self._succeeded()
        return result

    def _on_this_loop(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        current = self._loop_client
        if current is None or current.loop is not loop:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self._max_connections,
                timeout=self._options["socket_timeout"],
                retry=AsyncRetry(NoBackoff(), 0),
                **self._options,
            )
            current = self._loop_client = _LoopClient(loop, pool)
        return current

    def add(self, key: str, delta: int = 1, ttl_s: float | None = None) -> int:
        return int(self._call(lambda: self._add(keys=[self._key(key)], args=[delta, _ms(ttl_s)])))

    def get(self, key: str) -> int:
        value = self._call(lambda: self._client.get(self._key(key)))
        return int(value) if value is not None else 0

    def get_many(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        values = self._call(lambda: self._client.mget([self._key(k) for k in keys]))
        return [int(v) if v is not None else 0 for v in values]

    def reserve(self, key: str, amount: int, limit: int, ttl_s: float | None = None) -> bool:
        return bool(
            self._call(
                lambda: self._reserve(keys=[self._key(key)], args=[amount, limit, _ms(ttl_s)])
            )
        )

    def set_once(self, key: str, ttl_s: float) -> bool:
        return bool(self._call(lambda: self._client.set(self._key(key), 1, nx=True, px=_ms(ttl_s))))

    def delete(self, key: str) -> None:
        self._call(lambda: self._client.delete(self._key(key)))

    def ping(self) -> bool:
        try:
            return bool(self._call(self._client.ping))
        except StoreUnavailable:
            return False

    async def aadd(self, key: str, delta: int = 1, ttl_s: float | None = None) -> int:
        value = await self._acall(lambda c: c.add(keys=[self._key(key)], args=[delta, _ms(ttl_s)]))
        return int(value)

    async def aget(self, key: str) -> int:
        value = await self._acall(lambda c: c.client.get(self._key(key)))
        return int(value) if value is not None else 0

    async def aget_many(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        values = await self._acall(lambda c: c.client.mget([self._key(k) for k in keys]))
        return [int(v) if v is not None else 0 for v in values]

    async def areserve(self, key: str, amount: int, limit: int, ttl_s: float | None = None) -> bool:
        reserved = await self._acall(
            lambda c: c.reserve(keys=[self._key(key)], args=[amount, limit, _ms(ttl_s)])
        )
        return bool(reserved)

    async def aset_once(self, key: str, ttl_s: float) -> bool:
        marked = await self._acall(
            lambda c: c.client.set(self._key(key), 1, nx=True, px=_ms(ttl_s))
        )
        return bool(marked)

    async def adelete(self, key: str) -> None:
        await self._acall(lambda c: c.client.delete(self._key(key)))

    async def aping(self) -> bool:
        try:
            return bool(await self._acall(lambda c: c.client.ping()))
        except StoreUnavailable:
            return False

    def close(self) -> None:
        """Closes the blocking client; the asynchronous one needs `aclose()` on its loop."""
        self._client.close()

    async def aclose(self) -> None:
        current, self._loop_client = self._loop_client, None
        if current is not None and current.loop is asyncio.get_running_loop():
            await current.client.aclose()
            await current.pool.disconnect()
        self._client.close()
