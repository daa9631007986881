"""House demand under hostile or unusual conditions: holds across a budget day's change,
models that answer NaN, consent that forbids what house demand would use."""

from __future__ import annotations

import asyncio

import numpy as np

from openbid import clock
from openbid.campaigns.budgets import DAY_S, day_of
from openbid.campaigns.scoring import CandidateScorer
from openbid.ml import Featurizer
from tests.campaigns.test_house import (
    FEATURES,
    SPEC,
    FixedScorer,
    bid,
    campaign,
    campaign_set,
    house_of,
)


def _next_day_clock() -> clock.Clock:
    now = clock.now()
    return clock.MarketClock(1.0, start_s=(day_of(now) + 1) * DAY_S + 10)


def test_holds_of_yesterday_settle_against_yesterday_not_todays_slice():
    house = house_of(campaign_set(campaign("c1", "cpm", 2_000_000)))
    lost, won = bid(house, "r1"), bid(house, "r2")
    assert house.banker.accounts["c1"].held_micros == 4_000
    house.finish(won[0], won=True)
    previous = clock.set_clock(_next_day_clock())
    try:
        asyncio.run(house.tick())  # a new budget day: a new account for c1
        today = house.banker.accounts["c1"]
        assert today.day == day_of(clock.now())
        house.finish(lost[0], won=False)  # yesterday's bid lost: nothing to free today
        assert today.held_micros == 0
        asyncio.run(house.billed(won[0].bid_id, "c1", won[0].line_item_id, 2_000, None))
        # billed today: today's spend, and today's slice never grows by yesterday's holds
        assert (today.held_micros, today.spent_micros) == (0, 2_000)
        assert today.available_micros <= today.reserved_micros - today.spent_micros
    finally:
        clock.set_clock(previous)


def test_a_click_model_answering_nan_leaves_cpc_unpriced_and_cpm_still_bids():
    records = campaign_set(campaign("cpc", "cpc", 5_000_000), campaign("cpm", "cpm", 700_000))
    house = house_of(records, scorer=FixedScorer(float("nan"), 0.0))
    [only] = bid(house)  # the NaN was an exception before: no house bid at all
    assert only.campaign.id == "cpm"


class _NanBatch:
    def score_batch(self, rows):
        p = np.full((len(rows), 1), 0.02)
        p[0, 0], p[-1, 0] = float("nan"), 1.5
        return p


def test_the_scorer_turns_nan_and_out_of_range_probabilities_into_unpriced_rows(tmp_path):
    model = type("Model", (), {"featurizer": Featurizer(SPEC), "scorer": _NanBatch()})()
    house = house_of(campaign_set(campaign("cpc", "cpc", 5_000_000)))
    index = house.matcher.index
    pairs = np.zeros(3, np.int64)
    p = CandidateScorer().score("ctr", model, FEATURES, index, pairs)
    assert np.isnan(p[0]) and np.isnan(p[2]) and p[1] == 0.02
