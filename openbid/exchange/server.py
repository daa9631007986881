"""The exchange's front door: HTTP routes around `Exchange.auction()`.

- `POST /openrtb2/auction`: OpenRTB 2.6 in, BidResponse out (204 when nothing wins).
  Authenticated by the publisher's API key (`x-api-key` or `Authorization: Bearer`).
  400 names the field path, 413 for an oversize body, 401 for an unknown key.
- `GET /ad?placement=ID&page=URL[&size=WxH]`: an ad tag; rendered HTML, or 204.
- `GET /t/imp`, `/t/click`, `/t/win`, `/t/err`: our signed trackers (`trackers.py`).
- `GET /conv`, `POST /conv`: advertisers' conversions (`conversions.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import secrets
import time
from urllib.parse import urlsplit

import msgspec

from openbid.config import ExchangeConfig
from openbid.creative import RenderError, render_banner, render_native, render_video
from openbid.domain import Placement, Publisher, hash_api_key
from openbid.exchange import metrics
from openbid.exchange.conversions import Conversions, conversion_key
from openbid.exchange.orchestrator import AuctionOutcome, Exchange, Winner
from openbid.exchange.trackers import NO_JOURNEY, Dedup, Journey, Trackers, journey_of
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
from openbid.privacy.consent import ConsentContext
from openbid.stores import CounterStore, StoreUnavailable
from openbid.stores.catalog import Catalog

log = logging.getLogger(__name__)

_json = msgspec.json.Encoder()

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
        dedup = Dedup(counters)
        self.trackers = Trackers(exchange, dedup, config)
        self.conversions = Conversions(exchange, dedup, config)
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
        self.trackers.routes(router)
        self.conversions.routes(router)

    def conversion_key(self, advertiser: str) -> str:
        """The key `advertiser` signs its conversions with (`/conv`)."""
        return conversion_key(self.exchange.signer, advertiser)

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
        journey = journey_of(
            bid_request, ConsentContext.from_request(bid_request, request.headers.get("sec-gpc"))
        )
        response = self._bid_response(bid_request, outcome, journey)
        if repairs:
            response.ext = _warnings(repairs)
        return Response(200, encode(response))

    def _bid_response(
        self, request: BidRequest, outcome: AuctionOutcome, journey: Journey = NO_JOURNEY
    ) -> BidResponse:
        bids = []
        for winner in outcome.winners:
            source = winner.result.winner
            assert source is not None
            adm, burl, nurl = self.trackers.prepare(winner, journey)
            bids.append(
                Bid(
                    id=winner.bid_id,
                    impid=winner.result.imp_id,
                    price=winner.result.revenue_micros / 1_000_000,
                    adm=adm or None,
                    nurl=nurl or None,
                    burl=burl,
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
        journey = journey_of(
            bid_request, ConsentContext.from_request(bid_request, request.headers.get("sec-gpc"))
        )
        try:
            body, content_type = self._render(outcome.winners[0], journey)
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

    def _render(self, winner: Winner, journey: Journey) -> tuple[bytes, str]:
        adm, burl, _ = self.trackers.prepare(winner, journey)
        if winner.media == "video":
            error_url = burl.replace("/t/imp?", "/t/err?", 1)
            return render_video(adm, burl, error_url).encode(), "application/xml"
        if winner.media == "native":
            return render_native(adm, burl), "application/json"
        return (
            render_banner(adm, burl, width=winner.w, height=winner.h).encode(),
            "text/html; charset=utf-8",
        )


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


_process_key: bytes | None = None


def tracker_secret(config: ExchangeConfig) -> bytes:
    """The tracker key: the config's, a file's, or (with a warning) a random one."""
    if config.tracker_secret:
        return config.tracker_secret.encode()
    if config.tracker_secret_file:
        with open(config.tracker_secret_file, "rb") as handle:
            return handle.read().strip()
    global _process_key
    if _process_key is None:
        # One random key per process, however often asked: the signer and the advertisers'
        # conversion keys (derived from it) must agree.
        log.warning(
            "no exchange.tracker_secret set: trackers are signed with a random per-process key"
        )
        _process_key = hashlib.sha256(secrets.token_bytes(32)).digest()
    return _process_key
