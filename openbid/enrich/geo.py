"""Geo from IP with a MaxMind DB (the `.mmdb` format of GeoIP2/GeoLite2 City and its kin).

The database is read with `maxminddb` (memory-mapped, C extension when available). Without
one (no path, missing or unreadable file) `open_geo_reader` returns None and says so in the
log: enrichment then relies on the request's own `device.geo`. Country codes come out as
ISO 3166-1 alpha-3, as OpenRTB writes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import iso3166
import maxminddb

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IPGeo:
    """What the database says of one address; empty strings where it says nothing."""

    country: str = ""
    region: str = ""
    city: str = ""
    metro: str = ""
    zip: str = ""
    time_zone: str = ""
    lat: float | None = None
    lon: float | None = None


def country_alpha3(code: str) -> str:
    """An ISO 3166-1 country code as alpha-3 (OpenRTB's form); unknown codes upper-cased.

    >>> country_alpha3("de"), country_alpha3("USA"), country_alpha3("XX")
    ('DEU', 'USA', 'XX')
    """
    code = code.strip().upper()
    if len(code) == 2:
        country = iso3166.countries_by_alpha2.get(code)
        if country is not None:
            return country.alpha3
    return code


class GeoReader:
    """Looks addresses up in one MaxMind DB file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader = maxminddb.open_database(str(self.path))

    def lookup(self, address: str | None) -> IPGeo | None:
        """The record of `address` (IPv4 or IPv6 text); None when absent, not an address,
        or the database has no record for it. Never raises on bad input: `device.ip` is
        whatever the request carried."""
        if not address or not isinstance(address, str):
            return None
        try:
            record = self._reader.get(address)
        except (ValueError, TypeError):
            # maxminddb raises TypeError, not ValueError, for text with a NUL byte.
            return None
        if not isinstance(record, dict):
            return None
        return _ip_geo(record)

    def close(self) -> None:
        """Releases the file."""
        self._reader.close()

    def __enter__(self) -> GeoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_geo_reader(path: str | Path | None) -> GeoReader | None:
    """A reader for `path`, or None (logged) when there is no usable database there."""
    if path is None or str(path) == "":
        logger.info("no geo database configured: geo comes from the request only")
        return None
    try:
        return GeoReader(path)
    except (OSError, maxminddb.InvalidDatabaseError, ValueError) as error:
        logger.warning(
            "geo database unusable: geo comes from the request only",
            extra={"path": str(path), "error": str(error)},
        )
        return None


def _ip_geo(record: dict[str, Any]) -> IPGeo:
    country = (record.get("country") or {}).get("iso_code") or ""
    subdivisions = record.get("subdivisions") or [{}]
    region = subdivisions[0].get("iso_code") or ""
    city = ((record.get("city") or {}).get("names") or {}).get("en") or ""
    location = record.get("location") or {}
    metro = location.get("metro_code")
    return IPGeo(
        country=country_alpha3(country) if country else "",
        region=region,
        city=city,
        metro=str(metro) if metro is not None else "",
        zip=(record.get("postal") or {}).get("code") or "",
        time_zone=location.get("time_zone") or "",
        lat=location.get("latitude"),
        lon=location.get("longitude"),
    )
