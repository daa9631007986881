"""Reports over the rollups: a time range, a breakdown (`group_by`), filters, and the
tenant's scope in; rows of counts and the metrics derived from them out (CTR, CPM, CPC,
CPA, win rate, fill, RPM, budget use), as JSON or CSV.

Each grain answers the breakdowns its dimensions allow; a metric whose grain cannot be
broken down as asked (fill by campaign: auctions have no campaign) is null, never a wrong
number. Money in and out is integer micros; CPM and RPM are micros per thousand.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence

import duckdb
import msgspec
import pyarrow as pa

from openbid.console.reports.sql import DIMENSIONS, GRAINS, MEASURES

BREAKDOWNS: dict[str, str] = {
    "hour": "hour",
    "day": "day",
    "campaign": "campaign_id",
    "line_item": "line_item_id",
    "creative": "creative_id",
    "advertiser": "advertiser",
    "placement": "placement",
    "publisher": "publisher_id",
    "country": "country",
    "device": "device_type",
    "dsp": "dsp",
}
"""What a report can be broken down by, and the rollup column behind it."""
FILTERS = tuple(name for name in BREAKDOWNS if name not in ("hour", "day"))
METRICS: tuple[str, ...] = (
    "auctions",
    "filled",
    "fill",
    "calls",
    "bids",
    "bid_rate",
    "wins",
    "win_rate",
    "timeouts",
    "errors",
    "impressions",
    "clicks",
    "ctr",
    "conversions",
    "conversion_value_micros",
    "spend_micros",
    "cpm_micros",
    "cpc_micros",
    "cpa_micros",
    "rpm_micros",
    "budget_use",
)


class ReportRequest(msgspec.Struct, frozen=True, kw_only=True):
    since_hour: int
    until_hour: int
    """Hours since the epoch, [since, until)."""
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    grains: tuple[str, ...] = GRAINS
    """The grains the caller may see (an advertiser: delivery only)."""
    campaigns: tuple[str, ...] | None = None
    """An advertiser's campaigns: delivery is limited to them (None: no limit)."""
    publisher_id: str | None = None
    """A publisher's id: every grain is limited to its inventory (None: no limit)."""


def _column(grain: str, breakdown: str) -> str | None:
    column = BREAKDOWNS[breakdown]
    if column in ("hour", "day"):
        return column
    return column if column in DIMENSIONS[grain] else None


def _grain_sql(grain: str, request: ReportRequest) -> tuple[str, list] | None:
    """The query of one grain, or None when it cannot answer the request."""
    selects, params = [], []
    for breakdown in request.group_by:
        column = _column(grain, breakdown)
        if column is None:
            return None
        selects.append("hour // 24 AS day" if column == "day" else f"{column} AS {breakdown}")
    where = ["hour >= ?", "hour < ?"]
    params += [request.since_hour, request.until_hour]
    for name, values in request.filters.items():
        column = _column(grain, name)
        if column is None:
            return None
        where.append(f"list_contains(?, {column})")
        params.append(list(values))
    if request.publisher_id is not None:
        where.append("publisher_id = ?")
        params.append(request.publisher_id)
    if request.campaigns is not None:
        if grain != "delivery":
            return None
        where.append("list_contains(?, campaign_id)")
        params.append(list(request.campaigns))
    sums = [f"CAST(sum({m}) AS BIGINT) AS {m}" for m in MEASURES[grain]]
    sql = f"SELECT {', '.join(selects + sums)} FROM {grain} WHERE {' AND '.join(where)}"
    if request.group_by:
        sql += f" GROUP BY {', '.join(str(i + 1) for i in range(len(request.group_by)))}"
    return sql, params


def _ratio(numerator: int | None, denominator: int | None, scale: float = 1.0) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator * scale / denominator


def derive(counts: dict[str, int | None], budget_micros: int | None = None) -> dict[str, object]:
    """The metrics of one row from its summed counts (absent grains: None).

    >>> row = derive({"impressions": 2000, "price_cpm_micros": 3_000_000_000, "clicks": 4,
    ...               "conversions": 1, "auctions": 4000, "filled": 2500})
    >>> row["spend_micros"], row["cpm_micros"], row["cpc_micros"], row["ctr"], row["rpm_micros"]
    (3000000, 1500000.0, 750000.0, 0.002, 750000.0)
    """
    get = counts.get
    price = get("price_cpm_micros")
    spend = price // 1000 if price is not None else None
    row: dict[str, object] = {name: get(name) for name in METRICS}
    row["spend_micros"] = spend
    row["fill"] = _ratio(get("filled"), get("auctions"))
    row["bid_rate"] = _ratio(get("bids"), get("calls"))
    row["win_rate"] = _ratio(get("wins"), get("bids"))
    row["ctr"] = _ratio(get("clicks"), get("impressions"))
    row["cpm_micros"] = _ratio(price, get("impressions"))
    row["cpc_micros"] = _ratio(spend, get("clicks"))
    row["cpa_micros"] = _ratio(spend, get("conversions"))
    row["rpm_micros"] = _ratio(spend, get("auctions"), 1000.0)
    row["budget_use"] = _ratio(spend, budget_micros) if budget_micros else None
    return row


def _label(breakdown: str, value: object) -> object:
    if breakdown == "hour":
        return time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(int(value) * 3600))  # type: ignore[call-overload]
    if breakdown == "day":
        return time.strftime("%Y-%m-%d", time.gmtime(int(value) * 86400))  # type: ignore[call-overload]
    return value


def run_report(
    tables: Mapping[str, pa.Table],
    request: ReportRequest,
    budgets: Mapping[str, int] | None = None,
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """(rows, totals) of `request` over the rollup tables (one per grain)."""
    connection = duckdb.connect()
    try:
        grouped = _counts(connection, tables, request)
        totals = _counts(connection, tables, msgspec.structs.replace(request, group_by=()))
    finally:
        connection.close()
    rows = []
    for key in sorted(grouped, key=lambda k: tuple("" if v is None else v for v in k)):
        budget = None
        if budgets and "campaign" in request.group_by:
            budget = budgets.get(str(key[request.group_by.index("campaign")]))
        row: dict[str, object] = {
            breakdown: _label(breakdown, value)
            for breakdown, value in zip(request.group_by, key, strict=True)
        }
        row |= derive(grouped[key], budget)
        rows.append(row)
    total_counts = totals.get((), {})
    return rows, derive(total_counts)


def _counts(
    connection: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table], request: ReportRequest
) -> dict[tuple, dict[str, int | None]]:
    merged: dict[tuple, dict[str, int | None]] = {}
    width = len(request.group_by)
    for grain in request.grains:
        table = tables.get(grain)
        query = _grain_sql(grain, request)
        if table is None or query is None:
            continue
        sql, params = query
        connection.register(grain, table)
        result = connection.execute(sql, params).fetchall()
        for record in result:
            key, values = tuple(record[:width]), record[width:]
            if not request.group_by and all(v is None for v in values):
                continue  # no rows of this grain in range: leave its metrics null
            counts = merged.setdefault(key, {})
            for name, value in zip(MEASURES[grain], values, strict=True):
                counts[name] = int(value or 0)
    return merged


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A cell a spreadsheet shows as text: a breakdown's value comes from outside (a DSP's
    advertiser domain, a publisher's placement), and one starting like a formula
    (`=HYPERLINK(...)`) would run when the export is opened, so it is quoted with `'`.

    >>> csv_cell("=1+2"), csv_cell("-x"), csv_cell("shop.example"), csv_cell(-3), csv_cell(None)
    ("'=1+2", "'-x", 'shop.example', -3, '')
    """
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(rows: Sequence[Mapping[str, object]], group_by: Sequence[str]) -> str:
    """Rows as CSV: the breakdown's columns, then every metric (empty where null)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = list(group_by) + list(METRICS)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
    return out.getvalue()
