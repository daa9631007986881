"""Who is calling, for every route: a bearer token (`Authorization: Bearer obc_...`) or a web
session cookie; and the web pages' session machinery: login and logout form posts, the
session cookie (HttpOnly, SameSite=Lax, Secure over https), CSRF tokens.

CSRF: a session carries a synchronizer token; a request with the session cookie that is not
GET/HEAD/OPTIONS must send it back, as the `csrf_token` form field or the `X-CSRF-Token`
header. Before a login there is no session: the login form is protected by a double-submit
token (the `openbid_csrf` cookie, which the form repeats). Bearer-token calls need none: a
browser never adds that header by itself.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from openbid.console.auth.users import Principal, new_secret
from openbid.console.context import ConsoleContext, console
from openbid.console.errors import ApiError

SESSION_COOKIE = "openbid_session"
LOGIN_CSRF_COOKIE = "openbid_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _secure(request: Request, ctx: ConsoleContext) -> bool:
    return ctx.config.console.secure_cookies or request.url.scheme == "https"


def _same(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


async def submitted_csrf(request: Request) -> str:
    """The CSRF token a request sends back: its header, else its form field."""
    token = request.headers.get(CSRF_HEADER, "")
    if token:
        return token
    if request.headers.get("content-type", "").startswith(FORM_TYPES):
        try:
            form = await request.form()  # Starlette keeps it: the route reads it again
        except Exception:  # a malformed body: no token in it
            return ""
        value = form.get(CSRF_FIELD, "")
        return value if isinstance(value, str) else ""
    return ""


async def principal(
    request: Request, ctx: Annotated[ConsoleContext, Depends(console)]
) -> Principal:
    """The caller (a FastAPI dependency): 401 without credentials, 403 for a session's
    unsafe request without its CSRF token."""
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            found = await run_in_threadpool(ctx.users.principal_for_token, token)
            if found is not None:
                return found
        raise ApiError(
            401,
            "authorization",
            "unknown or revoked token (send Authorization: Bearer <token>)",
            headers={"www-authenticate": "Bearer"},
        )
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie:
        session = await run_in_threadpool(ctx.users.session, cookie)
        if session is not None:
            who, csrf = session
            request.state.csrf_token = csrf
            if request.method not in SAFE_METHODS and not _same(
                await submitted_csrf(request), csrf
            ):
                raise ApiError(403, CSRF_FIELD, "missing or wrong CSRF token")
            return who
    raise ApiError(
        401,
        "authorization",
        "log in first: a bearer token, or a session from POST /auth/login",
        headers={"www-authenticate": "Bearer"},
    )


Caller = Annotated[Principal, Depends(principal)]
"""A route's caller: `def route(who: Caller)`."""


def csrf_token_for(request: Request, response: Response) -> str:
    """The token a page's forms must carry: the session's, else (before a login) the
    double-submit token of the `openbid_csrf` cookie, set on `response` when new."""
    token = getattr(request.state, "csrf_token", "")
    if token:
        return token
    token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if len(token) < 32:
        token = new_secret()
        ctx: ConsoleContext = request.app.state.console
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="lax",
            secure=_secure(request, ctx),
            path="/",
        )
    return token


def safe_next(target: str) -> str:
    """A redirect target after a login: a path on this site only (no open redirect).

    >>> safe_next("/campaigns?x=1"), safe_next("//evil.example"), safe_next("https://e.x/")
    ('/campaigns?x=1', '/', '/')
    """
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


router = APIRouter(tags=["session"])


@router.get(
    "/auth/csrf",
    summary="The CSRF token forms must carry: the session's, or the login form's (sets its cookie)",
)
def csrf(
    request: Request, response: Response, ctx: Annotated[ConsoleContext, Depends(console)]
) -> dict[str, str]:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    session = ctx.users.session(cookie) if cookie else None
    if session is not None:
        request.state.csrf_token = session[1]
    return {"csrf_token": csrf_token_for(request, response)}


@router.post(
    "/auth/login",
    summary="Log in with a form post: sets the session cookie and redirects (303)",
    status_code=303,
    responses={401: {"description": "wrong user name or password"}, 429: {}},
)
def login_form(
    request: Request,
    ctx: Annotated[ConsoleContext, Depends(console)],
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",  # noqa: A002 - the form's field name
) -> RedirectResponse:
    if not _same(csrf_token, request.cookies.get(LOGIN_CSRF_COOKIE, "")):
        raise ApiError(403, CSRF_FIELD, "missing or wrong CSRF token (GET /auth/csrf first)")
    address = request.client.host if request.client else ""
    who = ctx.users.authenticate(username, password, address)
    replaced = request.cookies.get(SESSION_COOKIE, "")
    if replaced:  # a login in a browser logged in already ends the session it replaces
        ctx.users.end_session(replaced)
    secret, _ = ctx.users.create_session(who.user_id)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(ctx.config.console.session_ttl_s),
        httponly=True,
        samesite="lax",
        secure=_secure(request, ctx),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/auth/logout", summary="End the session (a form post with its CSRF token)")
def logout_form(
    request: Request,
    ctx: Annotated[ConsoleContext, Depends(console)],
    who: Caller,
) -> RedirectResponse:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie:
        ctx.users.end_session(cookie)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
