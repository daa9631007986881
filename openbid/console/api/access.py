"""Logins for API clients (a password for a bearer token), the caller's tokens, and the
users admins manage."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Request

from openbid.console.api import schemas
from openbid.console.api.tenancy import Admin, Ctx, PathId
from openbid.console.auth.web import Caller
from openbid.console.errors import ApiError, not_found

router = APIRouter()


@router.post(
    "/auth/login",
    response_model=schemas.TokenCreated,
    status_code=201,
    tags=["auth"],
    summary="A bearer token for a user name and password (shown once)",
    responses={401: {"description": "wrong user name or password"}, 429: {}},
)
def login(body: schemas.Login, request: Request, ctx: Ctx) -> dict:
    address = request.client.host if request.client else ""
    who = ctx.users.authenticate(body.username, body.password, address)
    info, secret = ctx.users.create_token(who.user_id, body.token_name or "login")
    return msgspec.to_builtins(info) | {"token": secret}


@router.get("/auth/me", response_model=schemas.Me, tags=["auth"])
def me(who: Caller) -> dict:
    return msgspec.to_builtins(who)


@router.get("/auth/tokens", response_model=list[schemas.Token], tags=["auth"])
def list_tokens(who: Caller, ctx: Ctx) -> list[dict]:
    return [msgspec.to_builtins(t) for t in ctx.users.tokens(who.user_id)]


@router.post("/auth/tokens", response_model=schemas.TokenCreated, status_code=201, tags=["auth"])
def create_token(body: schemas.TokenIn, who: Caller, ctx: Ctx) -> dict:
    info, secret = ctx.users.create_token(who.user_id, body.name)
    return msgspec.to_builtins(info) | {"token": secret}


@router.delete("/auth/tokens/{token_id}", response_model=schemas.Deleted, tags=["auth"])
def revoke_token(token_id: PathId("A token's id."), who: Caller, ctx: Ctx) -> dict:  # type: ignore[valid-type]
    if not ctx.users.revoke_token(who.user_id, token_id):
        raise not_found("token_id", "token", token_id)
    return {"deleted": token_id}


# --- users (admins)
@router.get("/users", response_model=list[schemas.User], tags=["users"])
def list_users(who: Admin, ctx: Ctx) -> list[dict]:
    return [msgspec.to_builtins(u) for u in ctx.users.users()]


def _tenant_exists(ctx: Ctx, role: str, tenant_id: str) -> None:
    if role == "advertiser" and tenant_id and ctx.catalog.advertiser(tenant_id) is None:
        raise not_found("tenant_id", "advertiser", tenant_id)
    if role == "publisher" and tenant_id and ctx.inventory.publisher(tenant_id) is None:
        raise not_found("tenant_id", "publisher", tenant_id)


@router.post("/users", response_model=schemas.User, status_code=201, tags=["users"])
def create_user(body: schemas.UserIn, who: Admin, ctx: Ctx) -> dict:
    _tenant_exists(ctx, body.role, body.tenant_id)
    created = ctx.users.create_user(body.username, body.password, body.role, body.tenant_id)
    return msgspec.to_builtins(created)


def _user_for(who, user_id: str, ctx: Ctx):  # type: ignore[no-untyped-def]
    found = ctx.users.user(user_id) if who.is_admin else None
    if found is None:
        raise not_found("user_id", "user", user_id)
    return found


UserId = Annotated[str, PathId("A user's id.")]


@router.get("/users/{user_id}", response_model=schemas.User, tags=["users"])
def get_user(user_id: UserId, who: Caller, ctx: Ctx) -> dict:
    return msgspec.to_builtins(_user_for(who, user_id, ctx))


@router.patch("/users/{user_id}", response_model=schemas.User, tags=["users"])
def update_user(user_id: UserId, body: schemas.UserPatch, who: Caller, ctx: Ctx) -> dict:
    _user_for(who, user_id, ctx)
    if body.disabled and user_id == who.user_id:
        raise ApiError(422, "disabled", "an admin cannot disable itself")
    changed = ctx.users.update_user(user_id, password=body.password, disabled=body.disabled)
    if changed is None:
        raise not_found("user_id", "user", user_id)
    return msgspec.to_builtins(changed)


@router.delete("/users/{user_id}", response_model=schemas.Deleted, tags=["users"])
def delete_user(user_id: UserId, who: Caller, ctx: Ctx) -> dict:
    _user_for(who, user_id, ctx)
    if user_id == who.user_id:
        raise ApiError(422, "user_id", "an admin cannot delete itself")
    ctx.users.delete_user(user_id)
    return {"deleted": user_id}
