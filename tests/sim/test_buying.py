"""The simulated buying day: bidders never spend past their budget, the linear bidder stops
when it is gone, and the oracle does at least as well as the bidder with a model."""

import dataclasses

import numpy as np
import pytest

from openbid.campaigns.bidding import LineItemBidding
from openbid.campaigns.pacing import SpendPlan
from openbid.pricing import GOAL_CPC
from openbid.sim.buying import BuyingDay, LinearBidder, PolicyBidder, run_day
from openbid.sim.landscape import Landscape, LandscapeConfig

ADVERTISER = "sportsgear.example"


def paced_bidder(landscape, plan, oracle=False):
    """Our line item's bidding (CPC $2, paced, unshaded) driven on the simulated day."""
    return PolicyBidder(LineItemBidding(GOAL_CPC, 2_000_000, plan.shares), landscape, oracle=oracle)


@pytest.fixture(scope="module")
def day(market):
    start = market.start_s + 2 * 86_400
    batch = market.generate(40_000, seed=21, start_s=start, span_s=86_400)
    landscape = Landscape(market)
    built = BuyingDay.build(landscape, batch, ADVERTISER, np.zeros(len(batch)), start)
    # A noisy model: the truth times a log-normal error, so the oracle has something to beat.
    noise = np.exp(np.random.default_rng(3).normal(0, 0.8, len(batch)))
    return landscape, dataclasses.replace(
        built, predicted_ctr=np.clip(built.true_ctr * noise, 0, 1)
    )


@pytest.mark.parametrize("budget", [1_000_000, 10_000_000, 10**12])
def test_no_bidder_spends_past_its_budget(day, budget):
    landscape, buying = day
    plan = SpendPlan.even(buying.day_start_s)
    for bidder in (
        paced_bidder(landscape, plan),
        LinearBidder(3e6, float(buying.predicted_ctr.mean())),
    ):
        result = run_day(buying, landscape, bidder, budget)
        assert result.spend_micros <= budget
        assert result.spend_micros == sum(result.spend_by_slot_micros)
        assert result.spend_by_hour_micros.sum() == result.spend_micros


def test_the_linear_bidder_spends_early_and_stops_when_the_budget_is_gone(day):
    landscape, buying = day
    result = run_day(
        buying, landscape, LinearBidder(8e6, float(buying.predicted_ctr.mean())), 2_000_000
    )
    assert result.delivered_share > 0.99
    assert result.spend_by_hour_micros[12:].sum() == 0  # gone before noon: no pacing


def test_the_oracle_wins_more_clicks_for_the_same_budget(day):
    landscape, buying = day
    plan = SpendPlan.even(buying.day_start_s)
    ours = run_day(buying, landscape, paced_bidder(landscape, plan), 3_000_000)
    oracle = run_day(buying, landscape, paced_bidder(landscape, plan, oracle=True), 3_000_000)
    assert oracle.delivered_share > 0.95 and ours.delivered_share > 0.95
    assert oracle.expected_clicks > 1.05 * ours.expected_clicks


def test_second_price_charges_less_than_first_for_the_same_bids(day, market):
    landscape, buying = day
    second = Landscape(market, LandscapeConfig(auction="second"))
    bidder = lambda: LinearBidder(3e6, float(buying.predicted_ctr.mean()))  # noqa: E731
    first_result = run_day(buying, landscape, bidder(), 10**12)
    second_result = run_day(buying, second, bidder(), 10**12)
    assert second_result.impressions == first_result.impressions  # same bids, same wins
    assert second_result.spend_micros < 0.8 * first_result.spend_micros
