"""Creatives: JSON records, file uploads checked before they are kept (an image, an HTML
banner, a VAST document: `openbid/console/uploads.py`), a preview rendered by the same
renderers the exchange serves with (`openbid/creative`), and the uploaded images served to
ad pages at `/assets/<id>` (public: an ad is fetched by browsers that have no login)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from fastapi.responses import HTMLResponse

from openbid.campaigns import model as records
from openbid.console.api import schemas
from openbid.console.api.buyside import record_doc
from openbid.console.api.tenancy import (
    Ctx,
    PathId,
    advertiser_scope,
    owned_creative,
    owning_advertiser,
)
from openbid.console.auth.web import Caller
from openbid.console.errors import ApiError, not_found
from openbid.console.uploads import check_html, check_image, check_vast
from openbid.creative import RenderError, render_banner, render_native, render_video

router = APIRouter()
assets_router = APIRouter()

PREVIEW_TRACKER = "about:blank"
"""Previews carry no working tracker: looking at an ad is not an impression."""


def _approval_by(who: Caller, requested: str, current: str = "pending") -> str:
    if requested != current and not who.is_admin:
        raise ApiError(403, "approval", "only an admin approves or rejects creatives")
    return requested


@router.get("/creatives", response_model=list[schemas.Creative], tags=["creatives"])
def list_creatives(who: Caller, ctx: Ctx) -> list[dict]:
    return [record_doc(c) for c in ctx.catalog.creatives(advertiser_scope(who))]


def _new_creative(ctx: Ctx, who: Caller, doc: dict) -> records.Creative:
    advertiser_id = owning_advertiser(who, doc.get("advertiser_id"))
    if ctx.catalog.advertiser(advertiser_id) is None:
        raise not_found("advertiser_id", "advertiser", advertiser_id)
    if ctx.catalog.creative(doc["id"]) is not None:
        raise ApiError(409, "id", f"creative {doc['id']!r} exists: choose another id")
    doc["advertiser_id"] = advertiser_id
    doc["approval"] = _approval_by(who, doc.get("approval", "pending"))
    if not doc.get("adomain"):
        advertiser = ctx.catalog.advertiser(advertiser_id)
        if advertiser is not None and advertiser.domain:
            doc["adomain"] = [advertiser.domain]
    creative = msgspec.convert(doc, records.Creative)
    ctx.catalog.upsert_creative(creative)
    return creative


@router.post("/creatives", response_model=schemas.Creative, status_code=201, tags=["creatives"])
def create_creative(body: schemas.CreativeIn, who: Caller, ctx: Ctx) -> dict:
    return record_doc(_new_creative(ctx, who, body.model_dump()))


@router.post(
    "/creatives/upload",
    response_model=schemas.Creative,
    status_code=201,
    tags=["creatives"],
    summary="Upload a creative file (image, HTML or VAST), checked before it is kept",
)
async def upload_creative(
    who: Caller,
    ctx: Ctx,
    id: Annotated[str, Form(pattern=schemas.ID_PATTERN)],  # noqa: A002 - the record's field
    kind: Annotated[Literal["image", "html", "vast"], Form()],
    landing_url: Annotated[str, Form(max_length=2000)],
    file: Annotated[UploadFile, File()],
    name: Annotated[str, Form(max_length=200)] = "",
    advertiser_id: Annotated[str | None, Form(pattern=schemas.ID_PATTERN)] = None,
    sizes: Annotated[str, Form(max_length=200, description="`300x250,320x50`")] = "",
    adomain: Annotated[str, Form(max_length=2000, description="comma-separated")] = "",
) -> dict:
    limit = ctx.config.console.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "file", f"the file is over console.max_upload_bytes ({limit:,})")
    declared = _sizes(sizes)
    doc: dict = {
        "id": id,
        "advertiser_id": advertiser_id,
        "landing_url": landing_url,
        "name": _text("name", name),
        "adomain": [d.strip() for d in adomain.split(",") if d.strip()],
    }
    _text("landing_url", landing_url)
    if kind == "image":
        owner = owning_advertiser(who, advertiser_id)
        if ctx.catalog.advertiser(owner) is None:
            raise not_found("advertiser_id", "advertiser", owner)
        content_type, width, height = check_image(data, declared)
        asset_id = ctx.inventory.put_asset(owner, content_type, width, height, data)
        base = ctx.config.console.public_url.rstrip("/")
        doc |= {"kind": "banner", "sizes": [[width, height]], "markup": f"{base}/assets/{asset_id}"}
    elif kind == "html":
        if not declared:
            raise ApiError(422, "sizes", "an HTML banner needs its size(s): 300x250")
        doc |= {"kind": "banner", "sizes": [list(s) for s in declared], "markup": check_html(data)}
    else:
        markup, duration_s = check_vast(data)
        doc |= {
            "kind": "video",
            "sizes": [list(s) for s in declared],
            "markup": markup,
            "duration_s": duration_s,
        }
    return record_doc(_new_creative(ctx, who, doc))


def _text(field: str, value: str) -> str:
    if "\x00" in value:
        raise ApiError(422, field, "must not contain NUL characters")
    return value


def _sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        w, x, h = part.partition("x")
        if not (
            x and w.isdigit() and h.isdigit() and 0 < int(w) <= 10_000 and 0 < int(h) <= 10_000
        ):
            raise ApiError(422, "sizes", f"{part!r} is not WxH (300x250)")
        sizes.append((int(w), int(h)))
    return sizes


@router.get("/creatives/{creative_id}", response_model=schemas.Creative, tags=["creatives"])
def get_creative(creative: Annotated[records.Creative, Depends(owned_creative)]) -> dict:
    return record_doc(creative)


@router.patch("/creatives/{creative_id}", response_model=schemas.Creative, tags=["creatives"])
def update_creative(
    creative: Annotated[records.Creative, Depends(owned_creative)],
    body: schemas.CreativePatch,
    who: Caller,
    ctx: Ctx,
) -> dict:
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "approval" in changes:
        changes["approval"] = _approval_by(who, changes["approval"], creative.approval)
    elif changes and not who.is_admin:
        changes["approval"] = "pending"  # an edited ad is reviewed again
    changed = msgspec.convert(msgspec.to_builtins(creative) | changes, records.Creative)
    ctx.catalog.upsert_creative(changed)
    return record_doc(changed)


@router.delete("/creatives/{creative_id}", response_model=schemas.Deleted, tags=["creatives"])
def delete_creative(
    creative: Annotated[records.Creative, Depends(owned_creative)], ctx: Ctx
) -> dict:
    ctx.catalog.delete_creative(creative.id)
    return {"deleted": creative.id}


def render_preview(creative: records.Creative) -> tuple[str, str]:
    """The creative as it will serve (body, content type), with inert trackers."""
    if creative.kind == "banner":
        width, height = creative.sizes[0] if creative.sizes else (0, 0)
        return render_banner(
            creative.markup, PREVIEW_TRACKER, width=width, height=height
        ), "text/html"
    if creative.kind == "video":
        return (
            render_video(
                creative.markup, PREVIEW_TRACKER, PREVIEW_TRACKER, vast_url=creative.vast_url
            ),
            "application/xml",
        )
    native = creative.native
    assets = []
    if native is not None:
        assets = [{"id": 1, "title": {"text": native.title}}]
        if native.image_url:
            assets.append(
                {
                    "id": 2,
                    "img": {"url": native.image_url, "w": native.image_w, "h": native.image_h},
                }
            )
        if native.description:
            assets.append({"id": 3, "data": {"value": native.description}})
    document = {"native": {"ver": "1.2", "assets": assets, "link": {"url": creative.landing_url}}}
    return render_native(
        msgspec.json.encode(document).decode(), PREVIEW_TRACKER
    ).decode(), "application/json"


@router.get(
    "/creatives/{creative_id}/preview",
    tags=["creatives"],
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}, "application/xml": {}, "application/json": {}}}},
    summary="The creative rendered as it will serve (banner HTML, VAST, native JSON)",
)
def preview_creative(creative: Annotated[records.Creative, Depends(owned_creative)]) -> Response:
    try:
        body, content_type = render_preview(creative)
    except RenderError as exc:
        raise ApiError(422, "markup", str(exc)) from None
    # The preview runs the advertiser's markup: sandboxed, never with the console's origin.
    headers = {
        "content-security-policy": "sandbox allow-scripts",
        "x-content-type-options": "nosniff",
    }
    return Response(body, media_type=content_type, headers=headers)


@assets_router.get(
    "/assets/{asset_id}",
    tags=["creatives"],
    summary="An uploaded image, as ad pages load it (no login)",
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/gif": {}, "image/webp": {}}}
    },
)
def get_asset(asset_id: PathId("An image's SHA-256."), ctx: Ctx) -> Response:  # type: ignore[valid-type]
    asset = ctx.inventory.asset(asset_id)
    if asset is None:
        raise not_found("asset_id", "image", asset_id)
    return Response(
        asset.data,
        media_type=asset.content_type,
        headers={
            "cache-control": "public, max-age=31536000, immutable",
            "x-content-type-options": "nosniff",
        },
    )
