"""Geo from IP against a MaxMind DB built by the test (conftest), and graceful degradation."""

import logging

import pytest

from openbid.enrich.geo import GeoReader, IPGeo, open_geo_reader


def test_ipv4_lookup_reads_every_field(geo_db_path):
    with GeoReader(geo_db_path) as reader:
        geo = reader.lookup("81.2.69.160")
    assert geo == IPGeo(
        country="GBR",
        region="ENG",
        city="London",
        metro="",
        zip="EC2V",
        time_zone="Europe/London",
        lat=51.5142,
        lon=-0.0931,
    )


def test_ipv6_lookup_and_metro_code(geo_db_path):
    with GeoReader(geo_db_path) as reader:
        geo = reader.lookup("2001:db8:1::17")
    assert (geo.country, geo.region, geo.city, geo.metro) == ("USA", "CA", "San Francisco", "807")
    assert geo.time_zone == "America/Los_Angeles"


def test_sparse_records_leave_fields_empty(geo_db_path):
    with GeoReader(geo_db_path) as reader:
        geo = reader.lookup("5.9.1.2")
    assert geo == IPGeo(country="DEU")


@pytest.mark.parametrize(
    "address", [None, "", "8.8.8.8", "2001:db8:2::1", "not an ip", "999.1.1.1"]
)
def test_unknown_or_invalid_addresses_give_none(geo_db_path, address):
    with GeoReader(geo_db_path) as reader:
        assert reader.lookup(address) is None


@pytest.mark.parametrize(
    "address",
    ["81.2.69.160\x00", "\x00", "81.2.69\x00.160", b"81.2.69.160", 1359103392, ["81.2.69.160"]],
    ids=["nul-suffix", "nul", "nul-inside", "bytes", "int", "list"],
)
def test_non_address_input_gives_none_not_an_error(geo_db_path, address):
    """A NUL byte made maxminddb raise TypeError (a 500 when a geo database is configured)."""
    with GeoReader(geo_db_path) as reader:
        assert reader.lookup(address) is None


def test_no_configured_database_gives_no_reader():
    assert open_geo_reader(None) is None
    assert open_geo_reader("") is None


def test_missing_or_corrupt_database_gives_no_reader_and_a_warning(tmp_path, caplog):
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"this is not a maxmind database" * 10)
    with caplog.at_level(logging.WARNING, logger="openbid.enrich.geo"):
        assert open_geo_reader(tmp_path / "missing.mmdb") is None
        assert open_geo_reader(corrupt) is None
    messages = [record for record in caplog.records if "geo database unusable" in record.message]
    assert len(messages) == 2


def test_open_geo_reader_opens_a_good_database(geo_db_path):
    reader = open_geo_reader(geo_db_path)
    assert reader is not None
    assert reader.lookup("81.2.69.1").city == "London"
    reader.close()
