"""House demand (`openbid.campaigns.house`): prices from the click model serving (and a new
price when it is swapped), what a missing model does, spend once per bid id, holds freed by
a loss, and the property that a bid never passes the campaign's cap nor the value."""

from __future__ import annotations

import asyncio
import math
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid import clock
from openbid.campaigns.budgets import day_of
from openbid.campaigns.house import HouseDemand, HouseSettings, ImpOffer
from openbid.campaigns.matcher import CampaignMatcher
from openbid.campaigns.model import (
    Advertiser,
    Campaign,
    CampaignSet,
    Creative,
    LineItem,
    Targeting,
)
from openbid.campaigns.scoring import CandidateScorer
from openbid.campaigns.store import CampaignCatalog
from openbid.campaigns.targeting import ImpFacts, RequestFacts
from openbid.ml import FeatureSpec, Featurizer, save_model
from openbid.obs import REGISTRY
from openbid.pipeline.modelsync import ScoringSlot
from openbid.stores import MemoryCounterStore
from tests.experiments.conftest import _learner

DAY_MICROS = 86_400_000_000
SPEC = FeatureSpec(categorical=["country", "dsp", "campaign_id", "creative_id"], hash_bits=18)
FEATURES = {"country": "USA", "media": "banner", "size": "300x250"}
OFFER = ImpOffer("1", ImpFacts(slots=("banner:300x250",)), floor_micros=100_000)


def campaign(id: str, goal: str, amount_micros: int, **fields) -> Campaign:
    now = clock.now_micros()
    fields = {"daily_budget_micros": 100_000_000, **fields}
    return Campaign(
        id=id,
        advertiser_id="adv",
        name=id,
        start_micros=now - DAY_MICROS,
        end_micros=now + 30 * DAY_MICROS,
        total_budget_micros=1_000_000_000,
        goal=goal,
        goal_amount_micros=amount_micros,
        **fields,
    )


def campaign_set(*campaigns: Campaign, countries: tuple[str, ...] = ("USA",)) -> CampaignSet:
    return CampaignSet(
        advertisers=(Advertiser(id="adv", name="Adv", domain="adv.example"),),
        campaigns=campaigns,
        line_items=tuple(
            LineItem(
                id=f"li-{c.id}",
                campaign_id=c.id,
                creative_ids=(f"cr-{c.id}",),
                targeting=Targeting(countries=countries),
            )
            for c in campaigns
        ),
        creatives=tuple(
            Creative(
                id=f"cr-{c.id}",
                advertiser_id="adv",
                kind="banner",
                sizes=((300, 250),),
                landing_url="https://adv.example/",
                markup="https://cdn.adv.example/a.png",
                adomain=("adv.example",),
                approval="approved",
            )
            for c in campaigns
        ),
    )


def facts() -> RequestFacts:
    return RequestFacts(geo=("USA",), now_micros=clock.now_micros())


def house_of(records: CampaignSet, counters=None, scorer=None, **settings) -> HouseDemand:
    catalog = CampaignCatalog(f"sqlite:///{tempfile.mkdtemp(prefix='openbid-house-')}/c.db")
    catalog.migrate()
    catalog.apply_campaign_set(records)
    settings = {"pacing": False, "shading": False, **settings}
    house = HouseDemand(
        CampaignMatcher(catalog),
        counters or MemoryCounterStore(),
        scorer,
        settings=HouseSettings(**settings),
    )
    asyncio.run(house.start())
    return house


def bid(house: HouseDemand, request_id: str = "r1", features=FEATURES, at: int = 2):
    return asyncio.run(
        house.bid(features, facts(), [OFFER], at=at, user_key=None, request_id=request_id)
    )


def click_model(path, rate: float, campaign_boost: dict[str, float] | None = None):
    """A click model scoring `rate` everywhere, times e^boost for the campaigns named."""
    featurizer = Featurizer(SPEC)
    coef = np.zeros(SPEC.n_features, dtype=np.float32)
    coef[featurizer.bias_index] = math.log(rate / (1 - rate))
    position = SPEC.categorical.index("campaign_id")
    for campaign_id, boost in (campaign_boost or {}).items():
        coef[featurizer.transform_one({"campaign_id": campaign_id})[position]] = boost
    return save_model(_learner(coef), path, SPEC, name=f"ctr-{rate}")


def test_a_swapped_click_model_changes_the_price_and_the_version_bids_carry(tmp_path):
    slot = ScoringSlot("ctr")
    slot.load(click_model(tmp_path / "a", 0.01))
    house = house_of(
        campaign_set(campaign("cpc", "cpc", 500_000), campaign("cpm", "cpm", 1_000_000)),
        scorer=CandidateScorer(click=slot),
    )
    [first] = bid(house)
    # CPC $0.50 x pCTR 0.01 = $5 CPM beats the $1 CPM campaign
    assert first.campaign.id == "cpc" and first.click_model == "ctr-0.01"
    assert first.value_micros == first.price_micros == pytest.approx(5_000_000, abs=5)
    slot.load(click_model(tmp_path / "b", 0.03))
    [second] = bid(house, "r2")
    assert second.value_micros == pytest.approx(15_000_000, abs=5)
    assert second.click_model == "ctr-0.03"
    # the candidate's own features count: a model that likes the CPM campaign's id changes
    # nothing for it (CPM ignores probabilities) and one that dislikes the CPC campaign's
    # id prices it under the CPM campaign
    slot.load(click_model(tmp_path / "c", 0.01, {"cpc": -3.0}))
    [third] = bid(house, "r3")
    assert third.campaign.id == "cpm" and third.price_micros == 1_000_000


def _arm_fallbacks() -> float:
    return REGISTRY.get_sample_value("openbid_house_arm_fallbacks_total", {"purpose": "ctr"}) or 0


class _Broken:
    """A loaded model that fails to score (its featurizer raises)."""

    version = "broken"
    featurizer = None


def test_a_click_arms_model_prices_its_requests_and_a_failing_one_falls_back(tmp_path):
    production, challenger = ScoringSlot("ctr"), ScoringSlot("ctr")
    production.load(click_model(tmp_path / "a", 0.01))
    challenger.load(click_model(tmp_path / "b", 0.03))
    house = house_of(
        campaign_set(campaign("cpc", "cpc", 500_000)), scorer=CandidateScorer(click=production)
    )

    def arm_bid(arm_models, request_id):
        return asyncio.run(
            house.bid(
                FEATURES, facts(), [OFFER], at=2, user_key=None, request_id=request_id,
                arm_models=arm_models,
            )
        )  # fmt: skip

    for n in range(2):  # alternating models: each prices its own, every time
        [control] = arm_bid({}, f"c{n}")
        [arm] = arm_bid({"ctr": challenger}, f"a{n}")
        assert (control.click_model, control.value_micros) == (
            "ctr-0.01",
            pytest.approx(5e6, abs=5),
        )
        assert (arm.click_model, arm.value_micros) == ("ctr-0.03", pytest.approx(15e6, abs=5))
    [other_purpose] = arm_bid({"cvr": ScoringSlot("cvr")}, "o")  # a conversion arm only
    assert other_purpose.click_model == "ctr-0.01"
    before = _arm_fallbacks()
    unloaded, broken = ScoringSlot("ctr"), ScoringSlot("ctr")
    broken.current = _Broken()
    for slot in (unloaded, broken):
        [fallback] = arm_bid({"ctr": slot}, "f")
        assert (fallback.click_model, fallback.value_micros) == (
            "ctr-0.01",
            pytest.approx(5e6, abs=5),
        )
    assert _arm_fallbacks() == before + 2


def test_without_a_click_model_only_cpm_campaigns_bid_and_nothing_fails(tmp_path):
    records = campaign_set(campaign("cpc", "cpc", 5_000_000), campaign("cpa", "cpa", 50_000_000))
    assert bid(house_of(records, scorer=CandidateScorer(click=ScoringSlot("ctr")))) == []
    with_cpm = campaign_set(campaign("cpc", "cpc", 5_000_000), campaign("cpm", "cpm", 700_000))
    [only] = bid(house_of(with_cpm, scorer=CandidateScorer()))
    assert only.campaign.id == "cpm" and only.click_model == ""


def test_spend_is_recorded_once_per_bid_id_and_settles_the_hold(counter_store):
    house = house_of(campaign_set(campaign("c1", "cpm", 2_000_000)), counters=counter_store)
    [made] = bid(house)
    account = house.banker.accounts["c1"]
    assert account.held_micros == 2_000  # one impression at a $2 CPM
    house.finish(made, won=True)

    async def bill_twice():
        return [
            await house.billed(made.bid_id, "c1", made.line_item_id, 1_500, None) for _ in range(2)
        ]

    assert asyncio.run(bill_twice()) == [True, False]
    assert house.ledger.spent_micros("c1", day_of(clock.now())) == 1_500
    assert (account.held_micros, account.spent_micros) == (0, 1_500)


def test_a_lost_bid_frees_its_hold_and_a_won_one_keeps_it_until_billing():
    house = house_of(campaign_set(campaign("c1", "cpm", 2_000_000)))
    account = house.banker.accounts["c1"]
    [lost] = bid(house, "r1")
    house.finish(lost, won=False, loss_price_micros=3_000_000)
    assert account.held_micros == 0
    [won] = bid(house, "r2")
    house.finish(won, won=True)
    house.lost(won.bid_id)  # a late loss notice for a won bid changes nothing
    assert account.held_micros == 2_000


def test_a_campaign_whose_budget_is_spent_stops_bidding():
    spent = campaign("c1", "cpm", 2_000_000, daily_budget_micros=3_000)
    house = house_of(campaign_set(spent))
    bids = [bid(house, f"r{n}") for n in range(3)]
    assert [len(b) for b in bids] == [1, 0, 0]  # 2,000 of 3,000 held: the next does not fit


class FixedScorer(CandidateScorer):
    """Every candidate scores the same probabilities (the property test's model)."""

    def __init__(self, p_click: float, p_conversion: float) -> None:
        super().__init__()
        self.p = {"ctr": p_click, "cvr": p_conversion}

    def models(self):
        return object(), object()

    def score(self, purpose, model, features, index, pairs):
        return np.full(pairs.size, self.p[purpose])


@settings(max_examples=60)
@given(
    goal=st.sampled_from(["cpm", "cpc", "cpa"]),
    amount=st.integers(1, 100_000_000),
    cap=st.integers(0, 20_000_000),
    p_click=st.floats(0.0, 1.0),
    p_conversion=st.floats(0.0, 1.0),
    floor=st.integers(0, 5_000_000),
    at=st.sampled_from([1, 2]),
)
def test_a_house_bid_never_exceeds_the_campaigns_cap_nor_its_value(
    goal, amount, cap, p_click, p_conversion, floor, at
):
    house = HOUSE_FOR_PROPERTY
    records = campaign_set(campaign("c", goal, amount, max_bid_cpm_micros=cap))
    house.matcher.catalog.apply_campaign_set(records)
    house.matcher.refresh()
    house.scorer = FixedScorer(p_click, p_conversion)
    offer = ImpOffer("1", OFFER.facts, floor_micros=floor)
    bids = asyncio.run(house.bid(FEATURES, facts(), [offer], at=at, user_key=None, request_id="r"))
    for made in bids:
        assert 0 < made.price_micros <= made.value_micros
        assert made.price_micros >= floor
        if cap:
            assert made.price_micros <= cap
        house.finish(made, won=False)


HOUSE_FOR_PROPERTY = house_of(campaign_set(campaign("c", "cpm", 1_000_000)), shading=True)
