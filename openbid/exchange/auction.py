"""Auction rules as pure functions: the rules of each impression (floors, deals, blocks,
sizes) from the request and the publisher, and the auction of the bids against them.

Ranking: priority tier first (guaranteed deals > other deals > open auction; a house
campaign's own tier counts too), then the
adjusted price, then a seeded hash of the bid (never arrival order). First price (`at=1`)
charges the bid; second price (`at=2`) charges the best competing price in the winner's
tier plus one increment, never above the winner's bid and never below the floor that
applied to it. Every refused or beaten bid carries an OpenRTB loss reason code.

Money is integer micros (1 USD = 1,000,000) in the exchange currency throughout.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import mmh3
import msgspec

from openbid.config import ExchangeConfig
from openbid.domain import Publisher
from openbid.openrtb import BidRequest, InvalidBidRequest
from openbid.openrtb.request import Imp

MICROS = 1_000_000


class Tier(enum.IntEnum):
    """Priority tiers: a higher tier always beats a lower one, whatever the prices."""

    OPEN = 0
    DEAL = 1
    GUARANTEED = 2


class LossReason(enum.IntEnum):
    """The OpenRTB 2.6 loss reason codes we assign (`${AUCTION_LOSS}`)."""

    WON = 0
    INTERNAL_ERROR = 1
    INVALID_BID_RESPONSE = 3
    INVALID_DEAL_ID = 4
    INVALID_ADVERTISER_DOMAIN = 6
    MISSING_MARKUP = 7
    BELOW_AUCTION_FLOOR = 100
    BELOW_DEAL_FLOOR = 101
    LOST_TO_HIGHER_BID = 102
    LOST_TO_PMP_DEAL = 103
    BUYER_SEAT_BLOCKED = 104
    SIZE_NOT_ALLOWED = 203
    ADVERTISER_EXCLUSIONS = 205
    CATEGORY_EXCLUSIONS = 209
    NOT_ALLOWED_IN_PMP_DEAL = 213


class Deal(msgspec.Struct, frozen=True):
    """A deal offered on an impression (from `imp.pmp.deals`)."""

    id: str
    floor_micros: int = 0
    guaranteed: bool = False
    seats: frozenset[str] = frozenset()
    """Buyer seats allowed to bid on the deal (`wseat`); empty means any."""


class ImpRules(msgspec.Struct, frozen=True):
    """What an impression accepts: floor, deals, blocks, sizes, the auction's shape."""

    imp_id: str
    floor_micros: int = 0
    deals: Mapping[str, Deal] = {}
    private_auction: bool = False
    blocked_categories: frozenset[str] = frozenset()
    blocked_adomains: frozenset[str] = frozenset()
    sizes: frozenset[tuple[int, int]] = frozenset()
    """Allowed (w, h); empty means any size (video, native, or a flexible slot)."""
    auction_type: int = 1
    """1: first price, 2: second price plus increment."""
    increment_micros: int = 10_000


class BidCandidate(msgspec.Struct, frozen=True):
    """One bid as received, its price already converted to the exchange currency."""

    dsp: str
    bid_id: str
    imp_id: str
    price_micros: int
    seat: str = ""
    deal_id: str = ""
    adjustment: float = 1.0
    """The demand partner's bid adjustment: ranking and clearing use price * adjustment."""
    adomain: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    w: int = 0
    h: int = 0
    has_markup: bool = True
    priority: int = -1
    """A tier of its own (house demand: a guaranteed or direct-deal campaign competes at
    that tier); -1: the tier follows from the deal, as for any DSP's bid. The higher of
    the two applies."""


class Loss(msgspec.Struct, frozen=True):
    bid: BidCandidate
    reason: LossReason


class ImpResult(msgspec.Struct, frozen=True):
    """The outcome for one impression: the winner (if any), what it pays, the losers."""

    imp_id: str
    winner: BidCandidate | None
    tier: Tier
    clearing_price_micros: int
    """What the winner pays, in its own (unadjusted) terms: the `${AUCTION_PRICE}`."""
    revenue_micros: int
    """The clearing price after the bid adjustment: what the publisher earns."""
    floor_micros: int
    losses: tuple[Loss, ...]


def _adjusted(bid: BidCandidate) -> int:
    # The epsilon keeps `ceil(floor / adjustment) * adjustment` (what a partner is told to
    # bid, see `with_floors`) from flooring one micro under the floor.
    return int(bid.price_micros * bid.adjustment + 1e-6)


def _tie_key(bid: BidCandidate, seed: int) -> int:
    return mmh3.hash(f"{bid.dsp}\x1f{bid.bid_id}", seed, signed=False)


def _eligibility(bid: BidCandidate, rules: ImpRules) -> tuple[LossReason | None, Tier, int]:
    """Why a bid cannot compete (or None), its tier, and the floor that applies to it."""
    if not bid.has_markup:
        return LossReason.MISSING_MARKUP, Tier.OPEN, rules.floor_micros
    if bid.price_micros <= 0:
        return LossReason.INVALID_BID_RESPONSE, Tier.OPEN, rules.floor_micros
    if rules.blocked_adomains and any(d in rules.blocked_adomains for d in bid.adomain):
        return LossReason.ADVERTISER_EXCLUSIONS, Tier.OPEN, rules.floor_micros
    if rules.blocked_categories and any(c in rules.blocked_categories for c in bid.categories):
        return LossReason.CATEGORY_EXCLUSIONS, Tier.OPEN, rules.floor_micros
    if rules.sizes and bid.w and bid.h and (bid.w, bid.h) not in rules.sizes:
        return LossReason.SIZE_NOT_ALLOWED, Tier.OPEN, rules.floor_micros
    if bid.deal_id:
        deal = rules.deals.get(bid.deal_id)
        if deal is None:
            return LossReason.INVALID_DEAL_ID, Tier.DEAL, rules.floor_micros
        if deal.seats and bid.seat not in deal.seats:
            return LossReason.BUYER_SEAT_BLOCKED, Tier.DEAL, deal.floor_micros
        tier = Tier.GUARANTEED if deal.guaranteed else Tier.DEAL
        tier = max(tier, Tier(bid.priority)) if bid.priority >= 0 else tier
        if _adjusted(bid) < deal.floor_micros:
            return LossReason.BELOW_DEAL_FLOOR, tier, deal.floor_micros
        return None, tier, deal.floor_micros
    if rules.private_auction:
        return LossReason.NOT_ALLOWED_IN_PMP_DEAL, Tier.OPEN, rules.floor_micros
    tier = Tier(bid.priority) if bid.priority > 0 else Tier.OPEN
    if _adjusted(bid) < rules.floor_micros:
        return LossReason.BELOW_AUCTION_FLOOR, tier, rules.floor_micros
    return None, tier, rules.floor_micros


def run_imp_auction(rules: ImpRules, bids: Iterable[BidCandidate], seed: int = 0) -> ImpResult:
    """Runs the auction of one impression.

    >>> rules = ImpRules("1", floor_micros=500_000, auction_type=2)
    >>> bids = [BidCandidate("dsp-a", "a1", "1", 2_000_000),
    ...         BidCandidate("dsp-b", "b1", "1", 1_500_000),
    ...         BidCandidate("dsp-c", "c1", "1", 400_000)]
    >>> result = run_imp_auction(rules, bids)
    >>> result.winner.dsp, result.clearing_price_micros
    ('dsp-a', 1510000)
    >>> sorted((loss.bid.dsp, int(loss.reason)) for loss in result.losses)
    [('dsp-b', 102), ('dsp-c', 100)]
    """
    losses: list[Loss] = []
    ranked: list[tuple[int, int, int, int, BidCandidate]] = []
    for bid in bids:
        if bid.imp_id != rules.imp_id:
            losses.append(Loss(bid, LossReason.INVALID_BID_RESPONSE))
            continue
        reason, tier, floor = _eligibility(bid, rules)
        if reason is not None:
            losses.append(Loss(bid, reason))
            continue
        ranked.append((int(tier), _adjusted(bid), _tie_key(bid, seed), floor, bid))
    if not ranked:
        return ImpResult(rules.imp_id, None, Tier.OPEN, 0, 0, rules.floor_micros, tuple(losses))
    ranked.sort(key=lambda entry: (entry[0], entry[1], entry[2]), reverse=True)
    tier, adjusted_price, _, floor, winner = ranked[0]
    if rules.auction_type == 2:
        rivals = [entry[1] for entry in ranked[1:] if entry[0] == tier]
        clearing_adjusted = max(rivals[0] + rules.increment_micros if rivals else floor, floor)
        clearing_adjusted = min(clearing_adjusted, adjusted_price)
    else:
        clearing_adjusted = adjusted_price
    # Back to the winner's own terms, never above what it bid.
    # Rounded up (less float noise), so payment * adjustment never falls under the clearing.
    clearing = min(winner.price_micros, math.ceil(clearing_adjusted / winner.adjustment - 1e-6))
    for entry in ranked[1:]:
        reason = (
            LossReason.LOST_TO_PMP_DEAL
            if tier > Tier.OPEN and entry[0] == Tier.OPEN
            else LossReason.LOST_TO_HIGHER_BID
        )
        losses.append(Loss(entry[4], reason))
    return ImpResult(
        rules.imp_id, winner, Tier(tier), clearing, clearing_adjusted, floor, tuple(losses)
    )


def run_auction(
    rules: Sequence[ImpRules], bids: Iterable[BidCandidate], seed: int = 0
) -> list[ImpResult]:
    """Runs every impression of a request; bids for unknown impressions are refused.

    A demand partner may win several impressions of one request, once each.
    """
    by_imp: dict[str, list[BidCandidate]] = {r.imp_id: [] for r in rules}
    orphans: list[Loss] = []
    for bid in bids:
        slot = by_imp.get(bid.imp_id)
        if slot is None:
            orphans.append(Loss(bid, LossReason.INVALID_BID_RESPONSE))
        else:
            slot.append(bid)
    results = [run_imp_auction(r, by_imp[r.imp_id], seed) for r in rules]
    if orphans and results:
        first = results[0]
        results[0] = msgspec.structs.replace(first, losses=first.losses + tuple(orphans))
    return results


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
