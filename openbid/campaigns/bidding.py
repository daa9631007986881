"""One line item's bids for a batch of candidates: value (goal x probability), times the
pacing multiplier, shaded in first price, never above the value, never under the floor, and
thinned by the pacing participation rate. A paced value under the floor is no bid.

`LineItemBidding` puts `pricing` and `pacing` together for one line item and one day: once
a slot, `decide(now_s, spent, requests)` updates the pacing controller (and refits the
shading curves when due: off the request path); per batch, `bids(values, floors, ...)`
is array arithmetic and one table lookup. Outcomes go back through `learn` (first price
only: they feed the win curves). Plain arrays in and out, so the exchange, the bidder
endpoint and the simulated market (`openbid.sim.buying`) drive it alike.

>>> from openbid.campaigns.pacing import PacingSettings, SpendPlan
>>> bidding = LineItemBidding(GOAL_CPC, 2_000_000, SpendPlan.even(0.0).shares)
>>> bidding.start_day(day_start_s=0.0, budget_micros=50_000_000)
>>> decision = bidding.decide(now_s=0.0, spent_micros=0)   # starts at a multiplier of 0.3
>>> values = bidding.values(np.array([0.001, 0.004]))
>>> values.tolist(), bidding.bids(values, floor_micros=np.array([0, 5_000_000])).tolist()
([2000000, 8000000], [600000, 0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from openbid.campaigns.pacing import (
    PacingController,
    PacingDecision,
    PacingMemory,
    PacingSettings,
    SpendPlan,
)
from openbid.pricing.shader import Shader
from openbid.pricing.shading import FIRST_PRICE
from openbid.pricing.value import GOAL_CPC, value_cpm_micros

ShadeFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(paced values, floors) -> bids: a stand-in for the shader (the simulator's oracle)."""

__all__ = ["GOAL_CPC", "LineItemBidding", "ShadeFunction"]


class LineItemBidding:
    """Bids of one line item. `plan_shares`: its spend plan by slot of the day (e.g. 24
    hourly shares); `traffic_shares`: the forecast traffic, if shaped otherwise; `shader`:
    its win curves (None: no shading); `shade=False` keeps logging outcomes without
    shading (an exploration day); `memory`: what yesterday's controller learned."""

    def __init__(
        self,
        goal: int,
        goal_amount_micros: int,
        plan_shares: Sequence[float],
        *,
        settings: PacingSettings | None = None,
        traffic_shares: Sequence[float] | None = None,
        shader: Shader | None = None,
        shade: bool = True,
        refit_s: float = 3600.0,
        memory: PacingMemory | None = None,
        initial_multiplier: float = 0.3,
        initial_participation: float = 1.0,
        max_bid_cpm_micros: int = 0,
        min_bid_cpm_micros: int = 0,
    ) -> None:
        self.goal = goal
        self.goal_amount_micros = goal_amount_micros
        self.plan_shares = tuple(plan_shares)
        self.traffic_shares = tuple(traffic_shares) if traffic_shares is not None else None
        self.settings = settings or PacingSettings()
        self.shader = shader
        self.shade = shade
        self.refit_s = refit_s
        self.memory = memory
        self.initial_multiplier = initial_multiplier
        self.initial_participation = initial_participation
        self.max_bid_cpm_micros = max_bid_cpm_micros
        self.min_bid_cpm_micros = min_bid_cpm_micros
        self.controller: PacingController | None = None
        self.decision = PacingDecision(0.0, 0.0, 0, 0)
        self._next_refit_s = float("-inf")

    def start_day(self, day_start_s: float, budget_micros: int) -> None:
        """A new day: a new controller (starting from `memory`, if any)."""
        traffic = (
            SpendPlan(day_start_s, self.traffic_shares) if self.traffic_shares is not None else None
        )
        self.controller = PacingController(
            SpendPlan(day_start_s, self.plan_shares),
            budget_micros,
            self.settings,
            traffic=traffic,
            initial_multiplier=self.initial_multiplier,
            initial_participation=self.initial_participation,
            memory=self.memory,
        )
        self._next_refit_s = day_start_s

    def decide(
        self, now_s: float, spent_micros: int, requests: int | None = None
    ) -> PacingDecision:
        """Once a slot: the pacing decision, and a refit of the shading curves when due."""
        if self.controller is None:
            raise RuntimeError("LineItemBidding.decide: start_day() first")
        if self.shader is not None and self.shade and now_s >= self._next_refit_s:
            self.shader.refit()
            self._next_refit_s = now_s + self.refit_s
        self.decision = self.controller.update(now_s, spent_micros, requests)
        return self.decision

    def values(self, p_click, p_conversion=0.0) -> np.ndarray:
        """What each candidate is worth (CPM micros), before pacing."""
        return value_cpm_micros(
            self.goal,
            self.goal_amount_micros,
            p_click,
            p_conversion,
            max_bid_cpm_micros=self.max_bid_cpm_micros,
            min_bid_cpm_micros=self.min_bid_cpm_micros,
        )

    def bids(
        self,
        values: np.ndarray,
        floor_micros,
        segments: np.ndarray | None = None,
        at: int = FIRST_PRICE,
        participation_draws: np.ndarray | None = None,
        shade_function: ShadeFunction | None = None,
    ) -> np.ndarray:
        """CPM bids in micros (0: no bid) for candidates worth `values`, under the current
        decision. `segments` (shading codes) are needed when a shader shades;
        `participation_draws` (uniforms, a hash of the request id) apply the throttle."""
        decision = self.decision
        values = np.asarray(values, dtype=np.int64)
        floor = np.asarray(floor_micros, dtype=np.int64)
        paced = np.rint(values * decision.bid_multiplier).astype(np.int64)
        if shade_function is not None and at == FIRST_PRICE:
            bids = shade_function(paced, floor)
        elif self.shader is not None and self.shade:
            bids = self.shader.bids(segments, paced, floor, at)
        else:
            bids = np.where((paced > 0) & (paced >= floor), paced, 0)
        # A multiplier above 1 (a first-price bidder behind its plan) raises the value that
        # shading optimises for, never a bid above what the impression is worth.
        bids = np.where(bids <= values, bids, np.where(values >= floor, values, 0))
        if participation_draws is not None:
            bids = np.where(participation_draws < decision.participation, bids, 0)
        elif decision.participation <= 0.0:
            bids = np.zeros_like(bids)
        return bids

    def learn(self, segments, bids, won, loss_price_micros, at: int = FIRST_PRICE) -> None:
        """Outcomes of the bids made (first price: they feed the win curves)."""
        if self.shader is not None and at == FIRST_PRICE:
            self.shader.observe(segments, bids, won, loss_price_micros)

    def remember(self) -> PacingMemory | None:
        """What today's controller learned, for tomorrow's."""
        return self.controller.remember() if self.controller is not None else None
