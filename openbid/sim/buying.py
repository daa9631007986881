"""A simulated buying day: one campaign's bidder against the market's landscape, slot by slot
on market time, in process (no HTTP), so pacing, shading and bidding strategies can be
scored against each other and against the oracle on the same requests.

`BuyingDay` holds one day's requests as the campaign meets them (time, competition, shading
segments, the campaign's predicted and true click probabilities); `run_day` walks its slots:
the bidder decides the bids of a slot's requests (`Bidder.bids`), the exchange settles them
(`Landscape.settle`), spend is charged in time order and a bid is made only while it fits
under the budget and the bidder's ceiling (the banker's rule: never past the budget), and
the bidder learns what happened. Bidders:

| bidder | bids |
| --- | --- |
| `PacedBidder` | goal value x predicted probability x the pacing multiplier (`PacingController`), shaded in first price (`Shader`, refitted from its own outcomes every `refit_s`), throttled below the multiplier's floor |
| `LinearBidder` | Zhang et al. 2014: `base x pCTR / mean pCTR`, no pacing; stops when the budget is gone |
| `PacedBidder(oracle=True)` | the same loop with the true probabilities and the true per-request win curve: the best this bidder could do |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from openbid.campaigns.pacing import PacingController, PacingMemory, PacingSettings, SpendPlan
from openbid.pricing.shader import Shader
from openbid.pricing.shading import FIRST_PRICE, SECOND_PRICE
from openbid.pricing.value import GOAL_CPC, value_cpm_micros
from openbid.sim.draws import uniforms
from openbid.sim.features import COLUMN
from openbid.sim.generator import RequestBatch
from openbid.sim.landscape import Competition, Landscape, Settlement
from openbid.sim.truth import USER_SALT

DAY_S = 86_400.0
SEGMENT_FEATURES = ("format", "floor_bucket", "hour", "devicetype")
"""Shading segments, coarse to fine: a segment without data uses its prefix's curve."""
_STREAM_PARTICIPATE = 11
_STREAM_CLICK = 6  # the market's own click stream (truth.STREAM_CLICK)


def shading_segments(batch: RequestBatch) -> np.ndarray:
    """The shading segment codes of every request, one column per `SEGMENT_FEATURES`."""
    return np.stack([batch.column(name) for name in SEGMENT_FEATURES], axis=1).astype(np.int64)


@dataclass(frozen=True)
class BuyingDay:
    """One day of requests as a campaign meets them, in time order."""

    day_start_s: float
    ts_s: np.ndarray
    competition: Competition
    segments: np.ndarray
    predicted_ctr: np.ndarray
    """The campaign's pCTR from its model (what it bids with)."""
    true_ctr: np.ndarray
    """The oracle's (what scores it, and what the oracle bids with)."""
    click_draw: np.ndarray
    participation_draw: np.ndarray

    @classmethod
    def build(
        cls,
        landscape: Landscape,
        batch: RequestBatch,
        advertiser: str,
        predicted_ctr: np.ndarray,
        day_start_s: float,
    ) -> BuyingDay:
        ts_s = batch.ts_ms / 1000.0
        if len(ts_s) and (ts_s.min() < day_start_s or ts_s.max() >= day_start_s + DAY_S):
            raise ValueError("BuyingDay: requests must fall within [day_start_s, +1 day)")
        if np.any(np.diff(ts_s) < 0):
            raise ValueError("BuyingDay: requests must be in time order")
        return cls(
            day_start_s=day_start_s,
            ts_s=ts_s,
            competition=landscape.competition(batch),
            segments=shading_segments(batch),
            predicted_ctr=np.asarray(predicted_ctr, dtype=np.float64),
            true_ctr=landscape.click_probability(batch, advertiser),
            click_draw=uniforms(batch.keys, USER_SALT, _STREAM_CLICK),
            participation_draw=uniforms(batch.keys, USER_SALT, _STREAM_PARTICIPATE),
        )

    def __len__(self) -> int:
        return len(self.ts_s)

    def hourly_requests(self) -> np.ndarray:
        hour = ((self.ts_s - self.day_start_s) // 3600).astype(np.int64)
        return np.bincount(hour, minlength=24)[:24]


@dataclass
class DayResult:
    """What a bidder bought in a day."""

    budget_micros: int
    spend_micros: int = 0
    """Spend in micros of money (an impression costs its CPM price / 1000)."""
    impressions: int = 0
    expected_clicks: float = 0.0
    """Sum of the true click probabilities of the impressions won (the mean of `clicks`)."""
    clicks: int = 0
    value_micros: float = 0.0
    """Sum of what the impressions won were worth to the bidder (value / 1000 each)."""
    bids: int = 0
    spend_by_hour_micros: np.ndarray = field(default_factory=lambda: np.zeros(24))
    spend_by_slot_micros: list[int] = field(default_factory=list)

    @property
    def delivered_share(self) -> float:
        return self.spend_micros / self.budget_micros if self.budget_micros else 0.0

    @property
    def surplus_micros(self) -> float:
        return self.value_micros - self.spend_micros


class Bidder(Protocol):
    def start(self, day: BuyingDay, budget_micros: int) -> None: ...

    def bids(self, day: BuyingDay, rows: slice, now_s: float, spent_micros: int) -> np.ndarray:
        """CPM bids in micros for the requests `rows` (0: no bid)."""
        ...

    def limit_micros(self) -> int:
        """Spend past which no bid is made in the current slot."""
        ...

    def learn(self, day: BuyingDay, rows: slice, bids: np.ndarray, outcome: Settlement) -> None: ...


def run_day(
    day: BuyingDay,
    landscape: Landscape,
    bidder: Bidder,
    budget_micros: int,
    slot_s: float = 300.0,
) -> DayResult:
    """Runs a bidder through a day and returns what it bought."""
    result = DayResult(budget_micros=budget_micros)
    bidder.start(day, budget_micros)
    spent = 0
    edges = np.searchsorted(day.ts_s, day.day_start_s + slot_s * np.arange(int(DAY_S / slot_s) + 1))
    edges[-1] = len(day)
    for slot, (begin, end) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        now_s = day.day_start_s + slot * slot_s
        rows = slice(int(begin), int(end))
        bids = np.asarray(bidder.bids(day, rows, now_s, spent), dtype=np.int64)
        limit = min(budget_micros, bidder.limit_micros())
        outcome = landscape.settle(day.competition, bids, rows)
        cost = outcome.price_micros // 1000  # CPM to one impression
        # Bids go out in time order; one is made only if its full price (first price: what
        # it pays; second price: at most that) fits under the limit with what went before.
        hold = bids // 1000
        before = np.concatenate(([0], np.cumsum(np.where(outcome.won, cost, 0))[:-1]))
        allowed = (bids > 0) & (spent + before + hold <= limit)
        bids = np.where(allowed, bids, 0)
        won = outcome.won & allowed
        outcome = Settlement(
            won,
            np.where(won, outcome.price_micros, 0),
            np.where(allowed, outcome.loss_price_micros, 0),
        )
        slot_cost = int(cost[won].sum())
        spent += slot_cost
        bidder.learn(day, rows, bids, outcome)
        index = np.flatnonzero(won) + rows.start
        result.bids += int(allowed.sum())
        result.impressions += len(index)
        result.expected_clicks += float(day.true_ctr[index].sum())
        result.clicks += int((day.click_draw[index] < day.true_ctr[index]).sum())
        hour = min(int((now_s - day.day_start_s) // 3600), 23)
        result.spend_by_hour_micros[hour] += slot_cost
        result.spend_by_slot_micros.append(slot_cost)
        values = getattr(bidder, "last_values", None)
        if values is not None:
            result.value_micros += float(values[won].sum()) / 1000.0
    result.spend_micros = spent
    return result


class LinearBidder:
    """Zhang et al. 2014's linear strategy: `base_bid x pCTR / mean_ctr`, until the budget is
    gone. `base_bid_micros` is tuned (on another day) for the most clicks within budget."""

    def __init__(self, base_bid_micros: float, mean_ctr: float, *, oracle: bool = False) -> None:
        self.base_bid_micros = base_bid_micros
        self.mean_ctr = mean_ctr
        self.oracle = oracle
        self._budget = 0
        self.last_values: np.ndarray | None = None

    def start(self, day: BuyingDay, budget_micros: int) -> None:
        self._budget = budget_micros

    def bids(self, day: BuyingDay, rows: slice, now_s: float, spent_micros: int) -> np.ndarray:
        ctr = (day.true_ctr if self.oracle else day.predicted_ctr)[rows]
        bids = np.rint(self.base_bid_micros * ctr / self.mean_ctr).astype(np.int64)
        self.last_values = bids
        floor = day.competition.floor_micros[rows]
        return np.where(bids >= floor, bids, 0)

    def limit_micros(self) -> int:
        return self._budget

    def learn(self, day: BuyingDay, rows: slice, bids: np.ndarray, outcome: Settlement) -> None:
        return None


class PacedBidder:
    """Value bidding with pacing and (in first price) shading: the bidder this module and
    `bench/pacing.py` measure. With `oracle=True` it bids with the true click probabilities
    and shades against the true win curve of each request."""

    def __init__(
        self,
        goal_amount_micros: int,
        plan: SpendPlan,
        landscape: Landscape,
        *,
        settings: PacingSettings | None = None,
        traffic: SpendPlan | None = None,
        shader: Shader | None = None,
        refit_s: float = 3600.0,
        initial_multiplier: float = 0.3,
        memory: PacingMemory | None = None,
        oracle: bool = False,
        shade: bool = True,
        goal: int = GOAL_CPC,
    ) -> None:
        self.goal = goal
        self.goal_amount_micros = goal_amount_micros
        self.plan = plan
        self.traffic = traffic
        self.landscape = landscape
        self.settings = settings or PacingSettings()
        self.shader = shader
        self.refit_s = refit_s
        self.initial_multiplier = initial_multiplier
        self.memory = memory
        self.oracle = oracle
        self.shade = shade
        """False: the shader only logs outcomes (an exploration run), bids are not shaded."""
        self.controller: PacingController | None = None
        self._ceiling = 0
        self._requests: int | None = None
        self._next_refit_s = 0.0
        self.last_values: np.ndarray | None = None
        self.multipliers: list[float] = []

    def start(self, day: BuyingDay, budget_micros: int) -> None:
        plan = SpendPlan(day.day_start_s, self.plan.shares)
        traffic = SpendPlan(day.day_start_s, self.traffic.shares) if self.traffic else None
        self.controller = PacingController(
            plan,
            budget_micros,
            self.settings,
            traffic=traffic,
            initial_multiplier=self.initial_multiplier,
            memory=self.memory,
        )
        self._next_refit_s = day.day_start_s
        self._requests = None

    def bids(self, day: BuyingDay, rows: slice, now_s: float, spent_micros: int) -> np.ndarray:
        assert self.controller is not None, "start() first"
        decision = self.controller.update(now_s, spent_micros, self._requests)
        self._requests = rows.stop - rows.start
        self._ceiling = decision.ceiling_micros
        self.multipliers.append(decision.bid_multiplier)
        if self.shader is not None and self.shade and now_s >= self._next_refit_s:
            self.shader.refit()
            self._next_refit_s = now_s + self.refit_s
        ctr = (day.true_ctr if self.oracle else day.predicted_ctr)[rows]
        value = value_cpm_micros(self.goal, self.goal_amount_micros, ctr)
        self.last_values = value
        paced = np.rint(value * decision.bid_multiplier).astype(np.int64)
        floor = day.competition.floor_micros[rows]
        at = FIRST_PRICE if self.landscape.first_price else SECOND_PRICE
        if self.oracle and at == FIRST_PRICE:
            bids = self._oracle_bids(day, rows, paced, floor)
        elif self.shader is not None and self.shade:
            bids = self.shader.bids(day.segments[rows], paced, floor, at)
        else:
            bids = np.where((paced > 0) & (paced >= floor), paced, 0)
        # A multiplier above 1 (a first-price bidder behind its plan) raises the value that
        # shading optimises for, never a bid above what the impression is worth.
        bids = np.where(bids <= value, bids, np.where(value >= floor, value, 0))
        taking_part = day.participation_draw[rows] < decision.participation
        return np.where(taking_part, bids, 0)

    def _oracle_bids(self, day: BuyingDay, rows: slice, value, floor) -> np.ndarray:
        """The surplus-maximising bid on each request's true win curve (a grid search)."""
        value = value.astype(np.float64)
        ratios = np.linspace(0.02, 1.0, 50)
        candidates = np.maximum(value[:, None] * ratios[None, :], floor[:, None].astype(float))
        win = self.landscape.win_probability(day.competition, candidates, rows)
        surplus = (value[:, None] - candidates) * win
        best = candidates[np.arange(len(value)), surplus.argmax(axis=1)]
        ok = (value > 0) & (value >= floor)
        return np.where(ok, np.rint(best), 0).astype(np.int64)

    def limit_micros(self) -> int:
        return self._ceiling

    def learn(self, day: BuyingDay, rows: slice, bids: np.ndarray, outcome: Settlement) -> None:
        if self.shader is not None and self.landscape.first_price:
            self.shader.observe(day.segments[rows], bids, outcome.won, outcome.loss_price_micros)


def hourly_plan_error(result: DayResult, plan: SpendPlan) -> tuple[float, float]:
    """(sum of |hourly spend - plan| / daily budget, mean of |hourly spend - plan| / plan)."""
    planned = plan.hourly_shares() * result.budget_micros
    deviation = np.abs(result.spend_by_hour_micros - planned)
    weighted = float(deviation.sum() / planned.sum())
    per_hour = float(np.mean(deviation[planned > 0] / planned[planned > 0]))
    return weighted, per_hour


def impression_cost_micros(price_cpm_micros) -> np.ndarray:
    """What one impression at a CPM price costs."""
    return np.asarray(price_cpm_micros) // 1000


def request_hours(batch: RequestBatch) -> np.ndarray:
    return batch.codes[:, COLUMN["hour"]]
