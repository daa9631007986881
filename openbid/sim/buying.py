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
| `PolicyBidder(policy)` | a line item's bidding policy (`openbid.campaigns.bidding.LineItemBidding`: value x pacing multiplier, shaded in first price, throttled below the multiplier's floor), driven through the `BiddingPolicy` shape: the simulator imports no serving code |
| `PolicyBidder(policy, oracle=True)` | the same policy with the true click probabilities and each request's true win curve: the best it could do |
| `LinearBidder` | Zhang et al. 2014: `base x pCTR / mean pCTR`, no pacing; stops when the budget is gone |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from openbid.sim.draws import STREAM_CLICK, name_hash, uniforms
from openbid.sim.generator import RequestBatch
from openbid.sim.landscape import Competition, Landscape, Settlement
from openbid.sim.truth import USER_SALT

DAY_S = 86_400.0
FIRST_PRICE, SECOND_PRICE = 1, 2
"""OpenRTB's `at`."""
SEGMENT_FEATURES = ("format", "floor_bucket", "hour", "devicetype")
"""Shading segments, coarse to fine: a segment without data uses its prefix's curve."""
_BUYER_SALT = name_hash("buyer")
"""Salt of the buyer's own draws (participation), apart from the users' and the DSPs'."""
_STREAM_PARTICIPATE = 1


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
            click_draw=uniforms(batch.keys, USER_SALT, STREAM_CLICK),
            participation_draw=uniforms(batch.keys, _BUYER_SALT, _STREAM_PARTICIPATE),
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
    bids: int = 0
    """Bids made (those that fit under the budget and the bidder's limit)."""
    spend_by_hour_micros: np.ndarray = field(default_factory=lambda: np.zeros(24))
    spend_by_slot_micros: list[int] = field(default_factory=list)

    @property
    def delivered_share(self) -> float:
        return self.spend_micros / self.budget_micros if self.budget_micros else 0.0


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

    def start(self, day: BuyingDay, budget_micros: int) -> None:
        self._budget = budget_micros

    def bids(self, day: BuyingDay, rows: slice, now_s: float, spent_micros: int) -> np.ndarray:
        ctr = (day.true_ctr if self.oracle else day.predicted_ctr)[rows]
        bids = np.rint(self.base_bid_micros * ctr / self.mean_ctr).astype(np.int64)
        floor = day.competition.floor_micros[rows]
        return np.where(bids >= floor, bids, 0)

    def limit_micros(self) -> int:
        return self._budget

    def learn(self, day: BuyingDay, rows: slice, bids: np.ndarray, outcome: Settlement) -> None:
        return None


class BiddingPolicy(Protocol):
    """A line item's bidding as `openbid.campaigns.bidding.LineItemBidding` does it; the
    simulator drives it through this shape only (it imports no serving code)."""

    decision: Any

    def start_day(self, day_start_s: float, budget_micros: int) -> None: ...

    def decide(self, now_s: float, spent_micros: int, requests: int | None = None) -> Any: ...

    def values(self, p_click, p_conversion=0.0) -> np.ndarray: ...

    def bids(
        self, values, floor_micros, segments=None, at=1, participation_draws=None,
        shade_function=None,
    ) -> np.ndarray: ...  # fmt: skip

    def learn(self, segments, bids, won, loss_price_micros, at: int = 1) -> None: ...


class PolicyBidder:
    """A `BiddingPolicy` on a buying day. With `oracle=True` it bids with the true click
    probabilities and shades each first-price bid on its request's true win curve (the
    best this policy could do); pacing is the policy's own either way."""

    def __init__(self, policy: BiddingPolicy, landscape: Landscape, *, oracle: bool = False):
        self.policy = policy
        self.landscape = landscape
        self.oracle = oracle
        self._requests: int | None = None

    @property
    def _at(self) -> int:
        return FIRST_PRICE if self.landscape.first_price else SECOND_PRICE

    def start(self, day: BuyingDay, budget_micros: int) -> None:
        self.policy.start_day(day.day_start_s, budget_micros)
        self._requests = None

    def bids(self, day: BuyingDay, rows: slice, now_s: float, spent_micros: int) -> np.ndarray:
        self.policy.decide(now_s, spent_micros, self._requests)
        self._requests = rows.stop - rows.start
        ctr = (day.true_ctr if self.oracle else day.predicted_ctr)[rows]
        values = self.policy.values(ctr)
        oracle_shading = None
        if self.oracle:
            competition = day.competition

            def oracle_shading(paced, floor):
                return self.landscape.best_first_price_bids(competition, paced, rows)

        return self.policy.bids(
            values,
            day.competition.floor_micros[rows],
            day.segments[rows],
            self._at,
            day.participation_draw[rows],
            oracle_shading,
        )

    def limit_micros(self) -> int:
        return self.policy.decision.ceiling_micros

    def learn(self, day: BuyingDay, rows: slice, bids: np.ndarray, outcome: Settlement) -> None:
        self.policy.learn(
            day.segments[rows], bids, outcome.won, outcome.loss_price_micros, self._at
        )


def hourly_plan_error(result: DayResult, planned_shares) -> tuple[float, float]:
    """(sum of |hourly spend - plan| / daily budget, mean of |hourly spend - plan| / plan),
    for the plan's 24 hourly shares of the budget."""
    planned = np.asarray(planned_shares, dtype=np.float64) * result.budget_micros
    deviation = np.abs(result.spend_by_hour_micros - planned)
    weighted = float(deviation.sum() / planned.sum())
    per_hour = float(np.mean(deviation[planned > 0] / planned[planned > 0]))
    return weighted, per_hour
