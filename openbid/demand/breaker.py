"""Per-DSP circuit breaker: stop calling a partner that keeps failing, probe it later."""

from __future__ import annotations

import enum


class CircuitState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Opens after `failure_threshold` failures in a row; after `cooldown_s` lets one probe
    through (half-open): its success closes the circuit, its failure opens it again.

    `available()` only looks (for choosing which partners an auction may use); `allow()`
    takes the right to call and is asked right before a request leaves, so a partner that
    is then filtered, capped or consent-blocked never holds the probe slot. A probe whose
    result never comes back frees the slot after `cooldown_s`.

    >>> breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10)
    >>> breaker.record_failure(0.0); breaker.record_failure(1.0)
    >>> breaker.allow(5.0), breaker.state.name
    (False, 'OPEN')
    >>> breaker.available(11.0), breaker.state.name
    (True, 'OPEN')
    >>> breaker.allow(11.0), breaker.allow(11.0), breaker.state.name
    (True, False, 'HALF_OPEN')
    >>> breaker.allow(21.0)  # the first probe was lost: another may go
    True
    >>> breaker.record_success(); breaker.state.name
    'CLOSED'
    """

    __slots__ = (
        "failure_threshold",
        "cooldown_s",
        "state",
        "_failures",
        "_opened_at",
        "_probing",
        "_probe_at",
    )

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 5.0) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._probe_at = 0.0

    def available(self, now: float) -> bool:
        """Whether a call could go out now; changes nothing."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            return now - self._opened_at >= self.cooldown_s
        return not self._probing or now - self._probe_at >= self.cooldown_s

    def allow(self, now: float) -> bool:
        """Takes the right to call now: always when closed, the one probe when half-open."""
        if self.state is CircuitState.CLOSED:
            return True
        if not self.available(now):
            return False
        self.state = CircuitState.HALF_OPEN
        self._probing = True
        self._probe_at = now
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        self.state = CircuitState.CLOSED

    def record_failure(self, now: float) -> None:
        self._failures += 1
        self._probing = False
        if self.state is CircuitState.HALF_OPEN or self._failures >= self.failure_threshold:
            self.state = CircuitState.OPEN
            self._opened_at = now
