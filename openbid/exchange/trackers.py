"""Our signed trackers, and what the bids we answer carry of them.

| route | does |
| --- | --- |
| `GET /t/imp` | an impression: counted once per bid id (the DSP's billing notice fires once), logged with its user and advertiser; sets the view cookie that post-view attribution reads |
| `GET /t/click` | a click: 302 to the landing URL signed into the tracker, or (behind a click macro) to the appended `adurl` when its host is one of the bid's advertiser domains; our click id (`obclid`) appended either way |
| `GET /t/win` | our OpenRTB caller's win notice: the DSP's own fires once per bid |
| `GET /t/err` | a VAST error: counted as a render failure |

`Trackers.prepare(winner, journey)` readies a winner for the answer (OpenRTB or ad tag): its
impression tracker with a token bound to it that adds the user (where consent allows) and
the advertiser, and our click tracker in front of every landing page of its markup
(`openbid.creative.clicks`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import msgspec

from openbid.clock import current as current_clock
from openbid.config import ExchangeConfig
from openbid.creative import InvalidTracker
from openbid.creative.clicks import wrap_clicks
from openbid.events import ClickEvent, ImpressionEvent, now_micros
from openbid.exchange import metrics
from openbid.exchange.ids import IdSource
from openbid.exchange.orchestrator import Exchange, Winner
from openbid.http.server import Request, Response, Router
from openbid.openrtb import BidRequest
from openbid.privacy.consent import PURPOSE_STORAGE, ConsentContext
from openbid.stores import CounterStore, MemoryCounterStore, StoreUnavailable

log = logging.getLogger(__name__)

IMPRESSION_DEDUP_TTL_S = 7 * 86_400
MAX_USER_ID_CHARS = 128
MAX_ADVERTISER_DOMAINS = 8
CLICK_TRACKER = "click"
"""Kind of the click tracker's token (`/t/click?c=`): expiry, auction, bid, DSP, creative,
user, advertiser, the landing URL (signed), or (behind a click macro) none and the
advertiser domains an appended `adurl` may go to."""
JOURNEY_TOKEN = "journey"
"""Kind of the token appended to our impression tracker (`&j=`): that tracker's signature,
the user, the advertiser, whether a view cookie may be set."""
CLICK_TOKEN = "clk"
"""Kind of the click id token (`obclid`): click id, auction, bid, DSP, advertiser, user,
click time (micros)."""
WIN_CLICKS_TOKEN = "winclk"
"""Kind of the token appended to our win notice URL (`&k=`) when the bid came without markup:
that URL's signature and what the click trackers of the markup fetched at the win need (the
click tracker's head and the advertiser domains)."""
VIEW_TOKEN = "view"
"""Kind of the view cookie's token: auction, bid, DSP, advertiser, user, impression time."""
# Left as they are in a click redirect: the reserved characters and `%` (already encoded).
_LOCATION_SAFE = ":/?#[]@!$&'()*+,;=%~"
_json = msgspec.json.Encoder()


def _error(status: int, message: str, field: str = "") -> Response:
    body: dict[str, str] = {"error": message}
    if field:
        body["field"] = field
    return Response(status, _json.encode(body))


_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)


def pixel(headers: list[tuple[str, str]] | None = None) -> Response:
    """A 1x1 transparent GIF, never cached."""
    return Response(
        200, _GIF, "image/gif", headers=[("cache-control", "no-store"), *(headers or ())]
    )


class Journey(NamedTuple):
    """What the exchange may keep of a request's user to join their impressions, clicks and
    conversions: whether it may store anything on the device (our view cookie), and the id."""

    storage: bool
    user_id: str


NO_JOURNEY = Journey(False, "")


def journey_of(request: BidRequest, consent: ConsentContext) -> Journey:
    """The user as the exchange may log it: nothing under COPPA, a US opt-out, LMT or DNT
    (what strips user ids for every partner), nor under GDPR without consent to storage on
    the device (TCF purpose 1, which reading an id needs); else `user.id`, `user.buyeruid`
    or `device.ifa`, the first present.

    >>> from openbid.openrtb import decode_bid_request
    >>> request = decode_bid_request(b'{"id":"r","imp":[{"id":"1","banner":{}}],'
    ...                              b'"user":{"buyeruid":"u-7"}}')
    >>> journey_of(request, ConsentContext())
    Journey(storage=True, user_id='u-7')
    >>> journey_of(request, ConsentContext(gdpr_applies=True))  # no TC string
    Journey(storage=False, user_id='')
    """
    if consent.baseline.strip_user_ids:
        return NO_JOURNEY
    if consent.gdpr_applies and (
        consent.tc is None or PURPOSE_STORAGE not in consent.tc.purpose_consents
    ):
        return NO_JOURNEY
    user, device = request.user, request.device
    user_id = (user.id or user.buyeruid or "") if user is not None else ""
    if not user_id and device is not None:
        user_id = device.ifa or ""
    return Journey(True, user_id[:MAX_USER_ID_CHARS])


def advertiser_domain(value: str) -> str:
    """An advertiser domain as we compare them: lower-case, without scheme, path, port or a
    leading `www.`.

    >>> advertiser_domain("https://WWW.Shoes.example:443/x"), advertiser_domain("shoes.example")
    ('shoes.example', 'shoes.example')
    """
    value = value.strip().lower()
    if "://" in value:
        value = value.split("://", 1)[1]
    value = value.split("/", 1)[0].split(":", 1)[0].rstrip(".")
    return value.removeprefix("www.")


def host_within(host: str, domains: list[str]) -> bool:
    """Whether `host` is one of `domains` or under one of them.

    >>> host_within("www.shoes.example", ["shoes.example"])
    True
    >>> host_within("shoes.example.evil.example", ["shoes.example"]), host_within("x", [""])
    (False, False)
    """
    host = host.lower().rstrip(".")
    return any(domain and (host == domain or host.endswith("." + domain)) for domain in domains)


def safe_redirect(url: str) -> bool:
    """Whether a browser would go where `urlsplit` says: an http(s) URL with a host, and none
    of what parsers read differently (backslashes, user info, spaces, control characters).

    >>> safe_redirect("https://shoes.example/p?a=1"), safe_redirect("https://evil.example\\\\@shoes.example/")
    (True, False)
    """
    if any(c in url for c in "\\ \t\r\n") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc


def with_click_id(url: str, click_id: str) -> str:
    """`url` with `obclid=<click_id>` added to its query (before any fragment).

    >>> with_click_id("https://shoes.example/p?a=1#top", "c.1")
    'https://shoes.example/p?a=1&obclid=c.1#top'
    >>> with_click_id("https://shoes.example", "c.1")
    'https://shoes.example?obclid=c.1'
    """
    base, hash_mark, fragment = url.partition("#")
    separator = "" if base.endswith(("?", "&")) else ("&" if "?" in base else "?")
    return f"{base}{separator}obclid={click_id}{hash_mark}{fragment}"


def view_cookie_name(advertiser: str) -> str:
    """The name of our view cookie for one advertiser (one cookie per advertiser, so each
    keeps its own last impression)."""
    digest = hashlib.sha256(advertiser.encode()).digest()[:9]
    return "obv_" + base64.urlsafe_b64encode(digest).decode()


def _appended_landing(raw: str) -> str:
    """The landing URL a click macro's markup appended to our prefix: as it is, or decoded
    once when it came percent-encoded (`%%CLICK_URL_ESC%%` passed through a redirect)."""
    if raw[:8].lower().startswith(("http%3a", "https%3a")):
        return unquote(raw)
    return raw


class Dedup:
    """Idempotency marks by key (a bid id, a conversion id), across workers when the counter
    store is shared. Never blocks the event loop on the store."""

    def __init__(self, counters: CounterStore) -> None:
        self.counters = counters
        self._local = MemoryCounterStore()
        self._warned_at = -1e9

    async def first_time(self, key: str, ttl_s: float = IMPRESSION_DEDUP_TTL_S) -> bool:
        """Whether `key` is new."""
        try:
            return await self.counters.aset_once(key, ttl_s)
        except StoreUnavailable as exc:
            # Degrade to this worker's own memory: duplicates reaching the same worker are
            # still caught; across workers they are not, which the error log makes visible
            # (once a minute, not once per event).
            metrics.DEDUP_FALLBACKS.inc()
            now = time.monotonic()
            if now - self._warned_at >= 60.0:
                self._warned_at = now
                log.error(
                    "dedup store unavailable: deduplicating in this worker only",
                    extra={"error": str(exc)},
                )
            return self._local.set_once(key, ttl_s)


class Trackers:
    """The tracker routes and the preparation of winners for them."""

    def __init__(self, exchange: Exchange, dedup: Dedup, config: ExchangeConfig) -> None:
        self.exchange = exchange
        self.dedup = dedup
        self.config = config
        self._click_base = f"{config.public_url}/t/click?"
        self._click_ids = IdSource()
        cookie = "; Path=/; HttpOnly"
        if config.public_url.startswith("https://"):
            # A pixel on the advertiser's page is a third-party request: only a cookie marked
            # SameSite=None (which browsers require to be Secure) goes with it.
            cookie += "; SameSite=None; Secure"
        self._cookie_attributes = cookie

    def routes(self, router: Router) -> None:
        router.add("GET", "/t/imp", self.handle_impression)
        router.add("GET", "/t/click", self.handle_click)
        router.add("GET", "/t/win", self.handle_win)
        router.add("GET", "/t/err", self.handle_video_error)

    # --- answering
    def prepare(self, winner: Winner, journey: Journey) -> tuple[str, str, str]:
        """The winner's markup with our click tracker in front of its landing pages, its
        impression tracker carrying the user and the advertiser, and its win notice URL
        (ours, when the caller's win decides; for a bid without markup it carries what the
        click trackers of the markup fetched at the win need): `(adm, burl, nurl)`."""
        source = winner.result.winner
        domains = []
        for value in source.adomain[:MAX_ADVERTISER_DOMAINS] if source is not None else ():
            domain = advertiser_domain(value)
            if domain and domain not in domains:
                domains.append(domain)
        advertiser = domains[0] if domains else ""
        # The orchestrator signed the impression tracker without the user and advertiser
        # (`Winner` does not carry them): a token bound to its signature adds them, at a
        # fraction of signing the whole tracker again.
        burl = winner.burl
        signer = self.exchange.signer
        if journey.user_id or advertiser:
            tracker_sig = burl.rpartition("&sig=")[2]
            journey_token = signer.token(
                JOURNEY_TOKEN,
                [tracker_sig, journey.user_id, advertiser, "1" if journey.storage else ""],
            )
            burl = f"{burl}&j={journey_token}"
        head = [
            str(int(current_clock().now() + signer.ttl_s)),
            winner.auction_id,
            winner.bid_id,
            winner.dsp,
            winner.crid,
            journey.user_id,
            advertiser,
        ]
        nurl = winner.nurl
        if nurl and not winner.adm:  # the markup comes at the win: wrap its clicks then
            win_sig = nurl.rpartition("&sig=")[2]
            nurl = f"{nurl}&k={signer.token(WIN_CLICKS_TOKEN, [win_sig, *head, *domains])}"
        return self._wrap(winner.adm, winner.media, head, domains), burl, nurl

    def _wrap(self, markup: str, media: str, head: list[str], domains: list[str]) -> str:
        """`markup` with our click tracker (whose token starts with `head`) in front of every
        landing page, an appended `adurl` allowed to go to `domains`."""
        signer = self.exchange.signer
        base = self._click_base

        def wrap(landing_url: str) -> str:
            return f"{base}c={signer.token(CLICK_TRACKER, [*head, landing_url, ''])}"

        def prefix() -> str:
            token = signer.token(CLICK_TRACKER, [*head, "", ",".join(domains)])
            return f"{base}c={token}&adurl="

        return wrap_clicks(markup, media, wrap, prefix, ours=base)

    def _impression(self, query: dict[str, str]) -> dict[str, str]:
        """The signed parameters of an impression tracker and of the journey token added to
        it (`uid`, `adv`, `vc`); `InvalidTracker` if either was tampered with."""
        signer = self.exchange.signer
        token = query.pop("j", None)
        params = signer.verify("imp", query)
        if token is not None:
            values = signer.open_token(JOURNEY_TOKEN, token)
            if len(values) != 4 or values[0] != query.get("sig"):
                raise InvalidTracker("journey token belongs to another tracker")
            params["uid"], params["adv"], params["vc"] = values[1:]
        return params

    def _mark_ttl_s(self) -> float:
        """How long an impression's or a win's once-per-bid mark lives: at least as long as
        the tracker that could repeat it (`exchange.tracker_ttl_s`, plus a margin)."""
        return self.exchange.signer.mark_ttl_s(IMPRESSION_DEDUP_TTL_S)

    # --- trackers
    async def handle_impression(self, request: Request) -> Response:
        try:
            params = self._impression(request.query())
        except InvalidTracker as exc:
            metrics.IMPRESSIONS.labels("invalid").inc()
            return _error(403, str(exc))
        bid_id = params["bid"]
        if not await self.dedup.first_time(f"imp:{bid_id}", self._mark_ttl_s()):
            metrics.IMPRESSIONS.labels("duplicate").inc()
            return pixel()
        metrics.IMPRESSIONS.labels("counted").inc()
        metrics.BILLED_REVENUE_MICROS.inc(int(params.get("rev", "0")) / 1000)  # CPM / 1000
        price = int(params.get("price", "0"))
        ts = now_micros()
        user_id = params.get("uid", "")
        advertiser = params.get("adv", "")
        if self.exchange.event_log is not None:
            self.exchange.event_log.emit(
                ImpressionEvent(
                    ts,
                    params["auc"],
                    bid_id,
                    dsp=params["dsp"],
                    imp_id=params["imp"],
                    creative_id=params.get("crid", ""),
                    campaign_id=params.get("cmp", ""),
                    user_id=user_id,
                    price_micros=price,
                    advertiser=advertiser,
                )
            )
        house = self.exchange.house
        if params.get("hbid") and house is not None:
            # House demand's billing event: its spend, once per bid id, and its caps.
            await house.billed(
                params["hbid"],
                params.get("cmp", ""),
                params.get("li", ""),
                -(-price // 1000),
                params.get("fu") or None,
            )
        if params.get("burl"):
            self.exchange.notices.fire(
                "billing",
                params["burl"],
                auction_id=params["auc"],
                bid_id=bid_id,
                dsp=params["dsp"],
                price_micros=price,
            )
        if not (advertiser and params.get("vc") == "1"):
            return pixel()
        view = self.exchange.signer.token(
            VIEW_TOKEN, [params["auc"], bid_id, params["dsp"], advertiser, user_id, str(ts)]
        )
        # The cookie lives as long as its window, in real seconds (the window is market time).
        max_age_s = int(current_clock().real_seconds(self.config.view_conversion_window_s)) + 1
        cookie = f"{view_cookie_name(advertiser)}={view}; Max-Age={max_age_s}"
        return pixel([("set-cookie", cookie + self._cookie_attributes)])

    async def handle_win(self, request: Request) -> Response:
        """Our caller's win notice: passes the DSP's own win notice on, once per bid (and
        answers the markup of a bid that came without, our click tracker in front of its
        landing pages)."""
        query = request.query()
        clicks = query.pop("k", None)
        try:
            params = self.exchange.signer.verify("win", query)
            context = None
            if clicks is not None:
                context = self.exchange.signer.open_token(WIN_CLICKS_TOKEN, clicks)
                if len(context) < 8 or context[0] != query.get("sig"):
                    raise InvalidTracker("win clicks token belongs to another tracker")
        except InvalidTracker as exc:
            metrics.WINS_NOTIFIED.labels("invalid").inc()
            return _error(403, str(exc))
        bid_id = params["bid"]
        if not await self.dedup.first_time(f"win:{bid_id}", self._mark_ttl_s()):
            metrics.WINS_NOTIFIED.labels("duplicate").inc()
            return Response(204)
        metrics.WINS_NOTIFIED.labels("counted").inc()
        served = await self.exchange.win_notice(params)  # markup, for a bid that had none
        if served is None:
            return Response(204)
        markup, content_type = served
        if context is not None:
            markup = self._wrap(markup, params.get("mk", ""), context[1:8], context[8:])
        return Response(200, markup.encode(), content_type)

    async def handle_click(self, request: Request) -> Response:
        # A click macro's markup appends its landing URL, unescaped, after our `&adurl=`:
        # everything after it is that URL, and only what comes before it is signed.
        signed, appended, raw_landing = request.query_string.partition("&adurl=")
        try:
            params = self._click(dict(parse_qsl(signed, keep_blank_values=True)))
        except InvalidTracker as exc:
            metrics.CLICKS.labels("invalid").inc()
            return _error(403, str(exc))
        if params.get("url"):
            target = params["url"]
            if urlsplit(target).scheme not in ("http", "https"):
                metrics.CLICKS.labels("invalid").inc()
                return _error(400, "click target is not an http(s) URL", "url")
        elif appended:
            target = _appended_landing(raw_landing.strip())
            if not safe_redirect(target):
                metrics.CLICKS.labels("invalid").inc()
                return _error(400, "adurl is not a plain http(s) URL", "adurl")
            if not host_within(urlsplit(target).hostname or "", params.get("dom", "").split(",")):
                metrics.CLICKS.labels("invalid").inc()
                return _error(
                    403, "adurl's host is not one of the bid's advertiser domains", "adurl"
                )
        else:
            metrics.CLICKS.labels("invalid").inc()
            return _error(400, "click tracker has no landing URL", "adurl")
        metrics.CLICKS.labels("counted").inc()
        ts = now_micros()
        click_id = self._click_ids.next()
        auction_id, bid_id = params.get("auc", ""), params.get("bid", "")
        dsp, user_id, advertiser = (
            params.get("dsp", ""),
            params.get("uid", ""),
            params.get("adv", ""),
        )
        if self.exchange.event_log is not None:
            self.exchange.event_log.emit(
                ClickEvent(
                    ts,
                    auction_id,
                    bid_id,
                    dsp=dsp,
                    creative_id=params.get("crid", ""),
                    user_id=user_id,
                    click_id=click_id,
                    advertiser=advertiser,
                )
            )
        obclid = self.exchange.signer.token(
            CLICK_TOKEN, [click_id, auction_id, bid_id, dsp, advertiser, user_id, str(ts)]
        )
        # A landing URL may be an IRI (non-ASCII) and a DSP's markup may hold anything:
        # send what a browser would, percent-encoded, and never a raw line break.
        location = quote(with_click_id(target, obclid), safe=_LOCATION_SAFE)
        return Response(302, b"", "text/plain", headers=[("location", location)])

    def _click(self, query: dict[str, str]) -> dict[str, str]:
        """The signed parameters of a click tracker: our token (`c`), or the signed query of
        links made before it (the ad tag's native links, still valid until they expire)."""
        signer = self.exchange.signer
        if "c" not in query:
            return signer.verify("click", query)
        values = signer.open_token(CLICK_TRACKER, query["c"])
        if len(values) != 9:
            raise InvalidTracker("click tracker is malformed")
        if int(values[0]) < current_clock().now():
            raise InvalidTracker("click tracker expired")
        names = ("exp", "auc", "bid", "dsp", "crid", "uid", "adv", "url", "dom")
        return dict(zip(names, values, strict=True))

    async def handle_video_error(self, request: Request) -> Response:
        query = request.query()
        query.pop("ERRORCODE", None)
        try:
            self._impression(query)
        except InvalidTracker as exc:
            return _error(403, str(exc))
        metrics.RENDER_FAILURES.labels("video_player").inc()
        return pixel()
