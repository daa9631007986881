"""The `AuctionContext`: one request enriched once, read by shaping, pricing and the event log.

`build_auction_context` gathers the consent signals (`openbid.privacy`), the device from
the user agent, geo from the request and from the IP (MaxMind DB), the local hour and
weekday, and the publisher's first-party data (site/app/DOOH content, categories,
keywords, user data segments). Every feature is a plain `str` or `int` so that it can be
logged as-is (`AuctionContext.features()`); absent values are "" or 0.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from openbid import clock
from openbid.enrich.device import UserAgentParser, default_ua_parser, device_info
from openbid.enrich.geo import GeoReader, IPGeo, country_alpha3
from openbid.privacy.consent import ConsentContext

MAX_SEGMENTS = 64
"""Segments kept per list (first-party data can be long; features stay bounded)."""

PURPOSE_PERSONALISED_ADS = 4
"""TCF purpose 4, use profiles to select personalised advertising: what user segments do."""

_GEO_FIELDS = ("country", "region", "city", "metro", "zip")


class AuctionContext(msgspec.Struct, frozen=True, kw_only=True):
    """One request with everything we derived from it. `request` and `consent` are the
    objects themselves; the other fields are the raw features (see `features`)."""

    request: Any
    consent: ConsentContext
    request_id: str = ""
    inventory_type: str = ""
    """"site", "app", "dooh" or ""."""
    publisher_id: str = ""
    domain: str = ""
    app_bundle: str = ""
    device_type: str = "unknown"
    os: str = ""
    os_version: str = ""
    browser: str = ""
    browser_version: str = ""
    make: str = ""
    model: str = ""
    connection_type: int = 0
    country: str = ""
    region: str = ""
    city: str = ""
    metro: str = ""
    zip: str = ""
    geo_source: str = "none"
    """Where the geo fields came from: "request", "ip", "request+ip" or "none"."""
    hour: int = 0
    """The user's local hour (0-23): from device.geo.utcoffset, else the IP's time zone, else UTC."""
    weekday: int = 0
    """The user's local day of the week, 0 Monday to 6 Sunday."""
    user_id_present: int = 0
    device_id_present: int = 0
    gdpr: int = 0
    coppa: int = 0
    us_opt_out: int = 0
    lmt: int = 0
    imp_count: int = 0
    imp_types: str = ""
    categories: str = ""
    keywords: str = ""
    content_genre: str = ""
    content_language: str = ""
    content_categories: str = ""
    content_segments: str = ""
    user_segments: str = ""
    """User data segments, only where consent allows personalised ads (docs/privacy.md)."""

    def features(self) -> dict[str, str]:
        """The features as the event log stores them: every field but `request` and
        `consent`, as strings."""
        values = msgspec.structs.astuple(self)[2:]
        return {name: str(value) for name, value in zip(FEATURE_NAMES, values, strict=True)}


FEATURE_NAMES = tuple(
    name for name in AuctionContext.__struct_fields__ if name not in ("request", "consent")
)


def build_auction_context(
    request: Any,
    *,
    geo_reader: GeoReader | None = None,
    ua_parser: UserAgentParser | None = None,
    now: datetime | None = None,
    gpc_header: str | None = None,
) -> AuctionContext:
    """Enriches one OpenRTB 2.6 BidRequest. Without `geo_reader` only the request's own
    geo is used; `ua_parser` defaults to the shared one; `now` (UTC) defaults to the clock."""
    consent = ConsentContext.from_request(request, gpc_header=gpc_header)
    device = request.device
    user = request.user
    info = device_info(device, ua_parser or default_ua_parser())
    ip_geo = None
    if geo_reader is not None and device is not None:
        ip_geo = geo_reader.lookup(device.ip) or geo_reader.lookup(device.ipv6)
    request_geo = device.geo if device is not None else None
    geo, geo_source = _merge_geo(request_geo, ip_geo)
    local = _local_time(now, request_geo, ip_geo)
    inventory_type, inventory = _inventory(request)
    content = inventory.content if inventory is not None else None
    publisher = inventory.publisher if inventory is not None else None
    imps = request.imp or []
    allow_segments = _personal_data_allowed(consent)
    return AuctionContext(
        request=request,
        consent=consent,
        request_id=request.id or "",
        inventory_type=inventory_type,
        publisher_id=(publisher.id or "") if publisher is not None else "",
        domain=(inventory.domain or "") if inventory is not None else "",
        app_bundle=(request.app.bundle or "") if request.app is not None else "",
        device_type=info.device_type,
        os=info.os,
        os_version=info.os_version,
        browser=info.browser,
        browser_version=info.browser_version,
        make=info.make,
        model=info.model,
        connection_type=(device.connectiontype or 0) if device is not None else 0,
        geo_source=geo_source,
        hour=local.hour,
        weekday=local.weekday(),
        user_id_present=int(user is not None and bool(user.id or user.buyeruid or user.eids)),
        device_id_present=int(device is not None and bool(device.ifa)),
        gdpr=int(consent.gdpr_applies),
        coppa=int(consent.coppa),
        us_opt_out=int(consent.us_opt_out),
        lmt=int(consent.lmt),
        imp_count=len(imps),
        imp_types=_imp_types(imps),
        categories=_joined(inventory.cat) if inventory_type != "dooh" and inventory else "",
        keywords=_keywords(inventory_type, inventory, content),
        content_genre=(content.genre or "") if content is not None else "",
        content_language=(content.language or "") if content is not None else "",
        content_categories=_joined(content.cat) if content is not None else "",
        content_segments=_segments(content.data) if content is not None else "",
        user_segments=_segments(user.data) if user is not None and allow_segments else "",
        **geo,
    )


def _inventory(request: Any) -> tuple[str, Any]:
    if request.site is not None:
        return "site", request.site
    if request.app is not None:
        return "app", request.app
    if request.dooh is not None:
        return "dooh", request.dooh
    return "", None


def _merge_geo(request_geo: Any, ip_geo: IPGeo | None) -> tuple[dict[str, str], str]:
    """Each geo field from the request when it has it, else from the IP lookup."""
    requested = (
        (
            request_geo.country,
            request_geo.region,
            request_geo.city,
            request_geo.metro,
            request_geo.zip,
        )
        if request_geo is not None
        else (None,) * 5
    )
    looked_up = (
        (ip_geo.country, ip_geo.region, ip_geo.city, ip_geo.metro, ip_geo.zip)
        if ip_geo is not None
        else ("",) * 5
    )
    merged = {}
    from_request = from_ip = False
    for name, mine, theirs in zip(_GEO_FIELDS, requested, looked_up, strict=True):
        if mine:
            from_request = True
            merged[name] = country_alpha3(mine) if name == "country" else mine
        else:
            from_ip = from_ip or bool(theirs)
            merged[name] = theirs
    source = {
        (True, True): "request+ip",
        (True, False): "request",
        (False, True): "ip",
        (False, False): "none",
    }[(from_request, from_ip)]
    return merged, source


def _local_time(now: datetime | None, request_geo: Any, ip_geo: IPGeo | None) -> datetime:
    if now is None:
        now = datetime.fromtimestamp(clock.now(), UTC)  # the one clock: market time in a demo
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if request_geo is not None and request_geo.utcoffset is not None:
        return now.astimezone(UTC) + timedelta(minutes=request_geo.utcoffset)
    if ip_geo is not None and ip_geo.time_zone:
        zone = _zone(ip_geo.time_zone)
        if zone is not None:
            return now.astimezone(zone)
    return now.astimezone(UTC)


@functools.lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _imp_types(imps: list[Any]) -> str:
    kinds = set()
    for imp in imps:
        if imp.banner is not None:
            kinds.add("banner")
        if imp.video is not None:
            kinds.add("video")
        if imp.audio is not None:
            kinds.add("audio")
        if imp.native is not None:
            kinds.add("native")
    return ",".join(sorted(kinds))


def _joined(values: list[str] | None) -> str:
    return ",".join(values[:MAX_SEGMENTS]) if values else ""


def _keywords(inventory_type: str, inventory: Any, content: Any) -> str:
    """The site/app/DOOH keywords, else the content's (both describe the page, not the user)."""
    if inventory is None:
        return ""
    if inventory.keywords:
        return inventory.keywords
    if inventory_type != "dooh" and inventory.kwarray:
        return _joined(inventory.kwarray)
    if content is not None:
        return content.keywords or _joined(content.kwarray)
    return ""


def _segments(data: list[Any] | None) -> str:
    """`data.id:segment.id` pairs, in order, without repeats, at most MAX_SEGMENTS."""
    if not data:
        return ""
    pairs: dict[str, None] = {}
    for source in data:
        for segment in source.segment or []:
            if segment.id:
                pairs[f"{source.id or ''}:{segment.id}"] = None
                if len(pairs) == MAX_SEGMENTS:
                    return ",".join(pairs)
    return ",".join(pairs)


def _personal_data_allowed(consent: ConsentContext) -> bool:
    """Whether the exchange may use the user's data segments for itself: no COPPA or US
    opt-out, and under GDPR a TC string with purpose 4 (personalised ads) consent."""
    baseline = consent.baseline
    if baseline.strip_user_ids or baseline.strip_user_data:
        return False
    if consent.gdpr_applies:
        return consent.tc is not None and PURPOSE_PERSONALISED_ADS in consent.tc.purpose_consents
    return True
