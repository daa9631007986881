"""`GET /api/v1/reports`: delivery, auction and demand figures over a time range, broken
down and filtered, scoped to the caller (an advertiser's campaigns, a publisher's
inventory), as JSON or CSV (`format=csv`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import Field

from openbid import clock
from openbid.console.api.schemas import Model
from openbid.console.api.tenancy import Ctx
from openbid.console.auth.web import Caller
from openbid.console.errors import ApiError
from openbid.console.reports.query import BREAKDOWNS, ReportRequest, to_csv
from openbid.console.reports.rollup import HOUR_MICROS
from openbid.console.reports.sql import GRAINS

router = APIRouter()
MAX_RANGE = timedelta(days=400)
ADVERTISER_HIDDEN = ("publisher",)
PUBLISHER_HIDDEN = ("campaign", "line_item", "creative")
"""Breakdowns a tenant may not ask for: publishers see demand by DSP and advertiser
domain, not advertisers' campaign structure; advertisers see where their ads ran by
placement, country and device, not which publisher's other figures."""


class Report(Model):
    since: str
    until: str
    group_by: list[str]
    complete_until: str = Field(
        description="Hours before it are final; later ones are provisional or not yet summarised."
    )
    rows: list[dict[str, object]]
    totals: dict[str, object]


def _instant(field: str, value: str | None, default: datetime) -> datetime:
    if value is None or value == "":
        return default
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, field, f"{value!r} is not an ISO-8601 date or time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _hour(instant: datetime, *, up: bool) -> int:
    micros = int(instant.timestamp() * 1_000_000)
    return -(-micros // HOUR_MICROS) if up else micros // HOUR_MICROS


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


@router.get(
    "/reports",
    response_model=Report,
    tags=["reports"],
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
    summary="Counts and metrics over a time range (rollups of the event log)",
)
def report(
    who: Caller,
    ctx: Ctx,
    since: Annotated[
        str | None, Query(max_length=40, description="ISO-8601; default: 24 h ago")
    ] = None,
    until: Annotated[str | None, Query(max_length=40, description="ISO-8601; default: now")] = None,
    group_by: Annotated[
        list[Literal[tuple(BREAKDOWNS)]] | None,  # type: ignore[valid-type]
        Query(max_length=4, description="Breakdowns, e.g. day and campaign"),
    ] = None,
    campaign: Annotated[
        list[Annotated[str, Field(max_length=64)]] | None, Query(max_length=500)
    ] = None,
    line_item: Annotated[
        list[Annotated[str, Field(max_length=64)]] | None, Query(max_length=500)
    ] = None,
    creative: Annotated[
        list[Annotated[str, Field(max_length=64)]] | None, Query(max_length=500)
    ] = None,
    advertiser: Annotated[
        list[Annotated[str, Field(max_length=253)]] | None, Query(max_length=500)
    ] = None,
    placement: Annotated[
        list[Annotated[str, Field(max_length=64)]] | None, Query(max_length=500)
    ] = None,
    publisher: Annotated[
        list[Annotated[str, Field(max_length=64)]] | None, Query(max_length=500)
    ] = None,
    country: Annotated[
        list[Annotated[str, Field(max_length=8)]] | None, Query(max_length=500)
    ] = None,
    device: Annotated[
        list[Annotated[str, Field(max_length=32)]] | None, Query(max_length=500)
    ] = None,
    dsp: Annotated[list[Annotated[str, Field(max_length=64)]] | None, Query(max_length=500)] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",  # noqa: A002 - the query's name
) -> object:
    now = datetime.fromtimestamp(clock.now(), UTC)
    start = _instant("since", since, now - timedelta(days=1))
    end = _instant("until", until, now)
    if end <= start:
        raise ApiError(422, "until", "must be after since")
    if end - start > MAX_RANGE:
        raise ApiError(422, "since", f"a report covers at most {MAX_RANGE.days} days")
    breakdown = tuple(dict.fromkeys(group_by or ()))
    chosen = {
        "campaign": campaign,
        "line_item": line_item,
        "creative": creative,
        "advertiser": advertiser,
        "placement": placement,
        "publisher": publisher,
        "country": country,
        "device": device,
        "dsp": dsp,
    }
    filters = {name: tuple(values) for name, values in chosen.items() if values}
    grains, campaigns, publisher_id = GRAINS, None, None
    budgets: dict[str, int] = {}
    if who.role == "advertiser":
        hidden = ADVERTISER_HIDDEN
        grains = ("delivery",)
        owned = ctx.catalog.campaigns(who.tenant_id)
        campaigns = tuple(c.id for c in owned)
        budgets = {c.id: c.total_budget_micros for c in owned}
    elif who.role == "publisher":
        hidden = PUBLISHER_HIDDEN
        publisher_id = who.tenant_id
    else:
        hidden = ()
        if "campaign" in breakdown:
            budgets = {c.id: c.total_budget_micros for c in ctx.catalog.campaigns()}
    for name in hidden:
        if name in breakdown:
            raise ApiError(403, "group_by", f"{who.role} reports are not broken down by {name}")
        if name in filters:
            raise ApiError(403, name, f"{who.role} reports are not filtered by {name}")
    request = ReportRequest(
        since_hour=_hour(start, up=False),
        until_hour=_hour(end, up=True),
        group_by=breakdown,
        filters=filters,
        grains=grains,
        campaigns=campaigns,
        publisher_id=publisher_id,
    )
    rows, totals = ctx.reports.report(request, budgets)
    if format == "csv":
        return Response(
            to_csv(rows, breakdown),
            media_type="text/csv",
            headers={"content-disposition": 'attachment; filename="openbid-report.csv"'},
        )
    return {
        "since": _iso(request.since_hour * HOUR_MICROS),
        "until": _iso(request.until_hour * HOUR_MICROS),
        "group_by": list(breakdown),
        "complete_until": _iso(ctx.reports.complete_until_micros()),
        "rows": rows,
        "totals": totals,
    }
