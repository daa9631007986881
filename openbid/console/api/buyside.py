"""Advertisers, campaigns (with their budgets) and line items (with their targeting): the
buy side's records, validated by `openbid/campaigns/validate.py` (errors name the field)
and written through `CampaignCatalog`."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query

from openbid import clock
from openbid.campaigns import model as records
from openbid.campaigns.rows import targeting_from_json, targeting_to_json
from openbid.console.api import schemas
from openbid.console.api.tenancy import (
    Admin,
    Ctx,
    advertiser_scope,
    owned_advertiser,
    owned_campaign,
    owned_line_item,
    owning_advertiser,
    sees_advertiser,
)
from openbid.console.auth.web import Caller
from openbid.console.errors import ApiError, not_found

router = APIRouter()
DAY_MICROS = 86_400_000_000


def record_doc(record: msgspec.Struct) -> dict[str, Any]:
    """A record as the API shows it (the hour mask as hex, like the catalog stores it)."""
    doc = msgspec.to_builtins(record)
    if isinstance(record, records.LineItem):
        doc["targeting"] = schemas.Targeting(**targeting_to_json(record.targeting)).model_dump()
    return doc


def line_item_record(doc: dict[str, Any]) -> records.LineItem:
    doc = dict(doc)
    targeting = {k: v for k, v in (doc.pop("targeting", None) or {}).items() if v is not None}
    line_item = msgspec.convert(doc, records.LineItem)
    return msgspec.structs.replace(line_item, targeting=targeting_from_json(targeting))


def _exists(field: str, kind: str, record_id: str) -> ApiError:
    return ApiError(409, field, f"{kind} {record_id!r} exists: choose another id")


# --- advertisers
@router.get("/advertisers", response_model=list[schemas.Advertiser], tags=["advertisers"])
def list_advertisers(who: Caller, ctx: Ctx) -> list[dict]:
    scope = advertiser_scope(who)
    return [record_doc(a) for a in ctx.catalog.advertisers() if scope in (None, a.id)]


@router.post(
    "/advertisers", response_model=schemas.Advertiser, status_code=201, tags=["advertisers"]
)
def create_advertiser(body: schemas.AdvertiserIn, who: Admin, ctx: Ctx) -> dict:
    if ctx.catalog.advertiser(body.id) is not None:
        raise _exists("id", "advertiser", body.id)
    advertiser = msgspec.convert(body.model_dump(), records.Advertiser)
    ctx.catalog.upsert_advertiser(advertiser)
    return record_doc(advertiser)


@router.get("/advertisers/{advertiser_id}", response_model=schemas.Advertiser, tags=["advertisers"])
def get_advertiser(
    advertiser: Annotated[records.Advertiser, Depends(owned_advertiser)],
) -> dict:
    return record_doc(advertiser)


@router.patch(
    "/advertisers/{advertiser_id}", response_model=schemas.Advertiser, tags=["advertisers"]
)
def update_advertiser(
    advertiser: Annotated[records.Advertiser, Depends(owned_advertiser)],
    body: schemas.AdvertiserPatch,
    ctx: Ctx,
) -> dict:
    changed = msgspec.structs.replace(
        advertiser, **body.model_dump(exclude_unset=True, exclude_none=True)
    )
    ctx.catalog.upsert_advertiser(changed)
    return record_doc(changed)


@router.delete("/advertisers/{advertiser_id}", response_model=schemas.Deleted, tags=["advertisers"])
def delete_advertiser(
    advertiser: Annotated[records.Advertiser, Depends(owned_advertiser)], who: Admin, ctx: Ctx
) -> dict:
    ctx.catalog.delete_advertiser(advertiser.id)
    return {"deleted": advertiser.id}


# --- campaigns
@router.get("/campaigns", response_model=list[schemas.Campaign], tags=["campaigns"])
def list_campaigns(
    who: Caller,
    ctx: Ctx,
    advertiser_id: Annotated[str | None, Query(pattern=schemas.ID_PATTERN)] = None,
) -> list[dict]:
    scope = advertiser_scope(who)
    if scope is not None and advertiser_id not in (None, scope):
        return []
    return [record_doc(c) for c in ctx.catalog.campaigns(scope or advertiser_id)]


@router.post("/campaigns", response_model=schemas.Campaign, status_code=201, tags=["campaigns"])
def create_campaign(body: schemas.CampaignIn, who: Caller, ctx: Ctx) -> dict:
    advertiser_id = owning_advertiser(who, body.advertiser_id)
    if ctx.catalog.advertiser(advertiser_id) is None:
        raise not_found("advertiser_id", "advertiser", advertiser_id)
    if ctx.catalog.campaign(body.id) is not None:
        raise _exists("id", "campaign", body.id)
    doc = body.model_dump() | {"advertiser_id": advertiser_id}
    campaign = msgspec.convert(doc, records.Campaign)
    ctx.catalog.upsert_campaign(campaign)
    return record_doc(campaign)


@router.get("/campaigns/{campaign_id}", response_model=schemas.Campaign, tags=["campaigns"])
def get_campaign(campaign: Annotated[records.Campaign, Depends(owned_campaign)]) -> dict:
    return record_doc(campaign)


def _patched_campaign(campaign: records.Campaign, changes: dict[str, Any]) -> records.Campaign:
    doc = msgspec.to_builtins(campaign) | changes
    return msgspec.convert(doc, records.Campaign)


@router.patch("/campaigns/{campaign_id}", response_model=schemas.Campaign, tags=["campaigns"])
def update_campaign(
    campaign: Annotated[records.Campaign, Depends(owned_campaign)],
    body: schemas.CampaignPatch,
    ctx: Ctx,
) -> dict:
    changed = _patched_campaign(campaign, body.model_dump(exclude_unset=True, exclude_none=True))
    ctx.catalog.upsert_campaign(changed)
    return record_doc(changed)


@router.delete("/campaigns/{campaign_id}", response_model=schemas.Deleted, tags=["campaigns"])
def delete_campaign(
    campaign: Annotated[records.Campaign, Depends(owned_campaign)], ctx: Ctx
) -> dict:
    ctx.catalog.delete_campaign(campaign.id)
    return {"deleted": campaign.id}


def _budget_use(ctx: Ctx, campaign: records.Campaign) -> dict:
    now_micros = clock.now_micros()
    today = now_micros - now_micros % DAY_MICROS
    spent = ctx.reports.campaign_spend_micros(campaign.id, campaign.start_micros, now_micros)
    spent_today = ctx.reports.campaign_spend_micros(campaign.id, today, now_micros)
    total = campaign.total_budget_micros
    return {
        "total_budget_micros": total,
        "daily_budget_micros": campaign.daily_budget_micros,
        "spent_micros": spent,
        "spent_today_micros": spent_today,
        "budget_use": spent / total if total else 0.0,
    }


@router.get("/campaigns/{campaign_id}/budget", response_model=schemas.BudgetUse, tags=["budgets"])
def get_budget(campaign: Annotated[records.Campaign, Depends(owned_campaign)], ctx: Ctx) -> dict:
    return _budget_use(ctx, campaign)


@router.put("/campaigns/{campaign_id}/budget", response_model=schemas.BudgetUse, tags=["budgets"])
def set_budget(
    campaign: Annotated[records.Campaign, Depends(owned_campaign)],
    body: schemas.Budget,
    ctx: Ctx,
) -> dict:
    changed = _patched_campaign(campaign, body.model_dump())
    ctx.catalog.upsert_campaign(changed)
    return _budget_use(ctx, changed)


# --- line items
@router.get("/line-items", response_model=list[schemas.LineItem], tags=["line items"])
def list_line_items(
    who: Caller,
    ctx: Ctx,
    campaign_id: Annotated[str | None, Query(pattern=schemas.ID_PATTERN)] = None,
) -> list[dict]:
    scope = advertiser_scope(who)
    campaigns = {c.id for c in ctx.catalog.campaigns(scope)}
    if campaign_id is not None:
        campaigns &= {campaign_id}
    if not campaigns:
        return []
    only = campaign_id if campaign_id is not None else None
    return [record_doc(li) for li in ctx.catalog.line_items(only) if li.campaign_id in campaigns]


def _check_line_item_refs(ctx: Ctx, who: Caller, line_item: records.LineItem) -> None:
    """A line item's campaign and creatives must be the caller's: another tenant's are
    named as if they did not exist."""
    campaign = ctx.catalog.campaign(line_item.campaign_id)
    if campaign is None or not sees_advertiser(who, campaign.advertiser_id):
        raise ApiError(422, "campaign_id", f"no campaign {line_item.campaign_id!r}")
    for creative_id in line_item.creative_ids:
        creative = ctx.catalog.creative(creative_id)
        if creative is None or not sees_advertiser(who, creative.advertiser_id):
            raise ApiError(422, "creative_ids", f"no creative {creative_id!r}")


@router.post("/line-items", response_model=schemas.LineItem, status_code=201, tags=["line items"])
def create_line_item(body: schemas.LineItemIn, who: Caller, ctx: Ctx) -> dict:
    advertiser_scope(who)
    line_item = line_item_record(body.model_dump())
    _check_line_item_refs(ctx, who, line_item)
    if ctx.catalog.line_item(body.id) is not None:
        raise _exists("id", "line item", body.id)
    ctx.catalog.upsert_line_item(line_item)
    return record_doc(line_item)


@router.get("/line-items/{line_item_id}", response_model=schemas.LineItem, tags=["line items"])
def get_line_item(line_item: Annotated[records.LineItem, Depends(owned_line_item)]) -> dict:
    return record_doc(line_item)


@router.patch("/line-items/{line_item_id}", response_model=schemas.LineItem, tags=["line items"])
def update_line_item(
    line_item: Annotated[records.LineItem, Depends(owned_line_item)],
    body: schemas.LineItemPatch,
    who: Caller,
    ctx: Ctx,
) -> dict:
    doc = record_doc(line_item) | body.model_dump(exclude_unset=True, exclude_none=True)
    changed = line_item_record(doc)
    _check_line_item_refs(ctx, who, changed)
    ctx.catalog.upsert_line_item(changed)
    return record_doc(changed)


@router.delete("/line-items/{line_item_id}", response_model=schemas.Deleted, tags=["line items"])
def delete_line_item(
    line_item: Annotated[records.LineItem, Depends(owned_line_item)], ctx: Ctx
) -> dict:
    ctx.catalog.delete_line_item(line_item.id)
    return {"deleted": line_item.id}


@router.get(
    "/line-items/{line_item_id}/targeting", response_model=schemas.Targeting, tags=["targeting"]
)
def get_targeting(line_item: Annotated[records.LineItem, Depends(owned_line_item)]) -> dict:
    return record_doc(line_item)["targeting"]


@router.put(
    "/line-items/{line_item_id}/targeting", response_model=schemas.Targeting, tags=["targeting"]
)
def set_targeting(
    line_item: Annotated[records.LineItem, Depends(owned_line_item)],
    body: schemas.Targeting,
    ctx: Ctx,
) -> dict:
    changed = line_item_record(record_doc(line_item) | {"targeting": body.model_dump()})
    ctx.catalog.upsert_line_item(changed)
    return record_doc(changed)["targeting"]
