"""Request enrichment: device from the user agent, geo from IP (MaxMind DB), first-party
data, gathered with the consent signals into one `AuctionContext` per request."""

from openbid.enrich.context import AuctionContext, build_auction_context
from openbid.enrich.device import DeviceInfo, UserAgentParser, default_ua_parser
from openbid.enrich.geo import GeoReader, IPGeo, open_geo_reader

__all__ = [
    "AuctionContext",
    "DeviceInfo",
    "GeoReader",
    "IPGeo",
    "UserAgentParser",
    "build_auction_context",
    "default_ua_parser",
    "open_geo_reader",
]
