"""What matching reads of a request (`RequestFacts`) and of one impression (`ImpFacts`), and
the targeting rules written out plainly (`pair_eligible`): the specification the compiled
index (`openbid/campaigns/index.py`) must agree with, pair for pair.

Facts are normalised once per request, so the index compares plain strings: countries
alpha-3 upper case, regions `USA-CA`, cities `USA-CA-los angeles` (the city case-folded),
OS families lower case as `normalize_os` spells them, domains and bundles lower case,
content categories with their tier-1 parents. An impression offers slots: `banner:300x250`
(one per size it accepts), `video:1280x720` (`video:` when the player size is unknown),
`native`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from openbid.campaigns.categories import with_parent
from openbid.campaigns.model import Campaign, CampaignSet, Creative, LineItem, Targeting
from openbid.enrich.device import normalize_os

USER_TIME = "user"


class RequestFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One request as matching reads it (see the module docstring for the spellings)."""

    geo: tuple[str, ...] = ()
    """Country, country-region and country-region-city keys, those the request has."""
    device_type: str = ""
    os: str = ""
    inventory: str = ""
    publisher_id: str = ""
    site_id: str = ""
    domains: tuple[str, ...] = ()
    """The site's domain or the app's bundle (and the app's domain)."""
    content_categories: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    hour_of_week: int = 0
    """In the user's local time: `weekday * 24 + hour`."""
    now_micros: int = 0
    """The market clock when the request was seen: flights, and hour masks in a fixed zone."""
    blocked_categories: tuple[str, ...] = ()
    """`bcat` and the publisher's blocked categories: creatives in them are not eligible."""
    blocked_adomains: tuple[str, ...] = ()


class ImpFacts(msgspec.Struct, frozen=True, kw_only=True):
    slots: tuple[str, ...] = ()
    deals: tuple[str, ...] = ()
    private_auction: bool = False
    """`pmp.private_auction`: only line items targeting one of `deals` may buy."""


# Normalisation shared by the request side and the compiled catalog.


def geo_keys(country: str, region: str = "", city: str = "") -> tuple[str, ...]:
    """The keys a location matches: region codes may come bare (`CA`) or prefixed (`US-CA`,
    `USA-CA`); only their last part is kept.

    >>> geo_keys("USA", "CA", "Los Angeles")
    ('USA', 'USA-CA', 'USA-CA-los angeles')
    >>> geo_keys("DEU", "DE-BY"), geo_keys("", "CA")
    (('DEU', 'DEU-BY'), ())
    """
    country = country.strip().upper()
    if not country:
        return ()
    region = region.strip().upper().rsplit("-", 1)[-1]
    if not region:
        return (country,)
    city = city.strip().casefold()
    if not city:
        return (country, f"{country}-{region}")
    return (country, f"{country}-{region}", f"{country}-{region}-{city}")


def geo_value(value: str) -> str:
    """A targeting value (`USA`, `USA-ca`, `USA-CA-Los Angeles`) in the request's spelling."""
    parts = value.split("-", 2)
    parts[0] = parts[0].strip().upper()
    if len(parts) > 1:
        parts[1] = parts[1].strip().upper()
    if len(parts) > 2:
        parts[2] = parts[2].strip().casefold()
    return "-".join(parts)


@functools.lru_cache(maxsize=256)
def os_family(name: str) -> str:
    """An OS name as targeting compares it: `normalize_os`'s family, lower case.

    >>> os_family("iOS"), os_family("macos"), os_family("Mac OS X")
    ('ios', 'mac os x', 'mac os x')
    """
    return normalize_os(name).lower() if name else ""


def _split(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part) if text else ()


def _categories(*lists: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for values in lists:
        for value in values:
            for code in with_parent(value.strip()):
                seen[code] = None
    return tuple(seen)


def request_facts(
    features: Mapping[str, str],
    *,
    now_micros: int,
    blocked_categories: Iterable[str] = (),
    blocked_adomains: Iterable[str] = (),
) -> RequestFacts:
    """Facts from the auction's feature map (`openbid.exchange.features.auction_features`,
    or as the event log keeps it); missing features count as absent.

    >>> facts = request_facts({"country": "USA", "region": "CA", "os": "iOS",
    ...     "inventory_type": "app", "app_bundle": "com.Example.Game", "categories": "IAB9-30",
    ...     "hour": "21", "weekday": "4"}, now_micros=0, blocked_adomains=["Bad.example"])
    >>> facts.geo, facts.os, facts.domains, facts.content_categories, facts.hour_of_week
    (('USA', 'USA-CA'), 'ios', ('com.example.game',), ('IAB9-30', 'IAB9'), 117)
    >>> facts.blocked_adomains
    ('bad.example',)
    """
    get = features.get
    domains = tuple(
        dict.fromkeys(d.lower() for d in (get("domain", ""), get("app_bundle", "")) if d)
    )
    try:
        hour_of_week = int(get("weekday") or 0) * 24 + int(get("hour") or 0)
    except ValueError:
        hour_of_week = 0
    return RequestFacts(
        geo=geo_keys(get("country", ""), get("region", ""), get("city", "")),
        device_type=get("device_type", ""),
        os=os_family(get("os", "")),
        inventory=get("inventory_type", ""),
        publisher_id=get("publisher_id", ""),
        site_id=get("site_id", ""),
        domains=domains,
        content_categories=_categories(
            _split(get("categories", "")), _split(get("content_categories", ""))
        ),
        segments=_split(get("user_segments", "")),
        hour_of_week=hour_of_week % 168,
        now_micros=now_micros,
        blocked_categories=tuple(blocked_categories),
        blocked_adomains=tuple(d.lower() for d in blocked_adomains),
    )


def request_facts_from_context(
    context: Any, publisher: Any = None, *, now_micros: int
) -> RequestFacts:
    """Facts from an `AuctionContext` and the authenticated `Publisher` (its blocks join the
    request's `bcat`/`badv`), without building the feature map."""
    request = context.request
    site, app = request.site, request.app
    site_id = (site.id or "") if site is not None else ((app.id or "") if app is not None else "")
    blocked_categories = list(request.bcat or ())
    blocked_adomains = list(request.badv or ())
    publisher_id = context.publisher_id
    if publisher is not None:
        publisher_id = publisher.id
        blocked_categories += publisher.blocked_categories
        blocked_adomains += publisher.blocked_adomains
    domains = tuple(dict.fromkeys(d.lower() for d in (context.domain, context.app_bundle) if d))
    return RequestFacts(
        geo=geo_keys(context.country, context.region, context.city),
        device_type=context.device_type,
        os=os_family(context.os),
        inventory=context.inventory_type,
        publisher_id=publisher_id,
        site_id=site_id,
        domains=domains,
        content_categories=_categories(
            _split(context.categories), _split(context.content_categories)
        ),
        segments=_split(context.user_segments),
        hour_of_week=(context.weekday * 24 + context.hour) % 168,
        now_micros=now_micros,
        blocked_categories=tuple(blocked_categories),
        blocked_adomains=tuple(d.lower() for d in blocked_adomains),
    )


def imp_facts(imp: Any) -> ImpFacts:
    """The slots and deals of an OpenRTB `Imp`.

    >>> from openbid.openrtb import decode_bid_request
    >>> request = decode_bid_request(b'{"id": "r", "imp": [{"id": "1", "banner": {"format":'
    ...     b' [{"w": 300, "h": 250}, {"w": 320, "h": 50}]}, "pmp": {"private_auction": 1,'
    ...     b' "deals": [{"id": "d-7"}]}}]}')
    >>> imp_facts(request.imp[0])
    ImpFacts(slots=('banner:300x250', 'banner:320x50'), deals=('d-7',), private_auction=True)
    """
    slots: list[str] = []
    banner = imp.banner
    if banner is not None:
        if banner.w and banner.h:
            slots.append(f"banner:{banner.w}x{banner.h}")
        for size in banner.format or ():
            if size.w and size.h:
                slots.append(f"banner:{size.w}x{size.h}")
    video = imp.video
    if video is not None:
        slots.append(f"video:{video.w}x{video.h}" if video.w and video.h else "video:")
    if imp.native is not None:
        slots.append("native")
    pmp = imp.pmp
    deals: tuple[str, ...] = ()
    private = False
    if pmp is not None:
        deals = tuple(deal.id for deal in pmp.deals or ())
        private = pmp.private_auction == 1
    return ImpFacts(slots=tuple(dict.fromkeys(slots)), deals=deals, private_auction=private)


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def hour_of_week_at(now_micros: int, zone: str) -> int:
    """The hour of the week (Monday 00h = 0) at `now_micros` in an IANA zone.

    >>> hour_of_week_at(1_709_510_400_000_000, "UTC")  # 2024-03-04 00:00 UTC, a Monday
    0
    >>> hour_of_week_at(1_709_510_400_000_000, "America/New_York")  # Sunday 19:00 there
    163
    """
    moment = datetime.fromtimestamp(now_micros / 1e6, tz=UTC).astimezone(_zone(zone))
    return moment.weekday() * 24 + moment.hour


# The rules, written out: one (line item, creative) pair against one request and impression.


def _include_exclude(values: Iterable[str], include: Iterable[str], exclude: Iterable[str]) -> bool:
    values = set(values)
    included = set(include)
    if included and not values & included:
        return False
    return not values & set(exclude)


def slot_size(slot: str) -> str:
    """`banner:300x250` -> `300x250`; `native` and `video:` have none ("")."""
    return slot.partition(":")[2]


def creative_fits(creative: Creative, slot: str) -> bool:
    kind, _, size = slot.partition(":")
    if kind != creative.kind:
        return False
    if kind == "native":
        return True
    sizes = {f"{w}x{h}" for w, h in creative.sizes}
    if kind == "video" and not sizes:
        return True  # a VAST file plays in any player
    return size in sizes


def line_item_allows_slot(targeting: Targeting, slot: str) -> bool:
    """Formats and placement sizes; a native slot has no size and is only checked by format,
    a slot whose size is unknown fails a size include list."""
    kind = slot.partition(":")[0]
    if targeting.formats and kind not in targeting.formats:
        return False
    if kind == "native":
        return True
    size = slot_size(slot)
    if targeting.placement_sizes and size not in targeting.placement_sizes:
        return False
    return not (size and size in targeting.placement_sizes_exclude)


def targeting_allows(targeting: Targeting, facts: RequestFacts) -> bool:
    """The request-level dimensions of a line item's targeting."""
    t = targeting
    geo_include = [geo_value(v) for v in (*t.countries, *t.regions, *t.cities)]
    geo_exclude = [
        geo_value(v) for v in (*t.countries_exclude, *t.regions_exclude, *t.cities_exclude)
    ]
    checks = (
        (facts.geo, geo_include, geo_exclude),
        ((facts.device_type,), t.device_types, t.device_types_exclude),
        ((facts.os,), [os_family(v) for v in t.os], [os_family(v) for v in t.os_exclude]),
        ((facts.inventory,), t.inventory, ()),
        ((facts.publisher_id,), t.publishers, t.publishers_exclude),
        ((facts.site_id,), t.sites, t.sites_exclude),
        (facts.domains, t.domains, t.domains_exclude),
        (facts.content_categories, t.content_categories, t.content_categories_exclude),
        (facts.segments, t.segments, t.segments_exclude),
    )
    for values, include, exclude in checks:
        if not _include_exclude((v for v in values if v), include, exclude):
            return False
    if t.hour_mask is not None:
        if t.hours_timezone == USER_TIME:
            hour = facts.hour_of_week
        else:
            hour = hour_of_week_at(facts.now_micros, t.hours_timezone)
        if not t.hour_mask >> hour & 1:
            return False
    return True


def creative_allowed(creative: Creative, facts: RequestFacts) -> bool:
    """The request's and publisher's blocks: the ad's categories (a blocked tier-1 code
    blocks its children) and advertiser domains."""
    categories = {code for category in creative.categories for code in with_parent(category)}
    if categories & set(facts.blocked_categories):
        return False
    return not {d.lower() for d in creative.adomain} & set(facts.blocked_adomains)


def deals_allow(targeting: Targeting, imp: ImpFacts) -> bool:
    if targeting.deals:
        return bool(set(targeting.deals) & set(imp.deals))
    return not imp.private_auction


def pair_eligible(
    campaign: Campaign,
    line_item: LineItem,
    creative: Creative,
    facts: RequestFacts,
    imp: ImpFacts,
) -> bool:
    """Whether the pair may bid on this impression, by targeting, slot, deals and blocks
    (statuses, approval and flights are `serving`'s)."""
    targeting = line_item.targeting
    return (
        targeting_allows(targeting, facts)
        and deals_allow(targeting, imp)
        and creative_allowed(creative, facts)
        and any(
            creative_fits(creative, slot) and line_item_allows_slot(targeting, slot)
            for slot in imp.slots
        )
    )


def serving(
    campaign_set: CampaignSet, now_micros: int
) -> Iterator[tuple[Campaign, LineItem, list[Creative]]]:
    """The line items that can serve now or later in their flight (everything active and
    not ended, creatives approved and the advertiser's own), with their creatives."""
    advertisers = {a.id for a in campaign_set.advertisers if a.status == "active"}
    campaigns = {
        c.id: c
        for c in campaign_set.campaigns
        if c.status == "active" and c.advertiser_id in advertisers and c.end_micros > now_micros
    }
    creatives = {
        c.id: c
        for c in campaign_set.creatives
        if c.approval == "approved" and c.advertiser_id in advertisers
    }
    for line_item in campaign_set.line_items:
        campaign = campaigns.get(line_item.campaign_id)
        if campaign is None or line_item.status != "active":
            continue
        usable = [
            creative
            for creative_id in dict.fromkeys(line_item.creative_ids)
            if (creative := creatives.get(creative_id)) is not None
            and creative.advertiser_id == campaign.advertiser_id
        ]
        if usable:
            yield campaign, line_item, usable


def eligible_pairs(
    campaign_set: CampaignSet, facts: RequestFacts, imp: ImpFacts
) -> Iterator[tuple[str, str]]:
    """(line item id, creative id) of every pair that may bid on this impression now: the
    plain filter over the whole catalog that the index must agree with."""
    now = facts.now_micros
    for campaign, line_item, creatives in serving(campaign_set, now):
        if campaign.start_micros > now:
            continue
        for creative in creatives:
            if pair_eligible(campaign, line_item, creative, facts, imp):
                yield line_item.id, creative.id
