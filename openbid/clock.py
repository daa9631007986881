"""The one clock: every part of openbid that needs the time of day (event timestamps,
tracker expiry, join windows, budgets and pacing, schedules, model ages) reads it here.

In production it is real time. The demo and the benches can run a market clock N times
faster (`openbid up --demo --speed 60`: a market day in 24 minutes), so that windows of
hours and days play out in minutes with the same code. Deadlines inside one request (`tmax`,
timeouts, idle timers) are not market time: a DSP's 80 ms are 80 real ms at any speed, so
those keep using the event loop's clock and `time.monotonic()`.

A market clock is defined on wall time (`time.time()`), not on a process's monotonic clock,
so every process of one platform that is given the same `spec()` reads the same market time.

>>> market = MarketClock(speed=60.0, start_s=1_000_000.0, real_start_s=500.0)
>>> market.at_real(510.0)  # 10 real seconds later: 10 market minutes
1000600.0
>>> MarketClock.from_spec(market.spec()).at_real(510.0)
1000600.0
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from openbid.errors import ConfigError


class Clock:
    """Real time. `now()` is seconds since the epoch (UTC); `speed` is market seconds per
    real second (1 here)."""

    speed: float = 1.0

    def now(self) -> float:
        return time.time()

    def now_micros(self) -> int:
        return time.time_ns() // 1000

    def real_seconds(self, market_s: float) -> float:
        """How long `market_s` of market time lasts in real time."""
        return market_s / self.speed

    async def sleep(self, market_s: float) -> None:
        """Sleeps `market_s` seconds of market time (on the event loop)."""
        await asyncio.sleep(max(market_s, 0.0) / self.speed)

    def spec(self) -> str:
        """A string that rebuilds this clock in another process (`from_spec`)."""
        return "real"

    @staticmethod
    def from_spec(spec: str) -> Clock:
        if spec in ("", "real"):
            return Clock()
        return MarketClock.from_spec(spec)


class MarketClock(Clock):
    """Market time running `speed` times faster than real time from `start_s` (market
    seconds since the epoch, default: now), counted from the real instant `real_start_s`."""

    def __init__(
        self, speed: float, start_s: float | None = None, real_start_s: float | None = None
    ) -> None:
        if not speed > 0 or speed != speed or speed == float("inf"):
            raise ConfigError(f"clock speed must be a positive number, got {speed}")
        real_now = time.time()
        self.speed = float(speed)
        self.real_start_s = real_now if real_start_s is None else float(real_start_s)
        self.start_s = real_now if start_s is None else float(start_s)

    def at_real(self, real_s: float) -> float:
        """The market time at the real (wall) time `real_s`."""
        return self.start_s + (real_s - self.real_start_s) * self.speed

    def now(self) -> float:
        return self.at_real(time.time())

    def now_micros(self) -> int:
        return int(self.now() * 1_000_000)

    def spec(self) -> str:
        return f"market:{self.speed!r}:{self.start_s!r}:{self.real_start_s!r}"

    @staticmethod
    def from_spec(spec: str) -> MarketClock:
        try:
            kind, speed, start, real_start = spec.split(":")
            if kind != "market":
                raise ValueError(kind)
            return MarketClock(float(speed), float(start), float(real_start))
        except ValueError:
            raise ConfigError(
                f"clock spec {spec!r}: expected 'real' or 'market:SPEED:START:REAL_START'"
            ) from None


def from_settings(speed: float = 1.0, start: str = "") -> Clock:
    """The clock of a `[clock]` config section: real time at speed 1 with no start, else a
    market clock starting now (real) at `start` (ISO 8601, UTC when it names no zone; empty:
    now). Build it once, in the process that starts the others, and hand them its `spec()`.

    >>> type(from_settings()).__name__, from_settings(60.0, "2026-11-22T00:00").now() > 1.7e9
    ('Clock', True)
    """
    if speed == 1.0 and not start:
        return Clock()
    start_s = None
    if start:
        try:
            moment = datetime.fromisoformat(start)
        except ValueError:
            raise ConfigError(f"clock.start: not an ISO 8601 time: {start!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        start_s = moment.timestamp()
    return MarketClock(speed, start_s)


_current: Clock = Clock()


def current() -> Clock:
    """The process's clock."""
    return _current


def set_clock(clock: Clock) -> Clock:
    """Makes `clock` the process's clock; returns the one it replaces (for tests)."""
    global _current
    previous, _current = _current, clock
    return previous


def now() -> float:
    """Seconds since the epoch on the process's clock."""
    return _current.now()


def now_micros() -> int:
    """Integer microseconds since the epoch on the process's clock."""
    return _current.now_micros()
