"""The demand registry: which DSPs exist, and whether each may be called right now.

Partners come from the catalog (endpoint, seat, vendor id, timeout, QPS cap, bid
adjustment). Each carries its own circuit breaker and QPS limiter; reloading the partner
list keeps the state of partners that stay.
"""

from __future__ import annotations

from collections.abc import Iterable

from openbid.exchange.breaker import CircuitBreaker
from openbid.stores.catalog import DemandPartner


class QpsLimiter:
    """A token bucket: `qps` calls a second on average, bursts up to one second's worth.

    >>> limiter = QpsLimiter(2)
    >>> [limiter.allow(0.0) for _ in range(3)], limiter.allow(0.5)
    ([True, True, False], True)
    """

    __slots__ = ("qps", "_tokens", "_updated")

    def __init__(self, qps: float) -> None:
        self.qps = float(qps)
        self._tokens = float(qps)
        self._updated: float | None = None

    def allow(self, now: float) -> bool:
        if self._updated is not None:
            self._tokens = min(self.qps, self._tokens + (now - self._updated) * self.qps)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class DemandState:
    """One partner and its live call state."""

    __slots__ = ("partner", "breaker", "limiter")

    def __init__(self, partner: DemandPartner, breaker: CircuitBreaker) -> None:
        self.partner = partner
        self.breaker = breaker
        self.limiter = QpsLimiter(partner.qps_cap) if partner.qps_cap else None


class DemandRegistry:
    """The enabled demand partners, in a stable order, with their call state."""

    def __init__(
        self,
        partners: Iterable[DemandPartner] = (),
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 5.0,
    ) -> None:
        self._failure_threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self.states: list[DemandState] = []
        self.by_id: dict[str, DemandState] = {}
        self.reload(partners)

    def reload(self, partners: Iterable[DemandPartner]) -> None:
        """Replaces the partner list; breakers of partners that stay keep their state."""
        states = []
        for partner in sorted((p for p in partners if p.enabled), key=lambda p: p.id):
            previous = self.by_id.get(partner.id)
            breaker = (
                previous.breaker
                if previous
                else CircuitBreaker(self._failure_threshold, self._cooldown_s)
            )
            state = DemandState(partner, breaker)
            if previous and previous.limiter and state.limiter:
                state.limiter = previous.limiter
            states.append(state)
        self.states = states
        self.by_id = {s.partner.id: s for s in states}
