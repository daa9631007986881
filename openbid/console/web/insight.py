"""The pages that read the reports: the dashboard (the last day's figures and hourly chart,
each caller its own scope), the report explorer (dimensions, metrics, dates, a chart, CSV
export through the API) and the pacing series of a campaign's page (planned against actual
spend)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from openbid import clock
from openbid.campaigns import model as records
from openbid.console.api import reports as report_api
from openbid.console.api.tenancy import advertiser_scope
from openbid.console.errors import ApiError
from openbid.console.reports.query import BREAKDOWNS, METRICS
from openbid.console.reports.rollup import HOUR_MICROS
from openbid.console.web.render import page
from openbid.console.web.session import Ctx, PageUser

router = APIRouter(include_in_schema=False)
DAY_MICROS = 24 * HOUR_MICROS
TIME_BREAKDOWNS = ("hour", "day")
MONEY = {"spend_micros", "cpm_micros", "cpc_micros", "cpa_micros", "rpm_micros", "conversion_value_micros"}  # fmt: skip
RATES = {"fill", "bid_rate", "win_rate", "ctr", "budget_use"}
DEFAULT_METRICS = ("impressions", "clicks", "ctr", "spend_micros", "cpm_micros")
METRIC_NAMES = {
    "auctions": "Auctions", "filled": "Filled", "fill": "Fill", "calls": "DSP calls",
    "bids": "Bids", "bid_rate": "Bid rate", "wins": "Wins", "win_rate": "Win rate",
    "timeouts": "Timeouts", "errors": "Errors", "impressions": "Impressions",
    "clicks": "Clicks", "ctr": "CTR", "conversions": "Conversions",
    "conversion_value_micros": "Conversion value", "spend_micros": "Spend",
    "cpm_micros": "CPM", "cpc_micros": "CPC", "cpa_micros": "CPA", "rpm_micros": "RPM",
    "budget_use": "Budget use",
}  # fmt: skip
BREAKDOWN_NAMES = {
    "hour": "Hour", "day": "Day", "campaign": "Campaign", "line_item": "Line item",
    "creative": "Creative", "advertiser": "Advertiser domain", "placement": "Placement",
    "publisher": "Publisher", "country": "Country", "device": "Device", "dsp": "DSP",
}  # fmt: skip
HIDDEN = {"advertiser": report_api.ADVERTISER_HIDDEN, "publisher": report_api.PUBLISHER_HIDDEN}
ADVERTISER_METRICS = (
    "impressions", "clicks", "ctr", "conversions", "conversion_value_micros", "spend_micros",
    "cpm_micros", "cpc_micros", "cpa_micros", "budget_use",
)  # fmt: skip


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, UTC).strftime("%Y-%m-%dT%H:%M")


def _report(who: Any, ctx: Any, **query: Any) -> dict:
    """The API's report for `who` (its scope, its checks)."""
    names = ("campaign", "line_item", "creative", "advertiser", "placement", "publisher",
             "country", "device", "dsp")  # fmt: skip
    arguments = {name: query.get(name) for name in names}
    return report_api.report(
        who,
        ctx,
        since=query.get("since"),
        until=query.get("until"),
        group_by=query.get("group_by"),
        format="json",
        **arguments,
    )


def metric_choices(who: Any) -> tuple[str, ...]:
    return ADVERTISER_METRICS if who.role == "advertiser" else METRICS


def pacing_series(ctx: Any, campaign: records.Campaign) -> dict[str, Any]:
    """Planned and actual cumulative spend of `campaign` over the last week of its flight so
    far, hour by hour (day by day beyond three days). Planned is an even pace: the total
    budget over the flight's hours, at most the daily budget a day."""
    now = clock.now_micros()
    end = min(campaign.end_micros, now)
    start = max(campaign.start_micros, now - 7 * DAY_MICROS)
    if end <= start:
        return {"labels": [], "planned": [], "actual": [], "grain": "hour"}
    flight_hours = max((campaign.end_micros - campaign.start_micros) / HOUR_MICROS, 1.0)
    per_hour = campaign.total_budget_micros / flight_hours
    if campaign.daily_budget_micros:
        per_hour = min(per_hour, campaign.daily_budget_micros / 24)
    grain = "hour" if end - start <= 3 * DAY_MICROS else "day"
    step = HOUR_MICROS if grain == "hour" else DAY_MICROS
    first = start - start % step
    buckets = list(range(first, end, step))
    try:
        answer = ctx.reports.report(
            report_api.ReportRequest(
                since_hour=first // HOUR_MICROS,
                until_hour=-(-end // HOUR_MICROS),
                group_by=(grain,),
                filters={"campaign": (campaign.id,)},
                grains=("delivery",),
            )
        )[0]
    except Exception:  # no rollups yet: an empty actual line, never a broken page
        answer = []
    spent = {row[grain]: int(row.get("spend_micros") or 0) for row in answer}
    labels, planned, actual = [], [], []
    total_planned = total_actual = 0.0
    for bucket in buckets:
        moment = datetime.fromtimestamp(bucket / 1e6, UTC)
        key = moment.strftime("%Y-%m-%dT%H:00:00Z" if grain == "hour" else "%Y-%m-%d")
        covered = (min(bucket + step, end) - max(bucket, start)) / HOUR_MICROS
        total_planned += per_hour * max(covered, 0.0)
        total_actual += spent.get(key, 0)
        label = moment.strftime("%b %d %H:00" if grain == "hour" else "%b %d")
        labels.append(label)
        planned.append(round(total_planned / 1e6, 4))
        actual.append(round(total_actual / 1e6, 4))
    return {"labels": labels, "planned": planned, "actual": actual, "grain": grain}


@router.get("/")
def dashboard(request: Request, who: PageUser, ctx: Ctx) -> Response:
    now = clock.now_micros()
    since, until = _iso(now - DAY_MICROS), _iso(now + HOUR_MICROS)
    problem = ""
    try:
        hourly = _report(who, ctx, since=since, until=until, group_by=["hour"])
    except ApiError as exc:
        hourly, problem = {"rows": [], "totals": {}}, exc.message
    campaigns = []
    if who.role != "publisher":
        try:
            by_campaign = _report(who, ctx, since=since, until=until, group_by=["campaign"])
            campaigns = sorted(by_campaign["rows"], key=lambda r: -(r.get("spend_micros") or 0))[:8]
        except ApiError:
            campaigns = []
        names = {c.id: c.name for c in ctx.catalog.campaigns(advertiser_scope(who))}
        for row in campaigns:
            row["name"] = names.get(str(row.get("campaign")), "")
    rows = hourly["rows"]
    chart = {
        "labels": [str(r["hour"])[11:16] for r in rows],
        "series": [
            {
                "label": "Impressions",
                "data": [r.get("impressions") or 0 for r in rows],
                "type": "bar",
            },
            {
                "label": "Spend (USD)",
                "data": [round((r.get("spend_micros") or 0) / 1e6, 2) for r in rows],
                "axis": "y1",
            },
        ],
    }
    return page(
        request,
        who,
        "dashboard.html",
        totals=hourly["totals"],
        hourly=chart,
        campaigns=campaigns,
        problem=problem,
        complete_until=hourly.get("complete_until", ""),
    )


@router.get("/reports")
def report_explorer(
    request: Request,
    who: PageUser,
    ctx: Ctx,
    since: Annotated[str, Query(max_length=40)] = "",
    until: Annotated[str, Query(max_length=40)] = "",
    group_by: Annotated[list[str] | None, Query(max_length=4)] = None,
    metric: Annotated[list[str] | None, Query(max_length=30)] = None,
    campaign: Annotated[str, Query(max_length=2000)] = "",
    country: Annotated[str, Query(max_length=2000)] = "",
) -> Response:
    now = clock.now_micros()
    since = since or _iso(now - 7 * DAY_MICROS)
    until = until or _iso(now + HOUR_MICROS)
    hidden = HIDDEN.get(who.role, ())
    breakdowns = [b for b in BREAKDOWNS if b not in hidden]
    chosen = [b for b in (group_by if group_by is not None else ["day"]) if b in breakdowns][:4]
    allowed = metric_choices(who)
    metrics = [m for m in (metric or DEFAULT_METRICS) if m in allowed] or list(DEFAULT_METRICS)
    filters = {
        "campaign": [c.strip() for c in campaign.split(",") if c.strip()] or None,
        "country": [c.strip().upper() for c in country.split(",") if c.strip()] or None,
    }
    if "campaign" in hidden:
        filters["campaign"] = None
    problem = ""
    try:
        answer = _report(who, ctx, since=since, until=until, group_by=chosen, **filters)
    except ApiError as exc:
        answer, problem = {"rows": [], "totals": {}, "complete_until": ""}, exc.message
    query: list[tuple[str, str]] = [("since", since), ("until", until)]
    query += [("group_by", b) for b in chosen]
    query += [("campaign", c) for c in filters["campaign"] or ()]
    query += [("country", c) for c in filters["country"] or ()]
    csv_url = "/api/v1/reports?" + urlencode(query + [("format", "csv")])
    chart = None
    rows = answer["rows"]
    if rows and chosen and chosen[0] in TIME_BREAKDOWNS and len(chosen) == 1:
        first = metrics[0]
        chart = {
            "labels": [str(r[chosen[0]]) for r in rows],
            "series": [
                {
                    "label": METRIC_NAMES[first],
                    "data": [_chart_value(first, r.get(first)) for r in rows],
                }
            ],  # fmt: skip
        }
    return page(
        request,
        who,
        "reports.html",
        since=since,
        until=until,
        chosen=chosen,
        breakdowns=breakdowns,
        metrics=metrics,
        allowed=allowed,
        campaign=campaign,
        country=country,
        answer=answer,
        problem=problem,
        csv_url=csv_url,
        report_chart=chart,
        metric_names=METRIC_NAMES,
        breakdown_names=BREAKDOWN_NAMES,
        money=MONEY,
        rates=RATES,
    )


def _chart_value(metric: str, value: Any) -> float | None:
    if value is None:
        return None
    if metric in MONEY:
        return round(float(value) / 1e6, 4)
    return float(value)
