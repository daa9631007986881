"""The bidder endpoint's house demand under consent signals and currencies: no more than a
DSP with our vendor id would get (no bid where GDPR applies without a basis for us; no user
key, segments or city where they are withheld), and no bid in a currency the exchange
refused."""

from __future__ import annotations

import asyncio

import msgspec

from openbid.bidder import Bidder
from openbid.bidder.server import offers_of
from openbid.campaigns.consent import house_inputs
from openbid.campaigns.house import HouseDemand, HouseSettings
from openbid.campaigns.targeting import RequestFacts
from openbid.creative import TrackerSigner
from openbid.http.server import Request
from openbid.openrtb import decode_bid_request
from openbid.privacy import tcf
from openbid.privacy.consent import ConsentContext
from tests.campaigns.test_house import campaign, campaign_set, house_of

VENDOR = 42
FULL = tcf.encode(
    tcf.TCString(
        purpose_consents=frozenset(range(1, 11)),
        vendor_consents=frozenset({VENDOR}),
        special_feature_opt_ins=frozenset({1}),
    )
)


def request(**fields) -> dict:
    return {
        "id": "r1",
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 0.1}],
        "site": {"id": "s1", "domain": "news.example"},
        "device": {"geo": {"country": "USA", "region": "CA"}},
        "user": {"id": "user-1"},
        **fields,
    }


def house(vendor_id: int | None) -> HouseDemand:
    made = house_of(campaign_set(campaign("c1", "cpm", 2_000_000)))
    made.settings = HouseSettings(pacing=False, shading=False, vendor_id=vendor_id)
    return made


def bids(bidder: Bidder, body: dict):
    decoded = decode_bid_request(msgspec.json.encode(body))
    return asyncio.run(bidder.bids(decoded, offers_of(decoded, bidder.rates)))


def test_house_demand_bids_under_gdpr_only_with_a_basis_for_our_vendor_id():
    signer = TrackerSigner(b"0" * 32)
    gdpr_no_string = request(regs={"gdpr": 1})
    gdpr_garbage = request(regs={"gdpr": 1}, user={"id": "user-1", "consent": "garbage!!"})
    gdpr_full = request(regs={"gdpr": 1}, user={"id": "user-1", "consent": FULL})
    without_id = Bidder(house(None), signer, "http://x")
    assert bids(without_id, request())  # no GDPR: bids
    for body in (gdpr_no_string, gdpr_garbage, gdpr_full):  # a DSP with no vendor id: blocked
        assert bids(without_id, body) == []
    ours = Bidder(house(VENDOR), signer, "http://x")
    assert bids(ours, gdpr_no_string) == [] and bids(ours, gdpr_garbage) == []
    [made] = bids(ours, gdpr_full)
    assert made.user_key is not None
    other = Bidder(house(VENDOR + 1), signer, "http://x")  # consent for another vendor only
    assert bids(other, gdpr_full) == []


def test_house_inputs_drop_user_key_segments_and_city_where_consent_withholds_them():
    decoded = decode_bid_request(msgspec.json.encode(request(regs={"coppa": 1})))
    facts = RequestFacts(geo=("USA", "USA-CA", "USA-CA-la"), segments=("seg-1",), now_micros=0)
    features = {"city": "la", "zip": "90001", "metro": "803", "user_segments": "seg-1"}
    consent = ConsentContext.from_request(decoded)
    inputs = house_inputs(decoded, consent, facts, features, VENDOR)
    assert inputs is not None and inputs.user_key is None
    assert inputs.facts.geo == ("USA", "USA-CA") and inputs.facts.segments == ()
    assert {k: inputs.features[k] for k in features} == dict.fromkeys(features, "")
    plain = decode_bid_request(msgspec.json.encode(request()))
    kept = house_inputs(plain, ConsentContext.from_request(plain), facts, features, VENDOR)
    assert kept is not None and kept.facts == facts and kept.features == features
    assert kept.user_key is not None


def test_a_request_whose_currencies_exclude_usd_gets_no_bid():
    bidder = Bidder(house(None), TrackerSigner(b"0" * 32), "http://x")

    def status(body: dict) -> int:
        raw = Request("POST", "/bidder/openrtb", "", {}, msgspec.json.encode(body), "127.0.0.1")
        return asyncio.run(bidder.handle_bid_request(raw)).status

    assert status(request(cur=["EUR"])) == 204
    assert status(request(cur=["EUR", "USD"])) == 200
    assert status(request()) == 200
