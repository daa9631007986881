"""Every object a route names in its path is looked up through one of these dependencies,
which answer 404, the same as for an id that does not exist, when it belongs to another
tenant: an advertiser sees only its advertiser, campaigns, line items and creatives; a
publisher only its publisher, sites and placements; admins see everything. Lists are
filtered the same way (`advertiser_scope`, `publisher_scope`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from openbid.campaigns.model import Advertiser, Campaign, Creative, LineItem
from openbid.console.api.schemas import ID_PATTERN
from openbid.console.auth.users import Principal
from openbid.console.auth.web import Caller
from openbid.console.context import ConsoleContext, console
from openbid.console.errors import ApiError, not_found
from openbid.console.inventory import Site
from openbid.domain import DemandPartner, Placement, Publisher

Ctx = Annotated[ConsoleContext, Depends(console)]


def PathId(description: str) -> object:  # noqa: N802 - reads as a type in signatures
    return Annotated[str, Path(pattern=ID_PATTERN, description=description)]


def sees_advertiser(who: Principal, advertiser_id: str) -> bool:
    return who.is_admin or (who.role == "advertiser" and who.tenant_id == advertiser_id)


def sees_publisher(who: Principal, publisher_id: str) -> bool:
    return who.is_admin or (who.role == "publisher" and who.tenant_id == publisher_id)


def advertiser_scope(who: Principal) -> str | None:
    """The advertiser a list is limited to (None: all, for admins); 404 for publishers."""
    if who.is_admin:
        return None
    if who.role == "advertiser":
        return who.tenant_id
    raise ApiError(403, "role", "advertisers' objects are for advertiser and admin users")


def publisher_scope(who: Principal) -> str | None:
    if who.is_admin:
        return None
    if who.role == "publisher":
        return who.tenant_id
    raise ApiError(403, "role", "publishers' objects are for publisher and admin users")


def require_admin(who: Caller) -> Principal:
    if not who.is_admin:
        raise ApiError(403, "role", "only an admin may do this")
    return who


Admin = Annotated[Principal, Depends(require_admin)]


def owning_advertiser(who: Principal, requested: str | None, field: str = "advertiser_id") -> str:
    """The advertiser a new object is created under: an advertiser user's own (naming
    another's is answered as if it did not exist), or the one an admin names."""
    if who.role == "advertiser":
        if requested not in (None, who.tenant_id):
            raise not_found(field, "advertiser", str(requested))
        return who.tenant_id
    if who.role != "admin":
        raise ApiError(403, "role", "advertisers' objects are for advertiser and admin users")
    if not requested:
        raise ApiError(422, field, "required")
    return requested


def owning_publisher(who: Principal, requested: str | None, field: str = "publisher_id") -> str:
    if who.role == "publisher":
        if requested not in (None, who.tenant_id):
            raise not_found(field, "publisher", str(requested))
        return who.tenant_id
    if who.role != "admin":
        raise ApiError(403, "role", "publishers' objects are for publisher and admin users")
    if not requested:
        raise ApiError(422, field, "required")
    return requested


def owned_advertiser(
    advertiser_id: PathId("An advertiser's id."),
    who: Caller,
    ctx: Ctx,  # type: ignore[valid-type]
) -> Advertiser:
    found = ctx.catalog.advertiser(advertiser_id) if sees_advertiser(who, advertiser_id) else None
    if found is None:
        raise not_found("advertiser_id", "advertiser", advertiser_id)
    return found


def owned_campaign(
    campaign_id: PathId("A campaign's id."),
    who: Caller,
    ctx: Ctx,  # type: ignore[valid-type]
) -> Campaign:
    found = ctx.catalog.campaign(campaign_id)
    if found is None or not sees_advertiser(who, found.advertiser_id):
        raise not_found("campaign_id", "campaign", campaign_id)
    return found


def campaign_of_line_item(ctx: ConsoleContext, line_item: LineItem) -> Campaign | None:
    return ctx.catalog.campaign(line_item.campaign_id)


def owned_line_item(
    line_item_id: PathId("A line item's id."),
    who: Caller,
    ctx: Ctx,  # type: ignore[valid-type]
) -> LineItem:
    found = ctx.catalog.line_item(line_item_id)
    campaign = campaign_of_line_item(ctx, found) if found is not None else None
    if found is None or campaign is None or not sees_advertiser(who, campaign.advertiser_id):
        raise not_found("line_item_id", "line item", line_item_id)
    return found


def owned_creative(
    creative_id: PathId("A creative's id."),
    who: Caller,
    ctx: Ctx,  # type: ignore[valid-type]
) -> Creative:
    found = ctx.catalog.creative(creative_id)
    if found is None or not sees_advertiser(who, found.advertiser_id):
        raise not_found("creative_id", "creative", creative_id)
    return found


def owned_publisher(
    publisher_id: PathId("A publisher's id."),
    who: Caller,
    ctx: Ctx,  # type: ignore[valid-type]
) -> Publisher:
    found = ctx.inventory.publisher(publisher_id) if sees_publisher(who, publisher_id) else None
    if found is None:
        raise not_found("publisher_id", "publisher", publisher_id)
    return found


def owned_site(site_id: PathId("A site's or app's id."), who: Caller, ctx: Ctx) -> Site:  # type: ignore[valid-type]
    found = ctx.inventory.site(site_id)
    if found is None or not sees_publisher(who, found.publisher_id):
        raise not_found("site_id", "site", site_id)
    return found


def owned_placement(
    placement_id: PathId("A placement's id."),
    who: Caller,
    ctx: Ctx,  # type: ignore[valid-type]
) -> Placement:
    found = ctx.inventory.placement(placement_id)
    if found is None or not sees_publisher(who, found.publisher_id):
        raise not_found("placement_id", "placement", placement_id)
    return found


def admin_partner(
    partner_id: PathId("A demand partner's id."),
    who: Caller,
    ctx: Ctx,  # type: ignore[valid-type]
) -> DemandPartner:
    found = ctx.inventory.partner(partner_id) if who.is_admin else None
    if found is None:
        raise not_found("partner_id", "demand partner", partner_id)
    return found
