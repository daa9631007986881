"""How a page is rendered: the Jinja2 environment (autoescaped), the filters for money and
times, the navigation, and the headers every page carries (a CSP that allows scripts and
styles from the console only: no inline script, nothing from elsewhere)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from openbid.console.auth.users import Principal
from openbid.console.auth.web import csrf_token_for

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = STATIC / "vendor"
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
        "frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
NAV = (
    ("dashboard", "/", "Dashboard", ("admin", "advertiser", "publisher")),
    ("campaigns", "/campaigns", "Campaigns", ("admin", "advertiser")),
    ("creatives", "/creatives", "Creatives", ("admin", "advertiser")),
    ("bulk", "/bulk", "Bulk upload", ("admin", "advertiser")),
    ("reports", "/reports", "Reports", ("admin", "advertiser", "publisher")),
    ("exchange", "/health/exchange", "Exchange health", ("admin",)),
    ("models", "/health/models", "Model health", ("admin",)),
)


def usd(micros: int | float | None, digits: int = 2) -> str:
    """Micros of USD as dollars.

    >>> usd(1_234_567_000), usd(None), usd(2_500, 4)
    ('$1,234.57', '-', '$0.0025')
    """
    if micros is None:
        return "-"
    return f"${micros / 1_000_000:,.{digits}f}"


def number(value: int | float | None, digits: int = 0) -> str:
    """A count or figure with thousands separators.

    >>> number(1234567), number(0.5, 2), number(None)
    ('1,234,567', '0.50', '-')
    """
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def percent(value: float | None, digits: int = 1) -> str:
    """A share as a percentage.

    >>> percent(0.1234), percent(None)
    ('12.3%', '-')
    """
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def when(micros: int | None) -> str:
    """Microseconds since the epoch as a UTC time.

    >>> when(1_800_000_000_000_000)
    '2027-01-15 08:00 UTC'
    """
    if not micros:
        return "-"
    moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def day(micros: int | None) -> str:
    """Microseconds since the epoch as a UTC date.

    >>> day(1_800_000_000_000_000)
    '2027-01-15'
    """
    if not micros:
        return ""
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%d")


def chart_data(value: Any) -> Markup:
    """A chart's data as JSON for a `<script type="application/json">` element (static/
    console.js draws it): `<` escaped, so no value can close the element."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(
    usd=usd, number=number, percent=percent, when=when, day=day, chart_data=chart_data
)
templates.env.globals["charts_available"] = lambda: (VENDOR / "chart.umd.min.js").exists()


def page(
    request: Request,
    who: Principal | None,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """`template` rendered for `who`, with its CSRF token, navigation and headers."""
    response = Response()
    token = csrf_token_for(request, response)
    nav = [item for item in NAV if who is not None and who.role in item[3]]
    rendered = templates.TemplateResponse(
        request,
        template,
        {"who": who, "csrf_token": token, "nav": nav, **context},
        status_code=status_code,
        headers=PAGE_HEADERS,
    )
    for key, value in response.raw_headers:
        if key == b"set-cookie":
            rendered.raw_headers.append((key, value))
    return rendered
