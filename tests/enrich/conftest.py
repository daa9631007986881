"""Fixtures for enrichment tests: one UA parser for the session (loading its rules takes
about a second), a small MaxMind DB built here (never downloaded), and requests decoded by
the real OpenRTB decoder from their JSON form."""

import msgspec
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from openbid.enrich.device import UserAgentParser
from openbid.openrtb import decode_bid_request

LONDON = {
    "country": {"iso_code": "GB"},
    "subdivisions": [{"iso_code": "ENG"}],
    "city": {"names": {"en": "London"}},
    "location": {"latitude": 51.5142, "longitude": -0.0931, "time_zone": "Europe/London"},
    "postal": {"code": "EC2V"},
}
SAN_FRANCISCO = {
    "country": {"iso_code": "US"},
    "subdivisions": [{"iso_code": "CA"}],
    "city": {"names": {"en": "San Francisco"}},
    "location": {
        "latitude": 37.7749,
        "longitude": -122.4194,
        "metro_code": 807,
        "time_zone": "America/Los_Angeles",
    },
    "postal": {"code": "94107"},
}
COUNTRY_ONLY = {"country": {"iso_code": "DE"}}
NETWORKS = {
    "81.2.69.0/24": LONDON,
    "2001:db8:1::/48": SAN_FRANCISCO,
    "5.9.0.0/16": COUNTRY_ONLY,
}


@pytest.fixture(scope="session")
def ua_parser() -> UserAgentParser:
    return UserAgentParser(cache_size=256)


@pytest.fixture(scope="session")
def geo_db_path(tmp_path_factory):
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-City",
        languages=["en"],
        description="openbid test geo database",
    )
    for network, record in NETWORKS.items():
        writer.insert_network(IPSet([network]), record)
    path = tmp_path_factory.mktemp("geo") / "test-city.mmdb"
    writer.to_db_file(str(path))
    return path


@pytest.fixture(scope="session")
def make_request():
    """Decodes a bid request written in its JSON form (nested dicts and lists)."""

    def build(data: dict):
        return decode_bid_request(msgspec.json.encode(data))

    return build


@pytest.fixture(scope="session")
def make_device(make_request):
    """The decoded `device` of a one-imp request carrying the given device object."""

    def build(device: dict):
        data = {"id": "r1", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}], "device": device}
        return make_request(data).device

    return build
