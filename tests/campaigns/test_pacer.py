"""The pacer: controllers by line item on the one clock, rolled over at midnight."""

import time

import pytest

from openbid import clock
from openbid.campaigns.pacer import NO_BIDS, Pacer
from openbid.campaigns.pacing import PacingSettings

DAY = 86_400.0
MIDNIGHT = DAY * 20_000


@pytest.fixture
def market_clock():
    """A market clock standing (nearly) still at 06:00 of a known day."""
    previous = clock.set_clock(clock.MarketClock(1e-9, start_s=MIDNIGHT + 6 * 3600.0))
    yield
    clock.set_clock(previous)


def test_the_pacer_reads_market_time_from_the_clock(market_clock):
    pacer = Pacer(PacingSettings(slot_s=600))
    pacer.set_line_item("li-1", daily_budget_micros=24_000_000)
    decision = pacer.tick({"li-1": 6_000_000}, {"li-1": 500})
    # 06:00 of an even plan: a quarter spent is on plan; the slot's part is 10 minutes' worth.
    assert decision["li-1"].target_micros == pytest.approx(24_000_000 * 600 / DAY, abs=2)
    assert pacer.decision("li-1") is decision["li-1"]
    assert pacer.decision("unknown") is NO_BIDS


def test_a_new_day_starts_a_new_controller_that_remembers_the_old_one():
    pacer = Pacer(PacingSettings(slot_s=3600))
    pacer.set_line_item("li-1", daily_budget_micros=24_000_000, forecast=[1.0] * 24)
    spent = 0
    for hour in range(24):
        pacer.tick({"li-1": spent}, {"li-1": 1000}, now_s=MIDNIGHT + hour * 3600.0)
        spent += 900_000  # the market gives a little less than planned
    yesterday = pacer._items["li-1"].controller
    pacer.tick({}, {"li-1": 1000}, now_s=MIDNIGHT + DAY + 60)
    today = pacer._items["li-1"].controller
    assert today is not yesterday
    assert today.plan.day_start_s == MIDNIGHT + DAY
    assert today.u == pytest.approx(yesterday.u)  # starts where yesterday ended
    assert pacer.decision("li-1").target_micros > 0  # and nothing is spent yet today


def test_a_line_item_in_another_zone_turns_its_day_at_its_own_midnight():
    pacer = Pacer()
    pacer.set_line_item("east", daily_budget_micros=1_000_000, utc_offset_s=3 * 3600)
    pacer.tick({}, now_s=MIDNIGHT + 22 * 3600.0)  # 01:00 the next day, 3 hours east
    assert pacer._items["east"].controller.plan.day_start_s == MIDNIGHT + DAY - 3 * 3600


def test_removed_line_items_are_no_longer_paced():
    pacer = Pacer()
    pacer.set_line_item("li-1", daily_budget_micros=1_000_000)
    pacer.tick({}, now_s=time.time())
    pacer.remove_line_item("li-1")
    assert pacer.tick({}, now_s=time.time()) == {}
    assert pacer.decision("li-1") is NO_BIDS


def test_a_guaranteed_line_item_can_throttle_while_the_others_lower_bids():
    pacer = Pacer(PacingSettings(mode="bid"))
    pacer.set_line_item("open", daily_budget_micros=1_000_000)
    pacer.set_line_item(
        "guaranteed", daily_budget_micros=1_000_000, settings=PacingSettings(mode="throttle")
    )
    pacer.tick({}, now_s=MIDNIGHT + 3600.0)
    assert pacer.decision("guaranteed").bid_multiplier == 1.0
    assert pacer._items["open"].controller.settings.mode == "bid"
