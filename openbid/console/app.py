"""The console's FastAPI application: the REST API under `/api/v1` (`openbid/console/api/`),
the session routes (`/auth/...`), uploaded images (`/assets/...`), `/openapi.json`, and the
web pages (`openbid/console/web/`, mounted when present) built on the same context,
sessions and CSRF tokens."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from openbid import __version__
from openbid.console.api import access, buyside, creatives, models, reports, sellside
from openbid.console.auth import web as session_routes
from openbid.console.bodylimit import BodyLimit
from openbid.console.context import ConsoleContext
from openbid.console.errors import ApiError, error_body, install_error_handlers

API_PREFIX = "/api/v1"
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {
        "description": description,
        "content": {
            "application/json": {
                "example": error_body("field", "what is wrong with it"),
            }
        },
    }
    for status, description in (
        (401, "not logged in"),
        (403, "not allowed (role, CSRF)"),
        (404, "no such object, or another tenant's"),
        (409, "the id is taken"),
        (422, "a field is invalid: `error.field` names it"),
    )
}


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)
    for module in (access, buyside, creatives, sellside, reports, models):
        router.include_router(module.router)
    return router


def create_app(context: ConsoleContext, *, start_background: bool = False) -> FastAPI:
    """The console for `context`; `start_background` starts the rollup updates (the console
    process does; tests update by hand)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_background:
            context.reports.start()
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="openbid console",
        version=__version__,
        summary="Advertisers', publishers' and admins' API: campaigns, inventory, reports.",
        openapi_url="/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.console = context
    app.add_middleware(BodyLimit, max_upload_bytes=context.config.console.max_upload_bytes)
    install_error_handlers(app)
    app.include_router(api_router())
    app.include_router(session_routes.router)
    app.include_router(creatives.assets_router)
    if importlib.util.find_spec("openbid.console.web") is not None:
        from openbid.console import web

        web.mount(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


__all__ = ["ApiError", "create_app"]
