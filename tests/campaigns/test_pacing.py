"""Pacing: plans, slot targets, the ceiling, urgency, and the controller on random traffic
and on a seeded simulated market."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.campaigns.pacing import (
    DAY_S,
    PacingController,
    PacingError,
    PacingSettings,
    SpendPlan,
    delivery_priority,
    participates,
    planned_spend_micros,
    slot_target_micros,
    spend_ceiling_micros,
    urgency,
)

HOUR = 3600.0


def test_plans_spread_the_whole_budget_and_follow_the_forecast():
    even = SpendPlan.even(day_start_s=1000.0)
    assert even.share_by(1000.0) == 0.0 and even.share_by(1000.0 + DAY_S) == 1.0
    assert even.share_by(1000.0 + 6 * HOUR) == pytest.approx(0.25)
    forecast = [1.0] * 12 + [3.0] * 12
    shaped = SpendPlan.from_forecast(0.0, forecast)
    assert shaped.share_by(12 * HOUR) == pytest.approx(0.25)
    assert shaped.hourly_shares().sum() == pytest.approx(1.0)
    blended = SpendPlan.from_forecast(0.0, forecast, even_share=0.5)
    assert blended.share_by(12 * HOUR) == pytest.approx(0.375)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SpendPlan(0.0, ()), "one finite weight"),
        (lambda: SpendPlan(0.0, (1.0, -1.0)), "must be >= 0"),
        (lambda: SpendPlan.from_forecast(0.0, [0.0, 0.0]), "forecast"),
        (lambda: SpendPlan.from_forecast(0.0, [1.0], even_share=2), "even_share"),
        (lambda: PacingSettings(gain=0), "pacing.gain"),
        (lambda: PacingSettings(mode="rush"), "pacing.mode"),
        (lambda: delivery_priority("premium", 0.0), "tier"),
    ],
)
def test_bad_plans_and_settings_are_refused_naming_the_field(build, message):
    with pytest.raises(PacingError, match=message):
        build()


def test_slot_targets_catch_up_gradually_and_slow_down_when_ahead():
    plan = SpendPlan.even(0.0)
    budget = 24_000_000
    slot = dict(start_s=6 * HOUR, end_s=6 * HOUR + 600)
    on_plan = slot_target_micros(plan, budget, planned_spend_micros(plan, budget, 6 * HOUR), **slot)
    assert on_plan == pytest.approx(budget * 600 / DAY_S, abs=1)
    behind = slot_target_micros(plan, budget, 5_900_000, **slot)
    assert on_plan < behind <= 1.5 * on_plan
    far_behind = slot_target_micros(plan, budget, 0, **slot)
    assert far_behind == pytest.approx(1.5 * budget * 600 / DAY_S, abs=1)  # capped: no rush
    ahead = slot_target_micros(plan, budget, 6_100_000, **slot)
    assert 0 <= ahead < on_plan
    assert slot_target_micros(plan, budget, 12_000_000, **slot) == 0
    assert slot_target_micros(plan, budget, budget - 10, **slot) <= 10


def test_the_ceiling_keeps_the_first_hours_to_the_plan_and_never_passes_the_budget():
    plan = SpendPlan.even(0.0)
    budget = 10_000_000
    assert spend_ceiling_micros(plan, budget, 0.0) == 50_000  # only the allowance
    assert spend_ceiling_micros(plan, budget, 2 * HOUR) < 0.1 * budget
    assert spend_ceiling_micros(plan, budget, 23.9 * HOUR) == budget


def test_urgency_and_priority_put_guaranteed_line_items_behind_schedule_first():
    plan = SpendPlan.even(0.0)
    assert urgency(plan, 24, 12, 12 * HOUR) == 0.0
    assert urgency(plan, 24, 6, 12 * HOUR) == pytest.approx(0.5)
    assert urgency(plan, 24, 24, 12 * HOUR) == 0.0
    assert math.isinf(urgency(plan, 24, 6, DAY_S))
    items = [("open", 3.0), ("deal", 0.0), ("guaranteed", 0.0), ("guaranteed", 0.8)]
    ranked = sorted(items, key=lambda item: delivery_priority(*item), reverse=True)
    assert ranked == [("guaranteed", 0.8), ("guaranteed", 0.0), ("deal", 0.0), ("open", 3.0)]


def test_participation_is_a_draw_under_the_rate():
    draws = np.random.default_rng(1).random(100_000)
    assert np.mean([participates(0.3, u) for u in draws]) == pytest.approx(0.3, abs=0.01)


def run_toy_day(traffic, price_cpm_micros, budget, mode, seed, slot_s=300.0):
    """A market in miniature: each request offers a value; a bid of b wins with probability
    b / (b + price) and costs b / 1000 (first price). Bids are made only while they fit under
    the ceiling and the budget, as the banker makes them. Returns spend over time."""
    rng = np.random.default_rng(seed)
    plan = SpendPlan.from_forecast(0.0, np.asarray(traffic) + 1e-9)
    pacing = PacingSettings(mode=mode, slot_s=slot_s)
    controller = PacingController(plan, budget, pacing, initial_multiplier=0.5)
    spent, history, max_cost = 0, [], 0
    for slot in range(int(DAY_S / slot_s)):
        now = slot * slot_s
        decision = controller.update(now, spent)
        hour = int(now // HOUR)
        count = rng.poisson(traffic[hour] * slot_s / HOUR)
        values = rng.lognormal(np.log(2e6), 0.8, count)
        bids = (values * decision.bid_multiplier).astype(np.int64)
        take_part = rng.random(count) < decision.participation
        wins = rng.random(count) < bids / (bids + price_cpm_micros)
        limit = min(budget, decision.ceiling_micros)
        for bid, part, win in zip(bids, take_part, wins, strict=True):
            cost = int(bid) // 1000
            if not part or cost <= 0 or spent + cost > limit:
                continue
            max_cost = max(max_cost, cost)
            if win:
                spent += cost
        history.append((now + slot_s, spent, spend_ceiling_micros(plan, budget, now + slot_s)))
    return plan, spent, history, max_cost


@settings(max_examples=40)
@given(
    traffic=st.lists(st.floats(0.0, 2000.0), min_size=24, max_size=24).filter(
        lambda t: sum(t) > 1.0
    ),
    price=st.integers(100_000, 20_000_000),
    budget=st.integers(1_000, 200_000_000),
    mode=st.sampled_from(["bid", "throttle"]),
    seed=st.integers(0, 10),
)
def test_pacing_never_spends_past_the_budget_or_its_ceiling(traffic, price, budget, mode, seed):
    _, spent, history, max_cost = run_toy_day(traffic, price, budget, mode, seed)
    assert spent <= budget
    for _, spent_by, ceiling in history:
        # Each slot's bids fit under the ceiling at its end, which the bidder used.
        assert spent_by <= ceiling + max_cost


def test_the_toy_market_follows_the_plan_and_spends_the_budget():
    traffic = [400 + 300 * math.sin(h / 24 * 2 * math.pi) for h in range(24)]
    plan, spent, history, _ = run_toy_day(traffic, 2_000_000, 2_000_000, "bid", seed=3)
    assert spent >= 0.95 * 2_000_000
    spend_by_hour = np.diff([0] + [s for t, s, _ in history if t % HOUR == 0])
    planned = plan.hourly_shares() * 2_000_000
    assert np.abs(spend_by_hour - planned).sum() / planned.sum() < 0.12


# ---- on the simulated market ------------------------------------------------------------


@pytest.fixture(scope="module")
def market_day():
    """A seeded day of 120k requests; the campaign bids with the true click probabilities
    (these tests are about pacing, not about the click model)."""
    import dataclasses

    from openbid.sim import Market
    from openbid.sim.buying import BuyingDay
    from openbid.sim.landscape import Landscape

    market = Market.load("default")
    landscape = Landscape(market)
    start = market.start_s + 86_400
    batch = market.generate(120_000, seed=7, start_s=start, span_s=86_400)
    day = BuyingDay.build(landscape, batch, "sportsgear.example", np.zeros(len(batch)), start)
    return landscape, dataclasses.replace(day, predicted_ctr=day.true_ctr)


def without_hours(day, first_hour, last_hour):
    """The day with no traffic from `first_hour` to `last_hour` (an outage upstream)."""
    import dataclasses

    from openbid.sim.landscape import Competition

    hour = (day.ts_s - day.day_start_s) // HOUR
    keep = (hour < first_hour) | (hour >= last_hour)
    competition = Competition(
        *(getattr(day.competition, f)[keep] for f in day.competition.__dataclass_fields__)
    )
    arrays = {
        name: getattr(day, name)[keep]
        for name in ("ts_s", "segments", "predicted_ctr", "true_ctr", "click_draw")
    }
    return dataclasses.replace(
        day, competition=competition, participation_draw=day.participation_draw[keep], **arrays
    )


def paced_bidder(landscape, plan):
    """The line item's bidding (CPC $2, paced, unshaded) driven on the simulated day."""
    from openbid.campaigns.bidding import LineItemBidding
    from openbid.pricing import GOAL_CPC
    from openbid.sim.buying import PolicyBidder

    return PolicyBidder(LineItemBidding(GOAL_CPC, 2_000_000, plan.shares), landscape)


def paced_day(landscape, day, budget):
    from openbid.sim.buying import run_day

    plan = SpendPlan.from_forecast(
        day.day_start_s,
        np.bincount(((day.ts_s - day.day_start_s) // HOUR).astype(int), minlength=24) + 1,
    )
    result = run_day(day, landscape, paced_bidder(landscape, plan), budget)
    return plan, result


def test_the_hourly_plan_is_followed_on_a_seeded_market(market_day):
    from openbid.sim.buying import hourly_plan_error

    landscape, day = market_day
    plan, result = paced_day(landscape, day, 40_000_000)
    assert result.delivered_share >= 0.98
    weighted, per_hour = hourly_plan_error(result, plan.hourly_shares())
    assert weighted <= 0.05 and per_hour <= 0.06


def test_after_an_outage_delivery_catches_up_gradually_without_an_end_of_day_rush(market_day):
    landscape, day = market_day
    budget = 40_000_000
    normal_plan, _ = paced_day(landscape, day, budget)
    plan = SpendPlan(day.day_start_s, normal_plan.shares)  # forecast: a normal day
    from openbid.sim.buying import run_day

    outage = without_hours(day, 8, 14)
    result = run_day(outage, landscape, paced_bidder(landscape, plan), budget)
    ratio = result.spend_by_hour_micros / (plan.hourly_shares() * budget)
    assert np.all(ratio[8:14] == 0)
    assert np.all(ratio <= PacingSettings().slot_cap + 0.02)  # never a rush, even catching up
    assert np.all(ratio[21:] <= 1.25)  # the last hours are back on plan
    assert result.delivered_share >= 0.95  # the missed quarter was made up over the afternoon


def test_a_market_that_cannot_take_the_budget_is_not_rushed_either(market_day):
    landscape, day = market_day
    plan, result = paced_day(landscape, day, 5_000_000_000)  # far more than it can buy
    ratio = result.spend_by_hour_micros / (plan.hourly_shares() * result.budget_micros)
    assert result.delivered_share < 0.5
    assert ratio[-3:].sum() <= 3 * PacingSettings().slot_cap * ratio[:-3].mean() + 1e-9
