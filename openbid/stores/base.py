"""The counter store interface: atomic integer counters with expiry, and budget reservation.

Counters hold frequency caps, spend, QPS windows and idempotency markers. `reserve` is the
compare-and-add that budgets need: it adds only if the result stays within a limit, so two
workers can never both take the last slice of a budget.
"""

from __future__ import annotations

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
