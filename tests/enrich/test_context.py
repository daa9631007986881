"""build_auction_context: every feature from a request, geo merged from request and IP,
local time, first-party data, consent gating of user segments."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from openbid.enrich.context import FEATURE_NAMES, MAX_SEGMENTS, build_auction_context
from openbid.enrich.geo import GeoReader
from openbid.privacy import tcf

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
SPEC_REQUESTS = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "data"
    / "openrtb"
    / "2.6"
    / "bid-request"
)
NATIVE = '{"ver": "1.2", "assets": [{"id": 1, "title": {"len": 25}}]}'
NOW = datetime(2024, 6, 3, 12, 30, tzinfo=UTC)  # a Monday, 12:30 UTC


def site_request(**overrides) -> dict:
    request = {
        "id": "req-1",
        "imp": [
            {"id": "1", "banner": {"w": 300, "h": 250}},
            {"id": "2", "video": {"mimes": ["video/mp4"]}},
        ],
        "site": {
            "id": "s1",
            "domain": "news.example",
            "cat": ["IAB12", "IAB12-1"],
            "keywords": "election,results",
            "publisher": {"id": "pub-9"},
            "content": {
                "genre": "politics",
                "language": "en",
                "cat": ["IAB12"],
                "data": [{"id": "ctx", "segment": [{"id": "s1"}, {"id": "s2"}]}],
            },
        },
        "device": {
            "ua": IPHONE,
            "ip": "81.2.69.160",
            "ifa": "ifa-1",
            "connectiontype": 2,
            "geo": {},
        },
        "user": {
            "id": "u1",
            "data": [
                {"id": "dmp", "segment": [{"id": "sports"}, {"id": "cars"}, {"id": "sports"}]}
            ],
        },
    }
    request.update(overrides)
    return request


def build(make_request, ua_parser, data, geo_reader=None, **kwargs):
    return build_auction_context(
        make_request(data), geo_reader=geo_reader, ua_parser=ua_parser, now=NOW, **kwargs
    )


def test_every_feature_of_a_site_request(make_request, ua_parser, geo_db_path):
    with GeoReader(geo_db_path) as reader:
        context = build(make_request, ua_parser, site_request(), reader)
    assert context.features() == {
        "request_id": "req-1",
        "inventory_type": "site",
        "publisher_id": "pub-9",
        "domain": "news.example",
        "app_bundle": "",
        "device_type": "phone",
        "os": "iOS",
        "os_version": "17.4",
        "browser": "Mobile Safari",
        "browser_version": "17.4",
        "make": "Apple",
        "model": "iPhone",
        "connection_type": "2",
        "country": "GBR",
        "region": "ENG",
        "city": "London",
        "metro": "",
        "zip": "EC2V",
        "geo_source": "ip",
        "hour": "13",  # London is on summer time (UTC+1) in June
        "weekday": "0",
        "user_id_present": "1",
        "device_id_present": "1",
        "gdpr": "0",
        "coppa": "0",
        "us_opt_out": "0",
        "lmt": "0",
        "imp_count": "2",
        "imp_types": "banner,video",
        "categories": "IAB12,IAB12-1",
        "keywords": "election,results",
        "content_genre": "politics",
        "content_language": "en",
        "content_categories": "IAB12",
        "content_segments": "ctx:s1,ctx:s2",
        "user_segments": "dmp:sports,dmp:cars",
    }
    assert set(context.features()) == set(FEATURE_NAMES)
    assert "request" not in FEATURE_NAMES and "consent" not in FEATURE_NAMES


def test_plain_values_only(make_request, ua_parser):
    context = build(make_request, ua_parser, site_request())
    for name in FEATURE_NAMES:
        assert type(getattr(context, name)) in (str, int), name


@pytest.mark.parametrize(
    ("request_geo", "ip", "expected", "source"),
    [
        ({}, "81.2.69.160", ("GBR", "ENG", "London"), "ip"),
        ({"country": "FRA", "city": "Paris"}, None, ("FRA", "", "Paris"), "request"),
        ({"country": "fr"}, None, ("FRA", "", ""), "request"),  # alpha-2 normalised
        ({"country": "IRL"}, "81.2.69.160", ("IRL", "ENG", "London"), "request+ip"),
        ({}, "8.8.8.8", ("", "", ""), "none"),
        ({}, None, ("", "", ""), "none"),
    ],
)
def test_geo_comes_from_the_request_first_then_the_ip(
    make_request, ua_parser, geo_db_path, request_geo, ip, expected, source
):
    data = site_request(device={"ua": IPHONE, "ip": ip, "geo": request_geo})
    with GeoReader(geo_db_path) as reader:
        context = build(make_request, ua_parser, data, reader)
    assert (context.country, context.region, context.city) == expected
    assert context.geo_source == source


def test_ipv6_is_looked_up_when_there_is_no_ipv4(make_request, ua_parser, geo_db_path):
    data = site_request(device={"ua": IPHONE, "ipv6": "2001:db8:1::5"})
    with GeoReader(geo_db_path) as reader:
        context = build(make_request, ua_parser, data, reader)
    assert (context.country, context.metro, context.hour) == ("USA", "807", 5)  # PDT


def test_without_a_geo_database_the_request_geo_is_used(make_request, ua_parser):
    data = site_request(device={"ua": IPHONE, "ip": "81.2.69.160", "geo": {"country": "GBR"}})
    context = build(make_request, ua_parser, data, geo_reader=None)
    assert (context.country, context.city, context.geo_source) == ("GBR", "", "request")
    assert context.hour == 12  # no offset, no time zone: UTC


@pytest.mark.parametrize(
    ("utcoffset", "hour", "weekday"),
    [(0, 12, 0), (120, 14, 0), (-720, 0, 0), (840, 2, 1), (-60, 11, 0)],
)
def test_local_time_from_the_request_utc_offset(make_request, ua_parser, utcoffset, hour, weekday):
    data = site_request(device={"ua": IPHONE, "geo": {"utcoffset": utcoffset}})
    context = build(make_request, ua_parser, data)
    assert (context.hour, context.weekday) == (hour, weekday)


def test_app_and_dooh_inventory(make_request, ua_parser):
    app = {
        "id": "req-2",
        "imp": [{"id": "1", "native": {"request": NATIVE}}],
        "app": {
            "bundle": "com.example.game",
            "domain": "example.com",
            "kwarray": ["puzzle", "casual"],
            "publisher": {"id": "pub-1"},
        },
    }
    context = build(make_request, ua_parser, app)
    assert (context.inventory_type, context.app_bundle, context.domain) == (
        "app",
        "com.example.game",
        "example.com",
    )
    assert (context.keywords, context.imp_types, context.device_type) == (
        "puzzle,casual",
        "native",
        "unknown",
    )
    dooh = {"id": "req-3", "imp": [{"id": "1", "banner": {}}], "dooh": {"publisher": {"id": "p"}}}
    context = build(make_request, ua_parser, dooh)
    assert (context.inventory_type, context.publisher_id, context.categories) == ("dooh", "p", "")


def test_segments_are_bounded(make_request, ua_parser):
    many = [{"id": "d", "segment": [{"id": str(i)} for i in range(MAX_SEGMENTS + 10)]}]
    data = site_request(user={"data": many})
    context = build(make_request, ua_parser, data)
    assert len(context.user_segments.split(",")) == MAX_SEGMENTS


def gdpr_request(purposes: set[int]) -> dict:
    consent = tcf.encode(tcf.TCString(purpose_consents=frozenset(purposes)))
    data = site_request(regs={"gdpr": 1})
    data["user"] = dict(data["user"], consent=consent)
    return data


@pytest.mark.parametrize(
    ("overrides", "segments_kept"),
    [
        ({}, True),
        ({"regs": {"coppa": 1}}, False),
        ({"regs": {"us_privacy": "1YYN"}}, False),
        ({"regs": {"gdpr": 1}}, False),  # GDPR without a TC string
    ],
)
def test_user_segments_need_consent(make_request, ua_parser, overrides, segments_kept):
    context = build(make_request, ua_parser, site_request(**overrides))
    assert bool(context.user_segments) is segments_kept
    assert context.content_segments  # contextual segments are not personal data


def test_user_segments_under_gdpr_need_purpose_4(make_request, ua_parser):
    with_consent = build(make_request, ua_parser, gdpr_request({1, 2, 3, 4}))
    assert with_consent.user_segments == "dmp:sports,dmp:cars"
    assert with_consent.gdpr == 1
    without = build(make_request, ua_parser, gdpr_request({1, 2}))
    assert without.user_segments == ""


def test_consent_features_and_the_gpc_header(make_request, ua_parser):
    data = site_request(regs={"coppa": 1})
    data["device"] = dict(data["device"], lmt=1)
    context = build(make_request, ua_parser, data, gpc_header="1")
    assert (context.coppa, context.lmt, context.us_opt_out) == (1, 1, 1)
    assert context.consent.gpc


SPEC_EXPECTED = {
    "simple-banner.json": dict(
        inventory_type="site",
        publisher_id="8953",
        domain="www.foobar.com",
        device_type="unknown",
        categories="IAB3-1",
        imp_types="banner",
        user_id_present=1,
        geo_source="none",
    ),
    "pmp-with-direct-deal.json": dict(
        device_type="desktop", os="Mac OS X", browser="Safari", user_segments=""
    ),
    "mobile.json": dict(
        inventory_type="app",
        app_bundle="12345",
        device_type="phone",
        os="iOS",
        os_version="6.1",
        make="Apple",
        model="iPhone",
        connection_type=3,
        device_id_present=1,
        categories="IAB15,IAB15-10",
    ),
    "video.json": dict(
        device_type="desktop",
        os="Mac OS X",  # the request says "OS X"
        browser="Firefox",
        imp_types="video",
        content_categories="IAB2-2",
        keywords="keyword-a,keyword-b,keyword-c",
        user_segments="6:12341318394918,6:1234131839491234",
    ),
    "expandable-creative.json": dict(user_segments="", user_id_present=1),  # segments lack ids
}


def test_every_spec_example_request_is_covered():
    assert sorted(path.name for path in SPEC_REQUESTS.glob("*.json")) == sorted(SPEC_EXPECTED)


@pytest.mark.parametrize("name", sorted(SPEC_EXPECTED))
def test_spec_example_requests(make_request, ua_parser, geo_db_path, name):
    data = json.loads((SPEC_REQUESTS / name).read_text())
    with GeoReader(geo_db_path) as reader:
        context = build(make_request, ua_parser, data, reader)
    for field, expected in SPEC_EXPECTED[name].items():
        assert getattr(context, field) == expected, field
    assert context.request_id == data["id"]
    assert context.consent.gdpr_applies is False


def test_local_time_defaults_to_the_one_clock_not_the_wall_clock():
    # A market clock that stands at Monday 2023-11-20 02:00 UTC: a demo at 60x must see
    # market hours, not the wall clock's.
    from openbid import clock
    from openbid.enrich.context import build_auction_context
    from openbid.openrtb import decode_bid_request

    monday_2am = 1_700_445_600.0
    previous = clock.set_clock(clock.MarketClock(speed=1.0, start_s=monday_2am))
    try:
        request = decode_bid_request(b'{"id":"r","imp":[{"id":"1","banner":{}}]}')
        context = build_auction_context(request)
    finally:
        clock.set_clock(previous)
    assert (context.hour, context.weekday) == (2, 0)
