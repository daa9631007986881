"""The auction's stages that decide without I/O, over one `AuctionState` (Prebid Server's
`hooks/hookstage` is the model: small steps with a documented contract).

`Exchange.auction()` runs them in this order; the I/O stages live beside them
(`fanout.py`: fan out and collect, `settle.py`: settle), each over the same state:

| stage | reads | writes | effects |
| --- | --- | --- | --- |
| `prepare` | request, publisher | context, features, rules | raises `InvalidBidRequest` (a floor's currency) |
| `select` | the registry's partners | returns those whose breaker lets a call go | counts `circuit_open` |
| `assign_arm` | the user id (else the request id), the A/B router | returns the auction's arms (`openbid.experiments.arms`): which shaper decides, which click / conversion models price house bids, the label logged | none |
| `shape` | the selected, the shaper's decisions on them (`Shaper.decide_async`, awaited before) | calls (one `DspCall` each, with its decision) | none |
| `gate` | calls, consent, the time left | per call: the outcome of a call not made, or its timeout and redaction | takes a half-open breaker's probe; counts calls not made |
| `FanOut.send` | calls that passed the gate, rules | outgoing, calls' `pending` | sends the requests; the auction then waits until every call settles or its deadline |
| `FanOut.collect` | calls' `pending` | outcome, response, status, latency | breakers; tells the shaper |
| `house_bid` | request, context, features, rules, the auction's arms | house_bids | house demand's bids (`openbid.campaigns.house`: match, pace, cap, price, shade, hold; priced by the click / conversion arm's model when the auction is in one), run beside the fan-out; skipped while no campaign can serve |
| `decide` | calls' responses, house bids, rules | results, bids | none: `run_auction` |
| `Settler.settle` | results, bids | winners | notices, markup from `nurl` (when final) |
| `house_finish` | house bids, results | | frees the holds of house bids that lost; outcomes feed the win curves |
| `log` | all of it | | one auction event (with its A/B arms), one bid event per partner and per house bid (with the pricing models' versions), onto the log's buffer |

Each stage is a plain function (or a method of an object built once per exchange) that
allocates only what it produces: the auction path is measured (`bench/exchange.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from openbid.campaigns.consent import house_inputs
from openbid.campaigns.house import HOUSE_BIDS, HOUSE_DSP, HouseDemand, ImpOffer
from openbid.campaigns.scoring import ModelSlot
from openbid.campaigns.targeting import imp_facts, request_facts_from_context
from openbid.config import ExchangeConfig
from openbid.demand import DemandState
from openbid.enrich.context import build_auction_context
from openbid.enrich.device import UserAgentParser
from openbid.events import AuctionEvent, BidEvent, EventLog, now_micros
from openbid.exchange.auction import (
    MICROS,
    BidCandidate,
    ImpResult,
    build_imp_rules,
    run_auction,
    to_micros,
)
from openbid.exchange.features import auction_features
from openbid.exchange.metrics import dsp_metrics
from openbid.exchange.state import SENDING, AuctionState, DspCall
from openbid.openrtb.response import Bid
from openbid.privacy.consent import redaction_for
from openbid.shaping.base import Shaper, ShapingDecision

log_errors = logging.getLogger(__name__)
_NOT_FAILURES = frozenset({"bid", "no_bid", "filtered"})  # call outcomes logged with no error


def prepare(
    state: AuctionState,
    config: ExchangeConfig,
    *,
    geo_reader: object | None = None,
    ua_parser: UserAgentParser | None = None,
    gpc_header: str | None = None,
    extra_floor_micros: int = 0,
) -> None:
    """The request's context (device, geo, consent), its raw features and the rules of
    each impression. Raises `InvalidBidRequest` for a floor in a currency we cannot convert."""
    request = state.request
    context = build_auction_context(
        request, geo_reader=geo_reader, ua_parser=ua_parser, gpc_header=gpc_header
    )
    state.context = context
    state.features = auction_features(request, context, state.publisher)
    state.rules = build_imp_rules(request, state.publisher, config, extra_floor_micros)


def select(partners: Sequence[DemandState], now: float) -> list[DemandState]:
    """The partners a call could go to now (`now`: `time.monotonic()`): those whose circuit
    breaker is closed, or open past its cooldown. Looks only; `gate` takes the probe."""
    eligible: list[DemandState] = []
    for partner in partners:
        if partner.breaker.available(now):
            eligible.append(partner)
        else:
            dsp_metrics(partner.partner.id).calls["circuit_open"].inc()
    return eligible


class ArmAssignment(Protocol):
    """An auction's A/B arms (`openbid.experiments.arms.Assignment`)."""

    label: str
    """What the auction event logs (`ab_arm`): `purpose=arm`, comma-separated."""
    shaper: Shaper | None
    """The shaping arm's shaper; None: the exchange's own."""
    models: Mapping[str, ModelSlot] | None
    """The click / conversion arms' model slots by purpose (`ctr`, `cvr`) that price house
    bids; empty or None: the production models."""


class ArmRouter(Protocol):
    """Assigns requests to A/B arms (`openbid.experiments.arms.ArmRouter`)."""

    def assign(self, key: str) -> ArmAssignment: ...


class AuctionObserver(Protocol):
    """Sees every auction once it is decided (`openbid.monitoring.live.LiveCalibration`):
    quick, never raises."""

    def observe(self, state: AuctionState, arm: str, shaping_model: str) -> None: ...


class _NoArms:
    label = ""
    shaper = None
    models = None


NO_ARMS: ArmAssignment = _NoArms()


def assign_arm(state: AuctionState, router: ArmRouter | None) -> ArmAssignment:
    """The auction's A/B arms: a stable hash of the user id, or of the request id when there
    is none (`router.assign`: a hash and a compare, nothing allocated); `NO_ARMS` without
    a router."""
    if router is None:
        return NO_ARMS
    request = state.request
    user = request.user
    return router.assign((user.id if user is not None else None) or request.id)


def shape(
    state: AuctionState, eligible: Sequence[DemandState], decisions: Sequence[ShapingDecision]
) -> None:
    """One `DspCall` per selected partner, with the shaper's decision (call it or not)."""
    state.calls = [DspCall(s, d) for s, d in zip(eligible, decisions, strict=True)]


def gate(state: AuctionState, now: float, budget_s: float) -> int:
    """Decides which calls leave, in this order: the shaper's word (`filtered`), the
    partner's QPS cap (`qps_capped`), consent (`consent_blocked`), the time left
    (`no_time` under 1 ms) and last the breaker (`circuit_open`), so that only a call that
    leaves takes a half-open breaker's one probe. A call that goes gets its timeout (the
    partner's `timeout_ms`, cut to `budget_s`) and its redaction. Returns how many go."""
    assert state.context is not None
    consent = state.context.consent
    going = 0
    for call in state.calls:
        partner_state = call.state
        partner = partner_state.partner
        if not call.decision.send:
            dsp_metrics(partner.id).calls["filtered"].inc()
            continue
        limiter = partner_state.limiter
        if limiter is not None and not limiter.allow(now):
            outcome = "qps_capped"
        else:
            redaction = redaction_for(consent, partner.vendor_id)
            timeout_s = min(partner.timeout_ms / 1000.0, budget_s)
            if redaction.block:
                outcome = "consent_blocked"
            elif timeout_s <= 0.001:
                outcome = "no_time"
            elif not partner_state.breaker.allow(now):
                outcome = "circuit_open"
            else:
                call.outcome = SENDING
                call.timeout_s = timeout_s
                call.redaction = redaction
                going += 1
                continue
        call.outcome = outcome
        dsp_metrics(partner.id).calls[outcome].inc()
    return going


async def house_bid(
    state: AuctionState,
    house: HouseDemand,
    vendor_id: int | None,
    arm_models: Mapping[str, ModelSlot] | None = None,
) -> None:
    """House demand's bids on the request's impressions, under their auction rules (floors,
    deals); frequency caps count the user only where consent allows (`vendor_id`: ours).
    `arm_models`: the auction's click / conversion arms' models (`ArmAssignment.models`)."""
    context = state.context
    assert context is not None
    request = state.request
    offers = [
        ImpOffer(
            rule.imp_id,
            imp_facts(imp),
            rule.floor_micros,
            {deal.id: deal.floor_micros for deal in rule.deals.values()},
        )
        for imp, rule in zip(request.imp, state.rules, strict=True)
    ]
    try:
        facts = request_facts_from_context(context, state.publisher, now_micros=now_micros())
        inputs = house_inputs(request, context.consent, facts, state.features, vendor_id)
        if inputs is None:  # consent: no more than a DSP with our vendor id would get
            HOUSE_BIDS.labels("consent").inc(len(offers))
            return
        state.house_bids = await house.bid(
            inputs.features,
            inputs.facts,
            offers,
            at=state.rules[0].auction_type if state.rules else 1,
            user_key=inputs.user_key,
            request_id=request.id,
            arm_models=arm_models,
        )
    except Exception:  # house demand must never fail an auction: the DSPs' bids go on
        log_errors.exception("house demand failed; the auction goes on without it")


def decide(state: AuctionState, rates: dict[str, float], seed: int) -> None:
    """Runs the auction of every impression on the bids that came back (prices converted
    with `rates`; a bid in a currency without a rate is dropped) and house demand's bids,
    and keeps each bid by (dsp, bid id) for its notices."""
    candidates: list[BidCandidate] = []
    bids = state.bids
    for house in state.house_bids:
        creative = house.creative
        adomain = creative.adomain or (house.campaign.advertiser_id,)
        candidates.append(
            BidCandidate(
                HOUSE_DSP,
                house.bid_id,
                house.imp_id,
                house.price_micros,
                seat=HOUSE_DSP,
                deal_id=house.deal_id,
                adomain=tuple(adomain),
                categories=tuple(creative.categories),
                w=house.w,
                h=house.h,
                priority=house.priority,
            )
        )
        bids[(HOUSE_DSP, house.bid_id)] = (
            None,
            Bid(
                id=house.bid_id,
                impid=house.imp_id,
                price=house.price_micros / MICROS,
                adm=house.markup,
                adomain=list(adomain),
                cat=list(creative.categories) or None,
                crid=creative.id,
                cid=house.campaign.id,
                dealid=house.deal_id or None,
                w=house.w or None,
                h=house.h or None,
            ),
        )
    for call in state.calls:
        response = call.response
        if response is None:
            continue
        partner = call.state.partner
        for seatbid in response.seatbid or ():
            for bid in seatbid.bid:
                price = to_micros(bid.price, response.cur, rates)
                if price is None:
                    continue
                candidate = BidCandidate(
                    partner.id,
                    bid.id,
                    bid.impid,
                    price,
                    seat=seatbid.seat or partner.seat,
                    deal_id=bid.dealid or "",
                    adjustment=partner.bid_adjustment,
                    adomain=tuple(bid.adomain or ()),
                    categories=tuple(bid.cat or ()),
                    w=bid.w or 0,
                    h=bid.h or 0,
                    has_markup=bool(bid.adm or bid.nurl),
                )
                candidates.append(candidate)
                bids[(candidate.dsp, candidate.bid_id)] = (call, bid)
    if candidates:
        state.results = run_auction(state.rules, candidates, seed=seed)


def house_finish(state: AuctionState, house: HouseDemand) -> None:
    """Each house bid's outcome: won (its hold waits for the billing event) or lost (its
    hold is freed); first-price outcomes, with the price that won, feed the win curves."""
    results: dict[str, ImpResult] = {result.imp_id: result for result in state.results}
    auction_types = {rule.imp_id: rule.auction_type for rule in state.rules}
    for bid in state.house_bids:
        result = results.get(bid.imp_id)
        winner = result.winner if result is not None else None
        ours = winner is not None and winner.dsp == HOUSE_DSP and winner.bid_id == bid.bid_id
        loss_price = result.clearing_price_micros if result is not None and not ours else 0
        house.finish(bid, ours, loss_price, at=auction_types.get(bid.imp_id, 1))


def log(
    state: AuctionState,
    event_log: EventLog,
    rates: dict[str, float],
    *,
    tmax_ms: int,
    shaping_model: str,
    ab_arm: str = "",
) -> None:
    """One `auction` event (features, outcome, latency) and one `bid` event per partner
    offered to the shaper (called, filtered or explored; each bid, or none) onto the log's
    buffer. `rates` convert bid prices; `tmax_ms` is the request's, or the default;
    `ab_arm` the auction's A/B arms (`ArmAssignment.label`)."""
    latency_us = int((time.perf_counter() - state.measured_from) * 1e6)
    ts = now_micros()
    request = state.request
    publisher = state.publisher
    calls = state.calls
    winners = state.winners
    first = winners[0] if winners else None
    first_bid = first.result.winner if first else None
    auction_id = state.auction_id
    event_log.emit(
        AuctionEvent(
            ts,
            auction_id,
            request.id,
            publisher_id=publisher.id if publisher else "",
            features=state.features,
            imp_count=len(request.imp),
            tmax_ms=tmax_ms,
            dsps_eligible=len(calls),
            dsps_called=sum(1 for c in calls if c.decision.send),
            outcome="won" if winners else "no_bid",
            winner_dsp=first.dsp if first else "",
            winner_bid_id=first.bid_id if first else "",
            winner_price_micros=first_bid.price_micros if first_bid else 0,
            clearing_price_micros=first.result.clearing_price_micros if first else 0,
            latency_us=latency_us,
            shaping_model=shaping_model,
            ab_arm=ab_arm,
        )
    )
    won = {(w.dsp, w.result.winner.bid_id) for w in winners if w.result.winner}
    emit = event_log.emit
    for house in state.house_bids:
        emit(
            BidEvent(
                ts, auction_id, HOUSE_DSP, "called", 1.0, -1.0, True, house.bid_id,
                house.imp_id, house.price_micros, house.deal_id, 0.0, "",
                (HOUSE_DSP, house.bid_id) in won, house.campaign.id, house.line_item_id,
                house.creative.id, house.value_micros, house.p_click, house.p_conversion,
                house.click_model, house.conversion_model,
            )
        )  # fmt: skip
    for call in calls:
        # Positional: BidEvent(ts, auction, dsp, decision, send_probability, score, bid,
        # bid_id, imp_id, price_micros, deal_id, latency_ms, error, won) - keywords cost
        # a lookup each, nine events an auction.
        decision = call.decision
        kind = "explored" if decision.explored else ("called" if decision.send else "filtered")
        error = call.error or ("" if call.outcome in _NOT_FAILURES else call.outcome)
        dsp = call.state.partner.id
        response = call.response
        bids = [b for sb in response.seatbid or () for b in sb.bid] if response is not None else ()
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
