"""Reading an OpenRTB 2.6 bid request back into the market's feature codes (what a DSP sees).

Only the fields the market's rules look at are decoded; anything else in the request is
ignored, and values the market never sends read as unknown (`"?"`). The hour comes from
`ext.sim.ts_ms` when the request carries it (simulated time), else from the wall clock.
"""

from __future__ import annotations

import time

import msgspec

from openbid.sim.features import (
    APP_BROWSER,
    BROWSER_BY_USER_AGENT,
    CONNECTION_NAMES,
    DEVICE_TYPE_NAMES,
    HOUR_BUCKETS,
    OS_BY_DEVICE_OS,
    REQUEST_FEATURES,
    UNKNOWN,
    WEEKDAYS,
    floor_bucket,
)
from openbid.sim.market import CONSENT_NONE, Market


class _Format(msgspec.Struct):
    w: int = 0
    h: int = 0


class _Banner(msgspec.Struct):
    w: int | None = None
    h: int | None = None
    format: list[_Format] = []


class _Video(msgspec.Struct):
    w: int | None = None
    h: int | None = None


class _Native(msgspec.Struct):
    ver: str | None = None


class _Imp(msgspec.Struct):
    id: str
    bidfloor: float = 0.0
    banner: _Banner | None = None
    video: _Video | None = None
    native: _Native | None = None


class _Publisher(msgspec.Struct):
    id: str | None = None


class _Inventory(msgspec.Struct):
    id: str | None = None
    cat: list[str] = []
    publisher: _Publisher | None = None


class _Geo(msgspec.Struct):
    country: str | None = None
    region: str | None = None


class _Device(msgspec.Struct):
    ua: str | None = None
    devicetype: int | None = None
    os: str | None = None
    connectiontype: int | None = None
    geo: _Geo | None = None
    ifa: str | None = None


class _User(msgspec.Struct):
    id: str | None = None
    buyeruid: str | None = None
    consent: str | None = None


class _Regs(msgspec.Struct):
    gdpr: int | None = None


class _SimExt(msgspec.Struct):
    ts_ms: int | None = None


class _Ext(msgspec.Struct):
    sim: _SimExt | None = None


class BidRequestView(msgspec.Struct):
    """The parts of an OpenRTB 2.6 bid request the market's rules read."""

    id: str
    imp: list[_Imp]
    site: _Inventory | None = None
    app: _Inventory | None = None
    device: _Device | None = None
    user: _User | None = None
    regs: _Regs | None = None
    ext: _Ext | None = None
    tmax: int | None = None


_decoder = msgspec.json.Decoder(BidRequestView)


def decode_request(body: bytes) -> BidRequestView:
    """Decodes a bid request body (raises `msgspec.DecodeError` or `ValidationError`)."""
    return _decoder.decode(body)


class FeatureReader:
    """Turns decoded requests into feature codes for one market (lookup tables built once)."""

    def __init__(self, market: Market) -> None:
        self.market = market
        vocab = market.vocab
        self._vocab = [vocab[name] for name in REQUEST_FEATURES]
        self._consent_by_string = {string: name for name, string in market.consent_strings.items()}

    def codes(self, request: BidRequestView, imp: _Imp, now_s: float | None = None) -> list[int]:
        """The codes of one impression of a request, in `REQUEST_FEATURES` order."""
        values = dict.fromkeys(REQUEST_FEATURES, UNKNOWN)
        inventory = request.site if request.site is not None else request.app
        if inventory is not None:
            values["inventory"] = "site" if request.site is not None else "app"
            values["site"] = inventory.id or UNKNOWN
            values["category"] = inventory.cat[0] if inventory.cat else UNKNOWN
            if inventory.publisher is not None:
                values["publisher"] = inventory.publisher.id or UNKNOWN
        values["format"], values["size"] = _format_and_size(imp)
        device = request.device or _Device()
        values["devicetype"] = DEVICE_TYPE_NAMES.get(device.devicetype or 0, UNKNOWN)
        values["os"] = OS_BY_DEVICE_OS.get((device.os or "").lower(), UNKNOWN)
        if values["inventory"] == "app":
            values["browser"] = APP_BROWSER
        else:
            values["browser"] = BROWSER_BY_USER_AGENT.get(device.ua or "", UNKNOWN)
        values["connection"] = CONNECTION_NAMES.get(device.connectiontype or 0, UNKNOWN)
        geo = device.geo or _Geo()
        values["country"] = geo.country or UNKNOWN
        values["region"] = f"{geo.country}-{geo.region or '*'}"
        sim = request.ext.sim if request.ext is not None else None
        if sim is not None and sim.ts_ms is not None:
            ts_ms = sim.ts_ms
        else:
            ts_ms = int((time.time() if now_s is None else now_s) * 1000)
        hour = (ts_ms // 3_600_000) % 24
        values["hour"] = str(hour)
        values["hour_bucket"] = HOUR_BUCKETS[hour // 6]
        values["weekday"] = WEEKDAYS[((ts_ms // 86_400_000) + 3) % 7]
        values["floor_bucket"] = floor_bucket(imp.bidfloor)
        user = request.user or _User()
        if request.regs is not None and request.regs.gdpr == 1:
            values["consent"] = self._consent_by_string.get(user.consent or "", UNKNOWN)
        else:
            values["consent"] = CONSENT_NONE
        values["user_id"] = "yes" if (user.id or user.buyeruid or device.ifa) else "no"
        return [vocabulary.code(values[vocabulary.name]) for vocabulary in self._vocab]


def _format_and_size(imp: _Imp) -> tuple[str, str]:
    if imp.video is not None:
        return "video", f"{imp.video.w or 0}x{imp.video.h or 0}"
    if imp.banner is not None:
        banner = imp.banner
        if banner.w and banner.h:
            return "banner", f"{banner.w}x{banner.h}"
        if banner.format:
            return "banner", f"{banner.format[0].w}x{banner.format[0].h}"
        return "banner", UNKNOWN
    if imp.native is not None:
        return "native", "native"
    return UNKNOWN, UNKNOWN
