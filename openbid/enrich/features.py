"""The raw features of an auction: what the event log keeps, the shaping model and the
click and conversion models read (the exchange and the bidder endpoint alike).

Values are the raw strings as seen (a country code, an OS name, a size), never hashes, so a
new featurizer can always be trained on old logs. The same function feeds serving and the
logs, so training and serving cannot disagree about what a feature means.
"""

from __future__ import annotations

import bisect

from openbid.domain import Publisher
from openbid.enrich.context import AuctionContext
from openbid.openrtb import BidRequest

_FLOOR_BUCKETS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
_FLOOR_HIGHS = _FLOOR_BUCKETS[1:]
_FLOOR_LABELS = tuple(
    f"{low:g}-{high:g}" for low, high in zip(_FLOOR_BUCKETS, _FLOOR_HIGHS, strict=False)
) + (f"{_FLOOR_BUCKETS[-1]:g}+",)


def floor_bucket(floor: float) -> str:
    """A coarse label for a floor price (in currency units); NaN counts as the top bucket.

    >>> floor_bucket(0.0), floor_bucket(0.3), floor_bucket(0.25), floor_bucket(12.0)
    ('0', '0.25-0.5', '0.25-0.5', '10+')
    >>> floor_bucket(float("nan")), floor_bucket(float("-inf"))
    ('10+', '0')
    """
    if floor <= 0:
        return "0"
    return _FLOOR_LABELS[bisect.bisect_right(_FLOOR_HIGHS, floor)]


def auction_features(
    request: BidRequest, context: AuctionContext, publisher: Publisher | None
) -> dict[str, str]:
    """The enrichment's features plus the impression-level ones (media, size, placement,
    floor bucket) of the first impression, and the authenticated publisher."""
    features = context.features()
    imp = request.imp[0]
    if imp.video is not None:
        media, size = "video", f"{imp.video.w or 0}x{imp.video.h or 0}"
    elif imp.native is not None:
        media, size = "native", "native"
    elif imp.audio is not None:
        media, size = "audio", "audio"
    else:
        banner = imp.banner
        w = (banner.w if banner else None) or 0
        h = (banner.h if banner else None) or 0
        if banner is not None and not (w and h) and banner.format:
            w, h = banner.format[0].w or 0, banner.format[0].h or 0
        media, size = "banner", f"{w}x{h}"
    if publisher is not None:
        features["publisher_id"] = publisher.id
    site, app = request.site, request.app
    features["site_id"] = (site.id or "") if site else ((app.id or "") if app else "")
    features["placement"] = imp.tagid or ""
    features["media"] = media
    features["size"] = size
    features["floor"] = floor_bucket(imp.bidfloor or 0.0)
    features["consent_string"] = "1" if context.consent.tc is not None else "0"
    return features
