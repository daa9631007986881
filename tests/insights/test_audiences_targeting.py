"""A line item targeting an audience segment matches a member: membership computed by the
refresh from a real event log, published to a set store, read back by `segments_of` into
the request's facts, matched by the campaign index (and the plain rules) as the exchange
would."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from openbid.campaigns.bulk import parse_rows, read_rows
from openbid.campaigns.index import compile_index
from openbid.campaigns.model import CampaignSet
from openbid.campaigns.targeting import ImpFacts, eligible_pairs, request_facts
from openbid.events import AuctionEvent, ConversionEvent, EventLog, ImpressionEvent
from openbid.insights.audiences.refresh import refresh
from openbid.insights.audiences.spec import parse_spec
from openbid.stores import MemorySetStore, SegmentMembership

T0 = 1_800_000_000_000_000  # 2027-01-15T08:00Z, inside the catalog's flight
SPEC = parse_spec(
    {
        "segments": [
            {
                "id": "travel-buyers",
                "include": [{"behaviour": "converted", "advertisers": ["trips.example"]}],
            },
            {"id": "sport-fans", "include": [{"behaviour": "visited", "campaigns": ["sport"]}]},
        ]
    }
)
IMP = ImpFacts(slots=("banner:300x250",))


@pytest.fixture(scope="module")
def membership(tmp_path_factory):
    directory = tmp_path_factory.mktemp("targeting")
    with EventLog(directory, roll_interval_s=3600) as log:
        for auction in ("a1", "a2"):  # a behaviour waits for its auction's context
            log.emit(AuctionEvent(T0, auction, "r", outcome="won"))
        log.emit(ImpressionEvent(T0, "a1", "b1", campaign_id="trips", user_id="buyer"))
        log.emit(
            ConversionEvent(
                T0 + 60_000_000,
                "a1",
                "cv1",
                bid_id="b1",
                user_id="buyer",
                advertiser="trips.example",
            )  # fmt: skip
        )
        log.emit(ImpressionEvent(T0, "a2", "b2", campaign_id="sport", user_id="fan"))
    membership = SegmentMembership(MemorySetStore())
    refresh(
        SPEC, directory, directory / "state", now_micros=T0 + 3_600_000_000, membership=membership
    )
    return membership


def matched(membership, user_id):
    catalog, errors = parse_rows(
        read_rows(Path(__file__).with_name("data") / "audience_catalog.yaml"), CampaignSet(), T0
    )
    assert errors == []
    facts = request_facts(
        {"country": "GBR", "device_type": "phone", "user_segments": "dmp:1"}, now_micros=T0
    )
    # the request's own segments and ours, as the exchange would join them
    facts = msgspec.structs.replace(
        facts, segments=(*facts.segments, *membership.targeting_keys(user_id))
    )
    from_index = {li for li, _ in compile_index(catalog, T0).match(facts, IMP).ids()}
    from_rules = {li for li, _ in eligible_pairs(catalog, facts, IMP)}
    assert from_index == from_rules
    return from_index


def test_a_line_item_targeting_a_segment_matches_its_member(membership):
    assert membership.segments_of("buyer") == {"travel-buyers"}
    assert matched(membership, "buyer") == {"li-buyers"}


def test_a_non_member_matches_the_exclusion_instead(membership):
    assert matched(membership, "fan") == {"li-not-buyers", "li-sport-fans"}
    assert matched(membership, "stranger") == {"li-not-buyers"}
