"""The API's request and response bodies (pydantic: what FastAPI validates and publishes in
`/openapi.json`). Money is integer micros (1 USD = 1,000,000), times microseconds since the
epoch, as inside openbid; unknown fields are refused by name (a typo is an error, not a
silently ignored value). Bounds keep every value within what the catalog can store."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_MICROS = 10**15
"""A billion currency units: no budget or price is larger, and any fits a 64-bit column."""
MAX_TIME_MICROS = 2**53
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


def _storable(text: str) -> str:
    """Text every database stores: UTF-8 (no lone surrogates) without NUL characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8 text") from None
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


def text(max_length: int) -> object:
    return Annotated[str, Field(max_length=max_length), AfterValidator(_storable)]


Id = Annotated[str, Field(pattern=ID_PATTERN, examples=["spring-sale"])]
Name = text(200)
Short = text(253)
Url = text(2000)
Micros = Annotated[int, Field(ge=0, le=MAX_MICROS)]
TimeMicros = Annotated[int, Field(ge=0, le=MAX_TIME_MICROS)]
Size = tuple[Annotated[int, Field(ge=1, le=10_000)], Annotated[int, Field(ge=1, le=10_000)]]
Values = Annotated[list[text(200)], Field(max_length=10_000)]  # type: ignore[valid-type]
Status = Literal["active", "paused", "archived"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- buy side
class AdvertiserIn(Model):
    id: Id
    name: Name  # type: ignore[valid-type]
    domain: Short = ""  # type: ignore[valid-type]
    status: Status = "active"


class Advertiser(AdvertiserIn):
    pass


class AdvertiserPatch(Model):
    name: Name | None = None  # type: ignore[valid-type]
    domain: Short | None = None  # type: ignore[valid-type]
    status: Status | None = None


class FrequencyCap(Model):
    max_impressions: Annotated[int, Field(ge=0, le=10**9)]
    period_s: Annotated[int, Field(ge=0, le=10**9)]


class CampaignFields(Model):
    name: Name | None = None  # type: ignore[valid-type]
    start_micros: TimeMicros | None = None
    end_micros: TimeMicros | None = None
    total_budget_micros: Micros | None = None
    daily_budget_micros: Micros | None = None
    goal: Literal["cpm", "cpc", "cpa"] | None = None
    goal_amount_micros: Micros | None = None
    tier: Literal["guaranteed", "deal", "open"] | None = None
    max_bid_cpm_micros: Micros | None = None
    min_bid_cpm_micros: Micros | None = None
    timezone: text(64) | None = None  # type: ignore[valid-type]
    frequency_caps: Annotated[list[FrequencyCap], Field(max_length=20)] | None = None
    status: Status | None = None


class CampaignPatch(CampaignFields):
    pass


class CampaignIn(Model):
    id: Id
    advertiser_id: Id | None = Field(
        None, description="The advertiser's id; an advertiser's own users may leave it out."
    )
    name: Name  # type: ignore[valid-type]
    start_micros: TimeMicros
    end_micros: TimeMicros
    total_budget_micros: Micros
    daily_budget_micros: Micros = 0
    goal: Literal["cpm", "cpc", "cpa"] = "cpm"
    goal_amount_micros: Micros = 0
    tier: Literal["guaranteed", "deal", "open"] = "open"
    max_bid_cpm_micros: Micros = 0
    min_bid_cpm_micros: Micros = 0
    timezone: text(64) = "UTC"  # type: ignore[valid-type]
    frequency_caps: Annotated[list[FrequencyCap], Field(max_length=20)] = []
    status: Status = "active"


class Campaign(CampaignIn):
    advertiser_id: str  # type: ignore[assignment]


class Budget(Model):
    total_budget_micros: Micros
    daily_budget_micros: Micros = 0


class BudgetUse(Budget):
    spent_micros: int = Field(description="Spend so far over the flight, from the report rollups.")
    spent_today_micros: int = Field(description="Spend since midnight UTC (market time).")
    budget_use: float = Field(description="spent / total budget (0-1 and over on overspend).")


class Targeting(Model):
    countries: Values = []
    countries_exclude: Values = []
    regions: Values = []
    regions_exclude: Values = []
    cities: Values = []
    cities_exclude: Values = []
    device_types: Values = []
    device_types_exclude: Values = []
    os: Values = []
    os_exclude: Values = []
    inventory: Annotated[list[Literal["site", "app", "dooh"]], Field(max_length=3)] = []
    publishers: Values = []
    publishers_exclude: Values = []
    sites: Values = []
    sites_exclude: Values = []
    domains: Values = []
    domains_exclude: Values = []
    content_categories: Values = []
    content_categories_exclude: Values = []
    formats: Annotated[list[Literal["banner", "video", "native"]], Field(max_length=3)] = []
    placement_sizes: Values = []
    placement_sizes_exclude: Values = []
    hour_mask: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{1,42}$")] | None = Field(
        None,
        description="Hours of the week to buy in as hex (bit weekday*24+hour, Monday 0); "
        "null: every hour.",
    )
    hours_timezone: text(64) = "user"  # type: ignore[valid-type]
    segments: Values = []
    segments_exclude: Values = []
    deals: Values = []


class LineItemIn(Model):
    id: Id
    campaign_id: Id
    name: Name = ""  # type: ignore[valid-type]
    creative_ids: Annotated[list[Id], Field(max_length=100)] = []
    targeting: Targeting = Targeting()
    frequency_caps: Annotated[list[FrequencyCap], Field(max_length=20)] = []
    daily_budget_micros: Micros = 0
    total_budget_micros: Micros = 0
    status: Status = "active"


class LineItem(LineItemIn):
    pass


class LineItemPatch(Model):
    name: Name | None = None  # type: ignore[valid-type]
    creative_ids: Annotated[list[Id], Field(max_length=100)] | None = None
    targeting: Targeting | None = None
    frequency_caps: Annotated[list[FrequencyCap], Field(max_length=20)] | None = None
    daily_budget_micros: Micros | None = None
    total_budget_micros: Micros | None = None
    status: Status | None = None


class NativeAd(Model):
    title: Name  # type: ignore[valid-type]
    description: text(2000) = ""  # type: ignore[valid-type]
    image_url: Url = ""  # type: ignore[valid-type]
    image_w: Annotated[int, Field(ge=0, le=10_000)] = 0
    image_h: Annotated[int, Field(ge=0, le=10_000)] = 0
    icon_url: Url = ""  # type: ignore[valid-type]
    call_to_action: Name = ""  # type: ignore[valid-type]
    sponsored_by: Name = ""  # type: ignore[valid-type]


Approval = Literal["pending", "approved", "rejected"]


class CreativeIn(Model):
    id: Id
    advertiser_id: Id | None = None
    kind: Literal["banner", "video", "native"]
    landing_url: Url  # type: ignore[valid-type]
    name: Name = ""  # type: ignore[valid-type]
    sizes: Annotated[list[Size], Field(max_length=20)] = []
    adomain: Annotated[list[Short], Field(max_length=10)] = []  # type: ignore[valid-type]
    categories: Annotated[list[text(16)], Field(max_length=50)] = []  # type: ignore[valid-type]
    markup: text(500_000) = ""  # type: ignore[valid-type]
    vast_url: Url = ""  # type: ignore[valid-type]
    duration_s: Annotated[int, Field(ge=0, le=86_400)] = 0
    mimes: Annotated[list[text(64)], Field(max_length=20)] = []  # type: ignore[valid-type]
    native: NativeAd | None = None
    approval: Approval = Field("pending", description="Only an admin may set it.")


class Creative(CreativeIn):
    advertiser_id: str  # type: ignore[assignment]


class CreativePatch(Model):
    name: Name | None = None  # type: ignore[valid-type]
    landing_url: Url | None = None  # type: ignore[valid-type]
    sizes: Annotated[list[Size], Field(max_length=20)] | None = None
    adomain: Annotated[list[Short], Field(max_length=10)] | None = None  # type: ignore[valid-type]
    categories: Annotated[list[text(16)], Field(max_length=50)] | None = None  # type: ignore[valid-type]
    markup: text(500_000) | None = None  # type: ignore[valid-type]
    vast_url: Url | None = None  # type: ignore[valid-type]
    duration_s: Annotated[int, Field(ge=0, le=86_400)] | None = None
    mimes: Annotated[list[text(64)], Field(max_length=20)] | None = None  # type: ignore[valid-type]
    native: NativeAd | None = None
    approval: Approval | None = None


# --- sell side
class PublisherIn(Model):
    id: Id
    name: Name  # type: ignore[valid-type]
    floor_micros: Micros = 0
    blocked_categories: Annotated[list[text(16)], Field(max_length=500)] = []  # type: ignore[valid-type]
    blocked_adomains: Annotated[list[Short], Field(max_length=10_000)] = []  # type: ignore[valid-type]


class Publisher(PublisherIn):
    pass


class PublisherCreated(Publisher):
    api_key: str = Field(description="The publisher's key for /openrtb2/auction: shown once.")


class ApiKey(Model):
    publisher_id: str
    api_key: str = Field(description="Shown once: only its SHA-256 is stored.")


class PublisherPatch(Model):
    name: Name | None = None  # type: ignore[valid-type]
    floor_micros: Micros | None = None
    blocked_categories: Annotated[list[text(16)], Field(max_length=500)] | None = None  # type: ignore[valid-type]
    blocked_adomains: Annotated[list[Short], Field(max_length=10_000)] | None = None  # type: ignore[valid-type]


class SiteIn(Model):
    id: Id
    publisher_id: Id | None = None
    kind: Literal["site", "app"]
    domain: Short = Field(description="A site's domain or an app's bundle id.")  # type: ignore[valid-type]
    name: Name = ""  # type: ignore[valid-type]


class Site(SiteIn):
    publisher_id: str  # type: ignore[assignment]


class SitePatch(Model):
    kind: Literal["site", "app"] | None = None
    domain: Short | None = None  # type: ignore[valid-type]
    name: Name | None = None  # type: ignore[valid-type]


class PlacementIn(Model):
    id: Id
    publisher_id: Id | None = None
    name: Name  # type: ignore[valid-type]
    media: Literal["banner", "video", "native", "audio"] = "banner"
    sizes: Annotated[list[Size], Field(max_length=20)] = []
    floor_micros: Micros = 0
    site_domain: Short = ""  # type: ignore[valid-type]


class Placement(PlacementIn):
    publisher_id: str  # type: ignore[assignment]


class PlacementPatch(Model):
    name: Name | None = None  # type: ignore[valid-type]
    media: Literal["banner", "video", "native", "audio"] | None = None
    sizes: Annotated[list[Size], Field(max_length=20)] | None = None
    floor_micros: Micros | None = None
    site_domain: Short | None = None  # type: ignore[valid-type]


class Floor(Model):
    floor_micros: Micros


class DemandPartnerIn(Model):
    id: Id
    endpoint: Url  # type: ignore[valid-type]
    seat: text(64) = ""  # type: ignore[valid-type]
    vendor_id: Annotated[int, Field(ge=1, le=100_000)] | None = None
    timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 120
    qps_cap: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    bid_adjustment: Annotated[float, Field(gt=0, le=10)] = 1.0
    gzip: bool = False
    enabled: bool = True


class DemandPartner(DemandPartnerIn):
    pass


class DemandPartnerPatch(Model):
    endpoint: Url | None = None  # type: ignore[valid-type]
    seat: text(64) | None = None  # type: ignore[valid-type]
    vendor_id: Annotated[int, Field(ge=1, le=100_000)] | None = None
    timeout_ms: Annotated[int, Field(ge=1, le=10_000)] | None = None
    qps_cap: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    bid_adjustment: Annotated[float, Field(gt=0, le=10)] | None = None
    gzip: bool | None = None
    enabled: bool | None = None


# --- users and tokens
Role = Literal["admin", "advertiser", "publisher"]


class UserIn(Model):
    username: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
    password: Annotated[str, Field(min_length=8, max_length=1024), AfterValidator(_storable)]
    role: Role
    tenant_id: Annotated[str, Field(max_length=64)] = Field(
        "", description="The advertiser's or publisher's id; empty for an admin."
    )


class User(Model):
    id: str
    username: str
    role: Role
    tenant_id: str
    disabled: bool
    locked: bool
    created_at: str


class UserPatch(Model):
    password: (
        Annotated[str, Field(min_length=8, max_length=1024), AfterValidator(_storable)] | None
    ) = None
    disabled: bool | None = None


class Login(Model):
    username: Annotated[str, Field(max_length=64)]
    password: Annotated[str, Field(max_length=1024)]
    token_name: Name = ""  # type: ignore[valid-type]


class TokenIn(Model):
    name: Name = ""  # type: ignore[valid-type]


class Token(Model):
    id: str
    name: str
    created_at: str


class TokenCreated(Token):
    token: str = Field(description="The bearer token: shown once, only its SHA-256 is stored.")


class Me(Model):
    user_id: str
    username: str
    role: Role
    tenant_id: str


class Deleted(Model):
    deleted: str
