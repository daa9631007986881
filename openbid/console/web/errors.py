"""Errors as a browser sees them: the API's handlers answer JSON; for a page (a request that
is not the API's and accepts HTML, or an htmx request) the same error is a page instead. Not
logged in: a redirect to the login page; a refused login: the login page again, saying why;
anything else: the error page with the status and the field it is about (404 for another
tenant's object, exactly as for one that does not exist)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from openbid.console.auth.users import LoginRefused
from openbid.console.errors import ApiError
from openbid.console.web.render import page

NOT_PAGES = ("/api/", "/assets/", "/openapi.json", "/static/", "/healthz", "/auth/csrf")


def wants_page(request: Request) -> bool:
    path = request.url.path
    if path.startswith(NOT_PAGES):
        return False
    if request.headers.get("hx-request") == "true":
        return True
    return "text/html" in request.headers.get("accept", "")


def _login_again(request: Request, reason: str) -> RedirectResponse:
    return RedirectResponse(f"/login?error={reason}", status_code=303)


def install(app: FastAPI) -> None:
    """Wraps every installed exception handler: pages get HTML, the API keeps its JSON."""
    for kind, handler in list(app.exception_handlers.items()):

        async def handle(request: Request, exc: Exception, _api=handler) -> Response:
            if not wants_page(request):
                return await _api(request, exc)
            if isinstance(exc, LoginRefused):
                return _login_again(request, exc.reason)
            answered = await _api(request, exc)
            status = answered.status_code
            if status == 401:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            field = getattr(exc, "field", "")
            message = getattr(exc, "message", "") or str(getattr(exc, "detail", "") or exc)
            if status == 404 and not isinstance(exc, ApiError):
                message = "there is no such page"
            who = getattr(request.state, "page_user", None)
            return page(
                request,
                who,
                "error.html",
                status_code=status,
                status=status,
                field=field,
                message=message,
            )

        app.add_exception_handler(kind, handle)
