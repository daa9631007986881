"""The demand registry: which DSPs exist, and whether each may be called right now.

Partners come from the catalog (endpoint, seat, vendor id, timeout, QPS cap, bid
adjustment). Each carries its own circuit breaker and QPS limiter; reloading the partner
list keeps the state of partners that stay. Every change of a breaker's state is exported
(`openbid_dsp_circuit_state`) and logged: a warning when it opens, info when it closes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from openbid.demand.breaker import CircuitBreaker, CircuitState
from openbid.domain import DemandPartner
from openbid.obs import loop_gauge

log = logging.getLogger(__name__)

CIRCUIT_STATE = loop_gauge(
    "openbid_dsp_circuit_state",
    "Circuit breaker state per partner (0 closed, 1 half-open, 2 open)",
    ("dsp",),
)


def partner_problem(partner: DemandPartner) -> str | None:
    """Why a partner cannot be called as configured, or None.

    The bid adjustment is the exchange's haircut on a partner's bids: in (0, 1]. Zero would
    divide the clearing price by zero; above 1 the publisher would be told more than the DSP
    pays (the exchange makes up the difference).

    >>> partner_problem(DemandPartner("d", "http://d.example/bid", bid_adjustment=0.9)) is None
    True
    >>> partner_problem(DemandPartner("d", "http://d.example/bid", bid_adjustment=1.5))
    'bid_adjustment must be in (0, 1], got 1.5'
    """
    if partner.qps_cap is not None and partner.qps_cap < 0:
        return f"qps_cap must be >= 0 (0: no cap), got {partner.qps_cap}"
    adjustment = partner.bid_adjustment
    if not (0.0 < adjustment <= 1.0):  # also refuses NaN
        return f"bid_adjustment must be in (0, 1], got {adjustment}"
    if not partner.endpoint.startswith(("http://", "https://")):
        return f"endpoint must be an http(s) URL, got {partner.endpoint!r}"
    return None


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

    def with_rate(self, qps: float) -> QpsLimiter:
        """This bucket at a new rate: tokens kept, clamped to the new burst.

        >>> limiter = QpsLimiter(1000).with_rate(10)
        >>> sum(limiter.allow(0.0) for _ in range(50))
        10
        """
        self.qps = float(qps)
        self._tokens = min(self._tokens, self.qps)
        return self

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

    def __init__(
        self, partner: DemandPartner, breaker: CircuitBreaker, qps_share: float = 1.0
    ) -> None:
        self.partner = partner
        self.breaker = breaker
        self.limiter = QpsLimiter(partner.qps_cap * qps_share) if partner.qps_cap else None


class _CircuitWatch:
    """One partner's breaker transitions: into its gauge and, once per opening, the log."""

    __slots__ = ("dsp", "gauge", "opened_at")

    def __init__(self, dsp: str) -> None:
        self.dsp = dsp
        self.gauge = CIRCUIT_STATE.labels(dsp)
        self.gauge.set(int(CircuitState.CLOSED))
        self.opened_at = 0.0

    def __call__(self, old: CircuitState, new: CircuitState, reason: str) -> None:
        self.gauge.set(int(new))
        if old is CircuitState.CLOSED and new is CircuitState.OPEN:
            self.opened_at = time.monotonic()
            log.warning(
                "circuit breaker opened: calls to this partner stop until a probe succeeds",
                extra={"dsp": self.dsp, "reason": reason},
            )
        elif new is CircuitState.CLOSED:
            log.info(
                "circuit breaker closed again",
                extra={
                    "dsp": self.dsp,
                    "reason": reason,
                    "open_s": round(time.monotonic() - self.opened_at, 3),
                },
            )
        else:  # half-open, or a failed probe opening it again: part of the same outage
            log.debug(
                "circuit breaker %s", new.name.lower(), extra={"dsp": self.dsp, "reason": reason}
            )


class DemandRegistry:
    """The enabled demand partners, in a stable order, with their call state."""

    def __init__(
        self,
        partners: Iterable[DemandPartner] = (),
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 5.0,
        qps_share: float = 1.0,
    ) -> None:
        """`qps_share`: the part of each partner's QPS cap this process may use (1/N for
        one of N workers)."""
        self._failure_threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._qps_share = qps_share
        self.states: list[DemandState] = []
        self.by_id: dict[str, DemandState] = {}
        self.reload(partners)

    def reload(self, partners: Iterable[DemandPartner]) -> None:
        """Replaces the partner list; breakers of partners that stay keep their state."""
        states = []
        for partner in sorted((p for p in partners if p.enabled), key=lambda p: p.id):
            problem = partner_problem(partner)
            if problem is not None:
                log.error("demand partner refused: %s", problem, extra={"dsp": partner.id})
                continue
            previous = self.by_id.get(partner.id)
            breaker = (
                previous.breaker
                if previous
                else CircuitBreaker(
                    self._failure_threshold,
                    self._cooldown_s,
                    on_change=_CircuitWatch(partner.id),
                )
            )
            state = DemandState(partner, breaker, self._qps_share)
            if previous and previous.limiter and state.limiter:
                # Keep the bucket's tokens, at the cap the catalog now gives.
                state.limiter = previous.limiter.with_rate(state.limiter.qps)
            states.append(state)
        self.states = states
        self.by_id = {s.partner.id: s for s in states}
