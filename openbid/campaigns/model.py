"""The buy side's records: advertisers, campaigns, line items, creatives, their targeting and
frequency caps, as plain immutable msgspec Structs (like `openbid/domain.py`).

Every store returns these, so pacing, pricing, matching and the bidder depend on them and
never on a storage library. Money is integer micros (1 USD = 1,000,000), times integer
microseconds since the epoch (UTC). Ids are the owner's own (external) ids: importing a
record again with the same id updates it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Goal = Literal["cpm", "cpc", "cpa"]
"""What the advertiser pays for: a thousand impressions, a click, an action (conversion)."""
Tier = Literal["guaranteed", "deal", "open"]
"""Priority: guaranteed (contracted delivery) before deals before the open auction."""
Status = Literal["active", "paused", "archived"]
Approval = Literal["pending", "approved", "rejected"]
CreativeKind = Literal["banner", "video", "native"]
Inventory = Literal["site", "app", "dooh"]

GOALS: tuple[Goal, ...] = ("cpm", "cpc", "cpa")
TIERS: tuple[Tier, ...] = ("guaranteed", "deal", "open")
STATUSES: tuple[Status, ...] = ("active", "paused", "archived")
APPROVALS: tuple[Approval, ...] = ("pending", "approved", "rejected")
CREATIVE_KINDS: tuple[CreativeKind, ...] = ("banner", "video", "native")
INVENTORIES: tuple[Inventory, ...] = ("site", "app", "dooh")

HOURS_PER_WEEK = 168
FULL_WEEK_MASK = (1 << HOURS_PER_WEEK) - 1
"""Hour-of-week masks (RTBkit's filter): bit `weekday * 24 + hour`, Monday 00h is bit 0."""


class FrequencyCap(msgspec.Struct, frozen=True):
    """At most `max_impressions` per user within `period_s` of the first one (the window
    starts at that user's first impression, as a counter created with a TTL)."""

    max_impressions: int
    period_s: int


class Advertiser(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    domain: str = ""
    """The advertiser's landing domain: the default `adomain` of its creatives."""
    status: Status = "active"


class Campaign(msgspec.Struct, frozen=True, kw_only=True):
    """A budget, a flight and a goal; its line items say where and with what it buys."""

    id: str
    advertiser_id: str
    name: str
    start_micros: int
    end_micros: int
    """The flight: [start, end), microseconds since the epoch."""
    total_budget_micros: int
    daily_budget_micros: int = 0
    """0: no daily limit (pacing spreads the total over the flight)."""
    goal: Goal = "cpm"
    goal_amount_micros: int = 0
    """CPM: the price of a thousand impressions; CPC: of a click; CPA: of an action."""
    tier: Tier = "open"
    max_bid_cpm_micros: int = 0
    """Bid cap (CPM) whatever pricing says; 0: none."""
    min_bid_cpm_micros: int = 0
    """Bid floor of the campaign itself (CPM): no bid below it."""
    timezone: str = "UTC"
    """IANA zone whose midnight starts a budget day."""
    frequency_caps: tuple[FrequencyCap, ...] = ()
    """Caps across all the campaign's line items."""
    status: Status = "active"


class Targeting(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where a line item may buy. An empty include list means any value; a request whose
    value is in an exclude list is never bought. Dimensions combine with AND.

    Geo is one dimension over three levels: a request is included when its country
    (`USA`), region (`USA-CA`) or city (`USA-CA-Los Angeles`) is in any of the three include
    lists, and excluded when any of them is in an exclude list. Content categories match
    their IAB tier-2 children (`IAB17` takes in `IAB17-3`).
    """

    countries: tuple[str, ...] = ()
    countries_exclude: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    regions_exclude: tuple[str, ...] = ()
    cities: tuple[str, ...] = ()
    cities_exclude: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()
    """`phone`, `tablet`, `desktop`, `ctv`, ... (`openbid.enrich.device.DEVICE_TYPES`)."""
    device_types_exclude: tuple[str, ...] = ()
    os: tuple[str, ...] = ()
    """OS families, lower case as `normalize_os` spells them (`ios`, `android`, `mac os x`)."""
    os_exclude: tuple[str, ...] = ()
    inventory: tuple[Inventory, ...] = ()
    publishers: tuple[str, ...] = ()
    publishers_exclude: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    """Site or app ids (`site.id`, `app.id`)."""
    sites_exclude: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    """Allow list of site domains and app bundles."""
    domains_exclude: tuple[str, ...] = ()
    """Block list of site domains and app bundles."""
    content_categories: tuple[str, ...] = ()
    """IAB categories of the site or app and of its content."""
    content_categories_exclude: tuple[str, ...] = ()
    formats: tuple[CreativeKind, ...] = ()
    placement_sizes: tuple[str, ...] = ()
    """`WxH` of banner slots and video players."""
    placement_sizes_exclude: tuple[str, ...] = ()
    hour_mask: int | None = None
    """Hours of the week to buy in (bit `weekday * 24 + hour`, Monday 0); None: all."""
    hours_timezone: str = "user"
    """Whose clock `hour_mask` reads: `user` (the user's local time, from the request's
    geo) or an IANA zone (`UTC`, `America/New_York`)."""
    segments: tuple[str, ...] = ()
    """Audience segments as `data.id:segment.id` (only present with consent to
    personalised ads)."""
    segments_exclude: tuple[str, ...] = ()
    deals: tuple[str, ...] = ()
    """Deal ids: with any, the line item buys only impressions offering one of them."""


ANY_TARGETING = Targeting()


class LineItem(msgspec.Struct, frozen=True, kw_only=True):
    """Targeting, creatives and caps under a campaign; budgets default to the campaign's."""

    id: str
    campaign_id: str
    name: str = ""
    creative_ids: tuple[str, ...] = ()
    targeting: Targeting = ANY_TARGETING
    frequency_caps: tuple[FrequencyCap, ...] = ()
    daily_budget_micros: int = 0
    """0: shares the campaign's daily budget."""
    total_budget_micros: int = 0
    """0: shares the campaign's total budget."""
    status: Status = "active"


class NativeAd(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The assets of a native creative (Native 1.2 response assets)."""

    title: str
    description: str = ""
    image_url: str = ""
    image_w: int = 0
    image_h: int = 0
    icon_url: str = ""
    call_to_action: str = ""
    sponsored_by: str = ""


class Creative(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    advertiser_id: str
    kind: CreativeKind
    landing_url: str
    name: str = ""
    sizes: tuple[tuple[int, int], ...] = ()
    """Banner: the sizes it renders at (one at least). Video: player sizes it is made for
    (none: any player). Native: none."""
    adomain: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    """IAB categories of the ad itself (what publishers block with `bcat`)."""
    markup: str = ""
    """Banner: HTML, or an image URL. Video: inline VAST XML."""
    vast_url: str = ""
    """Video: a VAST tag URL, instead of inline markup."""
    duration_s: int = 0
    mimes: tuple[str, ...] = ()
    native: NativeAd | None = None
    approval: Approval = "pending"


class CampaignSet(msgspec.Struct, frozen=True, kw_only=True):
    """Everything of the buy side at one catalog revision: what the index compiles, what an
    export writes and an import reads."""

    advertisers: tuple[Advertiser, ...] = ()
    campaigns: tuple[Campaign, ...] = ()
    line_items: tuple[LineItem, ...] = ()
    creatives: tuple[Creative, ...] = ()
    revision: int = 0
