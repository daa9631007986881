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

    >>> breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10)
    >>> breaker.record_failure(0.0); breaker.record_failure(1.0)
    >>> breaker.allow(5.0), breaker.state.name
    (False, 'OPEN')
    >>> breaker.allow(11.0), breaker.allow(11.0), breaker.state.name
    (True, False, 'HALF_OPEN')
    >>> breaker.record_success(); breaker.state.name
    'CLOSED'
    """

    __slots__ = ("failure_threshold", "cooldown_s", "state", "_failures", "_opened_at", "_probing")

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 5.0) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self, now: float) -> bool:
        """Whether a call may go out now."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            if now - self._opened_at < self.cooldown_s:
                return False
            self.state = CircuitState.HALF_OPEN
            self._probing = False
        if self._probing:
            return False
        self._probing = True
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
