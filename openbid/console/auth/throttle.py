"""Login throttling: a pure decision on an account's failures, and a bounded in-memory count
of failures per client address (the console is one process: no store is needed for it).

An account is locked for `lockout_s` after `max_failures` wrong passwords in a row; an
address is refused after `ip_max_failures` failures within `lockout_s`, whichever account
they tried (a password sprayed over many accounts).

>>> account_locked_until(failures=5, max_failures=5, now_s=100.0, lockout_s=60.0)
160.0
>>> account_locked_until(failures=4, max_failures=5, now_s=100.0, lockout_s=60.0)
0.0
>>> limiter = AddressLimiter(max_failures=2, window_s=10.0)
>>> limiter.fail("10.0.0.1", now_s=0.0); limiter.fail("10.0.0.1", now_s=1.0)
>>> limiter.retry_after_s("10.0.0.1", now_s=2.0), limiter.retry_after_s("10.0.0.1", now_s=11.0)
(8.0, 0.0)
"""

from __future__ import annotations

from collections import OrderedDict, deque

MAX_ADDRESSES = 100_000
"""Addresses tracked at most; past it the least recently failing are forgotten."""


def account_locked_until(failures: int, max_failures: int, now_s: float, lockout_s: float) -> float:
    """When an account with `failures` wrong passwords in a row unlocks (0: not locked)."""
    return now_s + lockout_s if failures >= max_failures else 0.0


class AddressLimiter:
    """Failed logins per client address within a sliding window."""

    def __init__(self, max_failures: int, window_s: float, max_addresses: int = MAX_ADDRESSES):
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now_s: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and times[0] <= now_s - self.window_s:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def retry_after_s(self, address: str, now_s: float) -> float:
        """0 when `address` may try; else the seconds until its oldest failure expires."""
        times = self._recent(address, now_s)
        if len(times) < self.max_failures:
            return 0.0
        return times[-self.max_failures] + self.window_s - now_s

    def fail(self, address: str, now_s: float) -> None:
        times = self._recent(address, now_s)
        self._failures[address] = times
        self._failures.move_to_end(address)
        times.append(now_s)
        while len(times) > self.max_failures:
            times.popleft()
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
