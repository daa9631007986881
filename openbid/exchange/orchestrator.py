"""The request path of an auction: validate, enrich, apply consent and publisher rules,
choose demand, fan out within `tmax`, run the auction, answer, notify and log.

`Exchange.auction()` is the one path both front doors use: `POST /openrtb2/auction`
(OpenRTB 2.6 in, BidResponse out) and `GET /ad` (an ad tag: a request built from the
placement, rendered HTML out). Decisions live in pure functions (`openbid.exchange.auction`,
`openbid.privacy.consent`); this module does the I/O around them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from openbid.config import ExchangeConfig
from openbid.creative import AuctionMacros, TrackerSigner, substitute_macros
from openbid.demand import DemandRegistry, DemandState
from openbid.domain import Publisher
from openbid.enrich.context import build_auction_context
from openbid.enrich.device import default_ua_parser
from openbid.events import AuctionEvent, BidEvent, EventLog, now_micros
from openbid.exchange import metrics
from openbid.exchange.auction import BidCandidate, Deal, ImpResult, ImpRules, run_auction
from openbid.exchange.features import auction_features
from openbid.exchange.ids import IdSource
from openbid.exchange.notices import NoticeSender
from openbid.exchange.redact import apply_redaction
from openbid.http.client import Call, FanoutClient, UpstreamError
from openbid.obs import LoopMetric
from openbid.openrtb import (
    BidRequest,
    BidResponse,
    InvalidBidRequest,
    InvalidBidResponse,
    encode,
)
from openbid.openrtb.repair import decode_bid_response_lenient
from openbid.openrtb.request import Imp
from openbid.openrtb.response import Bid
from openbid.privacy.consent import Redaction, redaction_for
from openbid.shaping.base import PassThroughShaper, Shaper, ShapingDecision

log = logging.getLogger(__name__)

MICROS = 1_000_000
_EMPTY_BID_FIELDS = frozenset({"response.seatbid", "response.seatbid[0].bid"})
_NOT_FAILURES = frozenset({"bid", "no_bid", "filtered"})  # call outcomes logged with no error
NOT_SENT = frozenset({"filtered", "qps_capped", "consent_blocked", "no_time", "circuit_open"})
"""`DspCall.outcome`s of calls the exchange decided not to make (the rest left for the DSP)."""


def to_micros(amount: float, currency: str | None, rates: Mapping[str, float]) -> int | None:
    """`amount` of `currency` in micros of the exchange currency; None if the rate is unknown.

    >>> to_micros(1.5, "EUR", {"USD": 1.0, "EUR": 1.1})
    1650000
    >>> to_micros(2.0, None, {"USD": 1.0}), to_micros(2.0, "XYZ", {"USD": 1.0})
    (2000000, None)
    """
    rate = rates.get(currency or "USD")
    if rate is None:
        return None
    return round(amount * rate * MICROS)


def _floor_fields(micros: int) -> dict[str, Any]:
    if not micros:
        return {"bidfloor": None, "bidfloorcur": None}
    return {"bidfloor": micros / MICROS, "bidfloorcur": "USD"}


def with_floors(request: BidRequest, rules: Sequence[ImpRules], adjustment: float) -> BidRequest:
    """`request` with every imp and deal floor set to what the auction applies, in USD, as a
    partner with this bid adjustment must bid it: the auction compares `price * adjustment`
    with the floor, so the partner sees `floor / adjustment`, rounded up to the micro.

    >>> from openbid.openrtb import decode_bid_request
    >>> req = decode_bid_request(b'{"id":"r","imp":[{"id":"1","banner":{},"bidfloor":0.9,'
    ...                          b'"bidfloorcur":"EUR"}]}')
    >>> rules = build_imp_rules(req, None, ExchangeConfig())
    >>> [(imp.bidfloor, imp.bidfloorcur) for imp in with_floors(req, rules, 0.8).imp]
    [(1.215, 'USD')]
    """
    replace = msgspec.structs.replace
    imps = []
    for imp, rule in zip(request.imp, rules, strict=True):
        pmp = imp.pmp
        if pmp is not None and pmp.deals:
            deals = []
            for deal in pmp.deals:
                known = rule.deals.get(deal.id)
                if known is not None:
                    deal = replace(
                        deal, **_floor_fields(math.ceil(known.floor_micros / adjustment))
                    )
                deals.append(deal)
            pmp = replace(pmp, deals=deals)
        floor = math.ceil(rule.floor_micros / adjustment)
        imps.append(replace(imp, pmp=pmp, **_floor_fields(floor)))
    return replace(request, imp=imps)


def imp_sizes(imp: Imp) -> frozenset[tuple[int, int]]:
    """The (w, h) a banner impression accepts; empty (any) for other formats."""
    banner = imp.banner
    if banner is None or imp.video is not None or imp.native is not None:
        return frozenset()
    sizes = {(f.w, f.h) for f in banner.format or () if f.w and f.h}
    if banner.w and banner.h:
        sizes.add((banner.w, banner.h))
    return frozenset(sizes)


def build_imp_rules(
    request: BidRequest,
    publisher: Publisher | None,
    config: ExchangeConfig,
    extra_floor_micros: int = 0,
) -> list[ImpRules]:
    """The auction rules of every impression: floors in the exchange currency (the highest
    of the request's, the publisher's and the placement's), deals, blocks, sizes.

    A floor in a currency without a configured rate raises `InvalidBidRequest` naming it:
    selling that impression with no floor would be the publisher's loss.
    """
    rates = config.currency_rates

    def floor_micros(amount: float | None, currency: str | None, field: str) -> int:
        micros = to_micros(amount or 0.0, currency, rates)
        if micros is None:
            raise InvalidBidRequest(
                field,
                f"must be one of the currencies this exchange converts "
                f"({', '.join(sorted(rates))}), got {msgspec.json.encode(currency).decode()}",
            )
        return micros

    blocked_categories = frozenset(request.bcat or ()) | frozenset(
        publisher.blocked_categories if publisher else ()
    )
    blocked_adomains = frozenset(request.badv or ()) | frozenset(
        publisher.blocked_adomains if publisher else ()
    )
    base_floor = max(publisher.floor_micros if publisher else 0, extra_floor_micros)
    auction_type = request.at if request.at in (1, 2) else 2
    rules = []
    for index, imp in enumerate(request.imp):
        floor = floor_micros(imp.bidfloor, imp.bidfloorcur, f"request.imp[{index}].bidfloorcur")
        deals: dict[str, Deal] = {}
        private = False
        if imp.pmp is not None:
            private = imp.pmp.private_auction == 1
            for number, deal in enumerate(imp.pmp.deals or ()):
                deal_floor = floor_micros(
                    deal.bidfloor,
                    deal.bidfloorcur,
                    f"request.imp[{index}].pmp.deals[{number}].bidfloorcur",
                )
                deals[deal.id] = Deal(
                    deal.id,
                    floor_micros=max(deal_floor, base_floor),
                    guaranteed=deal.guar == 1,
                    seats=frozenset(deal.wseat or ()),
                )
        rules.append(
            ImpRules(
                imp.id,
                floor_micros=max(floor, base_floor),
                deals=deals,
                private_auction=private,
                blocked_categories=blocked_categories,
                blocked_adomains=blocked_adomains,
                sizes=imp_sizes(imp),
                auction_type=auction_type,
                increment_micros=config.increment_micros,
            )
        )
    return rules


@dataclass(slots=True)
class DspCall:
    """One partner in one auction: what we decided, what came back."""

    state: DemandState
    decision: ShapingDecision
    outcome: str = "filtered"
    latency_ms: float = 0.0
    error: str = ""
    response: BidResponse | None = None


@dataclass(slots=True)
class Winner:
    """A won impression, ready to be returned or rendered."""

    result: ImpResult
    auction_id: str
    bid_id: str
    dsp: str
    adm: str
    media: str
    burl: str
    crid: str
    w: int
    h: int
    nurl: str = ""
    """Our signed win-notice URL, when the DSP's win notice waits for the caller's decision
    (`auction(final=False)`); empty when it was fired at once."""


@dataclass(slots=True)
class AuctionOutcome:
    auction_id: str
    winners: list[Winner] = field(default_factory=list)
    calls: list[DspCall] = field(default_factory=list)


class _DspMetrics:
    """A partner's metric children, resolved once (label lookups cost more than the
    increments themselves on the hot path)."""

    __slots__ = ("calls", "latency", "wins", "circuit")

    def __init__(self, dsp: str) -> None:
        self.calls = _LabelCache(metrics.DSP_CALLS, dsp)
        self.latency = metrics.DSP_LATENCY.labels(dsp)
        self.wins = metrics.DSP_WINS.labels(dsp)
        self.circuit = metrics.CIRCUIT_STATE.labels(dsp)


class _LabelCache(dict):
    """Children of a (dsp, outcome) counter for one dsp, created on first use."""

    def __init__(self, counter: LoopMetric, dsp: str) -> None:
        super().__init__()
        self._counter = counter
        self._dsp = dsp

    def __missing__(self, outcome: str) -> Any:
        child = self._counter.labels(self._dsp, outcome)
        self[outcome] = child
        return child


_DSP_METRICS: dict[str, _DspMetrics] = {}


def _dsp_metrics(dsp: str) -> _DspMetrics:
    found = _DSP_METRICS.get(dsp)
    if found is None:
        found = _DSP_METRICS[dsp] = _DspMetrics(dsp)
    return found


class _Settle:
    """Counts an auction's DSP calls out and wakes the auction when the last one settles,
    or at its deadline: one counter, one future, one timer for all the calls (each call
    reports by a plain callback, `openbid.http.client.Call`, not a future of its own)."""

    __slots__ = ("pending", "_waiter")

    def __init__(self) -> None:
        self.pending = 0
        self._waiter: asyncio.Future[None] | None = None

    def one_done(self, _: object) -> None:
        self.pending -= 1
        waiter = self._waiter
        if self.pending <= 0 and waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Returns when every call counted in has settled or the loop's clock reaches
        `deadline`, whichever comes first."""
        if self.pending <= 0:
            return
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(deadline, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _media(imp: Imp) -> str:
    if imp.video is not None:
        return "video"
    if imp.native is not None:
        return "native"
    if imp.audio is not None:
        return "audio"
    return "banner"


class Exchange:
    """One exchange worker's state: demand, shaping, client, signer, sinks."""

    def __init__(
        self,
        config: ExchangeConfig,
        *,
        registry: DemandRegistry,
        client: FanoutClient,
        signer: TrackerSigner,
        event_log: EventLog | None = None,
        shaper: Shaper | None = None,
        geo_reader: object | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.client = client
        self.signer = signer
        self.event_log = event_log
        self.shaper: Shaper = shaper or PassThroughShaper()
        self._ids = IdSource()
        # Ties are broken by a hash of (dsp, bid id) under this seed; a secret one by default,
        # so a DSP cannot choose bid ids that win ties.
        self._tie_seed = config.auction_seed or secrets.randbits(31)
        # A shaper in another process is awaited; one that learns from outcomes is told them.
        self._decide_async = getattr(self.shaper, "decide_async", None)
        self._observe = getattr(self.shaper, "observe", None)
        self.geo_reader = geo_reader
        # Built here, not on the first request: loading the parser's rules takes ~0.3 s.
        self.ua_parser = default_ua_parser()
        self.notices = NoticeSender(
            client,
            event_log,
            max_in_flight=config.max_notices_in_flight,
            public_only=not config.notice_private_hosts,
        )
        self._bid_seq = 0

    def _deadline_s(self, request: BidRequest) -> float:
        tmax_ms = request.tmax or self.config.default_tmax_ms
        return min(tmax_ms, self.config.max_tmax_ms) / 1000.0

    async def auction(
        self,
        request: BidRequest,
        publisher: Publisher | None,
        *,
        started: float,
        measured_from: float | None = None,
        extra_floor_micros: int = 0,
        gpc_header: str | None = None,
        final: bool = True,
    ) -> AuctionOutcome:
        """Runs one auction end to end and returns the winners (possibly none).

        `final`: our auction decides the impression (an ad tag we render), so winners' win
        notices go out now. When we answer an OpenRTB caller that runs its own auction
        (`final=False`), a winner's notice waits for that caller to hit our signed `nurl`.

        `started` is the loop time the request arrived at (deadlines run on the loop's clock);
        `measured_from` its `time.perf_counter()`, for the latency we log: uvloop's clock
        has millisecond resolution, too coarse for an auction that takes one.
        """
        if measured_from is None:
            measured_from = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = started + self._deadline_s(request)
        auction_id = self._ids.next()
        outcome = AuctionOutcome(auction_id)
        context = build_auction_context(
            request, geo_reader=self.geo_reader, ua_parser=self.ua_parser, gpc_header=gpc_header
        )
        features = auction_features(request, context, publisher)
        rules = build_imp_rules(request, publisher, self.config, extra_floor_micros)

        now = time.monotonic()
        eligible: list[DemandState] = []
        for state in self.registry.states:
            if not state.breaker.available(now):
                _dsp_metrics(state.partner.id).calls["circuit_open"].inc()
                continue
            eligible.append(state)
        dsp_ids = [s.partner.id for s in eligible]
        if self._decide_async is not None:
            decisions = await self._decide_async(features, dsp_ids)
        else:
            decisions = self.shaper.decide(features, dsp_ids)
        calls = [
            DspCall(state, decision) for state, decision in zip(eligible, decisions, strict=True)
        ]
        outcome.calls = calls

        budget_s = deadline - loop.time() - self.config.own_budget_ms / 1000.0
        outgoing = self._outgoing_base(request, auction_id, rules, max(int(budget_s * 1000), 1))
        encoded: dict[tuple[Redaction, float], bytes] = {}
        in_flight: list[tuple[DspCall, Call, float]] = []
        settle = _Settle()
        on_done = settle.one_done
        for call in calls:
            partner = call.state.partner
            counters = _dsp_metrics(partner.id)
            if not call.decision.send:
                counters.calls["filtered"].inc()
                continue
            if call.state.limiter is not None and not call.state.limiter.allow(now):
                call.outcome = "qps_capped"
                counters.calls["qps_capped"].inc()
                continue
            redaction = redaction_for(context.consent, partner.vendor_id)
            if redaction.block:
                call.outcome = "consent_blocked"
                counters.calls["consent_blocked"].inc()
                continue
            timeout_s = min(partner.timeout_ms / 1000.0, budget_s)
            if timeout_s <= 0.001:
                call.outcome = "no_time"
                counters.calls["no_time"].inc()
                continue
            if not call.state.breaker.allow(now):  # last: only a call that leaves probes
                call.outcome = "circuit_open"
                counters.calls["circuit_open"].inc()
                continue
            adjustment = partner.bid_adjustment
            body = encoded.get((redaction, adjustment))
            if body is None:
                shown = outgoing
                if adjustment != 1.0:
                    shown = with_floors(outgoing, rules, adjustment)
                body = encode(apply_redaction(shown, redaction))
                encoded[(redaction, adjustment)] = body
            # Every request leaves now; the calls settle as replies arrive (no task each).
            settle.pending += 1
            try:
                started_call = self.client.start_call(
                    partner.endpoint,
                    body,
                    on_done,
                    timeout_s=timeout_s,
                    gzip_body=partner.gzip,
                    loop=loop,
                )
            except UpstreamError as error:  # e.g. a malformed endpoint: that partner's loss
                settle.pending -= 1
                self._fail(call, error.kind, str(error), 0.0)
                continue
            in_flight.append((call, started_call, time.perf_counter()))
        if in_flight:
            # Every call settles by its own deadline; the auction's is a second line of
            # defence so that no fault of ours or a DSP's can hold the auction past tmax.
            await settle.wait(loop, deadline)
            for call, started_call, sent in in_flight:
                if not started_call.done():
                    started_call.set_exception(
                        UpstreamError("timeout", "no reply by the auction deadline")
                    )
                self._reply(call, started_call, sent, outgoing)
                if self._observe is not None:
                    self._observe(call.decision, call.outcome == "bid")

        candidates: list[BidCandidate] = []
        bids_by_key: dict[tuple[str, str], tuple[DspCall, Bid]] = {}
        for call in calls:
            if call.response is None:
                continue
            for seatbid in call.response.seatbid or ():
                for bid in seatbid.bid:
                    price = to_micros(bid.price, call.response.cur, self.config.currency_rates)
                    if price is None:
                        continue
                    candidate = BidCandidate(
                        call.state.partner.id,
                        bid.id,
                        bid.impid,
                        price,
                        seat=seatbid.seat or call.state.partner.seat,
                        deal_id=bid.dealid or "",
                        adjustment=call.state.partner.bid_adjustment,
                        adomain=tuple(bid.adomain or ()),
                        categories=tuple(bid.cat or ()),
                        w=bid.w or 0,
                        h=bid.h or 0,
                        has_markup=bool(bid.adm or bid.nurl),
                    )
                    candidates.append(candidate)
                    bids_by_key[(candidate.dsp, candidate.bid_id)] = (call, bid)
        results = run_auction(rules, candidates, seed=self._tie_seed) if candidates else []
        media_by_imp = {imp.id: _media(imp) for imp in request.imp}
        for result in results:
            for loss in result.losses:
                call, bid = bids_by_key[(loss.bid.dsp, loss.bid.bid_id)]
                if bid.lurl:
                    self._fire_notice(
                        "loss", bid, auction_id, loss.bid, 0, int(loss.reason), request
                    )
            if result.winner is None:
                continue
            call, bid = bids_by_key[(result.winner.dsp, result.winner.bid_id)]
            winner = await self._settle(
                result, call, bid, auction_id, media_by_imp[result.imp_id], deadline, final
            )
            if winner is not None:
                outcome.winners.append(winner)
        self._log(request, publisher, features, outcome, results, measured_from)
        return outcome

    def _outgoing_base(
        self, request: BidRequest, auction_id: str, rules: Sequence[ImpRules], tmax_ms: int
    ) -> BidRequest:
        """The request as every partner sees it: our id, the time left, floors (deal floors
        too) in USD as the auction applies them, merged blocks."""
        first = rules[0]
        return msgspec.structs.replace(
            with_floors(request, rules, 1.0),
            id=auction_id,
            tmax=tmax_ms,
            cur=["USD"],
            bcat=sorted(first.blocked_categories) or None,
            badv=sorted(first.blocked_adomains) or None,
        )

    def _reply(self, call: DspCall, started: Call, sent: float, request: BidRequest) -> None:
        """Classifies one partner's reply (or failure) and keeps its bids."""
        partner = call.state.partner
        counters = _dsp_metrics(partner.id)
        error = started.error
        if error is not None:
            self._fail(call, error.kind, str(error), time.perf_counter() - sent)
            return
        reply = started.response
        assert reply is not None
        call.latency_ms = (reply.received_at - sent) * 1000.0
        counters.latency.observe(call.latency_ms / 1000.0)
        if reply.status == 204 or (reply.status == 200 and not reply.body.strip()):
            call.outcome = "no_bid"
            call.state.breaker.record_success()
            counters.calls["no_bid"].inc()
            return
        if reply.status != 200:
            self._fail(call, "http_status", f"HTTP {reply.status}", call.latency_ms / 1000.0)
            return
        try:
            response, faults = decode_bid_response_lenient(reply.body, request)
        except InvalidBidResponse as exc:
            if exc.field in _EMPTY_BID_FIELDS:
                # `"seatbid": []` breaks the spec's letter, but many DSPs mean "no bid" by it.
                call.outcome = "no_bid"
                call.state.breaker.record_success()
                counters.calls["no_bid"].inc()
                return
            self._fail(call, "invalid_response", str(exc), call.latency_ms / 1000.0)
            return
        except Exception:  # a decoder bug on one partner's bytes must not fail the auction
            log.exception("decoding a bid response failed", extra={"dsp": partner.id})
            self._fail(call, "internal", "bid response decoder failed", call.latency_ms / 1000.0)
            return
        for fault in faults:  # repaired, the bids kept that are safe: counted per DSP
            metrics.DSP_RESPONSE_FAULTS.labels(partner.id, fault.kind).inc()
        call.state.breaker.record_success()
        if not response.seatbid:
            call.outcome = "no_bid"
            counters.calls["no_bid"].inc()
            return
        call.outcome = "bid"
        call.response = response
        counters.calls["bid"].inc()

    def _fail(self, call: DspCall, kind: str, message: str, elapsed_s: float) -> None:
        partner_id = call.state.partner.id
        call.outcome = kind
        call.error = kind
        call.latency_ms = elapsed_s * 1000.0
        call.state.breaker.record_failure(time.monotonic())
        counters = _dsp_metrics(partner_id)
        counters.calls[kind].inc()
        counters.circuit.set(int(call.state.breaker.state))
        log.debug("demand partner call failed", extra={"dsp": partner_id, "error": message})

    async def _settle(
        self,
        result: ImpResult,
        call: DspCall,
        bid: Bid,
        auction_id: str,
        media: str,
        deadline: float,
        final: bool = True,
    ) -> Winner | None:
        """Macros, markup (fetched from nurl when the bid carries none), trackers, notices."""
        winner = result.winner
        assert winner is not None
        self._bid_seq += 1
        our_bid_id = f"{auction_id}-{self._bid_seq}"
        macros = AuctionMacros(
            auction_id,
            winner.bid_id,
            result.imp_id,
            seat_id=winner.seat,
            ad_id=bid.adid or "",
            price_micros=result.clearing_price_micros,
        )
        adm = bid.adm or ""
        nurl = bid.nurl or ""
        if nurl:
            nurl = substitute_macros(nurl, macros)
        if not adm and nurl:
            loop = asyncio.get_running_loop()
            try:
                served = await self.client.get(
                    nurl,
                    timeout_s=max(deadline - loop.time(), 0.005),
                    public_only=not self.config.notice_private_hosts,
                )
                adm = served.body.decode("utf-8", "replace") if served.status == 200 else ""
            except UpstreamError:
                adm = ""
            except Exception:  # a DSP's URL must never cost more than its own bid
                log.exception("fetching a winner's markup failed", extra={"dsp": winner.dsp})
                adm = ""
            if not adm:
                metrics.RENDER_FAILURES.labels(media).inc()
                return None
            nurl = ""  # fetching the markup was the win notice
        adm = substitute_macros(adm, macros)
        our_nurl = ""
        if nurl and final:
            self.notices.fire(
                "win",
                nurl,
                auction_id=auction_id,
                bid_id=our_bid_id,
                dsp=winner.dsp,
                price_micros=result.clearing_price_micros,
            )
        elif nurl:
            win = self.signer.sign(
                "win",
                {
                    "auc": auction_id,
                    "bid": our_bid_id,
                    "dsp": winner.dsp,
                    "price": str(result.clearing_price_micros),
                    "nurl": nurl,
                },
            )
            our_nurl = f"{self.config.public_url}/t/win?{win}"
        dsp_burl = bid.burl or ""
        tracker = self.signer.sign(
            "imp",
            {
                "auc": auction_id,
                "bid": our_bid_id,
                "dsp": winner.dsp,
                "imp": result.imp_id,
                "crid": bid.crid or "",
                "price": str(result.clearing_price_micros),
                "rev": str(result.revenue_micros),
                "burl": substitute_macros(dsp_burl, macros) if dsp_burl else "",
            },
        )
        _dsp_metrics(winner.dsp).wins.inc()
        metrics.WON_REVENUE_MICROS.inc(result.revenue_micros / 1000)  # prices are CPM
        return Winner(
            result,
            auction_id,
            our_bid_id,
            winner.dsp,
            adm,
            media,
            f"{self.config.public_url}/t/imp?{tracker}",
            bid.crid or "",
            winner.w,
            winner.h,
            our_nurl,
        )

    def _fire_notice(
        self,
        kind: str,
        bid: Bid,
        auction_id: str,
        candidate: BidCandidate,
        price_micros: int,
        loss_reason: int,
        request: BidRequest,
    ) -> None:
        macros = AuctionMacros(
            auction_id,
            candidate.bid_id,
            candidate.imp_id,
            seat_id=candidate.seat,
            loss_reason=loss_reason,
        )
        self.notices.fire(
            kind,
            substitute_macros(bid.lurl, macros),
            auction_id=auction_id,
            bid_id=candidate.bid_id,
            dsp=candidate.dsp,
            loss_reason=loss_reason,
        )

    def _log(
        self,
        request: BidRequest,
        publisher: Publisher | None,
        features: dict[str, str],
        outcome: AuctionOutcome,
        results: list[ImpResult],
        measured_from: float,
    ) -> None:
        latency_us = int((time.perf_counter() - measured_from) * 1e6)
        if self.event_log is None:
            return
        ts = now_micros()
        first = outcome.winners[0] if outcome.winners else None
        self.event_log.emit(
            AuctionEvent(
                ts,
                outcome.auction_id,
                request.id,
                publisher_id=publisher.id if publisher else "",
                features=features,
                imp_count=len(request.imp),
                tmax_ms=request.tmax or self.config.default_tmax_ms,
                dsps_eligible=len(outcome.calls),
                dsps_called=sum(1 for c in outcome.calls if c.decision.send),
                outcome="won" if outcome.winners else "no_bid",
                winner_dsp=first.dsp if first else "",
                winner_bid_id=first.bid_id if first else "",
                winner_price_micros=first.result.winner.price_micros if first else 0,
                clearing_price_micros=first.result.clearing_price_micros if first else 0,
                latency_us=latency_us,
                shaping_model=self.shaper.model_version,
            )
        )
        won = {(w.dsp, w.result.winner.bid_id) for w in outcome.winners if w.result.winner}
        auction_id = outcome.auction_id
        rates = self.config.currency_rates
        emit = self.event_log.emit
        for call in outcome.calls:
            # Positional: BidEvent(ts, auction, dsp, decision, send_probability, score, bid,
            # bid_id, imp_id, price_micros, deal_id, latency_ms, error, won) - keywords cost
            # a lookup each, nine events an auction.
            decision = call.decision
            kind = "explored" if decision.explored else ("called" if decision.send else "filtered")
            error = call.error or ("" if call.outcome in _NOT_FAILURES else call.outcome)
            dsp = call.state.partner.id
            response = call.response
            bids = (
                [b for sb in response.seatbid or () for b in sb.bid] if response is not None else ()
            )
            if not bids:
                emit(
                    BidEvent(
                        ts, auction_id, dsp, kind, decision.send_probability, decision.score,
                        False, "", "", 0, "", call.latency_ms, error,
                    )
                )  # fmt: skip
                continue
            for bid in bids:
                price = to_micros(bid.price, response.cur, rates) or 0  # type: ignore[union-attr]
                emit(
                    BidEvent(
                        ts, auction_id, dsp, kind, decision.send_probability, decision.score,
                        True, bid.id, bid.impid, price, bid.dealid or "", call.latency_ms,
                        error, (dsp, bid.id) in won,
                    )
                )  # fmt: skip
