"""One error body for every failure the console answers:
`{"error": {"field": "...", "message": "..."}}` (with `details`, every field's problem, when
there are several), for our own errors, the catalog's validation, request validation
(FastAPI's 422) and Starlette's own (unknown route, wrong method)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from openbid.campaigns.validate import InvalidRecord
from openbid.console.auth.users import LoginRefused, UserError
from openbid.stores.base import StoreError, StoreUnavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success: its status, the field it is about, why."""

    def __init__(
        self,
        status: int,
        field: str,
        message: str,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message
        self.details = details
        self.headers = headers


def not_found(field: str, kind: str, record_id: str) -> ApiError:
    """The one answer for what does not exist and for what belongs to another tenant."""
    return ApiError(404, field, f"no {kind} {record_id!r}")


def error_body(field: str, message: str, details: list[dict[str, str]] | None = None) -> dict:
    error: dict[str, Any] = {"field": field, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def field_path(location: tuple | list) -> str:
    """A pydantic error location as a field path: `("body", "targeting", "countries", 0)`
    is `targeting.countries[0]`; the part (`body`, `query`, `path`) is left out.

    >>> field_path(("body", "targeting", "countries", 0))
    'targeting.countries[0]'
    >>> field_path(("query", "from"))
    'from'
    """
    parts = list(location)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie", "form"):
        parts = parts[1:]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _json(status: int, body: dict, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, error_body(exc.field, exc.message, exc.details), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for error in exc.errors():
            message = str(error.get("msg", "invalid"))
            if error.get("type") == "missing":
                message = "required"
            details.append({"field": field_path(error.get("loc", ())), "message": message})
        first = details[0] if details else {"field": "", "message": "invalid request"}
        return _json(422, error_body(first["field"], first["message"], details))

    @app.exception_handler(InvalidRecord)
    async def _invalid_record(request: Request, exc: InvalidRecord) -> JSONResponse:
        details = [{"field": e.field, "message": e.reason} for e in exc.errors]
        first = details[0] if details else {"field": "", "message": str(exc)}
        return _json(422, error_body(first["field"], first["message"], details))

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> JSONResponse:
        return _json(422, error_body(exc.field, str(exc)))

    @app.exception_handler(LoginRefused)
    async def _login_refused(request: Request, exc: LoginRefused) -> JSONResponse:
        if exc.reason == "credentials":
            return _json(401, error_body("password", str(exc)))
        retry = {"retry-after": str(max(int(exc.retry_after_s + 0.999), 1))}
        field = "username" if exc.reason == "locked" else "address"
        return _json(429, error_body(field, str(exc)), retry)

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("console store unavailable", extra={"error": str(exc)})
        return _json(503, error_body("", "the catalog database is unavailable: retry later"))

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return _json(409, error_body("id", str(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        field = "path" if exc.status_code in (404, 405) else ""
        return _json(exc.status_code, error_body(field, str(exc.detail)), exc.headers)
