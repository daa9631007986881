"""Per-DSP circuit breaker: stop calling a partner that keeps failing, probe it later.

What counts as a failure is the caller's decision (the exchange's rule is
`openbid.exchange.fanout.breaker_verdict`); the breaker only counts them and reports every
change of state to `on_change`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class CircuitState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


OnChange = Callable[["CircuitState", "CircuitState", str], object]
"""`on_change(old, new, reason)`, called on every transition (never for a state kept)."""


class CircuitBreaker:
    """Opens after `failure_threshold` failures in a row; after `cooldown_s` lets one probe
    through (half-open): its success closes the circuit, its failure opens it again, and an
    outcome that says nothing about the partner (`record_neutral`) frees the probe slot.

    `available()` only looks (for choosing which partners an auction may use); `allow()`
    takes the right to call and is asked right before a request leaves, so a partner that
    is then filtered, capped or consent-blocked never holds the probe slot. A probe whose
    result never comes back frees the slot after `cooldown_s`.

    >>> changes = []
    >>> breaker = CircuitBreaker(2, 10, on_change=lambda old, new, why: changes.append(new.name))
    >>> breaker.record_failure(0.0, "timeout"); breaker.record_failure(1.0, "timeout")
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
    >>> changes
    ['OPEN', 'HALF_OPEN', 'CLOSED']
    """

    __slots__ = (
        "failure_threshold",
        "cooldown_s",
        "state",
        "on_change",
        "_failures",
        "_opened_at",
        "_probing",
        "_probe_at",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 5.0,
        *,
        on_change: OnChange | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.state = CircuitState.CLOSED
        self.on_change = on_change
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
        if self.state is CircuitState.OPEN:
            self._move(CircuitState.HALF_OPEN, "cooldown over: one probe call")
        self._probing = True
        self._probe_at = now
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        if self.state is not CircuitState.CLOSED:
            self._move(CircuitState.CLOSED, "a call succeeded")

    def record_failure(self, now: float, reason: str = "") -> None:
        """One failure the partner caused; `reason` says which (for the log)."""
        self._failures += 1
        self._probing = False
        if self.state is CircuitState.HALF_OPEN:
            self._opened_at = now
            self._move(CircuitState.OPEN, f"probe failed: {reason}")
        elif self._failures >= self.failure_threshold:
            self._opened_at = now  # a failure while open restarts the cooldown
            if self.state is CircuitState.CLOSED:
                failures = (
                    f"{self._failures} failures in a row" if self._failures > 1 else "a failure"
                )
                self._move(CircuitState.OPEN, f"{failures}, the last: {reason}")

    def record_neutral(self) -> None:
        """An outcome that says nothing about the partner's health (the caller's deadline
        cut the call short, our own fault): counts neither way, frees the probe slot."""
        self._probing = False

    def _move(self, state: CircuitState, reason: str) -> None:
        old, self.state = self.state, state
        if self.on_change is not None:
            self.on_change(old, state, reason)
