"""The exchange's front door: HTTP routes around `Exchange.auction()`.

- `POST /openrtb2/auction`: OpenRTB 2.6 in, BidResponse out (204 when nothing wins).
  Authenticated by the publisher's API key (`x-api-key` or `Authorization: Bearer`).
  400 names the field path, 413 for an oversize body, 401 for an unknown key.
- `GET /ad?placement=ID&page=URL[&size=WxH]`: an ad tag; rendered HTML, or 204.
- `GET /t/imp`, `/t/click`, `/t/err`: our signed trackers. Impressions are counted once per
  bid id (the DSP's billing notice fires once); a click redirects only to the URL signed
  for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import secrets
import time
from urllib.parse import quote, urlsplit

import msgspec

from openbid.config import ExchangeConfig
from openbid.creative import InvalidTracker, RenderError, render_banner, render_native, render_video
from openbid.domain import Placement, Publisher, hash_api_key
from openbid.events import ClickEvent, ImpressionEvent, now_micros
from openbid.exchange import metrics
from openbid.exchange.orchestrator import AuctionOutcome, Exchange, Winner
from openbid.http.server import Request, Response, Router, client_address
from openbid.openrtb import (
    BidRequest,
    InvalidBidRequest,
    Limits,
    RequestTooLarge,
    encode,
)
from openbid.openrtb.repair import Repair, decode_bid_request_lenient
from openbid.openrtb.response import Bid, BidResponse, SeatBid
from openbid.stores import CounterStore, MemoryCounterStore, StoreUnavailable
from openbid.stores.catalog import Catalog

log = logging.getLogger(__name__)
# Left as they are in a click redirect: the reserved characters and `%` (already encoded).
_LOCATION_SAFE = ":/?#[]@!$&'()*+,;=%~"

_json = msgspec.json.Encoder()
IMPRESSION_DEDUP_TTL_S = 7 * 86_400


_MAX_KNOWN_KEYS = 100_000


def _error(status: int, message: str, field: str = "") -> Response:
    body: dict[str, str] = {"error": message}
    if field:
        body["field"] = field
    return Response(status, _json.encode(body))


class ExchangeServer:
    """Routes, authentication and the translation between HTTP and auctions."""

    def __init__(
        self,
        exchange: Exchange,
        catalog: Catalog,
        counters: CounterStore,
        config: ExchangeConfig,
        limits: Limits | None = None,
    ) -> None:
        self.exchange = exchange
        self.catalog = catalog
        self.counters = counters
        self.config = config
        self.limits = limits or Limits()
        self._local_dedup = MemoryCounterStore()
        self._dedup_warned_at = -1e9
        self._trusted_proxies = [
            ipaddress.ip_network(network, strict=False) for network in config.trusted_proxies
        ]
        # Publishers by hashed API key, and the keys seen valid since the last refresh as
        # sent (spares a SHA-256 a request; only valid keys enter, so random ones cannot
        # grow it). One tuple, replaced whole by a refresh (which runs in a thread), so a
        # revoked key cannot outlive the refresh that dropped it.
        self._keys: tuple[dict[str, Publisher], dict[str, Publisher]] = ({}, {})
        self._placements: dict[str, tuple[Placement, Publisher]] = {}

    def routes(self, router: Router) -> None:
        router.add("POST", "/openrtb2/auction", self.handle_auction)
        router.add("GET", "/ad", self.handle_ad)
        router.add("GET", "/t/imp", self.handle_impression)
        router.add("GET", "/t/click", self.handle_click)
        router.add("GET", "/t/win", self.handle_win)
        router.add("GET", "/t/err", self.handle_video_error)

    def refresh(self) -> None:
        """Reloads publishers, placements and demand partners from the catalog (blocking)."""
        by_hash = self.catalog.api_keys()
        self._keys = (by_hash, {})
        placements: dict[str, tuple[Placement, Publisher]] = {}
        for publisher in by_hash.values():
            for placement in self.catalog.placements(publisher.id):
                placements[placement.id] = (placement, publisher)
        self._placements = placements
        self.exchange.registry.reload(self.catalog.demand_partners())
        metrics.CATALOG_REFRESHED.set(time.time())

    async def refresh_forever(self, interval_s: float) -> None:
        """Reloads the catalog every `interval_s`; a failure keeps the last one and retries
        (the age shows in `openbid_catalog_refreshed_timestamp_seconds`)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.refresh)
            except StoreUnavailable as exc:
                log.warning(
                    "catalog refresh failed; keeping the last one", extra={"error": str(exc)}
                )
            except Exception:  # whatever it is, the next refresh may work: never stop
                log.exception("catalog refresh failed; keeping the last one")

    # --- OpenRTB
    async def handle_auction(self, request: Request) -> Response:
        started = asyncio.get_running_loop().time()
        measured_from = time.perf_counter()
        key = request.headers.get("x-api-key") or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        by_hash, known = self._keys
        publisher = known.get(key)
        if publisher is None and key:
            publisher = by_hash.get(hash_api_key(key))
            if publisher is not None and len(known) < _MAX_KNOWN_KEYS:
                known[key] = publisher
        if publisher is None:
            metrics.REQUESTS.labels("auction", "unauthorized").inc()
            return _error(401, "unknown or missing API key (x-api-key header)")
        try:
            bid_request, repairs = decode_bid_request_lenient(request.body, self.limits)
        except RequestTooLarge as exc:
            metrics.REQUESTS.labels("auction", "too_large").inc()
            return _error(413, str(exc))
        except InvalidBidRequest as exc:
            metrics.REQUESTS.labels("auction", "invalid").inc()
            return _error(400, str(exc), exc.field)
        try:
            outcome = await self.exchange.auction(
                bid_request,
                publisher,
                started=started,
                measured_from=measured_from,
                gpc_header=request.headers.get("sec-gpc"),
                final=False,  # the caller runs its own auction: win notices wait for it
            )
        except InvalidBidRequest as exc:  # found by the auction rules (a floor's currency)
            metrics.REQUESTS.labels("auction", "invalid").inc()
            return _error(400, str(exc), exc.field)
        metrics.AUCTION_LATENCY.observe(time.perf_counter() - measured_from)
        if repairs:
            _count_repairs(repairs, "auction")
        if not outcome.winners:
            metrics.REQUESTS.labels("auction", "no_bid").inc()
            if repairs:  # a no-bid that still tells the caller what was repaired
                return Response(200, encode(BidResponse(id=bid_request.id, ext=_warnings(repairs))))
            return Response(204)
        metrics.REQUESTS.labels("auction", "won").inc()
        response = self._bid_response(bid_request, outcome)
        if repairs:
            response.ext = _warnings(repairs)
        return Response(200, encode(response))

    def _bid_response(self, request: BidRequest, outcome: AuctionOutcome) -> BidResponse:
        bids = []
        for winner in outcome.winners:
            source = winner.result.winner
            assert source is not None
            bids.append(
                Bid(
                    id=winner.bid_id,
                    impid=winner.result.imp_id,
                    price=winner.result.revenue_micros / 1_000_000,
                    adm=winner.adm or None,
                    nurl=winner.nurl or None,
                    burl=winner.burl,
                    adomain=list(source.adomain) or None,
                    cat=list(source.categories) or None,
                    crid=winner.crid or None,
                    dealid=source.deal_id or None,
                    w=winner.w or None,
                    h=winner.h or None,
                )
            )
        return BidResponse(
            id=request.id,
            seatbid=[SeatBid(bid=bids, seat="openbid")],
            bidid=outcome.auction_id,
            cur="USD",
        )

    # --- ad tag
    async def handle_ad(self, request: Request) -> Response:
        started = asyncio.get_running_loop().time()
        measured_from = time.perf_counter()
        query = request.query()
        found = self._placements.get(query.get("placement", ""))
        if found is None:
            metrics.REQUESTS.labels("ad", "unknown_placement").inc()
            return _error(404, "unknown placement", "placement")
        placement, publisher = found
        try:
            bid_request = self._tag_request(request, query, placement)
        except RequestTooLarge as exc:
            metrics.REQUESTS.labels("ad", "too_large").inc()
            return _error(413, str(exc))
        except InvalidBidRequest as exc:  # e.g. an over-long page URL or user id
            metrics.REQUESTS.labels("ad", "invalid").inc()
            return _error(400, str(exc), exc.field)
        except ValueError as exc:
            metrics.REQUESTS.labels("ad", "invalid").inc()
            return _error(400, str(exc), "size")
        outcome = await self.exchange.auction(
            bid_request,
            publisher,
            started=started,
            measured_from=measured_from,
            extra_floor_micros=placement.floor_micros,
            gpc_header=request.headers.get("sec-gpc"),
        )
        metrics.AUCTION_LATENCY.observe(time.perf_counter() - measured_from)
        if not outcome.winners:
            metrics.REQUESTS.labels("ad", "no_bid").inc()
            return Response(204)
        try:
            body, content_type = self._render(outcome.winners[0])
        except RenderError as exc:
            metrics.RENDER_FAILURES.labels(outcome.winners[0].media).inc()
            log.warning("winning creative could not be rendered", extra={"error": str(exc)})
            return Response(204)
        metrics.REQUESTS.labels("ad", "won").inc()
        return Response(200, body, content_type)

    def _tag_request(
        self, request: Request, query: dict[str, str], placement: Placement
    ) -> BidRequest:
        sizes = list(placement.sizes)
        if "size" in query:
            try:
                w, h = (int(x) for x in query["size"].lower().split("x"))
            except ValueError:
                raise ValueError(f"size must look like 300x250, got {query['size']!r}") from None
            sizes = [(w, h)]
        page = query.get("page", "")
        domain = urlsplit(page).hostname or placement.site_domain
        imp: dict[str, object] = {"id": "1", "tagid": placement.id, "secure": 1}
        if placement.media == "video":
            w, h = sizes[0] if sizes else (640, 480)
            imp["video"] = {"mimes": ["video/mp4"], "w": w, "h": h}
        else:
            imp["banner"] = {
                "format": [{"w": w, "h": h} for w, h in sizes] or [{"w": 300, "h": 250}]
            }
        body = {
            "id": secrets.token_hex(8),
            "imp": [imp],
            "site": {
                "id": placement.id,
                "domain": domain,
                "page": page,
                "publisher": {"id": placement.publisher_id},
            },
            "device": {
                "ua": request.headers.get("user-agent", ""),
                "ip": client_address(request, self._trusted_proxies),
            },
            "tmax": self.config.default_tmax_ms,
            "at": 1,
        }
        if query.get("uid"):
            body["user"] = {"id": query["uid"]}
        # Lenient as the OpenRTB route (e.g. an IPv6 client's address moves to device.ipv6);
        # an HTML answer has no place for warnings, so the repairs are only counted.
        bid_request, repairs = decode_bid_request_lenient(_json.encode(body), self.limits)
        if repairs:
            _count_repairs(repairs, "ad")
        return bid_request

    def _render(self, winner: Winner) -> tuple[bytes, str]:
        if winner.media == "video":
            error_url = winner.burl.replace("/t/imp?", "/t/err?", 1)
            return render_video(winner.adm, winner.burl, error_url).encode(), "application/xml"
        if winner.media == "native":
            return render_native(winner.adm, winner.burl, self._click_wrapper(winner)), (
                "application/json"
            )
        return (
            render_banner(winner.adm, winner.burl, width=winner.w, height=winner.h).encode(),
            "text/html; charset=utf-8",
        )

    def _click_wrapper(self, winner: Winner):  # type: ignore[no-untyped-def]
        """Wraps a landing URL in our signed click tracker: the redirect goes only there."""
        base = f"{self.config.public_url}/t/click?"
        signer = self.exchange.signer

        def wrap(landing_url: str) -> str:
            return base + signer.sign(
                "click",
                {
                    "auc": winner.auction_id,
                    "bid": winner.bid_id,
                    "dsp": winner.dsp,
                    "crid": winner.crid,
                    "url": landing_url,
                },
            )

        return wrap

    # --- trackers
    async def handle_impression(self, request: Request) -> Response:
        try:
            params = self.exchange.signer.verify("imp", request.query())
        except InvalidTracker as exc:
            metrics.IMPRESSIONS.labels("invalid").inc()
            return _error(403, str(exc))
        bid_id = params["bid"]
        if not await self._first_time(f"imp:{bid_id}"):
            metrics.IMPRESSIONS.labels("duplicate").inc()
            return _pixel()
        metrics.IMPRESSIONS.labels("counted").inc()
        metrics.BILLED_REVENUE_MICROS.inc(int(params.get("rev", "0")) / 1000)  # CPM / 1000
        price = int(params.get("price", "0"))
        if self.exchange.event_log is not None:
            self.exchange.event_log.emit(
                ImpressionEvent(
                    now_micros(),
                    params["auc"],
                    bid_id,
                    dsp=params["dsp"],
                    imp_id=params["imp"],
                    creative_id=params.get("crid", ""),
                    price_micros=price,
                )
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
        return _pixel()

    async def handle_win(self, request: Request) -> Response:
        """Our caller's win notice: passes the DSP's own win notice on, once per bid (and
        answers the markup of a bid that came without)."""
        try:
            params = self.exchange.signer.verify("win", request.query())
        except InvalidTracker as exc:
            metrics.WINS_NOTIFIED.labels("invalid").inc()
            return _error(403, str(exc))
        bid_id = params["bid"]
        if not await self._first_time(f"win:{bid_id}"):
            metrics.WINS_NOTIFIED.labels("duplicate").inc()
            return Response(204)
        metrics.WINS_NOTIFIED.labels("counted").inc()
        served = await self.exchange.win_notice(params)  # markup, for a bid that had none
        return Response(204) if served is None else Response(200, served[0].encode(), served[1])

    async def _first_time(self, key: str) -> bool:
        """Whether `key` is new (idempotency of notices by bid id, across workers when the
        counter store is shared). Never blocks the event loop on the store."""
        try:
            return await self.counters.aset_once(key, IMPRESSION_DEDUP_TTL_S)
        except StoreUnavailable as exc:
            # Degrade to this worker's own memory: duplicates reaching the same worker are
            # still caught; across workers they are not, which the error log makes visible
            # (once a minute, not once per impression).
            metrics.DEDUP_FALLBACKS.inc()
            now = time.monotonic()
            if now - self._dedup_warned_at >= 60.0:
                self._dedup_warned_at = now
                log.error(
                    "dedup store unavailable: deduplicating in this worker only",
                    extra={"error": str(exc)},
                )
            return self._local_dedup.set_once(key, IMPRESSION_DEDUP_TTL_S)

    async def handle_click(self, request: Request) -> Response:
        try:
            params = self.exchange.signer.verify("click", request.query())
        except InvalidTracker as exc:
            metrics.CLICKS.labels("invalid").inc()
            return _error(403, str(exc))
        target = params.get("url", "")
        if urlsplit(target).scheme not in ("http", "https"):
            metrics.CLICKS.labels("invalid").inc()
            return _error(400, "click target is not an http(s) URL", "url")
        metrics.CLICKS.labels("counted").inc()
        if self.exchange.event_log is not None:
            self.exchange.event_log.emit(
                ClickEvent(
                    now_micros(),
                    params.get("auc", ""),
                    params.get("bid", ""),
                    dsp=params.get("dsp", ""),
                    creative_id=params.get("crid", ""),
                )
            )
        # A landing URL may be an IRI (non-ASCII) and a DSP's markup may hold anything:
        # send what a browser would, percent-encoded, and never a raw line break.
        location = quote(target, safe=_LOCATION_SAFE)
        return Response(302, b"", "text/plain", headers=[("location", location)])

    async def handle_video_error(self, request: Request) -> Response:
        query = request.query()
        query.pop("ERRORCODE", None)
        try:
            self.exchange.signer.verify("imp", query)
        except InvalidTracker as exc:
            return _error(403, str(exc))
        metrics.RENDER_FAILURES.labels("video_player").inc()
        return _pixel()


class _Warning(msgspec.Struct):
    field: str
    reason: str
    action: str


def _warnings(repairs: tuple[Repair, ...]) -> msgspec.Raw:
    """`ext` of a response to a repaired request: `{"warnings": [{field, reason, action}]}`."""
    return msgspec.Raw(
        _json.encode({"warnings": [_Warning(r.field, r.reason, r.action) for r in repairs]})
    )


def _count_repairs(repairs: tuple[Repair, ...], endpoint: str) -> None:
    for repair in repairs:
        metrics.REQUEST_REPAIRS.labels(repair.kind, endpoint).inc()


_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)


def _pixel() -> Response:
    return Response(200, _GIF, "image/gif", headers=[("cache-control", "no-store")])


def tracker_secret(config: ExchangeConfig) -> bytes:
    """The tracker key: the config's, a file's, or (with a warning) a random one."""
    if config.tracker_secret:
        return config.tracker_secret.encode()
    if config.tracker_secret_file:
        with open(config.tracker_secret_file, "rb") as handle:
            return handle.read().strip()
    log.warning("no exchange.tracker_secret set: trackers are signed with a random per-process key")
    return hashlib.sha256(secrets.token_bytes(32)).digest()
