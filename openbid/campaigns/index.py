"""The campaign index: every servable (line item, creative) pair, compiled into bitsets
inverted by targeting dimension, so one request is matched against tens of thousands of
line items with a few dozen big-integer ANDs and ORs.

Each pair has a bit position. For each dimension the index keeps the pairs that do not
target it (`any`), for each value the pairs that include it, and for each excluded value the
pairs that do not exclude it (`keep`, so that matching only ever ANDs positive integers).
A request's bits are `active & AND over dimensions (any | OR include[v]) & AND keep[v]`.
The rules it must agree with are written out plainly in `openbid/campaigns/targeting.py`
(`pair_eligible`); a property test holds the two together.

An index is immutable and compiled off the hot path (`compile_index`); the matcher swaps
one reference to publish a new one (`openbid/campaigns/matcher.py`).
"""

from __future__ import annotations

import copy
import operator
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from openbid.campaigns.bitsets import Dimension, DimensionBuilder, bit_positions, bits_of
from openbid.campaigns.caps import CapRule, cap_rules
from openbid.campaigns.categories import with_parent
from openbid.campaigns.model import (
    Campaign,
    CampaignSet,
    Creative,
    LineItem,
    Targeting,
)
from openbid.campaigns.targeting import (
    USER_TIME,
    ImpFacts,
    RequestFacts,
    geo_value,
    hour_of_week_at,
    line_item_allows_slot,
    os_family,
    serving,
)

GOAL_CODES = {"cpm": 0, "cpc": 1, "cpa": 2}
TIER_CODES = {"guaranteed": 0, "deal": 1, "open": 2}
_NEVER = 2**63 - 1
_QUARTER_HOUR_MICROS = 900_000_000


def _slot_keys(line_item: LineItem, creative: Creative) -> tuple[list[str], list[str]]:
    """The impression slots a pair fits (include) and, for a video creative that plays in any
    player, the player sizes its line item excludes."""
    targeting = line_item.targeting
    kind = creative.kind
    if kind == "native":
        return (["native"] if line_item_allows_slot(targeting, "native") else []), []
    sizes = [f"{w}x{h}" for w, h in creative.sizes]
    if kind == "video" and not sizes:
        if targeting.formats and "video" not in targeting.formats:
            return [], []
        if targeting.placement_sizes:
            keys = [f"video:{size}" for size in targeting.placement_sizes]
            return [k for k in keys if line_item_allows_slot(targeting, k)], []
        excluded = [f"video:{size}" for size in targeting.placement_sizes_exclude]
        return ["video:*"], excluded
    keys = [f"{kind}:{size}" for size in sizes]
    return [k for k in keys if line_item_allows_slot(targeting, k)], []


def _creative_categories(creative: Creative) -> list[str]:
    return [code for category in creative.categories for code in with_parent(category)]


# Request-level dimensions: (name, the targeting's include and exclude values, the facts
# field). Geo is one dimension over countries, regions and cities.
_REQUEST_DIMENSIONS: tuple[
    tuple[str, Callable[[Targeting], tuple], Callable[[Targeting], tuple], str], ...
] = (
    (
        "geo",
        lambda t: tuple(geo_value(v) for v in (*t.countries, *t.regions, *t.cities)),
        lambda t: tuple(
            geo_value(v) for v in (*t.countries_exclude, *t.regions_exclude, *t.cities_exclude)
        ),
        "geo",
    ),
    ("device_type", lambda t: t.device_types, lambda t: t.device_types_exclude, "device_type"),
    (
        "os",
        lambda t: tuple(os_family(v) for v in t.os),
        lambda t: tuple(os_family(v) for v in t.os_exclude),
        "os",
    ),
    ("inventory", lambda t: t.inventory, lambda t: (), "inventory"),
    ("publisher", lambda t: t.publishers, lambda t: t.publishers_exclude, "publisher_id"),
    ("site", lambda t: t.sites, lambda t: t.sites_exclude, "site_id"),
    ("domain", lambda t: t.domains, lambda t: t.domains_exclude, "domains"),
    (
        "content_category",
        lambda t: t.content_categories,
        lambda t: t.content_categories_exclude,
        "content_categories",
    ),
    ("segment", lambda t: t.segments, lambda t: t.segments_exclude, "segments"),
)


class Candidates:
    """The pairs one impression matched, as positions into the index's arrays: gather what
    pricing needs in one numpy call each (`index.goal_amount_micros[candidates.line_item]`)."""

    __slots__ = ("index", "pairs")

    def __init__(self, index: CampaignIndex, pairs: np.ndarray) -> None:
        self.index = index
        self.pairs = pairs

    def __len__(self) -> int:
        return int(self.pairs.size)

    @property
    def line_item(self) -> np.ndarray:
        """Index of each pair's line item (into `index.line_items` and per-line-item arrays)."""
        return self.index.pair_line_item[self.pairs]

    @property
    def creative(self) -> np.ndarray:
        return self.index.pair_creative[self.pairs]

    def records(self) -> Iterator[tuple[LineItem, Creative]]:
        index = self.index
        for pair in self.pairs.tolist():
            yield (
                index.line_items[index.pair_line_item[pair]],
                index.creatives[index.pair_creative[pair]],
            )

    def ids(self) -> list[tuple[str, str]]:
        """(line item id, creative id) of each pair, for tests and logs."""
        return [(line_item.id, creative.id) for line_item, creative in self.records()]


class CampaignIndex:
    """What `compile_index` builds; see the module docstring. Arrays per line item (indexed
    like `line_items`): `line_item_campaign`, `goal_code` (`GOAL_CODES`),
    `goal_amount_micros`, `tier_code` (`TIER_CODES`), `max_bid_cpm_micros`,
    `min_bid_cpm_micros`, `start_micros`, `end_micros`; `cap_rules` holds each line item's
    frequency caps (its campaign's first). Arrays per pair: `pair_line_item`,
    `pair_creative`, and `pair_slots` (the impression slots each fits)."""

    def __init__(self) -> None:
        self.revision = 0
        self.built_at_micros = 0
        self.size = 0
        self.campaigns: tuple[Campaign, ...] = ()
        self.line_items: tuple[LineItem, ...] = ()
        self.creatives: tuple[Creative, ...] = ()
        self.line_item_positions: dict[str, int] = {}
        self.pair_line_item = np.empty(0, np.int32)
        self.pair_creative = np.empty(0, np.int32)
        self.pair_slots: tuple[frozenset[str], ...] = ()
        self.line_item_campaign = np.empty(0, np.int32)
        self.goal_code = np.empty(0, np.int8)
        self.goal_amount_micros = np.empty(0, np.int64)
        self.tier_code = np.empty(0, np.int8)
        self.max_bid_cpm_micros = np.empty(0, np.int64)
        self.min_bid_cpm_micros = np.empty(0, np.int64)
        self.start_micros = np.empty(0, np.int64)
        self.end_micros = np.empty(0, np.int64)
        self.cap_rules: tuple[tuple[CapRule, ...], ...] = ()
        self.valid_until_micros = _NEVER
        """Before it, every pair in `_live` is in flight and no other is."""
        self.paused: frozenset[str] = frozenset()
        self._all = 0
        self._live = 0
        self._active = 0
        self._unpaused = 0
        self._pair_ranges: list[tuple[int, int]] = []
        self._multi: list[tuple[Dimension, Callable[[RequestFacts], Any]]] = []
        self._single: list[tuple[Dimension, Callable[[RequestFacts], Any]]] = []
        self._hours: list[tuple[Dimension, str]] = []
        self._blocks: list[tuple[Dimension, Callable[[RequestFacts], Any]]] = []
        self._slot: Dimension | None = None
        self._deal: Dimension | None = None
        self._zone_hours: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return self.size

    def bitset_bytes(self) -> int:
        """Memory held by the bitsets (what grows with pairs times targeted values)."""
        dimensions = [d for d, _ in self._multi + self._single + self._hours + self._blocks]
        dimensions += [d for d in (self._slot, self._deal) if d is not None]
        total = 0
        for dimension in dimensions:
            total += sys.getsizeof(dimension.any_bits)
            for table in (dimension.include or {}, dimension.keep):
                total += sum(sys.getsizeof(bits) for bits in table.values())
        return total

    def with_paused(self, line_item_ids: Iterable[str]) -> CampaignIndex:
        """A copy (sharing every table) in which these line items match nothing: budgets
        spent, pacing holding back. Unknown ids are ignored."""
        paused = frozenset(line_item_ids)
        clone = copy.copy(self)
        clone.paused = paused
        positions = [
            pair
            for line_item_id in paused
            if (index := self.line_item_positions.get(line_item_id)) is not None
            for pair in range(*self._pair_ranges[index])
        ]
        paused_bits = bits_of(positions, self.size) if positions else 0
        clone._active = self._live & ~paused_bits
        clone._unpaused = self._all & ~paused_bits
        clone._zone_hours = {}
        return clone

    def _zone_hour(self, zone: str, now_micros: int) -> int:
        quarter = now_micros // _QUARTER_HOUR_MICROS
        cached = self._zone_hours.get(zone)
        if cached is not None and cached[0] == quarter:
            return cached[1]
        hour = hour_of_week_at(now_micros, zone)
        self._zone_hours[zone] = (quarter, hour)
        return hour

    def requestbits_of(self, facts: RequestFacts) -> int:
        """The pairs a request allows before its impressions are looked at (reuse it for
        every impression of a request)."""
        if facts.now_micros < self.valid_until_micros:
            bits = self._active
        else:  # a flight started or ended since the build: flights are checked on candidates
            bits = self._unpaused
        for dimension, get in self._multi:
            values = get(facts)
            include = dimension.include
            if include is not None:
                matched = dimension.any_bits
                for value in values:
                    found = include.get(value)
                    if found is not None:
                        matched |= found
                bits &= matched
            keep = dimension.keep
            if keep:
                for value in values:
                    kept = keep.get(value)
                    if kept is not None:
                        bits &= kept
            if not bits:
                return 0
        for dimension, get in self._single:
            value = get(facts)
            include = dimension.include
            if include is not None:
                found = include.get(value)
                bits &= dimension.any_bits if found is None else dimension.any_bits | found
            kept = dimension.keep.get(value)
            if kept is not None:
                bits &= kept
            if not bits:
                return 0
        for dimension, zone in self._hours:
            hour = (
                facts.hour_of_week if zone == USER_TIME else self._zone_hour(zone, facts.now_micros)
            )
            found = dimension.include.get(hour)  # type: ignore[union-attr]
            bits &= dimension.any_bits if found is None else dimension.any_bits | found
            if not bits:
                return 0
        for dimension, get in self._blocks:
            for value in get(facts):
                kept = dimension.keep.get(value)
                if kept is not None:
                    bits &= kept
        return bits

    def impbits_of(self, request_bits: int, imp: ImpFacts) -> int:
        """The pairs of `request_bits` this impression allows (its slots and deals)."""
        bits = request_bits
        if not bits:
            return 0
        slot = self._slot
        if slot is None:
            return 0
        matched = 0
        include = slot.include or {}
        for value in imp.slots:
            found = include.get(value)
            if found is not None:
                matched |= found
            if value.startswith("video:"):
                found = include.get("video:*")
                if found is not None:
                    matched |= found
        bits &= matched
        for value in imp.slots:
            kept = slot.keep.get(value)
            if kept is not None:
                bits &= kept
        deal = self._deal
        if deal is None:
            return 0 if imp.private_auction else bits
        matched = 0 if imp.private_auction else deal.any_bits
        for value in imp.deals:
            found = deal.include.get(value)  # type: ignore[union-attr]
            if found is not None:
                matched |= found
        return bits & matched

    def matchbits_of(self, facts: RequestFacts, imp: ImpFacts) -> int:
        return self.impbits_of(self.requestbits_of(facts), imp)

    def candidates(self, bits: int, now_micros: int) -> Candidates:
        pairs = bit_positions(bits)
        if now_micros >= self.valid_until_micros and pairs.size:
            line_item = self.pair_line_item[pairs]
            in_flight = (self.start_micros[line_item] <= now_micros) & (
                now_micros < self.end_micros[line_item]
            )
            pairs = pairs[in_flight]
        return Candidates(self, pairs)

    def match(self, facts: RequestFacts, imp: ImpFacts) -> Candidates:
        """The (line item, creative) pairs that may bid on this impression."""
        return self.candidates(self.matchbits_of(facts, imp), facts.now_micros)

    def fitting_slot(self, pair: int, imp: ImpFacts) -> str:
        """The first of the impression's slots the pair fits (`banner:300x250`): the size to
        bid with. "" when none (the pair did not match this impression)."""
        slots = self.pair_slots[pair]
        for slot in imp.slots:
            if slot in slots or (slot.startswith("video:") and "video:*" in slots):
                return slot
        return ""


def compile_index(campaign_set: CampaignSet, now_micros: int) -> CampaignIndex:
    """Compiles the servable pairs of `campaign_set` (see `serving`); takes about a second
    for 10,000 line items, so run it off the event loop."""
    index = CampaignIndex()
    index.revision = campaign_set.revision
    index.built_at_micros = now_micros
    campaigns: dict[str, int] = {}
    creatives: dict[str, int] = {}
    campaign_list: list[Campaign] = []
    creative_list: list[Creative] = []
    line_items: list[LineItem] = []
    pair_line_item: list[int] = []
    pair_creative: list[int] = []
    pair_slots: list[frozenset[str]] = []
    pair_ranges: list[tuple[int, int]] = []
    line_item_campaign: list[int] = []
    slot_builder = DimensionBuilder("slot")
    for campaign, line_item, usable in serving(campaign_set, now_micros):
        first = len(pair_line_item)
        for creative in usable:
            include, exclude = _slot_keys(line_item, creative)
            if not include:
                continue
            position = creatives.setdefault(creative.id, len(creative_list))
            if position == len(creative_list):
                creative_list.append(creative)
            slot_builder.add([len(pair_line_item)], include, exclude)
            pair_line_item.append(len(line_items))
            pair_creative.append(position)
            pair_slots.append(frozenset(include))
        if len(pair_line_item) == first:
            continue
        campaign_position = campaigns.setdefault(campaign.id, len(campaign_list))
        if campaign_position == len(campaign_list):
            campaign_list.append(campaign)
        line_item_campaign.append(campaign_position)
        pair_ranges.append((first, len(pair_line_item)))
        line_items.append(line_item)

    size = len(pair_line_item)
    all_bits = (1 << size) - 1
    index.size = size
    index.campaigns = tuple(campaign_list)
    index.creatives = tuple(creative_list)
    index.line_items = tuple(line_items)
    index.line_item_positions = {li.id: i for i, li in enumerate(line_items)}
    index.pair_line_item = np.asarray(pair_line_item, np.int32)
    index.pair_creative = np.asarray(pair_creative, np.int32)
    index.pair_slots = tuple(pair_slots)
    index.line_item_campaign = np.asarray(line_item_campaign, np.int32)
    owner = [campaign_list[c] for c in line_item_campaign]
    index.goal_code = np.asarray([GOAL_CODES[c.goal] for c in owner], np.int8)
    index.goal_amount_micros = np.asarray([c.goal_amount_micros for c in owner], np.int64)
    index.tier_code = np.asarray([TIER_CODES[c.tier] for c in owner], np.int8)
    index.max_bid_cpm_micros = np.asarray([c.max_bid_cpm_micros for c in owner], np.int64)
    index.min_bid_cpm_micros = np.asarray([c.min_bid_cpm_micros for c in owner], np.int64)
    index.start_micros = np.asarray([c.start_micros for c in owner], np.int64)
    index.end_micros = np.asarray([c.end_micros for c in owner], np.int64)
    index.cap_rules = tuple(cap_rules(c, li) for c, li in zip(owner, line_items, strict=True))
    index._pair_ranges = pair_ranges

    live: list[int] = []
    boundaries = [_NEVER]
    for campaign, (first, last) in zip(owner, pair_ranges, strict=True):
        if campaign.start_micros <= now_micros:
            live.extend(range(first, last))
            boundaries.append(campaign.end_micros)
        else:
            boundaries.append(campaign.start_micros)
    index.valid_until_micros = min(boundaries)
    index._all = index._unpaused = all_bits
    index._live = index._active = bits_of(live, size)

    builders = {name: DimensionBuilder(name) for name, *_ in _REQUEST_DIMENSIONS}
    hour_builders: dict[str, DimensionBuilder] = {}
    deal_builder = DimensionBuilder("deal")
    category_blocks = DimensionBuilder("ad_category")
    adomain_blocks = DimensionBuilder("adomain")
    for line_item, (first, last) in zip(line_items, pair_ranges, strict=True):
        positions = range(first, last)
        targeting = line_item.targeting
        for name, include, exclude, _ in _REQUEST_DIMENSIONS:
            builders[name].add(positions, include(targeting), exclude(targeting))
        deal_builder.add(positions, targeting.deals, ())
        if targeting.hour_mask is not None:
            zone = targeting.hours_timezone
            # -1 never matches: a mask without hours (refused by validation) buys nothing.
            hours = [h for h in range(168) if targeting.hour_mask >> h & 1] or [-1]
            hour_builders.setdefault(zone, DimensionBuilder(f"hours@{zone}")).add(
                positions, hours, ()
            )
        for pair in positions:
            creative = creative_list[pair_creative[pair]]
            category_blocks.add([pair], (), _creative_categories(creative))
            adomain_blocks.add([pair], (), creative.adomain)

    for name, _, _, field in _REQUEST_DIMENSIONS:
        dimension = builders[name].build(size, all_bits)
        if dimension is None:
            continue
        get = operator.attrgetter(field)
        multi = field in ("geo", "domains", "content_categories", "segments")
        (index._multi if multi else index._single).append((dimension, get))
    for zone, builder in hour_builders.items():
        # Pairs whose hour mask reads another clock are untargeted on this one.
        targeted = {p for positions in builder.included.values() for p in positions}
        builder.untargeted = [p for p in range(size) if p not in targeted]
        dimension = builder.build(size, all_bits)
        if dimension is not None:
            index._hours.append((dimension, zone))
    for builder, field in (
        (category_blocks, "blocked_categories"),
        (adomain_blocks, "blocked_adomains"),
    ):
        dimension = builder.build(size, all_bits)
        if dimension is not None:
            index._blocks.append((dimension, operator.attrgetter(field)))
    index._slot = slot_builder.build(size, all_bits)
    index._deal = deal_builder.build(size, all_bits)
    # The most selective dimensions first: a request that fails early costs less.
    index._multi.sort(key=lambda entry: entry[0].name != "geo")
    return index
