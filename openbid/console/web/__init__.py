"""The console's web pages: server-rendered Jinja2 templates on the API's own application,
context, callers, sessions and CSRF tokens, with htmx for the little that updates in place
and Chart.js for the charts (both fetched from the npm registry at build time by
`make vendor` into `static/vendor/`; never a CDN). `docs/console.md`, "Pages".

Every page is scoped as the API is: an object of another tenant is "not found" (404)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from openbid.console.web import buying, errors, health, insight, render, session

PAGE_ROUTERS = tuple(module.router for module in (session, buying, insight, health))


def mount(app: FastAPI) -> None:
    """Adds the pages, their static files and their HTML error pages to the console's app."""
    app.mount("/static", StaticFiles(directory=render.STATIC, check_dir=False), name="static")
    for router in PAGE_ROUTERS:
        app.include_router(router)
    errors.install(app)
