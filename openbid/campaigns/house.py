"""House demand: the catalog's campaigns bidding on a request, inside the exchange (as one
more bidder in its auction) or behind the bidder endpoint (`openbid/bidder/`).

`HouseDemand.bid(features, facts, offers, at, user_key, request_id)` runs, for every
impression offered:

| step | what | where |
| --- | --- | --- |
| match | the eligible (line item, creative) pairs | the compiled index (`matcher.index`, rebuilt off the hot path) |
| pace | drop campaigns pacing holds back (participation, by a hash of the request id); note the requests each could bid on | the `Pacer`'s decision per campaign, updated by `tick` |
| cap | drop line items the user has seen enough of | `FrequencyCapper`, one counter read for all |
| price | value = goal x probability (CPM as is, CPC x pCTR, CPA x pCTR x pCVR), campaign cap and floor; a request in a click / conversion A/B arm is priced by the arm's model (`arm_models`; production's when it fails) | `CandidateScorer` (one batch call per model), `value_cpm_micros` |
| bid | value x pacing multiplier, shaded in first price, never above the value, none under the floor (the impression's, or the deal's) | `Shader` |
| choose | per impression, the best pair by priority tier then bid, whose cost the campaign's budget slice can hold | `Banker.hold` (no I/O) |

Every bid holds its cost (CPM / 1000) against the worker's budget slice. The auction's
outcome comes back through `finish` (a loss frees the hold and feeds the win curves), the
billing event (our impression tracker, the bidder's `burl` or `nurl`) through `billed`,
which records the spend once per bid id (`SpendLedger`) and counts the frequency caps. A
won bid's hold lives `hold_s`; one never billed by then is freed, unless another worker
recorded its spend (its mark exists), in which case it stays spent here too (never
spending more than the budget, at the cost of under-spending that one bid).

Holds of bids without an outcome (the bidder's, at an exchange that sends no loss notice)
live `unwon_hold_s`, and a process keeps at most `max_open_holds`: past it the oldest
unwon holds are shed (checked against the spend marks at the next tick, like an expired
one). A billing event that finds no hold (expired, shed, another worker's bid) is charged
all the same (`openbid_house_unheld_spend_total`). A loss notice counts once per bid id,
and not at all for a bid whose spend was recorded (`loss_notice`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import mmh3
import numpy as np
from prometheus_client import Counter, Gauge

from openbid import clock
from openbid.campaigns.banker import Banker
from openbid.campaigns.budgets import DAY_S, SpendLedger, bid_mark_key, day_of
from openbid.campaigns.caps import FrequencyCapper
from openbid.campaigns.index import GOAL_CODES, CampaignIndex, Candidates
from openbid.campaigns.markup import creative_markup
from openbid.campaigns.matcher import CampaignMatcher
from openbid.campaigns.model import Campaign, Creative
from openbid.campaigns.pacer import Pacer
from openbid.campaigns.pacing import PacingSettings
from openbid.campaigns.scoring import HOUSE_DSP, CandidateScorer, ModelSlot, arm_model
from openbid.campaigns.targeting import ImpFacts, RequestFacts
from openbid.obs import REGISTRY
from openbid.pricing.shader import Shader
from openbid.pricing.shading import FIRST_PRICE
from openbid.pricing.value import value_cpm_micros
from openbid.stores.base import CounterStore, StoreUnavailable

log = logging.getLogger(__name__)

__all__ = ["HOUSE_BIDS", "HOUSE_DSP", "HouseBid", "HouseDemand", "HouseSettings", "ImpOffer"]

_GOAL_CPM, _GOAL_CPA = GOAL_CODES["cpm"], GOAL_CODES["cpa"]
MEDIA_CODES = {"banner": 0, "video": 1, "native": 2}
"""The shading segment of a bid: the slot's kind (one win curve each)."""

HOUSE_BIDS = Counter(
    "openbid_house_bids",
    "House demand's answers per impression offered: bid, no_match, paced (pacing held "
    "every candidate back), capped (frequency caps), unpriced (no model for the goal), "
    "below_floor, budget (no slice could hold the cost), consent (the consent signals "
    "allow no bid: `openbid.campaigns.consent`)",
    ("outcome",),
    registry=REGISTRY,
)
HOUSE_SPEND = Counter(
    "openbid_house_spend_micros",
    "House campaigns' spend recorded from billing events (once per bid id), in micros",
    ("campaign",),
    registry=REGISTRY,
)
HOUSE_SPEND_TODAY = Gauge(
    "openbid_house_spend_today_micros",
    "A house campaign's spend today (all workers: the shared ledger), at the last pacing tick",
    ("campaign",),
    registry=REGISTRY,
)
HOUSE_BUDGET_TODAY = Gauge(
    "openbid_house_budget_today_micros",
    "A house campaign's budget for today",
    ("campaign",),
    registry=REGISTRY,
)
HOUSE_HOLDS_SHED = Counter(
    "openbid_house_holds_shed",
    "Holds of house bids ended without an outcome: unwon (no win or loss within "
    "campaigns.unwon_hold_s), billing (won, not billed within campaigns.hold_s), cap (shed, "
    "oldest unwon first, to stay within campaigns.max_open_holds), full (no bid: every open "
    "hold is of a won bid)",
    ("reason",),
    registry=REGISTRY,
)
HOUSE_OPEN_HOLDS = Gauge(
    "openbid_house_open_holds",
    "House bids whose cost is held, waiting for their outcome or billing (this process)",
    registry=REGISTRY,
)
HOUSE_UNHELD_SPEND = Counter(
    "openbid_house_unheld_spend",
    "Billing events recorded for a bid with no hold in this process (expired, shed, or "
    "another worker's bid): charged to this worker's slice all the same",
    registry=REGISTRY,
)
HOUSE_PACING = Gauge(
    "openbid_house_pacing",
    "A house campaign's pacing decision at the last tick: bid_multiplier, participation",
    ("campaign", "control"),
    registry=REGISTRY,
)


@dataclass(frozen=True)
class HouseSettings:
    """How house demand runs (the `[campaigns]` section of the configuration)."""

    pacing: bool = True
    """Off: every campaign bids its full value whenever its budget slice allows."""
    shading: bool = True
    """First-price bid shading from our own wins and losses (off: bid the value)."""
    hold_s: float = 600.0
    """Real seconds a won bid's hold waits for its billing event."""
    unwon_hold_s: float = 60.0
    """Real seconds the hold of a bid without an outcome waits for it (a win, a loss); then
    it is freed, unless its spend was recorded (well below `hold_s`: an exchange that never
    sends loss notices would otherwise keep the budget held for `hold_s`)."""
    max_open_holds: int = 100_000
    """Open holds per process at most: the oldest unwon ones are shed to make room; while
    every hold is of a won bid, no new bid."""
    mark_ttl_s: float = 3 * DAY_S
    """Real seconds the once-per-bid-id marks (spend, loss) live: at least as long as the
    URLs that could repeat them (the platform derives it from `exchange.tracker_ttl_s`)."""
    tick_s: float = 1.0
    """Real seconds between pacing updates (the pacer reads market time)."""
    refit_s: float = 60.0
    """Real seconds between refits of the win curves."""
    anonymous_share: float = 0.1
    """Frequency caps without a usable user id: `openbid.campaigns.caps`."""
    vendor_id: int | None = None
    """Our TCF vendor id as a buyer: house demand uses a request as a DSP with this id
    would receive it (`openbid.campaigns.consent`); None: no bid where GDPR applies."""


@dataclass(frozen=True)
class ImpOffer:
    """One impression as house demand bids on it."""

    imp_id: str
    facts: ImpFacts
    floor_micros: int = 0
    deal_floors: Mapping[str, int] = field(default_factory=dict)
    """The floor of each deal offered (id -> micros)."""


@dataclass(slots=True)
class HouseBid:
    """One house bid: what it bids with and what its billing needs."""

    bid_id: str
    imp_id: str
    price_micros: int
    """CPM, what is bid (shaded, paced)."""
    value_micros: int
    """CPM, what the impression is worth to the campaign (goal x probability)."""
    priority: int
    """The auction's tier: 2 guaranteed, 1 deal, 0 open."""
    deal_id: str
    campaign: Campaign
    line_item_id: str
    creative: Creative
    w: int
    h: int
    media: str
    markup: str
    held_micros: int
    floor_micros: int
    """CPM, the floor the bid met (the impression's or its deal's)."""
    user_key: str | None
    p_click: float
    p_conversion: float
    click_model: str
    conversion_model: str
    segment: int


@dataclass(slots=True)
class _Hold:
    campaign_id: str
    held_micros: int
    created_s: float
    """Real (monotonic) time of the bid."""
    expires_s: float
    day: int | None
    """The budget day of the account holding it (a hold outlives its day's account)."""
    won: bool = False


class _Pacing:
    """The pacing decisions of one index's campaigns, as arrays by campaign position."""

    __slots__ = ("index", "multiplier", "participation", "room_micros", "requests")

    def __init__(self, index: CampaignIndex) -> None:
        n = len(index.campaigns)
        self.index = index
        self.multiplier = np.ones(n)
        self.participation = np.ones(n)
        self.room_micros = np.full(n, np.iinfo(np.int64).max // 2, np.int64)
        self.requests = np.zeros(n, np.int64)


@functools.lru_cache(maxsize=1024)
def _offset_at_hour(zone: str, hour: int) -> int:
    try:
        offset = datetime.fromtimestamp(hour * 3600, ZoneInfo(zone)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        return 0
    return int(offset.total_seconds()) if offset is not None else 0


def utc_offset_s(zone: str, now_s: float) -> int:
    """The zone's offset from UTC at `now_s` (0 for a zone unknown here), whose midnight
    starts a campaign's budget day."""
    return _offset_at_hour(zone, int(now_s // 3600))


def daily_budget_micros(campaign: Campaign) -> int:
    """A campaign's budget for one day: its daily budget, else its total spread evenly over
    its flight's days."""
    if campaign.daily_budget_micros:
        return campaign.daily_budget_micros
    days = max(1, math.ceil((campaign.end_micros - campaign.start_micros) / (DAY_S * 1e6)))
    return campaign.total_budget_micros // days


class HouseDemand:
    """The catalog's campaigns as one bidder (see the module docstring)."""

    def __init__(
        self,
        matcher: CampaignMatcher,
        counters: CounterStore,
        scorer: CandidateScorer | None = None,
        *,
        settings: HouseSettings | None = None,
        banker: Banker | None = None,
    ) -> None:
        self.matcher = matcher
        self.counters = counters
        self.scorer = scorer or CandidateScorer()
        self.settings = settings or HouseSettings()
        # Slices of at least $0.10 (20 impressions at a $5 CPM): a first bid finds one.
        self.banker = banker or Banker(counters, min_slice_micros=100_000)
        self.ledger = SpendLedger(counters, mark_ttl_s=self.settings.mark_ttl_s)
        self.capper = FrequencyCapper(counters, anonymous_share=self.settings.anonymous_share)
        self.pacer = Pacer()
        self._throttle = PacingSettings(mode="throttle")
        self.shader = Shader(depth=1, capacity=200_000) if self.settings.shading else None
        self._pacing = _Pacing(matcher.index)
        self._holds: dict[str, _Hold] = {}
        """Open holds by bid id, oldest first (insertion order)."""
        self._shed: list[tuple[str, _Hold]] = []
        """Holds shed for room, settled or freed at the next tick (their spend marks)."""
        self._ids = itertools.count()
        self._prefix = "h" + secrets.token_hex(6)
        self._markup: dict[tuple[str, int, int], str] = {}
        self._next_refit = 0.0
        self.status: list[dict] = []
        """Per campaign at the last tick: id, name, tier, goal, spent and budget today
        (micros), multiplier, participation (the demo's table)."""

    @property
    def live(self) -> bool:
        """Whether any pair can bid (the exchange skips house demand otherwise)."""
        return self.matcher.index.size > 0

    # ---- the hot path ------------------------------------------------------------------

    def _pacing_of(self, index: CampaignIndex) -> _Pacing:
        pacing = self._pacing
        if pacing.index is not index:  # a new index since the last tick: map by campaign id
            fresh = _Pacing(index)
            old = {c.id: i for i, c in enumerate(pacing.index.campaigns)}
            for i, campaign in enumerate(index.campaigns):
                j = old.get(campaign.id)
                if j is not None:
                    fresh.multiplier[i] = pacing.multiplier[j]
                    fresh.participation[i] = pacing.participation[j]
                    fresh.room_micros[i] = pacing.room_micros[j]
                elif self.settings.pacing:
                    fresh.participation[i] = 0.0  # until its first tick
            self._pacing = pacing = fresh
        return pacing

    async def bid(
        self,
        features: Mapping[str, str],
        facts: RequestFacts,
        offers: Sequence[ImpOffer],
        *,
        at: int,
        user_key: str | None,
        request_id: str,
        arm_models: Mapping[str, ModelSlot] | None = None,
    ) -> list[HouseBid]:
        """At most one bid per impression offered (see the module docstring). `arm_models`:
        the model slots of the request's click / conversion A/B arms by purpose (`ctr`,
        `cvr`; `Assignment.models`), which price it instead of the production models."""
        index = self.matcher.index
        if not index.size:
            return []
        request_bits = index.requestbits_of(facts)
        if not request_bits:
            HOUSE_BIDS.labels("no_match").inc(len(offers))
            return []
        found, imp_of = [], []
        for number, offer in enumerate(offers):
            bits = index.impbits_of(request_bits, offer.facts)
            if bits:
                pairs = index.candidates(bits, facts.now_micros).pairs
                if pairs.size:
                    found.append(pairs)
                    imp_of.append(np.full(pairs.size, number, np.int32))
        if not found:
            HOUSE_BIDS.labels("no_match").inc(len(offers))
            return []
        pairs = np.concatenate(found)
        imps = np.concatenate(imp_of)
        line_item = index.pair_line_item[pairs]
        campaign = index.line_item_campaign[line_item]
        pacing = self._pacing_of(index)
        pacing.requests[np.unique(campaign)] += 1
        draw = (mmh3.hash(request_id, 0x5EED, signed=False) / 2**32 + campaign * 0.6180339887) % 1
        keep = draw < pacing.participation[campaign]
        if not keep.all():
            pairs, imps, line_item, campaign = _kept(keep, pairs, imps, line_item, campaign)
            if not pairs.size:
                HOUSE_BIDS.labels("paced").inc(len(offers))
                return []
        allowed = await self.capper.allowed(Candidates(index, pairs), user_key)
        if not allowed.all():
            pairs, imps, line_item, campaign = _kept(allowed, pairs, imps, line_item, campaign)
            if not pairs.size:
                HOUSE_BIDS.labels("capped").inc(len(offers))
                return []
        return self._price_and_choose(
            index, pacing, features, offers, pairs, imps, line_item, campaign, at, user_key,
            arm_models,
        )  # fmt: skip

    def _price_and_choose(
        self,
        index: CampaignIndex,
        pacing: _Pacing,
        features: Mapping[str, str],
        offers: Sequence[ImpOffer],
        pairs: np.ndarray,
        imps: np.ndarray,
        line_item: np.ndarray,
        campaign: np.ndarray,
        at: int,
        user_key: str | None,
        arm_models: Mapping[str, ModelSlot] | None,
    ) -> list[HouseBid]:
        goal = index.goal_code[line_item]
        scorer = self.scorer
        click_model, conversion_model = scorer.models()
        arm_click = arm_conversion = None
        if arm_models:  # the request is in an A/B arm of some purpose
            arm_click = arm_model(arm_models, "ctr")
            arm_conversion = arm_model(arm_models, "cvr")
        needs_click = goal != _GOAL_CPM
        needs_conversion = goal == _GOAL_CPA
        p_click = p_conversion = None
        if needs_click.any():
            if arm_click is None:
                p_click = scorer.score("ctr", click_model, features, index, pairs)
            else:  # the model that priced (the arm's, or production's after a failure)
                p_click, click_model = scorer.score_arm(
                    "ctr", arm_click, click_model, features, index, pairs
                )
                arm_click = None
            if needs_conversion.any():
                if arm_conversion is None:
                    p_conversion = scorer.score("cvr", conversion_model, features, index, pairs)
                else:
                    p_conversion, conversion_model = scorer.score_arm(
                        "cvr", arm_conversion, conversion_model, features, index, pairs
                    )
                    arm_conversion = None
        # a model of the request's arm that priced nothing (CPM only): the bids log it all
        # the same, as they log production's
        click_model = arm_click or click_model
        conversion_model = arm_conversion or conversion_model
        priced = np.ones(pairs.size, bool)
        if p_click is None:
            priced &= ~needs_click
            p_click = np.zeros(pairs.size)
        if p_conversion is None:
            priced &= ~needs_conversion
            p_conversion = np.zeros(pairs.size)
        # A probability the model could not give (NaN: `CandidateScorer.score`) leaves that
        # candidate unpriced; the others still bid.
        unscored_click, unscored_conversion = np.isnan(p_click), np.isnan(p_conversion)
        if unscored_click.any() or unscored_conversion.any():
            priced &= ~(needs_click & unscored_click) & ~(needs_conversion & unscored_conversion)
            p_click = np.where(unscored_click, 0.0, p_click)
            p_conversion = np.where(unscored_conversion, 0.0, p_conversion)
        values = value_cpm_micros(
            goal,
            index.goal_amount_micros[line_item],
            p_click,
            p_conversion,
            max_bid_cpm_micros=index.max_bid_cpm_micros[line_item],
            min_bid_cpm_micros=index.min_bid_cpm_micros[line_item],
        )
        values = np.where(priced, values, 0)
        floors = np.fromiter((offers[i].floor_micros for i in imps.tolist()), np.int64, imps.size)
        deal_ids = [""] * pairs.size
        for position, li in enumerate(line_item.tolist()):
            deals = index.line_items[li].targeting.deals
            if deals:
                offer = offers[imps[position]]
                for deal in deals:
                    if deal in offer.deal_floors:
                        deal_ids[position] = deal
                        floors[position] = offer.deal_floors[deal]
                        break
        paced = np.rint(values * pacing.multiplier[campaign]).astype(np.int64)
        slots = [
            index.fitting_slot(p, offers[i].facts)
            for p, i in zip(pairs.tolist(), imps.tolist(), strict=True)
        ]
        segments = np.fromiter(
            (MEDIA_CODES.get(s.partition(":")[0], 0) for s in slots), np.int64, len(slots)
        )
        if self.shader is not None and at == FIRST_PRICE:
            bids = self.shader.bids(segments[:, None], paced, floors, at)
        else:
            bids = np.where((paced > 0) & (paced >= floors), paced, 0)
        bids = np.where((bids <= values) & (bids >= floors), bids, 0)
        priority = 2 - index.tier_code[line_item].astype(np.int64)
        chosen: list[HouseBid] = []
        click_version = getattr(click_model, "version", "") if click_model is not None else ""
        conversion_version = (
            getattr(conversion_model, "version", "") if conversion_model is not None else ""
        )
        for number, offer in enumerate(offers):
            mine = np.flatnonzero((imps == number) & (bids > 0))
            if not mine.size:
                outcome = "unpriced" if not priced[imps == number].any() else "below_floor"
                HOUSE_BIDS.labels(outcome if (imps == number).any() else "no_match").inc()
                continue
            order = mine[np.lexsort((-bids[mine], -priority[mine]))]
            bid = None
            for position in order.tolist():
                bid = self._hold(index, pacing, int(campaign[position]), int(bids[position]))
                if bid is None:
                    continue
                pair = int(pairs[position])
                creative = index.creatives[index.pair_creative[pair]]
                media, _, size = slots[position].partition(":")
                w, _, h = size.partition("x")
                width, height = (int(w), int(h)) if h else (0, 0)
                chosen.append(
                    HouseBid(
                        bid_id=bid,
                        imp_id=offer.imp_id,
                        price_micros=int(bids[position]),
                        value_micros=int(values[position]),
                        priority=int(priority[position]),
                        deal_id=deal_ids[position],
                        campaign=index.campaigns[campaign[position]],
                        line_item_id=index.line_items[line_item[position]].id,
                        creative=creative,
                        w=width,
                        h=height,
                        media=media,
                        markup=self._markup_of(creative, width, height),
                        held_micros=self._holds[bid].held_micros,
                        floor_micros=int(floors[position]),
                        user_key=user_key,
                        p_click=float(p_click[position]),
                        p_conversion=float(p_conversion[position]),
                        click_model=click_version,
                        conversion_model=conversion_version,
                        segment=int(segments[position]),
                    )
                )
                HOUSE_BIDS.labels("bid").inc()
                break
            else:
                HOUSE_BIDS.labels("budget").inc()
        return chosen

    def _hold(
        self, index: CampaignIndex, pacing: _Pacing, campaign: int, bid_micros: int
    ) -> str | None:
        """Holds one impression's cost against the campaign's slice; the bid id, or None."""
        cost = -(-bid_micros // 1000)
        if pacing.room_micros[campaign] < cost:
            return None
        campaign_id = index.campaigns[campaign].id
        if len(self._holds) >= self.settings.max_open_holds and not self._shed_oldest():
            HOUSE_HOLDS_SHED.labels("full").inc()
            return None
        if not self.banker.hold(campaign_id, cost):
            return None
        pacing.room_micros[campaign] -= cost
        bid_id = f"{self._prefix}{next(self._ids):x}"
        now = time.monotonic()
        self._holds[bid_id] = _Hold(
            campaign_id,
            cost,
            now,
            now + self.settings.unwon_hold_s,
            self.banker.day_of(campaign_id),
        )
        return bid_id

    def _shed_oldest(self) -> bool:
        """Makes room for one hold: the oldest unwon one leaves the open holds (its budget
        stays held until the next tick reads its spend mark); False when every one is won."""
        for bid_id, hold in self._holds.items():
            if not hold.won:
                del self._holds[bid_id]
                self._shed.append((bid_id, hold))
                HOUSE_HOLDS_SHED.labels("cap").inc()
                return True
        return False

    def _markup_of(self, creative: Creative, w: int, h: int) -> str:
        key = (creative.id, w, h)
        markup = self._markup.get(key)
        if markup is None:
            if len(self._markup) > 10_000:
                self._markup.clear()
            markup = self._markup[key] = creative_markup(creative, w, h)
        return markup

    # ---- outcomes and billing --------------------------------------------------------

    def finish(
        self, bid: HouseBid, won: bool, loss_price_micros: int = 0, at: int = FIRST_PRICE
    ) -> None:
        """The auction's outcome for a house bid: a loss frees its hold now (a win keeps
        it until billing), and first-price outcomes feed the win curves. `loss_price_micros`:
        the price that won, when known (0: censored)."""
        hold = self._holds.get(bid.bid_id)
        if hold is not None:
            if won:
                hold.won = True
                hold.expires_s = hold.created_s + self.settings.hold_s
            else:
                del self._holds[bid.bid_id]
                self.banker.release(hold.campaign_id, hold.held_micros, hold.day)
        if at == FIRST_PRICE:
            self.observe(bid.segment, bid.price_micros, won, loss_price_micros)

    def observe(self, segment: int, bid_micros: int, won: bool, loss_price_micros: int = 0) -> None:
        """One first-price outcome for the win curves (`loss_price_micros`: the price that
        won, when known; 0: censored)."""
        if self.shader is not None:
            self.shader.observe(
                np.array([[segment]]),
                np.array([bid_micros]),
                np.array([won]),
                np.array([0 if won else loss_price_micros]),
            )

    def lost(self, bid_id: str) -> None:
        """A loss notice by bid id (the bidder's `lurl`): frees the hold, unless a win was
        seen for the bid (then its billing decides)."""
        hold = self._holds.get(bid_id)
        if hold is not None and not hold.won:
            del self._holds[bid_id]
            self.banker.release(hold.campaign_id, hold.held_micros, hold.day)

    async def loss_notice(self, bid_id: str) -> str:
        """A loss notice by bid id, taken once: `counted` the first time (the hold is freed:
        `lost`); `duplicate` after; `billed` when the bid's spend was recorded (a loss after
        billing is no loss: nothing changes); `won` when this process saw the bid win;
        `unavailable` when the marks cannot be read (the hold is freed, but the caller
        should not feed the win curves with an outcome it cannot tell is the first)."""
        hold = self._holds.get(bid_id)
        if hold is not None and hold.won:
            return "won"
        try:
            (billed,) = await self.counters.aget_many([bid_mark_key(bid_id)])
            if billed:
                return "billed"
            first = await self.counters.aset_once(f"loss:bid:{bid_id}", self.settings.mark_ttl_s)
        except StoreUnavailable:
            self.lost(bid_id)
            return "unavailable"
        if not first:
            return "duplicate"
        self.lost(bid_id)
        return "counted"

    async def billed(
        self,
        bid_id: str,
        campaign_id: str,
        line_item_id: str,
        cost_micros: int,
        user_key: str | None,
    ) -> bool:
        """A billing event (our impression tracker, the bidder's `burl` or `nurl`): records
        `cost_micros` (one impression: the CPM price / 1000) once per bid id and counts the
        frequency caps. True the first time; False for a duplicate (or when the ledger
        cannot be written: the banker's hold bounds the spend either way)."""
        now_s = clock.now()
        index = self.matcher.index
        position = next((i for i, c in enumerate(index.campaigns) if c.id == campaign_id), None)
        offset = (
            utc_offset_s(index.campaigns[position].timezone, now_s) if position is not None else 0
        )
        try:
            first = await self.ledger.arecord(
                campaign_id, bid_id, cost_micros, day_of(now_s, offset)
            )
        except StoreUnavailable as exc:
            log.warning("house spend not recorded", extra={"bid_id": bid_id, "error": str(exc)})
            first = False
        hold = self._holds.pop(bid_id, None)
        if not first:
            if hold is not None:  # recorded elsewhere (or not at all): keep it spent here
                self.banker.settle(campaign_id, hold.held_micros, hold.held_micros, hold.day)
            return False
        HOUSE_SPEND.labels(campaign_id).inc(cost_micros)
        if hold is None:
            HOUSE_UNHELD_SPEND.inc()
        if hold is not None:
            self.banker.settle(
                campaign_id, hold.held_micros, min(cost_micros, hold.held_micros), hold.day
            )
            if cost_micros > hold.held_micros:
                self.banker.charge(campaign_id, cost_micros - hold.held_micros)
        else:
            self.banker.charge(campaign_id, cost_micros)
        li = index.line_item_positions.get(line_item_id)
        if li is not None and index.cap_rules[li]:
            await self.capper.record_impression(index.cap_rules[li], user_key)
        return True

    # ---- off the hot path: pacing, budgets, holds, win curves --------------------------

    async def tick(self) -> None:
        """Opens today's budget accounts, updates every campaign's pacing from the shared
        ledger, frees expired holds and refits the win curves when due."""
        index = self.matcher.index
        now_s = clock.now()
        campaigns = index.campaigns
        pacing = self._pacing_of(index)
        days: dict[int, list[int]] = {}
        budgets = []
        for position, campaign in enumerate(campaigns):
            offset = utc_offset_s(campaign.timezone, now_s)
            day = day_of(now_s, offset)
            days.setdefault(day, []).append(position)
            budget = daily_budget_micros(campaign)
            budgets.append(budget)
            self.banker.open(campaign.id, day, budget)  # no I/O: a closed day waits below
            self.pacer.set_line_item(
                campaign.id,
                budget,
                utc_offset_s=offset,
                settings=self._throttle if campaign.tier == "guaranteed" else None,
            )
        if self.banker.closed:  # a day changed: yesterday's unspent slices go back
            await self.banker.agive_back_closed()
        spent: dict[str, int] = {}
        for day, positions in days.items():
            ids = [campaigns[p].id for p in positions]
            try:
                values = await self.ledger.aspent_many(ids, day)
            except StoreUnavailable as exc:
                log.warning("house pacing: spend unreadable", extra={"error": str(exc)})
                return
            spent.update(zip(ids, values, strict=True))
        requests = {c.id: int(pacing.requests[i]) for i, c in enumerate(campaigns)}
        pacing.requests[:] = 0
        decisions = self.pacer.tick(spent, requests, now_s=now_s) if campaigns else {}
        status = []
        for position, campaign in enumerate(campaigns):
            decision = decisions.get(campaign.id)
            if self.settings.pacing and decision is not None:
                pacing.multiplier[position] = decision.bid_multiplier
                pacing.participation[position] = decision.participation
                pacing.room_micros[position] = max(decision.ceiling_micros - spent[campaign.id], 0)
            HOUSE_SPEND_TODAY.labels(campaign.id).set(spent[campaign.id])
            HOUSE_BUDGET_TODAY.labels(campaign.id).set(budgets[position])
            HOUSE_PACING.labels(campaign.id, "bid_multiplier").set(pacing.multiplier[position])
            HOUSE_PACING.labels(campaign.id, "participation").set(pacing.participation[position])
            status.append(
                {
                    "id": campaign.id,
                    "name": campaign.name,
                    "tier": campaign.tier,
                    "goal": campaign.goal,
                    "spent_micros": spent[campaign.id],
                    "budget_micros": budgets[position],
                    "multiplier": float(pacing.multiplier[position]),
                    "participation": float(pacing.participation[position]),
                }
            )
        self.status = status
        await self._expire_holds()
        if self.shader is not None and time.monotonic() >= self._next_refit:
            self._next_refit = time.monotonic() + self.settings.refit_s
            await asyncio.to_thread(self.shader.refit)

    async def _expire_holds(self) -> None:
        """Ends the holds whose time is up, and those shed for room: kept spent where the
        bid's spend mark exists (billed at another worker), freed otherwise."""
        now = time.monotonic()
        unwon_s = self.settings.unwon_hold_s
        expired = []
        for bid_id, hold in self._holds.items():
            if hold.created_s + unwon_s > now:
                break  # every later hold is younger, and none expires before unwon_hold_s
            if hold.expires_s <= now:
                expired.append((bid_id, hold))
        shed, self._shed = self._shed, []
        HOUSE_OPEN_HOLDS.set(len(self._holds))
        ending = expired + shed
        if not ending:
            return
        try:
            marks = await self.counters.aget_many([bid_mark_key(bid_id) for bid_id, _ in ending])
        except StoreUnavailable:
            self._shed = shed + self._shed
            return  # try again at the next tick
        for position, ((bid_id, hold), mark) in enumerate(zip(ending, marks, strict=True)):
            if position < len(expired):
                if self._holds.pop(bid_id, None) is None:
                    continue  # its outcome came while the marks were read
                HOUSE_HOLDS_SHED.labels("billing" if hold.won else "unwon").inc()
            if mark:  # billed at another worker: spent there, and kept spent here
                self.banker.settle(hold.campaign_id, hold.held_micros, hold.held_micros, hold.day)
            else:
                self.banker.release(hold.campaign_id, hold.held_micros, hold.day)

    async def start(self) -> None:
        """The first index, accounts, slices and pacing decisions, before serving."""
        await self.matcher.arefresh()
        await self.tick()
        await self.banker.atop_up()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Keeps the index, pacing and budget slices current until cancelled (or `stop`)."""
        stop = stop or asyncio.Event()
        keeper = asyncio.create_task(self.banker.keep(stop))
        try:
            while not stop.is_set():
                await self.matcher.arefresh()
                try:
                    await self.tick()
                except Exception:  # pacing must never stop: the last decisions stand
                    log.exception("house pacing tick failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.tick_s)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper


def _kept(mask: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """The candidates' parallel columns with only the rows `mask` keeps."""
    return tuple(column[mask] for column in columns)
