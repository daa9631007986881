"""Reports on a small event log whose every figure is computed by hand: rollups, tenant
scopes, breakdowns, an hour summarised again after a late segment, CSV export."""

from __future__ import annotations

import csv
import io

import msgspec
import pyarrow as pa
import pytest

from openbid.console.reports.query import ReportRequest, run_report
from openbid.console.reports.rollup import HOUR_MICROS, Rollups
from openbid.events import EVENT_TYPES, arrow_schema
from openbid.events.schema import (
    AuctionEvent,
    BidEvent,
    ClickEvent,
    ConversionEvent,
    ImpressionEvent,
)
from openbid.pipeline.engines import DuckDBEngine
from openbid.pipeline.synthetic import write_segments

H0 = 500_000  # 2027-01-15T08
T0 = H0 * HOUR_MICROS
SINCE, UNTIL = "2027-01-15T08:00:00Z", "2027-01-15T10:00:00Z"


def table(events) -> dict[str, pa.Table]:
    by_kind: dict[str, list] = {}
    for event in events:
        by_kind.setdefault(event.kind, []).append(msgspec.structs.asdict(event))
    return {
        kind: pa.Table.from_pylist(rows, schema=arrow_schema(EVENT_TYPES[kind]))
        for kind, rows in by_kind.items()
    }


def auction(ts, auction_id, publisher, country, device, outcome, price=0):
    features = {"country": country, "device_type": device, "placement": f"{publisher}-pl"}
    return AuctionEvent(
        ts,
        auction_id,
        request_id="r" + auction_id,
        publisher_id=publisher,
        features=features,
        outcome=outcome,
        clearing_price_micros=price,
    )


def bid(auction_id, dsp, *, decision="called", price=0, won=False, error=""):
    return BidEvent(
        T0 + 1,
        auction_id,
        dsp=dsp,
        decision=decision,
        bid=price > 0,
        price_micros=price,
        won=won,
        error=error,
    )


def impression(ts, auction_id, bid_id, campaign, creative, dsp, price):
    return ImpressionEvent(
        ts,
        auction_id,
        bid_id,
        dsp=dsp,
        campaign_id=campaign,
        creative_id=creative,
        price_micros=price,
        advertiser=campaign.split("-cmp")[0] + ".example",
    )


HOUR_ZERO = [
    auction(T0 + 10, "a1", "pub-p", "USA", "phone", "won", 2_000_000),
    auction(T0 + 20, "a2", "pub-p", "DEU", "desktop", "no_bid"),
    auction(T0 + 30, "a3", "pub-q", "USA", "phone", "won", 1_000_000),
    auction(T0 + 40, "a4", "pub-p", "USA", "phone", "won", 3_000_000),
    bid("a1", "dsp1", price=2_000_000, won=True),
    bid("a1", "dsp2", price=1_500_000),
    bid("a2", "dsp1"),
    bid("a2", "dsp2", decision="filtered"),
    bid("a3", "dsp1", price=1_000_000, won=True),
    bid("a4", "dsp2", price=3_000_000, won=True),
    bid("a4", "dsp1", error="timeout"),
    impression(T0 + 100, "a1", "b1", "adv-a-cmp", "adv-a-cr", "dsp1", 2_000_000),
    impression(T0 + 101, "a1", "b1", "adv-a-cmp", "adv-a-cr", "dsp1", 2_000_000),  # twice
    impression(T0 + 102, "a3", "b3", "adv-b-cmp", "adv-b-cr", "dsp1", 1_000_000),
    ClickEvent(T0 + 200, "a1", "b1", dsp="dsp1", campaign_id="adv-a-cmp", creative_id="adv-a-cr"),
    ConversionEvent(
        T0 + 300,
        "a1",
        "cv1",
        bid_id="b1",
        campaign_id="adv-a-cmp",
        attribution="click",
        value_micros=5_000_000,
        dsp="dsp1",
    ),
    ConversionEvent(
        T0 + 330,
        "a1",
        "cv1",
        bid_id="b1",
        campaign_id="adv-a-cmp",
        attribution="click",
        value_micros=5_000_000,
        dsp="dsp1",
    ),  # postback twice
    ConversionEvent(T0 + 400, "a2", "cv2", campaign_id="adv-a-cmp", attribution="none"),
]
LATE = [impression(T0 + 500, "a4", "b4", "adv-a-cmp", "adv-a-cr", "dsp2", 3_000_000)]


@pytest.fixture
def reporting(world):
    client, context, admin, tenants = world
    segments = context.reports.rollups.segments_url
    write_segments(table(HOUR_ZERO), segments, stem="log-1")
    # An hour later, a tracker of hour zero's auction a1 fires (its auction is an hour back).
    later = ClickEvent(T0 + HOUR_MICROS + 5, "a3", "b3", dsp="dsp1", campaign_id="adv-b-cmp")
    write_segments(table([later]), segments, stem="log-2")
    result = context.reports.rollups.update(T0 + 3 * HOUR_MICROS)
    assert result.summarised == [H0, H0 + 1] and result.watermark_hour == H0 + 2
    return client, context, admin, tenants


def get(client, headers, **params):
    response = client.get(
        "/api/v1/reports", params={"since": SINCE, "until": UNTIL} | params, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_admin_totals_by_hand(reporting):
    client, _, admin, _ = reporting
    totals = get(client, admin)["totals"]
    assert totals["auctions"] == 4 and totals["filled"] == 3 and totals["fill"] == 0.75
    assert (totals["calls"], totals["bids"], totals["wins"], totals["timeouts"]) == (6, 4, 3, 1)
    assert totals["win_rate"] == 0.75 and totals["bid_rate"] == 4 / 6
    assert totals["impressions"] == 2 and totals["clicks"] == 2 and totals["conversions"] == 1
    assert totals["spend_micros"] == 3_000  # CPM 2.00 and 1.00: 0.002 + 0.001
    assert totals["rpm_micros"] == 3_000 * 1000 / 4
    assert totals["conversion_value_micros"] == 5_000_000


def test_by_campaign_with_budget_use(reporting):
    client, _, admin, _ = reporting
    rows = {r["campaign"]: r for r in get(client, admin, group_by="campaign")["rows"]}
    a = rows["adv-a-cmp"]
    assert (a["impressions"], a["clicks"], a["conversions"], a["spend_micros"]) == (1, 1, 1, 2_000)
    assert a["ctr"] == 1.0 and a["cpc_micros"] == 2_000 and a["cpa_micros"] == 2_000
    assert a["cpm_micros"] == 2_000_000 and a["budget_use"] == 2_000 / 1_000_000_000
    assert a["auctions"] is None and a["fill"] is None  # auctions have no campaign
    b = rows["adv-b-cmp"]
    assert (b["impressions"], b["clicks"], b["spend_micros"]) == (1, 1, 1_000)


def test_by_hour_and_country(reporting):
    client, _, admin, _ = reporting
    rows = get(client, admin, group_by=["hour", "country"])["rows"]
    assert [(r["hour"], r["country"], r["auctions"], r["clicks"]) for r in rows] == [
        ("2027-01-15T08:00:00Z", "DEU", 1, None),
        ("2027-01-15T08:00:00Z", "USA", 3, 1),
        ("2027-01-15T09:00:00Z", "USA", None, 1),  # the late click, under its auction's country
    ]


def test_advertiser_sees_only_its_campaigns(reporting):
    client, _, _, tenants = reporting
    report = get(client, tenants["adv-a"].headers, group_by="dsp")
    assert report["totals"]["impressions"] == 1 and report["totals"]["spend_micros"] == 2_000
    assert report["totals"]["auctions"] is None  # the exchange's auctions are not its business
    assert [r["dsp"] for r in report["rows"]] == ["dsp1"]
    other = get(client, tenants["adv-a"].headers, campaign="adv-b-cmp")
    assert other["totals"]["impressions"] is None
    refused = client.get(
        "/api/v1/reports", params={"group_by": "publisher"}, headers=tenants["adv-a"].headers
    )
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "group_by"


def test_publisher_sees_only_its_inventory(reporting):
    client, _, _, tenants = reporting
    report = get(client, tenants["pub-p"].headers, group_by="country")
    rows = {r["country"]: r for r in report["rows"]}
    assert rows["USA"]["auctions"] == 2 and rows["DEU"]["auctions"] == 1
    assert report["totals"]["impressions"] == 1 and report["totals"]["spend_micros"] == 2_000
    assert report["totals"]["rpm_micros"] == pytest.approx(2_000 * 1000 / 3)
    refused = client.get(
        "/api/v1/reports", params={"group_by": "campaign"}, headers=tenants["pub-p"].headers
    )
    assert refused.status_code == 403


def test_a_late_segment_resummarises_its_hour(reporting):
    client, context, admin, tenants = reporting
    write_segments(table(LATE), context.reports.rollups.segments_url, stem="log-3")
    result = context.reports.rollups.update(T0 + 4 * HOUR_MICROS)
    assert result.resummarised == [H0] and result.summarised == []
    again = context.reports.rollups.update(T0 + 4 * HOUR_MICROS)
    assert again.resummarised == again.summarised == []  # each change summarised once
    totals = get(client, tenants["adv-a"].headers)["totals"]
    assert totals["impressions"] == 2 and totals["spend_micros"] == 5_000
    budget = client.get("/api/v1/campaigns/adv-a-cmp/budget", headers=tenants["adv-a"].headers)
    assert budget.status_code == 200


def test_provisional_hours_until_final(world):
    _, context, _, _ = world
    write_segments(table(HOUR_ZERO), context.reports.rollups.segments_url, stem="log-1")
    early = context.reports.rollups.update(T0 + HOUR_MICROS // 2)
    assert early.provisional == [H0] and early.watermark_hour == H0
    final = context.reports.rollups.update(T0 + 2 * HOUR_MICROS)
    assert final.summarised == [H0] and final.watermark_hour == H0 + 1


def test_csv_export(reporting):
    client, _, admin, _ = reporting
    response = client.get(
        "/api/v1/reports",
        params={"since": SINCE, "until": UNTIL, "group_by": "campaign", "format": "csv"},
        headers=admin,
    )
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["campaign"] for r in rows] == ["adv-a-cmp", "adv-b-cmp"]
    assert rows[0]["spend_micros"] == "2000" and rows[0]["auctions"] == ""


def test_report_arguments_name_the_field(reporting):
    client, _, admin, _ = reporting
    bad = client.get("/api/v1/reports", params={"since": "yesterday"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "since"
    backwards = client.get(
        "/api/v1/reports", params={"since": UNTIL, "until": SINCE}, headers=admin
    )
    assert backwards.json()["error"]["field"] == "until"
    unknown = client.get("/api/v1/reports", params={"group_by": "planet"}, headers=admin)
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "group_by[0]"


def test_hours_add_up_to_the_whole(tmp_path):
    """Rolled up by the hour or over the whole range, every count is the same."""
    segments = str(tmp_path / "segments")
    write_segments(table(HOUR_ZERO + LATE), segments, stem="x")
    rollups = Rollups(segments, DuckDBEngine())
    rollups.update(T0 + 5 * HOUR_MICROS)
    tables = {g: rollups.read(g, H0) for g in ("auction", "bid", "delivery")}
    whole = ReportRequest(since_hour=H0, until_hour=H0 + 1)
    _, totals = run_report(tables, whole)
    by_hour, _ = run_report(tables, msgspec.structs.replace(whole, group_by=("hour",)))
    for name in ("auctions", "calls", "impressions", "spend_micros", "clicks", "conversions"):
        assert sum(row[name] or 0 for row in by_hour) == totals[name]
