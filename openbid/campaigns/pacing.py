"""Budget pacing: spread a daily budget over the day along a plan, and steer delivery to it
with a feedback controller that lowers bids and, past a point, throttles participation.

The plan is the share of the budget to have spent by each moment (`SpendPlan`: even, or
shaped by the forecast traffic per hour). Every slot (a few market minutes) the controller
(`PacingController.update`) sees what was spent and decides for the next slot:

- a **target**: the plan's spend for the slot plus a share of what delivery is behind (or
  minus what it is ahead), the share being the slot's part of a catch-up horizon (an hour by
  default) and the target capped at `1 + max_overpace` times the plan's: a late day catches
  up gradually instead of rushing at the end of the day (the end-of-day rush is a known
  source of overspend and of bad buys);
- a **control**: one number `u` on a log scale. In `bid` mode `exp(u)` multiplies every bid
  (lowering bids keeps the most valuable impressions, unlike random throttling) down to
  `min_multiplier`; below that, participation falls (LinkedIn's probabilistic throttling,
  Agarwal et al. 2014). In `throttle` mode (fixed-price or guaranteed line items) bids are
  left alone and only participation moves. The controller keeps a smoothed estimate of what
  the market returns per request at a given control, by hour of day (remembered from the
  day before: `PacingMemory`), and sets `u` so that the next slot is expected to spend its
  target;
- hard **stops** a bid must fit under: the ceiling (the plan so far plus `headroom_share`
  of it and a small allowance: the budget is never gone in the first hours whatever the
  market does) and the slot cap (`slot_cap` times the slot's plan: no rush, ever), never
  past the budget.

The decisions are pure functions of (plan, budget, spend so far, market time); the
controller's state is a few floats. Time is the market clock's (`openbid.clock`, read by
`openbid.campaigns.pacer`), given as seconds since the epoch.

>>> plan = SpendPlan.even(day_start_s=0.0)
>>> planned_spend_micros(plan, 24_000_000, 6 * 3600.0)
6000000
>>> slot = dict(start_s=6 * 3600.0, end_s=6 * 3600.0 + 600)   # 10 minutes: 166,667 planned
>>> slot_target_micros(plan, 24_000_000, spent_micros=5_900_000, **slot)  # 100k behind
183333
>>> slot_target_micros(plan, 24_000_000, spent_micros=4_000_000, **slot)  # 2M: capped at 1.5x
250000
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from openbid.errors import OpenbidError

DAY_S = 86_400.0


class PacingError(OpenbidError, ValueError):
    """A plan or setting that cannot pace; the message names it."""


@dataclass(frozen=True)
class SpendPlan:
    """How a day's budget (or traffic) is spread: the share of each of `len(shares)` equal
    slots of the day starting at `day_start_s`, spread evenly within a slot."""

    day_start_s: float
    shares: tuple[float, ...]

    def __post_init__(self) -> None:
        shares = np.asarray(self.shares, dtype=np.float64)
        if shares.ndim != 1 or len(shares) == 0 or not np.all(np.isfinite(shares)):
            raise PacingError("SpendPlan.shares: need one finite weight per slot of the day")
        if shares.min() < 0 or shares.sum() <= 0:
            raise PacingError("SpendPlan.shares: weights must be >= 0 with a positive sum")
        normalised = shares / shares.sum()
        object.__setattr__(self, "shares", tuple(normalised.tolist()))
        object.__setattr__(self, "_cumulative", np.concatenate(([0.0], np.cumsum(normalised))))

    @classmethod
    def even(cls, day_start_s: float, slots: int = 24) -> SpendPlan:
        """The same spend every hour."""
        return cls(day_start_s, (1.0,) * slots)

    @classmethod
    def from_forecast(cls, day_start_s: float, forecast, even_share: float = 0.0) -> SpendPlan:
        """Spend shaped by a forecast per slot (traffic, or the spend the market offers),
        blended with `even_share` of an even plan so that a quiet hour still gets some."""
        forecast = np.asarray(forecast, dtype=np.float64)
        if forecast.ndim != 1 or len(forecast) == 0 or forecast.sum() <= 0:
            raise PacingError("forecast: need one non-negative value per slot, not all 0")
        if not 0.0 <= even_share <= 1.0:
            raise PacingError(f"even_share: must be in [0, 1], got {even_share}")
        shares = (1 - even_share) * forecast / forecast.sum() + even_share / len(forecast)
        return cls(day_start_s, tuple(shares.tolist()))

    @property
    def day_end_s(self) -> float:
        return self.day_start_s + DAY_S

    def share_by(self, t_s: float) -> float:
        """The share planned to be spent by market time `t_s`."""
        position = (t_s - self.day_start_s) / DAY_S * len(self.shares)
        if position <= 0.0:
            return 0.0
        if position >= len(self.shares):
            return 1.0
        slot = int(position)
        cumulative = self._cumulative  # type: ignore[attr-defined]
        return float(cumulative[slot] + self.shares[slot] * (position - slot))

    def share_between(self, start_s: float, end_s: float) -> float:
        return self.share_by(end_s) - self.share_by(start_s)

    def hourly_shares(self) -> np.ndarray:
        """The plan's share of each hour of the day."""
        hours = self.day_start_s + 3600.0 * np.arange(25)
        cumulative = np.array([self.share_by(t) for t in hours])
        return np.diff(cumulative)


def planned_spend_micros(plan: SpendPlan, budget_micros: int, t_s: float) -> int:
    """What the plan has spent by `t_s`."""
    return round(budget_micros * plan.share_by(t_s))


def spend_ceiling_micros(
    plan: SpendPlan,
    budget_micros: int,
    t_s: float,
    headroom_share: float = 0.1,
    allowance_share: float = 0.005,
) -> int:
    """The most that may have been spent by `t_s`: the plan plus `headroom_share` of it,
    plus `allowance_share` of the budget (so the first bids of the day can go out), never
    more than the budget. A bid that would pass it is refused.

    >>> plan = SpendPlan.even(day_start_s=0.0)
    >>> spend_ceiling_micros(plan, 10_000_000, 3 * 3600.0)   # 1/8 of the day
    1425000
    """
    share = plan.share_by(t_s) * (1.0 + headroom_share) + allowance_share
    return min(budget_micros, round(budget_micros * share))


def slot_target_micros(
    plan: SpendPlan,
    budget_micros: int,
    spent_micros: int,
    start_s: float,
    end_s: float,
    catchup_s: float = 3600.0,
    max_overpace: float = 0.5,
) -> int:
    """What to spend in `[start_s, end_s)`: the plan's part of it, corrected by what delivery
    is behind (positive) or ahead (negative) times `(end_s - start_s) / catchup_s`, within
    `[0, (1 + max_overpace) x the plan's part]` and within what is left of the budget."""
    planned_slot = budget_micros * plan.share_between(start_s, end_s)
    behind = budget_micros * plan.share_by(start_s) - spent_micros
    correction = behind * min(1.0, (end_s - start_s) / catchup_s)
    target = min(planned_slot + correction, planned_slot * (1.0 + max_overpace))
    return int(max(0.0, min(target, budget_micros - spent_micros)))


def urgency(plan: SpendPlan, budget_micros: int, spent_micros: int, t_s: float) -> float:
    """How much faster than its plan a line item must now spend to deliver its budget: 0 on
    or ahead of schedule, 0.25 when the rest of the day must spend 25% over the plan's pace
    (`inf` when behind with no planned time left). Guaranteed line items with the highest
    urgency go first (`delivery_priority`).

    >>> plan = SpendPlan.even(day_start_s=0.0)
    >>> urgency(plan, 24_000_000, 12_000_000, 12 * 3600.0), urgency(plan, 24_000_000, 6_000_000, 12 * 3600.0)
    (0.0, 0.5)
    """
    remaining = budget_micros - spent_micros
    if remaining <= 0:
        return 0.0
    remaining_plan = budget_micros * (1.0 - plan.share_by(t_s))
    if remaining_plan <= 0:
        return math.inf
    return max(0.0, remaining / remaining_plan - 1.0)


TIER_RANK = {"guaranteed": 2, "deal": 1, "open": 0}


def delivery_priority(tier: str, urgency_score: float) -> tuple[int, int, float]:
    """A sort key (larger first): the tier, then whether a guaranteed line item is behind
    schedule, then how far behind. Behind-schedule guaranteed line items come first.

    >>> sorted([("open", 0.0), ("guaranteed", 0.0), ("guaranteed", 0.3), ("deal", 2.0)],
    ...        key=lambda item: delivery_priority(*item), reverse=True)
    [('guaranteed', 0.3), ('guaranteed', 0.0), ('deal', 2.0), ('open', 0.0)]
    """
    rank = TIER_RANK.get(tier)
    if rank is None:
        raise PacingError(f"tier: expected one of {', '.join(TIER_RANK)}, got {tier!r}")
    behind = rank == TIER_RANK["guaranteed"] and urgency_score > 0.0
    return rank, int(behind), min(urgency_score, 1e9)


def participates(participation: float, draw: float) -> bool:
    """Probabilistic throttling: take part when a uniform draw in [0, 1) (a hash of the
    request id, so every worker decides alike) falls under the participation rate."""
    return draw < participation


@dataclass(frozen=True)
class PacingSettings:
    """How the controller steers; tuned on a validation day (`bench/pacing.py`)."""

    mode: Literal["bid", "throttle"] = "bid"
    slot_s: float = 300.0
    gain: float = 0.3
    """Weight of the latest slot in the estimate of the market's response (0..1]."""
    elasticity: float = 1.0
    """Assumed d log(spend) / d u; 1 is exact for throttling, bids are usually more elastic."""
    max_step: float = 0.5
    """The most `u` moves in one update (log scale: 0.5 is a factor of 1.65)."""
    catchup_s: float = 3600.0
    max_overpace: float = 0.5
    headroom_share: float = 0.1
    min_multiplier: float = 0.05
    max_multiplier: float = 1.0
    min_participation: float = 0.001
    slot_cap: float = 1.6
    """No slot spends more than this many times the plan's spend for it (catching up
    included): the hard stop against a rush, whatever the control does."""

    def __post_init__(self) -> None:
        checks = {
            "mode": self.mode in ("bid", "throttle"),
            "slot_s": self.slot_s > 0,
            "gain": 0 < self.gain <= 1,
            "elasticity": self.elasticity > 0,
            "max_step": self.max_step > 0,
            "catchup_s": self.catchup_s > 0,
            "max_overpace": self.max_overpace >= 0,
            "headroom_share": self.headroom_share >= 0,
            "min_multiplier": 0 < self.min_multiplier <= self.max_multiplier,
            "min_participation": 0 < self.min_participation <= 1,
            "slot_cap": self.slot_cap >= 1 + self.max_overpace,
        }
        for name, ok in checks.items():
            if not ok:
                raise PacingError(f"pacing.{name}: invalid value {getattr(self, name)!r}")


@dataclass(frozen=True)
class PacingDecision:
    """What a bidder applies until the next update."""

    bid_multiplier: float
    participation: float
    target_micros: int
    """The spend aimed at in the slot that starts now."""
    ceiling_micros: int
    """Spend (so far, all workers) past which bids are refused until the next update."""


@dataclass(frozen=True)
class PacingMemory:
    """What a controller learned in a day that helps the next one start right: the market's
    response by hour of day (log spend per request at control 0: dearer hours lower), the
    traffic rate, and where the control ended."""

    level_by_hour: tuple[float, ...]
    requests_per_share: float | None
    u: float


class PacingController:
    """The feedback loop of one line item for one day. Call `update(now_s, spent_micros,
    requests)` every `settings.slot_s` of market time (or when convenient: a slot is
    whatever time passed); apply the decision to every bid until the next call.

    The controller models a slot's spend as `requests x exp(level(hour) + offset + elasticity
    x u)`: the requests the line item could bid on, times what the market returns per request
    at the control. `level(hour)` is the market's daily rhythm as learned the day before
    (`memory`, from yesterday's `remember()`; flat without it), `offset` today's departure from
    it, smoothed by `gain` after each slot from what the slot spent and how many requests it
    saw (`requests`; without it the forecast share of traffic stands in). The controller then
    sets `u` so that the next slot, with its forecast traffic, is expected to spend its target.

    A slot without requests teaches nothing: the controller does not wind up its bids while
    traffic is down, so none rush out when traffic returns. And whatever the control does, a
    slot stops bidding at `slot_cap` times its planned spend (the decision's `ceiling_micros`).

    `traffic` is the forecast traffic by slot of the day (defaults to the plan's shape).
    """

    def __init__(
        self,
        plan: SpendPlan,
        budget_micros: int,
        settings: PacingSettings | None = None,
        *,
        traffic: SpendPlan | None = None,
        initial_multiplier: float = 1.0,
        initial_participation: float = 1.0,
        memory: PacingMemory | None = None,
    ) -> None:
        if budget_micros < 0:
            raise PacingError(f"budget_micros: must be >= 0, got {budget_micros}")
        self.plan = plan
        self.traffic = traffic or plan
        self.budget_micros = int(budget_micros)
        self.settings = settings or PacingSettings()
        s = self.settings
        self._u_min = math.log(s.min_multiplier) + math.log(s.min_participation)
        self._u_max = math.log(s.max_multiplier)
        if s.mode == "throttle":
            self._u_min, self._u_max = math.log(s.min_participation), 0.0
        start = self._to_u(initial_multiplier, initial_participation)
        self._level_by_hour = [0.0] * 24
        self.requests_per_share: float | None = None
        """Smoothed requests per unit of forecast traffic share."""
        self.offset: float | None = None
        """Smoothed departure of today's market from `level(hour)`; None before any slot."""
        if memory is not None:
            if len(memory.level_by_hour) != 24:
                raise PacingError("memory.level_by_hour: need 24 values")
            self._level_by_hour = list(memory.level_by_hour)
            self.requests_per_share = memory.requests_per_share
            self.offset = 0.0
            start = memory.u
        self.u = min(max(start, self._u_min), self._u_max)
        self._seen_levels = [[0.0, 0] for _ in range(24)]
        self._learned = 0
        self._last_s: float | None = None
        self._last_spent = 0
        self._last_target = 0

    def _hour(self, t_s: float) -> int:
        return min(max(int((t_s - self.plan.day_start_s) // 3600), 0), 23)

    def _to_u(self, multiplier: float, participation: float) -> float:
        if self.settings.mode == "throttle":
            return math.log(max(participation, 1e-12))
        return math.log(max(multiplier, 1e-12)) + math.log(max(participation, 1e-12))

    def controls(self) -> tuple[float, float]:
        """(bid multiplier, participation) for the current `u`."""
        s = self.settings
        if s.mode == "throttle":
            return 1.0, math.exp(self.u)
        floor = math.log(s.min_multiplier)
        if self.u >= floor:
            return math.exp(self.u), 1.0
        return s.min_multiplier, math.exp(self.u - floor)

    def update(
        self, now_s: float, spent_micros: int, requests: int | None = None
    ) -> PacingDecision:
        """Learns from the slot since the last update (`requests`: how many requests the line
        item could bid on in it, before throttling) and decides the next one."""
        s = self.settings
        end_s = min(now_s + s.slot_s, self.plan.day_end_s)
        ceiling = spend_ceiling_micros(self.plan, self.budget_micros, end_s, s.headroom_share)
        if now_s >= self.plan.day_end_s or spent_micros >= self.budget_micros:
            self._remember(now_s, spent_micros, 0)
            return PacingDecision(0.0, 0.0, 0, min(ceiling, spent_micros))
        target = slot_target_micros(
            self.plan,
            self.budget_micros,
            spent_micros,
            now_s,
            end_s,
            s.catchup_s,
            s.max_overpace,
        )
        self._learn(now_s, spent_micros, requests)
        expected_requests = self._expected_requests(now_s, end_s)
        if target > 0 and expected_requests > 0:
            level = self._level_by_hour[self._hour(now_s)]
            aim = math.log(target / expected_requests) - level
            if self.offset is None:
                # Before anything is known, assume the initial control hits the first target.
                self.offset = aim - s.elasticity * self.u
            wanted = (aim - self.offset) / s.elasticity
            step = min(max(wanted - self.u, -s.max_step), s.max_step)
            self.u = min(max(self.u + step, self._u_min), self._u_max)
        self._remember(now_s, spent_micros, target)
        multiplier, participation = self.controls()
        if target == 0:
            participation = 0.0
        planned_slot = self.budget_micros * self.plan.share_between(now_s, end_s)
        slot_limit = spent_micros + s.slot_cap * planned_slot
        return PacingDecision(multiplier, participation, target, int(min(ceiling, slot_limit)))

    def _expected_requests(self, start_s: float, end_s: float) -> float:
        share = self.traffic.share_between(start_s, end_s)
        return share * (self.requests_per_share or 1.0)

    def _learn(self, now_s: float, spent_micros: int, requests: int | None) -> None:
        """Updates the offset (and the traffic rate) from the last slot."""
        if self._last_s is None or now_s <= self._last_s:
            return
        share = self.traffic.share_between(self._last_s, now_s)
        gain = self.settings.gain
        if requests is not None and share > 0:
            rate = requests / share
            if self.requests_per_share is None:
                # The first measurement re-bases the offset, which was per unit of share.
                if self.offset is not None and rate > 0:
                    self.offset -= math.log(rate)
                self.requests_per_share = rate
            else:
                self.requests_per_share += gain * (rate - self.requests_per_share)
        seen = share * (self.requests_per_share or 1.0) if requests is None else requests
        if self._last_target <= 0 or seen <= 0:
            return  # no bids were meant to go out, or there was nothing to bid on
        spent = spent_micros - self._last_spent
        # A slot that spent nothing still says the market gives less than aimed at: count it
        # as a twentieth of the target, a strong but finite push upwards.
        spent = max(spent, 0.05 * self._last_target)
        observed = math.log(spent / seen) - self.settings.elasticity * self.u
        hour = self._hour(self._last_s)
        self._seen_levels[hour][0] += observed
        self._seen_levels[hour][1] += 1
        residual = observed - self._level_by_hour[hour]
        # The first slots of a day weigh like a running mean (1, 1/2, 1/3, ...) until that
        # falls under `gain`: a wrong start is corrected at once.
        self._learned += 1
        weight = max(gain, 1.0 / self._learned)
        if self.offset is None:
            self.offset = residual
        else:
            self.offset += weight * (residual - self.offset)

    def _remember(self, now_s: float, spent_micros: int, target: int) -> None:
        self._last_s = now_s
        self._last_spent = spent_micros
        self._last_target = target

    def remember(self) -> PacingMemory:
        """Today's market rhythm for tomorrow's controller (hours not seen: today's mean)."""
        means = [total / count for total, count in self._seen_levels if count]
        fallback = sum(means) / len(means) if means else 0.0
        levels = tuple(total / count if count else fallback for total, count in self._seen_levels)
        return PacingMemory(levels, self.requests_per_share, self.u)
