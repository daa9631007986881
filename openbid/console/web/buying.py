"""The buy side's pages: the campaign list, the campaign editor (flight, budget, goal, and
its main line item's targeting and creatives), a campaign's page with its pacing chart,
creatives (upload, and the preview as the ad will serve), and bulk upload with a report of
every refused row. Writes go through the API's own route functions, so a page validates,
scopes and stores exactly as the API does."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from msgspec.structs import replace

from openbid import clock
from openbid.campaigns import model as records
from openbid.campaigns.bulk import BulkError, ImportReport, RowError, parse_rows, rows_from_text
from openbid.campaigns.model import CampaignSet
from openbid.campaigns.validate import InvalidRecord
from openbid.console.api import buyside, creatives, schemas
from openbid.console.api.tenancy import (
    advertiser_scope,
    owned_campaign,
    owned_creative,
    sees_advertiser,
)
from openbid.console.errors import ApiError
from openbid.console.web import forms
from openbid.console.web.insight import pacing_series
from openbid.console.web.render import page
from openbid.console.web.session import Ctx, PageUser

router = APIRouter(include_in_schema=False)
DEVICE_CHOICES = ("phone", "tablet", "desktop", "ctv")
INVENTORY_CHOICES = ("site", "app", "dooh")
FORMAT_CHOICES = ("banner", "video", "native")
GOALS = ("cpm", "cpc", "cpa")
STATUSES = ("active", "paused", "archived")
CAMPAIGN_FIELDS = {
    "id", "advertiser_id", "name", "start", "end", "total_budget", "daily_budget", "goal",
    "goal_amount", "max_bid_cpm", "status", "countries", "device_types", "os", "inventory",
    "formats", "domains", "placement_sizes", "creative_ids",
}  # fmt: skip


def main_line_item(ctx: Ctx, campaign_id: str) -> records.LineItem | None:  # type: ignore[valid-type]
    """The line item the editor edits: the campaign's first (by id)."""
    found = sorted(ctx.catalog.line_items(campaign_id), key=lambda li: li.id)
    return found[0] if found else None


@router.get("/campaigns")
def campaign_list(request: Request, who: PageUser, ctx: Ctx) -> Response:
    scope = advertiser_scope(who)
    campaigns = sorted(ctx.catalog.campaigns(scope), key=lambda c: (c.status != "active", c.id))
    budgets = {c.id: buyside._budget_use(ctx, c) for c in campaigns}
    return page(request, who, "campaigns.html", campaigns=campaigns, budgets=budgets)


def _editor(
    request: Request,
    who: Any,
    ctx: Any,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    campaign: records.Campaign | None = None,
) -> Response:
    scope = advertiser_scope(who)
    return page(
        request,
        who,
        "campaign_edit.html",
        status_code=422 if errors else 200,
        campaign=campaign,
        values=values,
        errors=errors or {},
        advertisers=[a for a in ctx.catalog.advertisers() if scope in (None, a.id)],
        creatives=list(ctx.catalog.creatives(scope)),
        devices=DEVICE_CHOICES,
        inventories=INVENTORY_CHOICES,
        formats=FORMAT_CHOICES,
        goals=GOALS,
        statuses=STATUSES,
    )


def _values(campaign: records.Campaign | None, line_item: records.LineItem | None) -> dict:
    """The editor's fields for an existing campaign (or a new one's defaults)."""
    if campaign is None:
        now = clock.now_micros()
        return {
            "start": now,
            "end": now + 30 * 86_400_000_000,
            "goal": "cpm",
            "status": "active",
            "device_types": [],
            "inventory": [],
            "formats": [],
            "creative_ids": [],
        }
    targeting = buyside.record_doc(line_item)["targeting"] if line_item else {}
    return {
        "id": campaign.id,
        "advertiser_id": campaign.advertiser_id,
        "name": campaign.name,
        "start": campaign.start_micros,
        "end": campaign.end_micros,
        "total_budget": campaign.total_budget_micros / 1e6,
        "daily_budget": campaign.daily_budget_micros / 1e6,
        "goal": campaign.goal,
        "goal_amount": campaign.goal_amount_micros / 1e6,
        "max_bid_cpm": campaign.max_bid_cpm_micros / 1e6,
        "status": campaign.status,
        "countries": ", ".join(targeting.get("countries", [])),
        "device_types": targeting.get("device_types", []),
        "os": ", ".join(targeting.get("os", [])),
        "inventory": targeting.get("inventory", []),
        "formats": targeting.get("formats", []),
        "domains": ", ".join(targeting.get("domains", [])),
        "placement_sizes": ", ".join(targeting.get("placement_sizes", [])),
        "creative_ids": list(line_item.creative_ids) if line_item else [],
    }


def _submitted(form: Any) -> dict[str, Any]:
    """The editor's fields as submitted, to show them again next to their errors."""
    values = {name: forms.text(form, name) for name in CAMPAIGN_FIELDS}
    for name in ("device_types", "inventory", "formats", "creative_ids"):
        values[name] = forms.items(form, name)
    return values


def _campaign_fields(form: Any) -> dict[str, Any]:
    errors: dict[str, str] = {}
    fields = {
        "name": forms.text(form, "name", 200),
        "start_micros": forms.day_micros(form, "start", errors),
        "end_micros": forms.day_micros(form, "end", errors, end=True),
        "total_budget_micros": forms.usd_micros(form, "total_budget", errors, required=True),
        "daily_budget_micros": forms.usd_micros(form, "daily_budget", errors),
        "goal": forms.text(form, "goal", 8) or "cpm",
        "goal_amount_micros": forms.usd_micros(form, "goal_amount", errors),
        "max_bid_cpm_micros": forms.usd_micros(form, "max_bid_cpm", errors),
        "status": forms.text(form, "status", 16) or "active",
    }
    if errors:
        raise forms.FormError(errors)
    return fields


def _targeting(form: Any) -> schemas.Targeting:
    doc = {
        "countries": [c.upper() for c in forms.items(form, "countries")],
        "device_types": forms.items(form, "device_types"),
        "os": forms.items(form, "os"),
        "inventory": forms.items(form, "inventory"),
        "formats": forms.items(form, "formats"),
        "domains": forms.items(form, "domains"),
        "placement_sizes": forms.items(form, "placement_sizes"),
    }
    return forms.build(schemas.Targeting, doc)


def _save(ctx: Any, who: Any, form: Any, campaign: records.Campaign | None) -> str:
    """Creates or updates the campaign and its main line item; the campaign's id."""
    fields = _campaign_fields(form)
    targeting = _targeting(form)
    creative_ids = forms.items(form, "creative_ids")
    for creative_id in creative_ids:  # before anything is saved: no half-made campaign
        creative = ctx.catalog.creative(creative_id)
        if creative is None or not sees_advertiser(who, creative.advertiser_id):
            raise forms.FormError({"creative_ids": f"no creative {creative_id!r}"})
    existing = main_line_item(ctx, campaign.id) if campaign is not None else None
    targets = any(v for k, v in targeting.model_dump().items() if k != "hours_timezone")
    if not creative_ids and (existing is not None or targets):
        raise forms.FormError(
            {"creative_ids": "targeting is a line item's, which needs a creative: choose one"}
        )
    try:
        if campaign is None:
            body = forms.build(
                schemas.CampaignIn,
                fields
                | {
                    "id": forms.text(form, "id", 64),
                    "advertiser_id": forms.text(form, "advertiser_id", 64) or None,
                },
            )
            campaign_id = buyside.create_campaign(body, who, ctx)["id"]
        else:
            body = forms.build(schemas.CampaignPatch, fields)
            campaign_id = buyside.update_campaign(campaign, body, ctx)["id"]
        line_item = main_line_item(ctx, campaign_id)
        if line_item is None and not creative_ids:
            return campaign_id  # a campaign without a line item yet: nothing to target
        if line_item is None:
            created = forms.build(
                schemas.LineItemIn,
                {
                    "id": f"{campaign_id}-main"[:64],
                    "campaign_id": campaign_id,
                    "name": "main",
                    "creative_ids": creative_ids,
                    "targeting": targeting,
                },
            )
            buyside.create_line_item(created, who, ctx)
        else:
            patch = schemas.LineItemPatch(creative_ids=creative_ids, targeting=targeting)
            buyside.update_line_item(line_item, patch, who, ctx)
    except ApiError as exc:
        raise forms.from_api(exc, CAMPAIGN_FIELDS) from None
    except InvalidRecord as exc:
        raise forms.from_invalid(exc, CAMPAIGN_FIELDS) from None
    return campaign_id


@router.get("/campaigns/new")
def new_campaign(request: Request, who: PageUser, ctx: Ctx) -> Response:
    advertiser_scope(who)
    return _editor(request, who, ctx, _values(None, None))


@router.post("/campaigns/new")
async def create_campaign(request: Request, who: PageUser, ctx: Ctx) -> Response:
    advertiser_scope(who)
    form = await request.form()
    try:
        campaign_id = _save(ctx, who, form, None)
    except forms.FormError as exc:
        return _editor(request, who, ctx, _submitted(form), exc.errors)
    return RedirectResponse(f"/campaigns/{campaign_id}", status_code=303)


Campaign = Annotated[records.Campaign, Depends(owned_campaign)]


@router.get("/campaigns/{campaign_id}/edit")
def edit_campaign(request: Request, campaign: Campaign, who: PageUser, ctx: Ctx) -> Response:
    values = _values(campaign, main_line_item(ctx, campaign.id))
    return _editor(request, who, ctx, values, campaign=campaign)


@router.post("/campaigns/{campaign_id}/edit")
async def update_campaign(
    request: Request, campaign: Campaign, who: PageUser, ctx: Ctx
) -> Response:
    form = await request.form()
    try:
        _save(ctx, who, form, campaign)
    except forms.FormError as exc:
        values = _submitted(form) | {"id": campaign.id}
        return _editor(request, who, ctx, values, exc.errors, campaign=campaign)
    return RedirectResponse(f"/campaigns/{campaign.id}", status_code=303)


@router.get("/campaigns/{campaign_id}")
def campaign_page(request: Request, campaign: Campaign, who: PageUser, ctx: Ctx) -> Response:
    line_items = sorted(ctx.catalog.line_items(campaign.id), key=lambda li: li.id)
    return page(
        request,
        who,
        "campaign.html",
        campaign=campaign,
        line_items=[buyside.record_doc(li) for li in line_items],
        budget=buyside._budget_use(ctx, campaign),
        pacing=pacing_series(ctx, campaign),
    )


# --- creatives
@router.get("/creatives")
def creative_list(request: Request, who: PageUser, ctx: Ctx) -> Response:
    return _creatives(request, who, ctx)


def _creatives(
    request: Request, who: Any, ctx: Any, errors: dict[str, str] | None = None, values=None
) -> Response:
    scope = advertiser_scope(who)
    return page(
        request,
        who,
        "creatives.html",
        status_code=422 if errors else 200,
        creatives=sorted(ctx.catalog.creatives(scope), key=lambda c: c.id),
        advertisers=[a for a in ctx.catalog.advertisers() if scope in (None, a.id)],
        errors=errors or {},
        values=values or {"kind": "image"},
    )


@router.post("/creatives")
async def upload_creative(request: Request, who: PageUser, ctx: Ctx) -> Response:
    form = await request.form()
    upload = form.get("file")
    values = {k: forms.text(form, k) for k in ("id", "kind", "landing_url", "sizes", "name")}
    values["advertiser_id"] = forms.text(form, "advertiser_id", 64)
    if upload is None or isinstance(upload, str) or not upload.filename:
        return _creatives(request, who, ctx, {"file": "choose a file to upload"}, values)
    kind = values["kind"] if values["kind"] in ("image", "html", "vast") else "image"
    try:
        created = await creatives.upload_creative(
            who,
            ctx,
            id=values["id"],
            kind=kind,  # type: ignore[arg-type]
            landing_url=values["landing_url"],
            file=upload,  # type: ignore[arg-type]
            name=values["name"],
            advertiser_id=values["advertiser_id"] or None,
            sizes=values["sizes"],
        )
    except (ApiError, InvalidRecord) as exc:
        known = {"id", "kind", "landing_url", "file", "sizes", "name", "advertiser_id"}
        error = (
            forms.from_api(exc, known)
            if isinstance(exc, ApiError)
            else forms.from_invalid(exc, known)
        )
        return _creatives(request, who, ctx, error.errors, values)
    return RedirectResponse(f"/creatives/{created['id']}", status_code=303)


@router.get("/creatives/{creative_id}")
def creative_page(
    request: Request,
    creative: Annotated[records.Creative, Depends(owned_creative)],
    who: PageUser,
) -> Response:
    width, height = creative.sizes[0] if creative.sizes else (300, 250)
    try:
        body, content_type = creatives.render_preview(creative)
        problem = ""
    except Exception as exc:  # a creative that cannot render says why, on its page
        body, content_type, problem = "", "", str(exc)
    return page(
        request,
        who,
        "creative.html",
        creative=creative,
        width=width,
        height=height,
        preview_source=body if content_type != "text/html" else "",
        content_type=content_type,
        problem=problem,
    )


@router.post("/creatives/{creative_id}/approval")
async def review_creative(
    request: Request,
    creative: Annotated[records.Creative, Depends(owned_creative)],
    who: PageUser,
    ctx: Ctx,
) -> Response:
    """An admin approves or rejects a creative (only approved creatives serve)."""
    form = await request.form()
    decision = forms.text(form, "approval", 16)
    if decision not in ("approved", "rejected"):
        raise ApiError(422, "approval", "approved or rejected")
    creatives.update_creative(creative, schemas.CreativePatch(approval=decision), who, ctx)
    return RedirectResponse(f"/creatives/{creative.id}", status_code=303)


# --- bulk upload
def _scoped_existing(ctx: Any, scope: str | None) -> CampaignSet:
    everything = ctx.catalog.campaign_set()
    if scope is None:
        return everything
    return CampaignSet(
        advertisers=tuple(a for a in everything.advertisers if a.id == scope),
        campaigns=tuple(c for c in everything.campaigns if c.advertiser_id == scope),
        line_items=tuple(
            li
            for li in everything.line_items
            if li.campaign_id in {c.id for c in everything.campaigns if c.advertiser_id == scope}
        ),
        creatives=tuple(c for c in everything.creatives if c.advertiser_id == scope),
    )


def _reviewed_again(good: CampaignSet, existing: CampaignSet) -> CampaignSet:
    """An advertiser's creatives as the API keeps them: only an admin approves, so a row's
    `approval` is ignored; a creative unchanged but for it keeps its review, a new or edited
    one is pending (an edited ad is reviewed again)."""
    before = {c.id: c for c in existing.creatives}
    kept = []
    for creative in good.creatives:
        old = before.get(creative.id)
        same = old is not None and replace(creative, approval=old.approval) == old
        kept.append(replace(creative, approval=old.approval if same else "pending"))  # type: ignore[union-attr]
    return replace(good, creatives=tuple(kept))


def bulk_import(ctx: Any, who: Any, text: str, filename: str, *, dry_run: bool) -> ImportReport:
    """A YAML or CSV file imported for `who`: an advertiser's user imports into its own
    advertiser only; a row naming another advertiser, or reusing another tenant's id, is
    refused as if that did not exist; and cannot approve its own creatives."""
    scope = advertiser_scope(who)
    rows = rows_from_text(text, filename)
    refused: list[RowError] = []
    if scope is not None:
        everything = ctx.catalog.campaign_set()
        theirs = {
            kind: {r.id for r in getattr(everything, kind + "s")}
            - {r.id for r in getattr(_scoped_existing(ctx, scope), kind + "s")}
            for kind in ("advertiser", "campaign", "line_item", "creative")
        }
        kept = []
        for row in rows:
            record_id = str(row.doc.get("id", "") or "")
            owner = row.doc.get("advertiser", scope)
            if row.kind == "advertiser" and record_id != scope:
                refused.append(
                    RowError(row.row, row.kind, record_id, "id", "admins add advertisers")
                )
            elif row.kind in ("campaign", "creative") and owner not in (scope, None, ""):
                reason = f"no advertiser {owner!r}"
                refused.append(RowError(row.row, row.kind, record_id, "advertiser_id", reason))
            elif record_id in theirs.get(row.kind, set()):
                reason = "this id is taken: choose another"
                refused.append(RowError(row.row, row.kind, record_id, "id", reason))
            else:
                if row.kind in ("campaign", "creative"):
                    row.doc.setdefault("advertiser", scope)
                kept.append(row)
        rows = kept
    existing = _scoped_existing(ctx, scope)
    good, errors = parse_rows(rows, existing, clock.now_micros())
    if scope is not None:
        good = _reviewed_again(good, existing)
    report = ImportReport(
        read=len(rows) + len(refused),
        errors=sorted(refused + errors, key=lambda e: e.row),
        dry_run=dry_run,
    )
    if dry_run:
        report.created = sum(
            len(getattr(good, k)) for k in ("advertisers", "campaigns", "line_items", "creatives")
        )
        return report
    counts = ctx.catalog.apply_campaign_set(good)
    report.created, report.updated, report.unchanged = (
        counts.created,
        counts.updated,
        counts.unchanged,
    )
    return report


@router.get("/bulk")
def bulk_page(request: Request, who: PageUser) -> Response:
    advertiser_scope(who)
    return page(request, who, "bulk.html", report=None, filename="")


@router.post("/bulk")
async def bulk_upload(request: Request, who: PageUser, ctx: Ctx) -> Response:
    advertiser_scope(who)
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str) or not upload.filename:
        return page(request, who, "bulk.html", status_code=422, report=None, filename="",
                    error="choose a YAML or CSV file")  # fmt: skip
    limit = ctx.config.console.max_upload_bytes
    data = await upload.read(limit + 1)
    problem = ""
    if len(data) > limit:
        problem = f"the file is over console.max_upload_bytes ({limit:,})"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        problem = problem or "the file is not UTF-8 text"
    if problem:
        return page(request, who, "bulk.html", status_code=422, report=None,
                    filename=upload.filename, error=problem)  # fmt: skip
    try:
        report = bulk_import(
            ctx, who, text, upload.filename, dry_run=forms.text(form, "dry_run") == "on"
        )
    except BulkError as exc:  # not YAML or CSV at all: said on the page, not a 500
        return page(request, who, "bulk.html", status_code=422, report=None,
                    filename=upload.filename, error=str(exc))  # fmt: skip
    return page(request, who, "bulk.html", report=report, filename=upload.filename)
