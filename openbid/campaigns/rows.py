"""The buy side's tables (advertisers, campaigns, line items and their creatives, creatives,
the revision) and the conversions between their rows and the records of
`openbid.campaigns.model`. JSON columns hold what msgspec makes of the structs; the hour
mask (168 bits) is stored as hex text, which every JSON reader keeps exact."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from openbid.campaigns.model import (
    Advertiser,
    Campaign,
    Creative,
    FrequencyCap,
    LineItem,
    NativeAd,
    Targeting,
)
from openbid.stores.sqlbase import Base

REVISION_NAME = "campaigns"


class AdvertiserRow(Base):
    __tablename__ = "advertisers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    domain: Mapped[str] = mapped_column(String(253), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")


class CampaignRow(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    advertiser_id: Mapped[str] = mapped_column(ForeignKey("advertisers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    start_micros: Mapped[int] = mapped_column(BigInteger)
    end_micros: Mapped[int] = mapped_column(BigInteger)
    total_budget_micros: Mapped[int] = mapped_column(BigInteger)
    daily_budget_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    goal: Mapped[str] = mapped_column(String(8))
    goal_amount_micros: Mapped[int] = mapped_column(BigInteger)
    tier: Mapped[str] = mapped_column(String(16))
    max_bid_cpm_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    min_bid_cpm_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    frequency_caps: Mapped[list] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="active")


class LineItemRow(Base):
    __tablename__ = "line_items"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    targeting: Mapped[dict] = mapped_column(JSON, default=dict)
    frequency_caps: Mapped[list] = mapped_column(JSON, default=list)
    daily_budget_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    total_budget_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default="active")


class CreativeRow(Base):
    __tablename__ = "creatives"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    advertiser_id: Mapped[str] = mapped_column(ForeignKey("advertisers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16))
    landing_url: Mapped[str] = mapped_column(String(2000))
    sizes: Mapped[list] = mapped_column(JSON, default=list)
    adomain: Mapped[list] = mapped_column(JSON, default=list)
    categories: Mapped[list] = mapped_column(JSON, default=list)
    markup: Mapped[str] = mapped_column(Text, default="")
    vast_url: Mapped[str] = mapped_column(String(2000), default="")
    duration_s: Mapped[int] = mapped_column(Integer, default=0)
    mimes: Mapped[list] = mapped_column(JSON, default=list)
    native: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    approval: Mapped[str] = mapped_column(String(16), default="pending")


class LineItemCreativeRow(Base):
    __tablename__ = "line_item_creatives"

    line_item_id: Mapped[str] = mapped_column(
        ForeignKey("line_items.id", ondelete="CASCADE"), primary_key=True
    )
    creative_id: Mapped[str] = mapped_column(
        ForeignKey("creatives.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)


class CatalogRevisionRow(Base):
    __tablename__ = "catalog_revisions"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


def _caps_json(caps: Iterable[FrequencyCap]) -> list:
    return [[cap.max_impressions, cap.period_s] for cap in caps]


def _caps(doc: list | None) -> tuple[FrequencyCap, ...]:
    return tuple(FrequencyCap(int(m), int(p)) for m, p in doc or ())


def targeting_to_json(targeting: Targeting) -> dict[str, Any]:
    doc = msgspec.to_builtins(targeting)
    if targeting.hour_mask is not None:
        doc["hour_mask"] = format(targeting.hour_mask, "x")
    return doc


def targeting_from_json(doc: dict[str, Any] | None) -> Targeting:
    doc = dict(doc or {})
    if isinstance(doc.get("hour_mask"), str):
        doc["hour_mask"] = int(doc["hour_mask"], 16)
    return msgspec.convert(doc, Targeting)


def advertiser_record(row: AdvertiserRow) -> Advertiser:
    return Advertiser(id=row.id, name=row.name, domain=row.domain, status=row.status)  # type: ignore[arg-type]


def advertiser_row(record: Advertiser) -> AdvertiserRow:
    return AdvertiserRow(**msgspec.structs.asdict(record))


def campaign_record(row: CampaignRow) -> Campaign:
    return Campaign(
        id=row.id,
        advertiser_id=row.advertiser_id,
        name=row.name,
        start_micros=row.start_micros,
        end_micros=row.end_micros,
        total_budget_micros=row.total_budget_micros,
        daily_budget_micros=row.daily_budget_micros,
        goal=row.goal,  # type: ignore[arg-type]
        goal_amount_micros=row.goal_amount_micros,
        tier=row.tier,  # type: ignore[arg-type]
        max_bid_cpm_micros=row.max_bid_cpm_micros,
        min_bid_cpm_micros=row.min_bid_cpm_micros,
        timezone=row.timezone,
        frequency_caps=_caps(row.frequency_caps),
        status=row.status,  # type: ignore[arg-type]
    )


def campaign_row(record: Campaign) -> CampaignRow:
    fields = msgspec.structs.asdict(record)
    fields["frequency_caps"] = _caps_json(record.frequency_caps)
    return CampaignRow(**fields)


def line_item_record(row: LineItemRow, creative_ids: tuple[str, ...]) -> LineItem:
    return LineItem(
        id=row.id,
        campaign_id=row.campaign_id,
        name=row.name,
        creative_ids=creative_ids,
        targeting=targeting_from_json(row.targeting),
        frequency_caps=_caps(row.frequency_caps),
        daily_budget_micros=row.daily_budget_micros,
        total_budget_micros=row.total_budget_micros,
        status=row.status,  # type: ignore[arg-type]
    )


def line_item_row(record: LineItem) -> LineItemRow:
    return LineItemRow(
        id=record.id,
        campaign_id=record.campaign_id,
        name=record.name,
        targeting=targeting_to_json(record.targeting),
        frequency_caps=_caps_json(record.frequency_caps),
        daily_budget_micros=record.daily_budget_micros,
        total_budget_micros=record.total_budget_micros,
        status=record.status,
    )


def creative_record(row: CreativeRow) -> Creative:
    return Creative(
        id=row.id,
        advertiser_id=row.advertiser_id,
        kind=row.kind,  # type: ignore[arg-type]
        landing_url=row.landing_url,
        name=row.name,
        sizes=tuple((int(w), int(h)) for w, h in row.sizes or ()),
        adomain=tuple(row.adomain or ()),
        categories=tuple(row.categories or ()),
        markup=row.markup,
        vast_url=row.vast_url,
        duration_s=row.duration_s,
        mimes=tuple(row.mimes or ()),
        native=msgspec.convert(row.native, NativeAd) if row.native else None,
        approval=row.approval,  # type: ignore[arg-type]
    )


def creative_row(record: Creative) -> CreativeRow:
    fields = msgspec.structs.asdict(record)
    fields["sizes"] = [list(size) for size in record.sizes]
    fields["adomain"] = list(record.adomain)
    fields["categories"] = list(record.categories)
    fields["mimes"] = list(record.mimes)
    fields["native"] = msgspec.to_builtins(record.native) if record.native else None
    return CreativeRow(**fields)
