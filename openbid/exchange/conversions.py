"""Conversions reported by advertisers, attributed to the click or impression they follow.

- `GET /conv?adv=&cid=[&value=&cur=&obclid=&uid=&ts=]&sig=`: a pixel the advertiser's page
  loads (so the user's browser sends our view cookie with it). `sig` is the hex
  HMAC-SHA256, under the advertiser's key, of the query string before `&sig=`, as sent.
- `POST /conv`: a server-to-server postback, a JSON object (`advertiser`, `conversion_id`,
  `value`, `currency`, `obclid`, `user_id`, `ts`), signed in the header
  `x-openbid-signature: sha256=<hex HMAC-SHA256 of the body under the advertiser's key>`.

An advertiser's key is derived from the tracker secret (`conversion_key`); the operator
hands it out (`openbid conversion-key DOMAIN`). A conversion is counted once per
(advertiser, conversion id) across workers (the counter store); a duplicate is answered and
counted but not logged again. Attribution (`attribute`, a pure function): the click whose id
(`obclid`) it carries, within `exchange.conversion_window_s`; else the last impression of the
same advertiser the browser saw (our view cookie), within `view_conversion_window_s`; else
none. Windows are market time (the one clock). An unattributed conversion is logged all the
same, with the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from typing import NamedTuple
from urllib.parse import parse_qsl

import msgspec

from openbid.clock import now_micros as clock_now_micros
from openbid.config import ExchangeConfig
from openbid.creative import InvalidTracker, TrackerSigner
from openbid.events import ConversionEvent
from openbid.exchange import metrics
from openbid.exchange.orchestrator import Exchange
from openbid.exchange.trackers import (
    CLICK_TOKEN,
    VIEW_TOKEN,
    Dedup,
    advertiser_domain,
    pixel,
    view_cookie_name,
)
from openbid.http.server import Request, Response, Router

CONVERSION_DEDUP_TTL_S = 90 * 86_400
"""How long a conversion id is remembered (real time): advertisers resend for days."""
MAX_FUTURE_S = 300.0
"""A conversion time (`ts`) may run ahead of our clock by this much (clock skew), no more."""
MAX_CONVERSION_ID_CHARS = 128
MAX_VALUE = 1e9
_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_json = msgspec.json.Encoder()


class InvalidConversion(ValueError):
    """A conversion report we cannot take; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def conversion_key(signer: TrackerSigner, advertiser: str) -> str:
    """The key an advertiser signs its conversions with (64 hex characters): derived from the
    tracker secret, so every worker knows it and nothing needs storing; rotating the secret
    rotates every advertiser's key."""
    return signer.derived_key("conversion:" + advertiser_domain(advertiser))


def signature(key: str, message: bytes) -> str:
    """The hex HMAC-SHA256 of `message` under an advertiser's key (its ASCII text)."""
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


class Attribution(NamedTuple):
    """What a conversion is attributed to (`kind` "click", "view" or "none")."""

    kind: str
    reason: str = ""
    """Why "none": no_touch, click_window, view_window, before_touch, other_advertiser,
    invalid_click_id."""
    click_id: str = ""
    auction_id: str = ""
    bid_id: str = ""
    dsp: str = ""
    user_id: str = ""
    touch_ts_micros: int = 0


def attribute(
    conversion_ts_micros: int,
    advertiser: str,
    click: list[str] | None,
    view: list[str] | None,
    *,
    click_window_micros: int,
    view_window_micros: int,
    click_invalid: bool = False,
    skew_micros: int = int(MAX_FUTURE_S * 1e6),
) -> Attribution:
    """Post-click first (the click token's values), then post-view (the view token's), each
    within its window; else unattributed, keeping the touch that was too old (its ids and
    time) and saying why.

    >>> click = ["c1", "auc", "bid", "dsp", "shop.example", "u1", "1000000"]
    >>> attribute(5_000_000, "shop.example", click, None, click_window_micros=10_000_000,
    ...           view_window_micros=1).kind
    'click'
    >>> attribute(20_000_000, "shop.example", click, None, click_window_micros=10_000_000,
    ...           view_window_micros=1).reason
    'click_window'
    """
    late: Attribution | None = None
    if click is not None and len(click) == 7:
        click_id, auction_id, bid_id, dsp, touched, user_id, ts = click
        touch = Attribution("none", "", click_id, auction_id, bid_id, dsp, user_id, int(ts))
        if touched != advertiser:
            late = touch._replace(reason="other_advertiser")
        else:
            elapsed = conversion_ts_micros - touch.touch_ts_micros
            if -skew_micros <= elapsed <= click_window_micros:
                return touch._replace(kind="click")
            late = touch._replace(reason="click_window" if elapsed > 0 else "before_touch")
    if view is not None and len(view) == 6:
        auction_id, bid_id, dsp, touched, user_id, ts = view
        elapsed = conversion_ts_micros - int(ts)
        if touched == advertiser:
            touch = Attribution("none", "", "", auction_id, bid_id, dsp, user_id, int(ts))
            if -skew_micros <= elapsed <= view_window_micros:
                return touch._replace(kind="view")
            if late is None:
                late = touch._replace(reason="view_window" if elapsed > 0 else "before_touch")
    if late is not None:
        return late
    return Attribution("none", "invalid_click_id" if click_invalid else "no_touch")


class ConversionReport(msgspec.Struct, forbid_unknown_fields=False):
    """What an advertiser reports (the postback's JSON; the pixel's query, converted)."""

    advertiser: str
    conversion_id: str
    value: float | str = 0.0
    """In `currency` units; a number or a decimal string."""
    currency: str = "USD"
    obclid: str = ""
    user_id: str = ""
    ts: float | str | None = None
    """When the conversion happened: seconds since the epoch; absent: when it reaches us."""


_report_decoder = msgspec.json.Decoder(ConversionReport)
_PIXEL_FIELDS = {"adv": "advertiser", "cid": "conversion_id", "value": "value",
                 "cur": "currency", "obclid": "obclid", "uid": "user_id", "ts": "ts"}  # fmt: skip
_PIXEL_NAMES = {field: name for name, field in _PIXEL_FIELDS.items()}


def _number(value: float | str, field: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InvalidConversion(field, f"expected a number, got {value!r}"[:200]) from None
    if not math.isfinite(number):
        raise InvalidConversion(field, "must be a finite number")
    return number


class Conversions:
    """`GET /conv` and `POST /conv`."""

    def __init__(self, exchange: Exchange, dedup: Dedup, config: ExchangeConfig) -> None:
        self.exchange = exchange
        self.dedup = dedup
        self.config = config
        self._keys: dict[str, str] = {}

    def routes(self, router: Router) -> None:
        router.add("GET", "/conv", self.handle_pixel)
        router.add("POST", "/conv", self.handle_postback)

    def key(self, advertiser: str) -> str:
        """The advertiser's conversion key."""
        return self._keys.get(advertiser) or conversion_key(self.exchange.signer, advertiser)

    async def handle_pixel(self, request: Request) -> Response:
        signed, marker, sig = request.query_string.rpartition("&sig=")
        if not marker:
            signed, sig = sig, ""
        params = dict(parse_qsl(signed, keep_blank_values=True))
        report = {_PIXEL_FIELDS[k]: v for k, v in params.items() if k in _PIXEL_FIELDS}
        try:
            advertiser = self._advertiser(report.get("advertiser", ""), "adv")
            if not marker:
                raise InvalidTracker("sig: missing (the last parameter)")
            self._check(advertiser, signed.encode("latin-1"), sig)
            report["advertiser"] = advertiser
            parsed = msgspec.convert(report, ConversionReport)
        except InvalidConversion as exc:
            metrics.CONVERSIONS.labels("pixel", "invalid").inc()
            return _error(400, str(exc), _PIXEL_NAMES.get(exc.field, exc.field))
        except msgspec.ValidationError as exc:
            metrics.CONVERSIONS.labels("pixel", "invalid").inc()
            field = _field_of(exc)
            return _error(400, str(exc), _PIXEL_NAMES.get(field, field))
        except InvalidTracker as exc:
            metrics.CONVERSIONS.labels("pixel", "invalid").inc()
            return _error(403, str(exc), "sig")
        try:
            outcome = await self._record(parsed, "pixel", request.headers.get("cookie", ""))
        except InvalidConversion as exc:
            metrics.CONVERSIONS.labels("pixel", "invalid").inc()
            return _error(400, str(exc), _PIXEL_NAMES.get(exc.field, exc.field))
        return pixel([("x-openbid-conversion", outcome)])

    async def handle_postback(self, request: Request) -> Response:
        try:
            report = _report_decoder.decode(request.body)
        except msgspec.ValidationError as exc:
            metrics.CONVERSIONS.labels("postback", "invalid").inc()
            return _error(400, f"conversion: {exc}", _field_of(exc))
        except msgspec.DecodeError as exc:
            metrics.CONVERSIONS.labels("postback", "invalid").inc()
            return _error(400, f"body is not JSON: {exc}", "body")
        header = request.headers.get("x-openbid-signature", "")
        try:
            advertiser = self._advertiser(report.advertiser, "advertiser")
            self._check(advertiser, request.body, header.removeprefix("sha256="))
            report.advertiser = advertiser
            outcome = await self._record(report, "postback", "")
        except InvalidConversion as exc:
            metrics.CONVERSIONS.labels("postback", "invalid").inc()
            return _error(400, str(exc), exc.field)
        except InvalidTracker as exc:
            metrics.CONVERSIONS.labels("postback", "invalid").inc()
            return _error(403, str(exc), "x-openbid-signature")
        return Response(200, _json.encode({"status": outcome}))

    @staticmethod
    def _advertiser(value: str, field: str) -> str:
        domain = advertiser_domain(value)
        if not _DOMAIN.fullmatch(domain):
            raise InvalidConversion(field, f"expected the advertiser's domain, got {value!r}"[:200])
        return domain

    def _check(self, advertiser: str, message: bytes, sig: str) -> None:
        key = self.key(advertiser)
        if not _HEX.fullmatch(sig) or not hmac.compare_digest(sig.lower(), signature(key, message)):
            raise InvalidTracker(
                "signature does not match (HMAC-SHA256 under the advertiser's conversion key)"
            )
        # Remembered once it signed something: whoever sends garbage cannot fill the memo.
        if advertiser not in self._keys and len(self._keys) < 100_000:
            self._keys[advertiser] = key

    async def _record(self, report: ConversionReport, source: str, cookies: str) -> str:
        """Validates, deduplicates, attributes and logs one signed report; the outcome."""
        conversion_id = report.conversion_id
        if not 0 < len(conversion_id) <= MAX_CONVERSION_ID_CHARS:
            raise InvalidConversion(
                "conversion_id", f"must be 1 to {MAX_CONVERSION_ID_CHARS} characters"
            )
        value = _number(report.value, "value")
        if not 0 <= value <= MAX_VALUE:
            raise InvalidConversion("value", f"must be between 0 and {MAX_VALUE:.0f}")
        rate = self.config.currency_rates.get(report.currency.upper())
        if rate is None:
            known = ", ".join(sorted(self.config.currency_rates))
            raise InvalidConversion("currency", f"must be one of {known}")
        now = clock_now_micros()
        happened = now
        if report.ts is not None and report.ts != "":
            happened = int(_number(report.ts, "ts") * 1e6)
            if happened > now + MAX_FUTURE_S * 1e6:
                raise InvalidConversion("ts", "is in the future")
        advertiser = report.advertiser
        if not await self.dedup.first_time(
            f"conv:{advertiser}:{conversion_id}", CONVERSION_DEDUP_TTL_S
        ):
            metrics.CONVERSIONS.labels(source, "duplicate").inc()
            return "duplicate"
        click = view = None
        click_invalid = False
        if report.obclid:
            try:
                click = self.exchange.signer.open_token(CLICK_TOKEN, report.obclid)
            except InvalidTracker:
                click_invalid = True
        view_token = _cookie(cookies, view_cookie_name(advertiser)) if cookies else ""
        if view_token:
            try:
                view = self.exchange.signer.open_token(VIEW_TOKEN, view_token)
            except InvalidTracker:
                view = None
        found = attribute(
            happened,
            advertiser,
            click,
            view,
            click_window_micros=int(self.config.conversion_window_s * 1e6),
            view_window_micros=int(self.config.view_conversion_window_s * 1e6),
            click_invalid=click_invalid,
        )
        outcome = found.kind if found.kind != "none" else "unattributed"
        metrics.CONVERSIONS.labels(source, outcome).inc()
        if self.exchange.event_log is not None:
            self.exchange.event_log.emit(
                ConversionEvent(
                    now,
                    found.auction_id,
                    conversion_id,
                    bid_id=found.bid_id,
                    user_id=found.user_id or report.user_id[:128],
                    value_micros=round(value * rate * 1e6),
                    advertiser=advertiser,
                    attribution=found.kind,  # type: ignore[arg-type]
                    reason=found.reason,
                    click_id=found.click_id,
                    dsp=found.dsp,
                    touch_ts_micros=found.touch_ts_micros,
                    conversion_ts_micros=happened,
                    source=source,  # type: ignore[arg-type]
                )
            )
        return outcome


def _field_of(error: msgspec.ValidationError) -> str:
    """The field a msgspec validation error is about (`body` for the whole object).

    >>> _field_of(msgspec.ValidationError("Expected `str`, got `int` - at `$.advertiser`"))
    'advertiser'
    >>> _field_of(msgspec.ValidationError("Object missing required field `conversion_id`"))
    'conversion_id'
    """
    text = str(error)
    if " - at `$." in text:
        return text.rpartition(" - at `$.")[2].rstrip("`").split("[", 1)[0].split(".", 1)[0]
    if "missing required field `" in text:
        return text.rpartition("missing required field `")[2].rstrip("`")
    return "body"


def _cookie(header: str, name: str) -> str:
    """The value of cookie `name` in a `Cookie` header ("" when absent)."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip('"')
    return ""


def _error(status: int, message: str, field: str = "") -> Response:
    body: dict[str, str] = {"error": message}
    if field:
        body["field"] = field
    return Response(status, _json.encode(body))
