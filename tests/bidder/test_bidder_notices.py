"""The bidder's notices under hostile exchanges: replayed and late loss notices, implausible
loss prices, a forged win notice racing the real one with price 0; holds of bids whose
outcome never comes; once-per-bid marks that outlive the notice URLs."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from openbid import clock
from openbid.bidder import Bidder
from openbid.bidder.notices import LOSS_PRICE_MAX_RATIO
from openbid.bidder.server import BIDDER_LOSS_PRICES, BIDDER_NOTICES, BIDDER_PRICES
from openbid.campaigns.budgets import DAY_S, day_of
from openbid.campaigns.house import HOUSE_HOLDS_SHED, HOUSE_UNHELD_SPEND
from openbid.creative import TrackerSigner
from openbid.http.messages import Request
from openbid.openrtb import BidRequest
from openbid.stores import MemoryCounterStore
from tests.campaigns.test_house import OFFER, bid, campaign, campaign_set, facts, house_of

SIGNER = TrackerSigner(b"k" * 32, ttl_s=3600)
BID_MICROS = 2_000_000  # the CPM campaign's bid: shading and pacing off


def _bidder(house, **kwargs) -> Bidder:
    return Bidder(house, SIGNER, "http://bidder.test", **kwargs)


def _urls(bidder: Bidder, at: int, floor_micros: int = 100_000) -> dict[str, str]:
    """The notice URLs of one fresh house bid on a request of auction type `at`."""
    bids = asyncio.run(
        bidder.house.bid({}, facts(), [OFFER], at=at, user_key=None, request_id="r-" + str(at))
    )
    [house_bid] = bids
    house_bid.floor_micros = floor_micros
    [seat] = bidder.response(BidRequest(id="r", imp=[], at=at), bids).seatbid
    [out] = seat.bid
    return {"win": out.nurl, "bill": out.burl, "loss": out.lurl, "bid_id": out.id}


def _fire(bidder: Bidder, url: str, **macros: str) -> int:
    for name, value in macros.items():
        url = url.replace("${AUCTION_PRICE}" if name == "price" else f"${{{name}}}", value)
    parts = urlsplit(url)
    request = Request("GET", parts.path, parts.query, {}, b"", "127.0.0.1")
    handler = {
        "/bidder/win": bidder.handle_win,
        "/bidder/bill": bidder.handle_bill,
        "/bidder/loss": bidder.handle_loss,
    }[parts.path]
    return asyncio.run(handler(request)).status


def _observations(house) -> list[tuple]:
    seen: list[tuple] = []
    house.observe = lambda segment, bid_micros, won, loss_price_micros=0: seen.append(
        (bid_micros, won, loss_price_micros)
    )
    return seen


def _count(counter, *labels) -> float:
    return counter.labels(*labels)._value.get()


def _spent(house, campaign_id: str = "cpm") -> int:
    return house.ledger.spent_micros(campaign_id, day_of(clock.now()))


@pytest.fixture
def bidder() -> Bidder:
    return _bidder(house_of(campaign_set(campaign("cpm", "cpm", BID_MICROS))))


def test_a_replayed_loss_notice_frees_the_hold_and_feeds_the_win_curves_once(bidder):
    seen = _observations(bidder.house)
    urls = _urls(bidder, at=1)
    duplicates = _count(BIDDER_NOTICES, "loss", "duplicate")
    for _ in range(3):
        assert _fire(bidder, urls["loss"], AUCTION_MIN_TO_WIN="2.5", AUCTION_LOSS="102") == 204
    assert seen == [(BID_MICROS, False, 2_500_000)]
    assert _count(BIDDER_NOTICES, "loss", "duplicate") == duplicates + 2
    assert bidder.house.banker.accounts["cpm"].held_micros == 0


def test_a_loss_notice_after_the_bid_was_billed_is_no_loss(bidder):
    seen = _observations(bidder.house)
    urls = _urls(bidder, at=1)
    assert _fire(bidder, urls["win"], price="2") == 204
    assert _fire(bidder, urls["loss"], AUCTION_MIN_TO_WIN="3", AUCTION_LOSS="102") == 204
    assert seen == [(BID_MICROS, True, 0)]  # the win only
    account = bidder.house.banker.accounts["cpm"]
    assert (account.spent_micros, account.held_micros) == (2_000, 0)
    assert _spent(bidder.house) == 2_000


@pytest.mark.parametrize(
    ("mtw", "price", "reading", "learnt"),
    [
        ("1000000000", "${AUCTION_PRICE}", "implausible", 0),  # $1e9 CPM
        (str(LOSS_PRICE_MAX_RATIO * 2 + 0.01), "", "implausible", 0),
        ("nan", "3", "invalid", 0),  # a bad mtw is not replaced by the price
        ("inf", "", "invalid", 0),
        ("${AUCTION_MIN_TO_WIN}", "3", "ok", 3_000_000),
        ("", "", "missing", 0),
    ],
)
def test_loss_prices_not_finite_or_far_above_our_bid_are_ignored_and_counted(
    bidder, mtw, price, reading, learnt
):
    seen = _observations(bidder.house)
    urls = _urls(bidder, at=1)
    before = _count(BIDDER_LOSS_PRICES, reading)
    url = urls["loss"].replace("${AUCTION_MIN_TO_WIN}", mtw).replace("${AUCTION_PRICE}", price)
    assert _fire(bidder, url) == 204
    assert seen == [(BID_MICROS, False, learnt)]
    assert _count(BIDDER_LOSS_PRICES, reading) == before + 1


def test_a_loss_for_another_reason_than_price_or_in_second_price_does_not_feed_the_curves(
    bidder,
):
    seen = _observations(bidder.house)
    creative_filtered = _urls(bidder, at=1)["loss"]
    assert _fire(bidder, creative_filtered, AUCTION_MIN_TO_WIN="3", AUCTION_LOSS="201") == 204
    second_price = _urls(bidder, at=2)["loss"]
    assert _fire(bidder, second_price, AUCTION_MIN_TO_WIN="3", AUCTION_LOSS="102") == 204
    assert seen == []
    assert bidder.house.banker.accounts["cpm"].held_micros == 0


def test_a_first_price_win_forged_at_price_zero_is_charged_at_our_bid(bidder):
    urls = _urls(bidder, at=1)
    before = _count(BIDDER_PRICES, "first_price_below_bid")
    assert _fire(bidder, urls["win"], price="0") == 204  # someone holding the URL, first
    assert _fire(bidder, urls["bill"], price="2") == 204  # the exchange's: a duplicate
    assert _spent(bidder.house) == BID_MICROS // 1000
    assert _count(BIDDER_PRICES, "first_price_below_bid") == before + 1


def test_a_second_price_win_below_the_floor_or_the_least_share_is_charged_at_that_least():
    house = house_of(campaign_set(campaign("cpm", "cpm", BID_MICROS)))
    bidder = _bidder(house, min_price_share=0.25)
    assert _fire(bidder, _urls(bidder, at=2, floor_micros=800_000)["win"], price="0") == 204
    assert _spent(house) == 800  # the floor we met: $0.80 CPM
    assert _fire(bidder, _urls(bidder, at=2, floor_micros=0)["win"], price="0.01") == 204
    assert _spent(house) == 800 + 500  # a quarter of our $2 bid
    assert _fire(bidder, _urls(bidder, at=2, floor_micros=0)["win"], price="1.2") == 204
    assert _spent(house) == 800 + 500 + 1_200  # a believable second price as it is


def test_holds_of_bids_without_an_outcome_are_freed_after_unwon_hold_s_won_ones_wait():
    house = house_of(
        campaign_set(campaign("cpm", "cpm", BID_MICROS)), unwon_hold_s=0.0, hold_s=3600.0
    )
    [unwon], [won] = bid(house, "r1"), bid(house, "r2")
    house.finish(won, won=True)
    before = _count(HOUSE_HOLDS_SHED, "unwon")
    asyncio.run(house.tick())
    assert house.banker.accounts["cpm"].held_micros == 2_000  # the won bid's alone
    assert _count(HOUSE_HOLDS_SHED, "unwon") == before + 1
    assert asyncio.run(house.billed(won.bid_id, "cpm", won.line_item_id, 2_000, None))
    assert house.banker.accounts["cpm"].held_micros == 0
    # a billing notice later than unwon_hold_s is charged all the same, and counted
    unheld = HOUSE_UNHELD_SPEND._value.get()
    assert asyncio.run(house.billed(unwon.bid_id, "cpm", unwon.line_item_id, 2_000, None))
    assert house.banker.accounts["cpm"].spent_micros == 4_000
    assert HOUSE_UNHELD_SPEND._value.get() == unheld + 1


def test_open_holds_are_capped_shedding_the_oldest_unwon_and_never_passing_the_budget():
    counters = MemoryCounterStore()
    house = house_of(campaign_set(campaign("cpm", "cpm", BID_MICROS)), counters, max_open_holds=2)
    first, second = bid(house, "r1")[0], bid(house, "r2")[0]
    house.finish(first, won=True)  # the oldest, but won: kept
    shed_before = _count(HOUSE_HOLDS_SHED, "cap")
    [third] = bid(house, "r3")  # full: the oldest unwon (the second) is shed
    assert _count(HOUSE_HOLDS_SHED, "cap") == shed_before + 1
    account = house.banker.accounts["cpm"]
    assert account.held_micros == 6_000  # a shed hold stays held until its mark is read
    # the shed bid was billed at another worker: kept spent here, never freed to bid again
    asyncio.run(house.ledger.arecord("cpm", second.bid_id, 2_000, day_of(clock.now())))
    asyncio.run(house.tick())
    assert (account.held_micros, account.spent_micros) == (4_000, 2_000)
    house.finish(third, won=True)
    full_before = _count(HOUSE_HOLDS_SHED, "full")
    assert bid(house, "r4") == []  # every open hold is of a won bid: no bid
    assert _count(HOUSE_HOLDS_SHED, "full") == full_before + 1
    assert account.spent_micros + account.held_micros <= account.reserved_micros


def test_once_per_bid_marks_live_at_least_as_long_as_the_notice_urls(tmp_path):
    from openbid.config import load_config
    from openbid.platform import Platform

    ten_days = 10 * DAY_S
    config = load_config(
        environ={
            "OPENBID_EVENTS__DIR": str(tmp_path / "events"),
            "OPENBID_STORES__CATALOG_URL": f"sqlite:///{tmp_path}/catalog.db",
            "OPENBID_EXCHANGE__TRACKER_SECRET": "test-secret-0123456789abcdef",
            "OPENBID_EXCHANGE__TRACKER_TTL_S": str(ten_days),
        }
    )
    platform = Platform(config)
    platform.open()
    try:
        assert platform.house.ledger.mark_ttl_s > ten_days
        assert platform.house.settings.mark_ttl_s > ten_days  # loss marks
        assert platform.exchange_server.trackers._mark_ttl_s() > ten_days  # imp:, win:
    finally:
        asyncio.run(platform.close())
    # a market clock running 60 times faster: the URLs' market days are real minutes
    previous = clock.set_clock(clock.MarketClock(60.0))
    try:
        assert TrackerSigner(b"k" * 32, ttl_s=ten_days).mark_ttl_s() == ten_days / 60 + DAY_S
    finally:
        clock.set_clock(previous)
