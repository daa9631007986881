"""A line item's bids for a batch: value x multiplier, shaded in first price only, never
above the value, a paced value under the floor is no bid, thinned by participation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.campaigns.bidding import LineItemBidding
from openbid.campaigns.pacing import PacingSettings, SpendPlan
from openbid.pricing import GOAL_CPC, SECOND_PRICE, PriceGrid
from openbid.pricing.shader import Shader

EVEN = SpendPlan.even(0.0).shares
GRID = PriceGrid(low_micros=10_000, high_micros=100_000_000, bins=96)


def started(**options) -> LineItemBidding:
    bidding = LineItemBidding(GOAL_CPC, 2_000_000, EVEN, **options)
    bidding.start_day(0.0, 100_000_000)
    bidding.decide(0.0, 0)
    return bidding


def uniform_shader() -> Shader:
    """Win curves of a uniform landscape on [0, 20 CPM] (best first-price bid: v / 2)."""
    rng = np.random.default_rng(2)
    shader = Shader(depth=0, grid=GRID)
    bids = np.exp(rng.uniform(np.log(2e5), np.log(2e7), 30_000)).astype(np.int64)
    competing = rng.uniform(0, 2e7, 30_000)
    won = bids > competing
    shader.observe(np.zeros((30_000, 0)), bids, won, np.where(~won, competing, 0))
    return shader


def test_the_multiplier_scales_values_and_a_paced_value_under_the_floor_is_no_bid():
    bidding = started(initial_multiplier=0.5)
    values = bidding.values(np.array([0.001, 0.004, 0.004]))
    bids = bidding.bids(values, np.array([0, 0, 5_000_000]))
    assert values.tolist() == [2_000_000, 8_000_000, 8_000_000]
    assert bids.tolist() == [1_000_000, 4_000_000, 0]


def test_shading_applies_in_first_price_only_and_never_bids_above_the_value():
    bidding = started(shader=uniform_shader(), initial_multiplier=1.0)
    values = np.array([8_000_000])
    segments = np.zeros((1, 0), dtype=np.int64)
    first = bidding.bids(values, [0], segments)[0]
    assert first == pytest.approx(4_000_000, rel=0.15)  # refitted at the first decide
    assert bidding.bids(values, [0], segments, at=SECOND_PRICE)[0] == 8_000_000


def test_a_multiplier_over_one_raises_the_shaded_bid_but_never_past_the_value():
    settings = PacingSettings(max_multiplier=3.0)
    bidding = started(shader=uniform_shader(), settings=settings, initial_multiplier=3.0)
    segments = np.zeros((2, 0), dtype=np.int64)
    bids = bidding.bids(np.array([2_000_000, 8_000_000]), [0, 0], segments)
    assert bids[0] > 1_000_000 * 1.5  # more than the shaded bid at a multiplier of 1
    assert np.all(bids <= [2_000_000, 8_000_000])


def test_participation_thins_bids_at_its_rate():
    settings = PacingSettings(min_multiplier=0.5)
    bidding = started(settings=settings, initial_multiplier=0.5, initial_participation=0.25)
    draws = np.random.default_rng(4).random(20_000)
    bids = bidding.bids(np.full(20_000, 2_000_000), np.zeros(20_000), participation_draws=draws)
    assert np.mean(bids > 0) == pytest.approx(0.25, abs=0.015)


def test_outcomes_feed_the_win_curves_in_first_price_only():
    shader = Shader(depth=1, grid=GRID)
    bidding = started(shader=shader)
    args = (np.zeros((3, 1)), np.array([1, 2, 3]), np.array([True, False, True]), np.zeros(3))
    bidding.learn(*args, at=SECOND_PRICE)
    assert len(shader.log) == 0
    bidding.learn(*args)
    assert len(shader.log) == 3


def test_curves_are_refitted_when_due_and_not_on_every_slot():
    shader = uniform_shader()
    bidding = LineItemBidding(GOAL_CPC, 2_000_000, EVEN, shader=shader, refit_s=3600.0)
    bidding.start_day(0.0, 100_000_000)
    bidding.decide(0.0, 0)
    first_table = shader.table
    bidding.decide(600.0, 0, 100)
    assert shader.table is first_table
    bidding.decide(3600.0, 0, 100)
    assert shader.table is not first_table


@given(
    st.lists(st.integers(0, 50_000_000), min_size=1, max_size=40),
    st.floats(0.05, 2.0),
    st.integers(0, 10_000_000),
)
def test_bids_never_pass_the_value_nor_fall_under_the_floor(values, multiplier, floor):
    settings = PacingSettings(max_multiplier=2.0)
    bidding = started(settings=settings, initial_multiplier=multiplier)
    values = np.asarray(values, dtype=np.int64)
    bids = bidding.bids(values, np.full(len(values), floor))
    assert np.all(bids <= values)
    assert np.all((bids == 0) | (bids >= floor))
