"""The login page and the page callers: `PageUser` is the API's caller (a session cookie,
whose unsafe requests must carry the session's CSRF token) for pages; not logged in, the
page redirects to `/login`. The form posts to the API's `/auth/login`, which sets the
session cookie; a refused login comes back here with its reason."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from openbid.console.auth.users import Principal
from openbid.console.auth.web import SESSION_COOKIE, principal, safe_next
from openbid.console.context import ConsoleContext, console
from openbid.console.web.render import page

LOGIN_ERRORS = {
    "credentials": "Wrong user name or password.",
    "locked": "Too many wrong passwords: this account is locked for a while.",
    "address": "Too many failed logins from this address: try again later.",
}


async def page_user(
    request: Request, ctx: Annotated[ConsoleContext, Depends(console)]
) -> Principal:
    who = await principal(request, ctx)
    request.state.page_user = who
    return who


PageUser = Annotated[Principal, Depends(page_user)]
Ctx = Annotated[ConsoleContext, Depends(console)]

router = APIRouter(include_in_schema=False)


@router.get("/login")
def login_page(
    request: Request,
    ctx: Ctx,
    next: Annotated[str, Query(max_length=2000)] = "/",  # noqa: A002 - the form's field name
    error: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie and ctx.users.session(cookie) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(
        request,
        None,
        "login.html",
        status_code=401 if error else 200,
        next=safe_next(next),
        error=LOGIN_ERRORS.get(error, "Log in again." if error else ""),
    )
