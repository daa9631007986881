"""openbid as a DSP: `POST /bidder/openrtb` answers OpenRTB 2.6 bid requests from any
exchange with the house campaigns' demand (`openbid.campaigns.house`), and the notice
routes its bids carry record their outcome.

| route | answers | does |
| --- | --- | --- |
| `POST /bidder/openrtb` | 200 BidResponse (one bid per impression at most, seat `openbid`, `adm`, `nurl`, `burl`, `lurl`), 204 no bid (also: `cur` without USD, or consent forbids: `openbid.campaigns.consent`), 400 naming the field, 413 | match, pace, cap, price, shade, hold the cost against the budget |
| `GET /bidder/win` | 204 | the win: spend recorded once per bid id, at our bid in first price, at `${AUCTION_PRICE}` in second (never above our bid, never below the floor met or `min_price_share` of it: `charged_price_micros`) |
| `GET /bidder/bill` | 204 | the billing notice: the same spend, the same once per bid id (whichever of the two comes first counts) |
| `GET /bidder/loss` | 204 | once per bid id, nothing for a bid already billed: the hold is freed; in first price a believable price that won (`${AUCTION_MIN_TO_WIN}`, else `${AUCTION_PRICE}`) feeds the win curves |
| any notice, bad signature | 403 | nothing |

Requests are decoded leniently like the exchange's (`decode_bid_request_lenient`: repairs
counted, errors name the field path). Floors in a currency without a rate are refused
(400) rather than read as no floor. The response's prices are USD.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import msgspec
from prometheus_client import Counter, Histogram

from openbid.bidder.notices import (
    charged_price_micros,
    decode_loss_price_micros,
    notice_urls,
    verify_notice,
)
from openbid.campaigns.consent import house_inputs
from openbid.campaigns.house import HOUSE_BIDS, MEDIA_CODES, HouseBid, HouseDemand, ImpOffer
from openbid.campaigns.scoring import HOUSE_DSP
from openbid.campaigns.targeting import imp_facts, request_facts_from_context
from openbid.clock import now_micros
from openbid.creative import InvalidTracker, TrackerSigner
from openbid.enrich.context import build_auction_context
from openbid.enrich.device import UserAgentParser
from openbid.enrich.features import auction_features
from openbid.http.server import Request, Response, Router
from openbid.obs import REGISTRY
from openbid.openrtb import BidRequest, InvalidBidRequest, Limits, RequestTooLarge, encode
from openbid.openrtb.repair import decode_bid_request_lenient
from openbid.openrtb.response import Bid, BidResponse, SeatBid
from openbid.pricing.shading import FIRST_PRICE

log = logging.getLogger(__name__)

MICROS = 1_000_000
_json = msgspec.json.Encoder()

BIDDER_REQUESTS = Counter(
    "openbid_bidder_requests",
    "Bid requests to /bidder/openrtb by outcome: bid, no_bid, invalid, too_large, currency "
    "(request.cur without USD: no bid)",
    ("outcome",),
    registry=REGISTRY,
)
BIDDER_NOTICES = Counter(
    "openbid_bidder_notices",
    "Notices of the bidder's bids by kind (win, bill, loss) and outcome: counted, "
    "duplicate (the spend was already recorded), invalid (bad signature)",
    ("kind", "outcome"),
    registry=REGISTRY,
)
BIDDER_PRICES = Counter(
    "openbid_bidder_notice_prices",
    "How the price macro of win and billing notices read: ok, missing (not substituted: "
    "charged at our bid), invalid, above_bid (charged at our bid), first_price_below_bid "
    "(a first-price notice saying less than our bid: charged at our bid), below_least (a "
    "second-price notice below the floor met or campaigns.min_price_share of our bid: "
    "charged at that least price)",
    ("reading",),
    registry=REGISTRY,
)
BIDDER_LOSS_PRICES = Counter(
    "openbid_bidder_loss_prices",
    "How the price of loss notices read (mtw, else price): ok (fed to the win curves), "
    "missing (censored), invalid (not a finite number >= 0: ignored), implausible (more "
    "than LOSS_PRICE_MAX_RATIO times our bid: ignored), not_price (a loss reason other than "
    "a price: not fed)",
    ("reading",),
    registry=REGISTRY,
)
PRICE_LOSS_REASONS = frozenset({"100", "101", "102", "103"})
"""OpenRTB loss reasons that say a price lost (below the floor, the deal floor, a higher
bid, a deal's bid); a notice without a reason counts as one. Other reasons (errors,
creative filtered, seat blocked) tell nothing about prices."""
_LOW_PRICE_LOG_S = 60.0
BIDDER_LATENCY = Histogram(
    "openbid_bidder_latency_seconds",
    "Time to answer /bidder/openrtb",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
    registry=REGISTRY,
)


def _error(status: int, message: str, field: str = "") -> Response:
    body: dict[str, str] = {"error": message}
    if field:
        body["field"] = field
    return Response(status, _json.encode(body))


def _micros(
    amount: float | None, currency: str | None, rates: Mapping[str, float], field: str
) -> int:
    rate = rates.get(currency or "USD")
    if rate is None:
        raise InvalidBidRequest(
            field, f"must be one of the currencies we convert ({', '.join(sorted(rates))})"
        )
    return round((amount or 0.0) * rate * MICROS)


def auction_type(request: BidRequest) -> int:
    """The request's auction type as we bid on it (OpenRTB's default: 2, second price)."""
    return request.at if request.at in (1, 2) else 2


def offers_of(request: BidRequest, rates: Mapping[str, float]) -> list[ImpOffer]:
    """The impressions of a request as house demand bids on them: floors (and deal floors)
    in USD micros. `InvalidBidRequest` for a floor in a currency without a rate."""
    offers = []
    for number, imp in enumerate(request.imp):
        floor = _micros(imp.bidfloor, imp.bidfloorcur, rates, f"request.imp[{number}].bidfloorcur")
        deals: dict[str, int] = {}
        if imp.pmp is not None:
            for index, deal in enumerate(imp.pmp.deals or ()):
                deals[deal.id] = max(
                    floor,
                    _micros(
                        deal.bidfloor,
                        deal.bidfloorcur,
                        rates,
                        f"request.imp[{number}].pmp.deals[{index}].bidfloorcur",
                    ),
                )
        offers.append(ImpOffer(imp.id, imp_facts(imp), floor, deals))
    return offers


class Bidder:
    """The bidder's routes over one `HouseDemand`."""

    def __init__(
        self,
        house: HouseDemand,
        signer: TrackerSigner,
        public_url: str,
        *,
        currency_rates: Mapping[str, float] | None = None,
        limits: Limits | None = None,
        ua_parser: UserAgentParser | None = None,
        geo_reader: object | None = None,
        min_price_share: float = 0.05,
    ) -> None:
        self.house = house
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        self.rates = dict(currency_rates or {"USD": 1.0})
        self.limits = limits or Limits()
        self.ua_parser = ua_parser
        self.geo_reader = geo_reader
        self.min_price_share = min_price_share
        self._low_logged_at = -1e9

    def routes(self, router: Router) -> None:
        router.add("POST", "/bidder/openrtb", self.handle_bid_request)
        router.add("GET", "/bidder/win", self.handle_win)
        router.add("GET", "/bidder/bill", self.handle_bill)
        router.add("GET", "/bidder/loss", self.handle_loss)

    async def handle_bid_request(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            bid_request, _ = decode_bid_request_lenient(request.body, self.limits)
            offers = offers_of(bid_request, self.rates)
        except RequestTooLarge as exc:
            BIDDER_REQUESTS.labels("too_large").inc()
            return _error(413, str(exc))
        except InvalidBidRequest as exc:
            BIDDER_REQUESTS.labels("invalid").inc()
            return _error(400, str(exc), exc.field)
        if bid_request.cur and "USD" not in bid_request.cur:
            # We bid and read the notices' prices in USD only: an exchange that takes other
            # currencies alone gets no bid rather than a response in a currency it refused.
            BIDDER_REQUESTS.labels("currency").inc()
            return Response(204)
        bids = await self.bids(bid_request, offers, request.headers.get("sec-gpc"))
        BIDDER_LATENCY.observe(time.perf_counter() - started)
        if not bids:
            BIDDER_REQUESTS.labels("no_bid").inc()
            return Response(204)
        BIDDER_REQUESTS.labels("bid").inc()
        return Response(200, encode(self.response(bid_request, bids)))

    async def bids(
        self, request: BidRequest, offers: list[ImpOffer], gpc_header: str | None = None
    ) -> list[HouseBid]:
        """House demand's bids on a decoded request (no bid while no campaign can serve)."""
        house = self.house
        if not house.live:
            return []
        context = build_auction_context(
            request, geo_reader=self.geo_reader, ua_parser=self.ua_parser, gpc_header=gpc_header
        )
        features = auction_features(request, context, None)
        facts = request_facts_from_context(context, None, now_micros=now_micros())
        inputs = house_inputs(request, context.consent, facts, features, house.settings.vendor_id)
        if inputs is None:  # consent: no more than a DSP with our vendor id would get
            HOUSE_BIDS.labels("consent").inc(len(offers))
            return []
        at = auction_type(request)
        try:
            return await house.bid(
                inputs.features,
                inputs.facts,
                offers,
                at=at,
                user_key=inputs.user_key,
                request_id=request.id,
            )
        except Exception:  # a fault of ours is a no-bid, never a 500 to the exchange
            log.exception("bidder: house demand failed")
            return []

    def response(self, request: BidRequest, bids: list[HouseBid]) -> BidResponse:
        out = []
        at = str(auction_type(request))
        for house in bids:
            creative = house.creative
            params = {
                "bid": house.bid_id,
                "cmp": house.campaign.id,
                "li": house.line_item_id,
                "bp": str(house.price_micros),
                "seg": str(house.segment),
                "fu": house.user_key or "",
                "at": at,
                "fl": str(house.floor_micros),
            }
            urls = notice_urls(self.signer, self.public_url, params)
            adomain = list(creative.adomain) or None
            out.append(
                Bid(
                    id=house.bid_id,
                    impid=house.imp_id,
                    price=house.price_micros / MICROS,
                    adm=house.markup,
                    nurl=urls["nurl"],
                    burl=urls["burl"],
                    lurl=urls["lurl"],
                    adomain=adomain,
                    cat=list(creative.categories) or None,
                    crid=creative.id,
                    cid=house.campaign.id,
                    dealid=house.deal_id or None,
                    w=house.w or None,
                    h=house.h or None,
                )
            )
        return BidResponse(
            id=request.id, seatbid=[SeatBid(bid=out, seat=HOUSE_DSP)], bidid=out[0].id, cur="USD"
        )

    # --- notices

    def _verify(self, kind: str, request: Request) -> tuple[dict[str, str], dict[str, str]] | None:
        try:
            return verify_notice(self.signer, kind, request.query())
        except InvalidTracker:
            BIDDER_NOTICES.labels(kind, "invalid").inc()
            return None

    async def _spend(self, kind: str, request: Request) -> Response:
        verified = self._verify(kind, request)
        if verified is None:
            return _error(403, f"{kind} notice signature does not match")
        params, unsigned = verified
        bid_micros = int(params["bp"])
        at = int(params.get("at", FIRST_PRICE))  # signed; without: charged at our bid
        price, reading = charged_price_micros(
            unsigned.get("price", ""),
            bid_micros,
            int(params.get("fl", 0)),
            at,
            self.min_price_share,
        )
        BIDDER_PRICES.labels(reading).inc()
        first = await self.house.billed(
            params["bid"], params["cmp"], params["li"], -(-price // 1000), params["fu"] or None
        )
        if first:
            if at == FIRST_PRICE:
                self.house.observe(int(params["seg"]), bid_micros, won=True)
            if reading in ("first_price_below_bid", "below_least"):
                self._log_low_price(kind, params, unsigned.get("price", ""), price, reading)
        BIDDER_NOTICES.labels(kind, "counted" if first else "duplicate").inc()
        return Response(204)

    def _log_low_price(
        self, kind: str, params: Mapping[str, str], said: str, charged: int, reading: str
    ) -> None:
        """A notice whose price said less than a safe least price (once a minute: anyone
        holding a notice URL can make them)."""
        now = time.monotonic()
        if now - self._low_logged_at < _LOW_PRICE_LOG_S:
            return
        self._low_logged_at = now
        log.warning(
            "bidder: a notice's price below what it can be",
            extra={
                "kind": kind,
                "bid_id": params["bid"],
                "campaign_id": params["cmp"],
                "price": said[:32],
                "charged_micros": charged,
                "bid_micros": params["bp"],
                "reading": reading,
            },
        )

    async def handle_win(self, request: Request) -> Response:
        return await self._spend("win", request)

    async def handle_bill(self, request: Request) -> Response:
        return await self._spend("bill", request)

    async def handle_loss(self, request: Request) -> Response:
        verified = self._verify("loss", request)
        if verified is None:
            return _error(403, "loss notice signature does not match")
        params, unsigned = verified
        outcome = await self.house.loss_notice(params["bid"])
        BIDDER_NOTICES.labels("loss", outcome).inc()
        if outcome != "counted" or int(params.get("at", FIRST_PRICE)) != FIRST_PRICE:
            return Response(204)  # the win curves learn first-price outcomes, once a bid
        reason = unsigned.get("reason", "").strip()
        if reason and not reason.startswith("${") and reason not in PRICE_LOSS_REASONS:
            BIDDER_LOSS_PRICES.labels("not_price").inc()
            return Response(204)
        bid_micros = int(params["bp"])
        winning, reading = decode_loss_price_micros(unsigned.get("mtw", ""), bid_micros)
        if reading == "missing":
            winning, reading = decode_loss_price_micros(unsigned.get("price", ""), bid_micros)
        BIDDER_LOSS_PRICES.labels(reading).inc()
        self.house.observe(int(params["seg"]), bid_micros, won=False, loss_price_micros=winning)
        return Response(204)


__all__ = ["MEDIA_CODES", "Bidder", "offers_of"]
