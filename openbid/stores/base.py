"""The counter store interface: atomic integer counters with expiry, and budget reservation.

Counters hold frequency caps, spend, QPS windows and idempotency markers. `reserve` is the
compare-and-add that budgets need: it adds only if the result stays within a limit, so two
workers can never both take the last slice of a budget.

Code on an event loop calls the `a`-prefixed twins (`await store.aset_once(...)`): a backend
that waits on the network must not block the loop while it waits.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence

from openbid.errors import OpenbidError


class StoreError(OpenbidError):
    """A store refused an operation."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached; callers degrade (serve without it), never crash."""


class CounterStore(ABC):
    """Atomic integer counters. A `ttl_s` applies when a key is created (a window starts)."""

    @abstractmethod
    def add(self, key: str, delta: int = 1, ttl_s: float | None = None) -> int:
        """Adds `delta` and returns the new value."""

    @abstractmethod
    def get(self, key: str) -> int:
        """The value, 0 for a missing or expired key."""

    def get_many(self, keys: Sequence[str]) -> list[int]:
        """The values of several keys at once (one round trip where the backend allows)."""
        return [self.get(key) for key in keys]

    @abstractmethod
    def reserve(self, key: str, amount: int, limit: int, ttl_s: float | None = None) -> bool:
        """Adds `amount` only if the value stays <= `limit`; says whether it did."""

    @abstractmethod
    def set_once(self, key: str, ttl_s: float) -> bool:
        """Marks `key`; True the first time, False while the mark lives (idempotency)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Removes a key."""

    @abstractmethod
    def ping(self) -> bool:
        """Whether the backend answers."""

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Releases connections."""

    # The event-loop twins. These defaults run the blocking method in a worker thread
    # (asyncio's default executor); a backend with an asyncio client overrides them, and one
    # that never waits (memory) calls straight through.

    async def aadd(self, key: str, delta: int = 1, ttl_s: float | None = None) -> int:
        """`add` without blocking the event loop."""
        return await asyncio.to_thread(self.add, key, delta, ttl_s)

    async def aget(self, key: str) -> int:
        """`get` without blocking the event loop."""
        return await asyncio.to_thread(self.get, key)

    async def aget_many(self, keys: Sequence[str]) -> list[int]:
        """`get_many` without blocking the event loop."""
        return await asyncio.to_thread(self.get_many, keys)

    async def areserve(self, key: str, amount: int, limit: int, ttl_s: float | None = None) -> bool:
        """`reserve` without blocking the event loop."""
        return await asyncio.to_thread(self.reserve, key, amount, limit, ttl_s)

    async def aset_once(self, key: str, ttl_s: float) -> bool:
        """`set_once` without blocking the event loop."""
        return await asyncio.to_thread(self.set_once, key, ttl_s)

    async def adelete(self, key: str) -> None:
        """`delete` without blocking the event loop."""
        await asyncio.to_thread(self.delete, key)

    async def aping(self) -> bool:
        """`ping` without blocking the event loop (for health checks)."""
        return await asyncio.to_thread(self.ping)

    async def aclose(self) -> None:
        """Releases connections, the asynchronous ones included; call it on the loop that
        used the `a` methods."""
        self.close()
