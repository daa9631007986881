"""Publishers (floors, blocked categories and advertiser domains, API key rotation), their
sites and apps, placements, and demand partners. Publishers and partners are created by
admins; a publisher's users manage its sites, placements and floors."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends

from openbid.console.api import schemas
from openbid.console.api.tenancy import (
    Admin,
    Ctx,
    admin_partner,
    owned_placement,
    owned_publisher,
    owned_site,
    owning_publisher,
    publisher_scope,
)
from openbid.console.auth.web import Caller
from openbid.console.errors import ApiError, not_found
from openbid.console.inventory import Site
from openbid.domain import DemandPartner, Placement, Publisher

router = APIRouter()


def _doc(record: msgspec.Struct) -> dict[str, Any]:
    return msgspec.to_builtins(record)


def _exists(kind: str, record_id: str) -> ApiError:
    return ApiError(409, "id", f"{kind} {record_id!r} exists: choose another id")


# --- publishers
@router.get("/publishers", response_model=list[schemas.Publisher], tags=["publishers"])
def list_publishers(who: Caller, ctx: Ctx) -> list[dict]:
    return [_doc(p) for p in ctx.inventory.publishers(publisher_scope(who))]


@router.post(
    "/publishers", response_model=schemas.PublisherCreated, status_code=201, tags=["publishers"]
)
def create_publisher(body: schemas.PublisherIn, who: Admin, ctx: Ctx) -> dict:
    publisher = msgspec.convert(body.model_dump(), Publisher)
    api_key = ctx.inventory.create_publisher(publisher)
    return _doc(publisher) | {"api_key": api_key}


@router.get("/publishers/{publisher_id}", response_model=schemas.Publisher, tags=["publishers"])
def get_publisher(publisher: Annotated[Publisher, Depends(owned_publisher)]) -> dict:
    return _doc(publisher)


@router.patch("/publishers/{publisher_id}", response_model=schemas.Publisher, tags=["publishers"])
def update_publisher(
    publisher: Annotated[Publisher, Depends(owned_publisher)],
    body: schemas.PublisherPatch,
    ctx: Ctx,
) -> dict:
    changed = ctx.inventory.update_publisher(
        publisher.id, body.model_dump(exclude_unset=True, exclude_none=True)
    )
    if changed is None:
        raise not_found("publisher_id", "publisher", publisher.id)
    return _doc(changed)


@router.put("/publishers/{publisher_id}/floor", response_model=schemas.Publisher, tags=["floors"])
def set_publisher_floor(
    publisher: Annotated[Publisher, Depends(owned_publisher)], body: schemas.Floor, ctx: Ctx
) -> dict:
    changed = ctx.inventory.update_publisher(publisher.id, {"floor_micros": body.floor_micros})
    if changed is None:
        raise not_found("publisher_id", "publisher", publisher.id)
    return _doc(changed)


@router.delete("/publishers/{publisher_id}", response_model=schemas.Deleted, tags=["publishers"])
def delete_publisher(
    publisher: Annotated[Publisher, Depends(owned_publisher)], who: Admin, ctx: Ctx
) -> dict:
    ctx.inventory.delete_publisher(publisher.id)
    return {"deleted": publisher.id}


@router.post(
    "/publishers/{publisher_id}/api-keys",
    response_model=schemas.ApiKey,
    status_code=201,
    tags=["api keys"],
    summary="A new API key for the publisher (shown once; the previous key stops working)",
)
def rotate_api_key(publisher: Annotated[Publisher, Depends(owned_publisher)], ctx: Ctx) -> dict:
    api_key = ctx.inventory.rotate_api_key(publisher.id)
    if api_key is None:
        raise not_found("publisher_id", "publisher", publisher.id)
    return {"publisher_id": publisher.id, "api_key": api_key}


# --- sites and apps
def _site_errors(site: Site) -> None:
    domain = site.domain.strip()
    if not domain or domain != domain.lower() or " " in domain:
        raise ApiError(422, "domain", f"{site.domain!r}: a lower-case domain or bundle id")


@router.get("/sites", response_model=list[schemas.Site], tags=["sites"])
def list_sites(who: Caller, ctx: Ctx) -> list[dict]:
    return [_doc(s) for s in ctx.inventory.sites(publisher_scope(who))]


@router.post("/sites", response_model=schemas.Site, status_code=201, tags=["sites"])
def create_site(body: schemas.SiteIn, who: Caller, ctx: Ctx) -> dict:
    publisher_id = owning_publisher(who, body.publisher_id)
    if ctx.inventory.publisher(publisher_id) is None:
        raise not_found("publisher_id", "publisher", publisher_id)
    if ctx.inventory.site(body.id) is not None:
        raise _exists("site", body.id)
    site = msgspec.convert(body.model_dump() | {"publisher_id": publisher_id}, Site)
    _site_errors(site)
    return _doc(ctx.inventory.put_site(site, create=True))


@router.get("/sites/{site_id}", response_model=schemas.Site, tags=["sites"])
def get_site(site: Annotated[Site, Depends(owned_site)]) -> dict:
    return _doc(site)


@router.patch("/sites/{site_id}", response_model=schemas.Site, tags=["sites"])
def update_site(
    site: Annotated[Site, Depends(owned_site)], body: schemas.SitePatch, ctx: Ctx
) -> dict:
    changed = msgspec.structs.replace(
        site, **body.model_dump(exclude_unset=True, exclude_none=True)
    )
    _site_errors(changed)
    return _doc(ctx.inventory.put_site(changed, create=False))


@router.delete("/sites/{site_id}", response_model=schemas.Deleted, tags=["sites"])
def delete_site(site: Annotated[Site, Depends(owned_site)], ctx: Ctx) -> dict:
    ctx.inventory.delete_site(site.id)
    return {"deleted": site.id}


# --- placements
def _placement(doc: dict) -> Placement:
    doc = dict(doc)
    doc["sizes"] = [tuple(size) for size in doc.get("sizes") or ()]
    return msgspec.convert(doc, Placement)


@router.get("/placements", response_model=list[schemas.Placement], tags=["placements"])
def list_placements(who: Caller, ctx: Ctx) -> list[dict]:
    return [_doc(p) for p in ctx.inventory.placements(publisher_scope(who))]


@router.post("/placements", response_model=schemas.Placement, status_code=201, tags=["placements"])
def create_placement(body: schemas.PlacementIn, who: Caller, ctx: Ctx) -> dict:
    publisher_id = owning_publisher(who, body.publisher_id)
    if ctx.inventory.publisher(publisher_id) is None:
        raise not_found("publisher_id", "publisher", publisher_id)
    if ctx.inventory.placement(body.id) is not None:
        raise _exists("placement", body.id)
    placement = _placement(body.model_dump() | {"publisher_id": publisher_id})
    return _doc(ctx.inventory.put_placement(placement, create=True))


@router.get("/placements/{placement_id}", response_model=schemas.Placement, tags=["placements"])
def get_placement(placement: Annotated[Placement, Depends(owned_placement)]) -> dict:
    return _doc(placement)


@router.patch("/placements/{placement_id}", response_model=schemas.Placement, tags=["placements"])
def update_placement(
    placement: Annotated[Placement, Depends(owned_placement)],
    body: schemas.PlacementPatch,
    ctx: Ctx,
) -> dict:
    doc = _doc(placement) | body.model_dump(exclude_unset=True, exclude_none=True)
    return _doc(ctx.inventory.put_placement(_placement(doc), create=False))


@router.put("/placements/{placement_id}/floor", response_model=schemas.Placement, tags=["floors"])
def set_placement_floor(
    placement: Annotated[Placement, Depends(owned_placement)], body: schemas.Floor, ctx: Ctx
) -> dict:
    changed = msgspec.structs.replace(placement, floor_micros=body.floor_micros)
    return _doc(ctx.inventory.put_placement(changed, create=False))


@router.delete("/placements/{placement_id}", response_model=schemas.Deleted, tags=["placements"])
def delete_placement(placement: Annotated[Placement, Depends(owned_placement)], ctx: Ctx) -> dict:
    ctx.inventory.delete_placement(placement.id)
    return {"deleted": placement.id}


# --- demand partners (admins only)
def _partner_errors(partner: DemandPartner) -> None:
    if not partner.endpoint.startswith(("http://", "https://")):
        raise ApiError(422, "endpoint", f"{partner.endpoint!r} is not an http(s) URL")


@router.get(
    "/demand-partners", response_model=list[schemas.DemandPartner], tags=["demand partners"]
)
def list_partners(who: Admin, ctx: Ctx) -> list[dict]:
    return [_doc(p) for p in ctx.inventory.partners()]


@router.post(
    "/demand-partners",
    response_model=schemas.DemandPartner,
    status_code=201,
    tags=["demand partners"],
)
def create_partner(body: schemas.DemandPartnerIn, who: Admin, ctx: Ctx) -> dict:
    partner = msgspec.convert(body.model_dump(), DemandPartner)
    _partner_errors(partner)
    return _doc(ctx.inventory.put_partner(partner, create=True))


@router.get(
    "/demand-partners/{partner_id}", response_model=schemas.DemandPartner, tags=["demand partners"]
)
def get_partner(partner: Annotated[DemandPartner, Depends(admin_partner)]) -> dict:
    return _doc(partner)


@router.patch(
    "/demand-partners/{partner_id}", response_model=schemas.DemandPartner, tags=["demand partners"]
)
def update_partner(
    partner: Annotated[DemandPartner, Depends(admin_partner)],
    body: schemas.DemandPartnerPatch,
    ctx: Ctx,
) -> dict:
    changed = msgspec.structs.replace(
        partner, **body.model_dump(exclude_unset=True, exclude_none=True)
    )
    _partner_errors(changed)
    return _doc(ctx.inventory.put_partner(changed, create=False))


@router.delete(
    "/demand-partners/{partner_id}", response_model=schemas.Deleted, tags=["demand partners"]
)
def delete_partner(partner: Annotated[DemandPartner, Depends(admin_partner)], ctx: Ctx) -> dict:
    ctx.inventory.delete_partner(partner.id)
    return {"deleted": partner.id}
