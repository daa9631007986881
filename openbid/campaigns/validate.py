"""Checks of the buy side's records, each error naming the field: a campaign whose daily
budget exceeds its total, a banner without a size, an unknown IAB category, a country that
is not ISO alpha-3 ...

`*_errors(record)` are pure and return every problem of one record; `reference_errors`
checks what records say about each other (a line item's campaign and creatives). The
catalog refuses a record with any (`InvalidRecord`); the importer reports them per row.

>>> from openbid.campaigns.model import Campaign
>>> bad = Campaign(id="c1", advertiser_id="a1", name="Spring", start_micros=0,
...                end_micros=10, total_budget_micros=500, daily_budget_micros=600,
...                goal_amount_micros=2_000_000)
>>> [str(error) for error in campaign_errors(bad)]
['daily_budget_micros: the daily budget (0.0006) exceeds the total budget (0.0005)']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import iso3166
import msgspec

from openbid.campaigns.categories import is_iab_category
from openbid.campaigns.model import (
    APPROVALS,
    CREATIVE_KINDS,
    FULL_WEEK_MASK,
    GOALS,
    INVENTORIES,
    STATUSES,
    TIERS,
    Advertiser,
    Campaign,
    Creative,
    FrequencyCap,
    LineItem,
    Targeting,
)
from openbid.enrich.device import DEVICE_TYPES
from openbid.errors import OpenbidError

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_SIZE_RE = re.compile(r"[1-9][0-9]{0,4}x[1-9][0-9]{0,4}")
_DOMAIN_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,62}\.)*[a-z0-9-]{1,63}")
MAX_LIST = 10_000
"""Values in one targeting list (allow and block lists can be long, not unbounded)."""
MIN_CAP_PERIOD_S = 60
MAX_CAP_PERIOD_S = 90 * 86_400
COUNTRIES = frozenset(country.alpha3 for country in iso3166.countries)


def units(micros: int) -> str:
    """Micros as currency units, exactly: `units(2_500_000)` is '2.5'."""
    whole, fraction = divmod(abs(micros), 1_000_000)
    text = f"{whole}.{fraction:06d}".rstrip("0").rstrip(".") if fraction else str(whole)
    return f"-{text}" if micros < 0 else text


class FieldError(msgspec.Struct, frozen=True):
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class InvalidRecord(OpenbidError, ValueError):
    """A record the catalog refuses; `errors` name each field and why."""

    def __init__(self, kind: str, record_id: str, errors: Sequence[FieldError]) -> None:
        self.kind = kind
        self.record_id = record_id
        self.errors = tuple(errors)
        listed = "; ".join(str(error) for error in self.errors)
        super().__init__(f"{kind} {record_id!r}: {listed}")


def _id_errors(field: str, value: str) -> list[FieldError]:
    if not ID_RE.fullmatch(value):
        return [
            FieldError(field, f"{value!r} is not an id (1-64 letters, digits, '.', '_', ':', '-')")
        ]
    return []


def _choice(field: str, value: str, allowed: Sequence[str]) -> list[FieldError]:
    if value not in allowed:
        return [FieldError(field, f"{value!r} is not one of {', '.join(allowed)}")]
    return []


def _url_errors(field: str, url: str, *, required: bool) -> list[FieldError]:
    if not url:
        return [FieldError(field, "required")] if required else []
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return [FieldError(field, f"{url!r} is not an http(s) URL")]
    return []


def _zone_ok(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def caps_errors(field: str, caps: Iterable[FrequencyCap]) -> list[FieldError]:
    errors = []
    for index, cap in enumerate(caps):
        where = f"{field}[{index}]"
        if cap.max_impressions < 1:
            errors.append(FieldError(f"{where}.max_impressions", "must be at least 1"))
        if not MIN_CAP_PERIOD_S <= cap.period_s <= MAX_CAP_PERIOD_S:
            errors.append(
                FieldError(
                    f"{where}.period_s",
                    f"{cap.period_s} is outside {MIN_CAP_PERIOD_S}-{MAX_CAP_PERIOD_S} seconds",
                )
            )
    return errors


def advertiser_errors(advertiser: Advertiser) -> list[FieldError]:
    errors = _id_errors("id", advertiser.id)
    if not advertiser.name.strip():
        errors.append(FieldError("name", "required"))
    if advertiser.domain and not _DOMAIN_RE.fullmatch(advertiser.domain):
        errors.append(FieldError("domain", f"{advertiser.domain!r} is not a lower-case domain"))
    errors += _choice("status", advertiser.status, STATUSES)
    return errors


def campaign_errors(campaign: Campaign) -> list[FieldError]:
    errors = _id_errors("id", campaign.id) + _id_errors("advertiser_id", campaign.advertiser_id)
    if not campaign.name.strip():
        errors.append(FieldError("name", "required"))
    if campaign.end_micros <= campaign.start_micros:
        errors.append(FieldError("end_micros", "the flight must end after it starts"))
    if campaign.total_budget_micros <= 0:
        errors.append(FieldError("total_budget_micros", "must be positive"))
    if campaign.daily_budget_micros < 0:
        errors.append(FieldError("daily_budget_micros", "must not be negative"))
    elif campaign.daily_budget_micros > campaign.total_budget_micros > 0:
        errors.append(
            FieldError(
                "daily_budget_micros",
                f"the daily budget ({units(campaign.daily_budget_micros)}) exceeds the total"
                f" budget ({units(campaign.total_budget_micros)})",
            )
        )
    errors += _choice("goal", campaign.goal, GOALS)
    if campaign.goal_amount_micros <= 0:
        errors.append(FieldError("goal_amount_micros", f"the {campaign.goal} price is required"))
    errors += _choice("tier", campaign.tier, TIERS)
    if campaign.max_bid_cpm_micros < 0 or campaign.min_bid_cpm_micros < 0:
        field = "max_bid_cpm_micros" if campaign.max_bid_cpm_micros < 0 else "min_bid_cpm_micros"
        errors.append(FieldError(field, "must not be negative"))
    elif 0 < campaign.max_bid_cpm_micros < campaign.min_bid_cpm_micros:
        errors.append(
            FieldError(
                "max_bid_cpm_micros",
                f"the bid cap ({units(campaign.max_bid_cpm_micros)}) is below the minimum bid"
                f" ({units(campaign.min_bid_cpm_micros)})",
            )
        )
    if not _zone_ok(campaign.timezone):
        errors.append(FieldError("timezone", f"{campaign.timezone!r} is not an IANA time zone"))
    errors += caps_errors("frequency_caps", campaign.frequency_caps)
    errors += _choice("status", campaign.status, STATUSES)
    return errors


def _country_errors(field: str, country: str) -> list[FieldError]:
    if country not in COUNTRIES:
        return [FieldError(field, f"{country!r} is not an ISO 3166 alpha-3 country (USA, DEU ...)")]
    return []


def _geo_value_errors(field: str, value: str, parts: int) -> list[FieldError]:
    """Regions are `USA-CA`, cities `USA-CA-Los Angeles` (a city within its region)."""
    pieces = value.split("-", parts - 1)
    if len(pieces) != parts or not all(piece.strip() for piece in pieces):
        example = "USA-CA" if parts == 2 else "USA-CA-Los Angeles"
        return [FieldError(field, f"{value!r} is not written like {example!r}")]
    return _country_errors(field, pieces[0])


def _list_errors(field: str, values: Sequence[str], check) -> list[FieldError]:  # type: ignore[no-untyped-def]
    if len(values) > MAX_LIST:
        return [FieldError(field, f"{len(values)} values, at most {MAX_LIST}")]
    errors: list[FieldError] = []
    for value in values:
        if not value:
            errors.append(FieldError(field, "an empty value"))
            continue
        errors += check(field, value)
        if len(errors) >= 5:  # a long bad list says enough in five
            break
    return errors


def _no_check(field: str, value: str) -> list[FieldError]:
    return []


def _category_errors(field: str, value: str) -> list[FieldError]:
    return [] if is_iab_category(value) else [FieldError(field, f"unknown IAB category {value!r}")]


def _device_type_errors(field: str, value: str) -> list[FieldError]:
    return _choice(field, value, DEVICE_TYPES)


def _lower_errors(field: str, value: str) -> list[FieldError]:
    if value != value.strip().lower():
        return [FieldError(field, f"{value!r} must be lower case without spaces around")]
    return []


def _size_errors(field: str, value: str) -> list[FieldError]:
    return [] if _SIZE_RE.fullmatch(value) else [FieldError(field, f"{value!r} is not WxH")]


def _segment_errors(field: str, value: str) -> list[FieldError]:
    data_id, colon, segment_id = value.partition(":")
    if not colon or not segment_id:
        return [FieldError(field, f"{value!r} is not 'data id:segment id'")]
    return []


_TARGETING_CHECKS = {
    "countries": _country_errors,
    "regions": lambda field, value: _geo_value_errors(field, value, 2),
    "cities": lambda field, value: _geo_value_errors(field, value, 3),
    "device_types": _device_type_errors,
    "os": _lower_errors,
    "inventory": lambda field, value: _choice(field, value, INVENTORIES),
    "publishers": _no_check,
    "sites": _no_check,
    "domains": _lower_errors,
    "content_categories": _category_errors,
    "formats": lambda field, value: _choice(field, value, CREATIVE_KINDS),
    "placement_sizes": _size_errors,
    "segments": _segment_errors,
    "deals": _no_check,
}


def targeting_errors(targeting: Targeting, prefix: str = "targeting.") -> list[FieldError]:
    errors: list[FieldError] = []
    for name, check in _TARGETING_CHECKS.items():
        included = getattr(targeting, name)
        errors += _list_errors(prefix + name, included, check)
        excluded = getattr(targeting, name + "_exclude", None)
        if excluded is None:
            continue
        errors += _list_errors(f"{prefix}{name}_exclude", excluded, check)
        both = sorted(set(included) & set(excluded))
        if both:
            errors.append(
                FieldError(prefix + name, f"{', '.join(both)} both included and excluded")
            )
    mask = targeting.hour_mask
    if mask is not None:
        if mask < 0 or mask > FULL_WEEK_MASK:
            errors.append(FieldError(prefix + "hour_mask", "not a 168-bit hour-of-week mask"))
        elif mask == 0:
            errors.append(FieldError(prefix + "hour_mask", "no hour of the week is left"))
    if targeting.hours_timezone != "user" and not _zone_ok(targeting.hours_timezone):
        errors.append(
            FieldError(
                prefix + "hours_timezone",
                f"{targeting.hours_timezone!r} is neither 'user' nor an IANA time zone",
            )
        )
    return errors


def line_item_errors(line_item: LineItem) -> list[FieldError]:
    errors = _id_errors("id", line_item.id) + _id_errors("campaign_id", line_item.campaign_id)
    if not line_item.creative_ids:
        errors.append(FieldError("creative_ids", "a line item needs at least one creative"))
    for creative_id in line_item.creative_ids:
        errors += _id_errors("creative_ids", creative_id)
    if len(set(line_item.creative_ids)) != len(line_item.creative_ids):
        errors.append(FieldError("creative_ids", "a creative is listed twice"))
    errors += targeting_errors(line_item.targeting)
    errors += caps_errors("frequency_caps", line_item.frequency_caps)
    for field in ("daily_budget_micros", "total_budget_micros"):
        if getattr(line_item, field) < 0:
            errors.append(FieldError(field, "must not be negative"))
    if line_item.daily_budget_micros > line_item.total_budget_micros > 0:
        errors.append(
            FieldError(
                "daily_budget_micros",
                f"the daily budget ({units(line_item.daily_budget_micros)}) exceeds the total"
                f" budget ({units(line_item.total_budget_micros)})",
            )
        )
    errors += _choice("status", line_item.status, STATUSES)
    return errors


def creative_errors(creative: Creative) -> list[FieldError]:
    errors = _id_errors("id", creative.id) + _id_errors("advertiser_id", creative.advertiser_id)
    errors += _choice("kind", creative.kind, CREATIVE_KINDS)
    errors += _url_errors("landing_url", creative.landing_url, required=True)
    for w, h in creative.sizes:
        if not (0 < w <= 10_000 and 0 < h <= 10_000):
            errors.append(FieldError("sizes", f"{w}x{h} is not a size"))
    if creative.kind == "banner":
        if not creative.sizes:
            errors.append(FieldError("sizes", "a banner creative needs at least one size"))
        if not creative.markup.strip():
            errors.append(FieldError("markup", "a banner creative needs HTML or an image URL"))
    elif creative.kind == "video":
        if not creative.markup.strip() and not creative.vast_url:
            errors.append(FieldError("markup", "a video creative needs VAST XML or a vast_url"))
        errors += _url_errors("vast_url", creative.vast_url, required=False)
        if creative.duration_s < 0:
            errors.append(FieldError("duration_s", "must not be negative"))
    elif creative.kind == "native":
        if creative.native is None:
            errors.append(FieldError("native", "a native creative needs its assets"))
        else:
            if not creative.native.title.strip():
                errors.append(FieldError("native.title", "required"))
            errors += _url_errors("native.image_url", creative.native.image_url, required=True)
            errors += _url_errors("native.icon_url", creative.native.icon_url, required=False)
        if creative.sizes:
            errors.append(FieldError("sizes", "a native creative has no size"))
    if not creative.adomain:
        errors.append(FieldError("adomain", "required: publishers block advertisers by domain"))
    errors += _list_errors("adomain", creative.adomain, _domain_errors)
    errors += _list_errors("categories", creative.categories, _category_errors)
    errors += _choice("approval", creative.approval, APPROVALS)
    return errors


def _domain_errors(field: str, value: str) -> list[FieldError]:
    if not _DOMAIN_RE.fullmatch(value):
        return [FieldError(field, f"{value!r} is not a lower-case domain")]
    return []


def line_item_reference_errors(
    line_item: LineItem,
    campaign: Campaign | None,
    creatives: dict[str, Creative | None],
) -> list[FieldError]:
    """What a line item says about others: its campaign exists, its creatives exist and
    belong to the campaign's advertiser, a deal-tier campaign's line item names deals, and
    its budgets fit within the campaign's."""
    if campaign is None:
        return [FieldError("campaign_id", f"no campaign {line_item.campaign_id!r}")]
    errors = []
    for creative_id in line_item.creative_ids:
        creative = creatives.get(creative_id)
        if creative is None:
            errors.append(FieldError("creative_ids", f"no creative {creative_id!r}"))
        elif creative.advertiser_id != campaign.advertiser_id:
            errors.append(
                FieldError(
                    "creative_ids",
                    f"creative {creative_id!r} belongs to advertiser {creative.advertiser_id!r},"
                    f" not {campaign.advertiser_id!r}",
                )
            )
    if campaign.tier == "deal" and not line_item.targeting.deals:
        errors.append(
            FieldError("targeting.deals", "a deal-tier campaign's line item must name its deals")
        )
    for field in ("daily_budget_micros", "total_budget_micros"):
        mine, theirs = getattr(line_item, field), getattr(campaign, field)
        if mine and theirs and mine > theirs:
            errors.append(
                FieldError(field, f"{units(mine)} exceeds the campaign's {units(theirs)}")
            )
    return errors
