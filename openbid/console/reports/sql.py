"""The rollups' SQL: one statement per grain, written once in DuckDB's dialect and
transpiled by SQLGlot for Spark (`render`), as the ETL's transformations are.

Inputs (registered by `openbid.console.reports.rollup`): `auctions` (the hour's auctions,
with publisher, placement, country and device read out of their features), `dims` (the same
columns for every auction a tracker of the hour may refer to), `bids`, `impressions`,
`clicks`, `conversions`. Each grain sums integer counts and integer CPM micros, so rollups
of hours add up exactly to the rollup of the whole.
"""

from __future__ import annotations

import sqlglot

GRAINS: tuple[str, ...] = ("auction", "bid", "delivery")

DIMENSIONS: dict[str, tuple[str, ...]] = {
    "auction": ("publisher_id", "placement", "country", "device_type"),
    "bid": ("publisher_id", "placement", "country", "device_type", "dsp"),
    "delivery": (
        "publisher_id",
        "placement",
        "country",
        "device_type",
        "dsp",
        "advertiser",
        "campaign_id",
        "line_item_id",
        "creative_id",
    ),
}
"""What each grain can be broken down by (besides its hour)."""

MEASURES: dict[str, tuple[str, ...]] = {
    "auction": ("auctions", "filled", "cleared_cpm_micros"),
    "bid": ("calls", "bids", "wins", "timeouts", "errors"),
    "delivery": (
        "impressions",
        "price_cpm_micros",
        "clicks",
        "conversions",
        "conversion_value_micros",
    ),
}

_AUCTION = """
SELECT hour, publisher_id, placement, country, device_type,
       CAST(count(*) AS BIGINT) AS auctions,
       CAST(sum(CASE WHEN outcome = 'won' THEN 1 ELSE 0 END) AS BIGINT) AS filled,
       CAST(sum(CASE WHEN outcome = 'won' THEN clearing_price_micros ELSE 0 END) AS BIGINT)
         AS cleared_cpm_micros
FROM auctions
GROUP BY hour, publisher_id, placement, country, device_type
"""

_BID = """
SELECT {hour} AS hour,
       coalesce(d.publisher_id, '') AS publisher_id, coalesce(d.placement, '') AS placement,
       coalesce(d.country, '') AS country, coalesce(d.device_type, '') AS device_type, b.dsp,
       CAST(sum(CASE WHEN b.decision <> 'filtered' THEN 1 ELSE 0 END) AS BIGINT) AS calls,
       CAST(sum(CASE WHEN b.bid THEN 1 ELSE 0 END) AS BIGINT) AS bids,
       CAST(sum(CASE WHEN b.won THEN 1 ELSE 0 END) AS BIGINT) AS wins,
       CAST(sum(CASE WHEN b.error = 'timeout' THEN 1 ELSE 0 END) AS BIGINT) AS timeouts,
       CAST(sum(CASE WHEN b.error <> '' AND b.error <> 'timeout' THEN 1 ELSE 0 END) AS BIGINT)
         AS errors
FROM bids AS b LEFT JOIN dims AS d ON b.auction_id = d.auction_id
GROUP BY 1, 2, 3, 4, 5, 6
"""

# Trackers can fire twice: the first impression of a bid within the hour counts (the exchange
# already drops repeats it sees); conversions count once per conversion id, attributed only.
_DELIVERY = """
WITH first_impressions AS (
  SELECT * FROM (
    SELECT i.*, row_number() OVER (PARTITION BY auction_id, bid_id ORDER BY ts_micros) AS nth
    FROM impressions AS i
  ) AS numbered WHERE nth = 1
),
first_conversions AS (
  SELECT * FROM (
    SELECT c.*, row_number() OVER (PARTITION BY conversion_id ORDER BY ts_micros) AS nth
    FROM conversions AS c WHERE attribution IN ('click', 'view')
  ) AS numbered WHERE nth = 1
),
facts AS (
  SELECT auction_id, dsp, advertiser, campaign_id, line_item_id, creative_id,
         1 AS impressions, price_micros AS price_cpm_micros, 0 AS clicks, 0 AS conversions,
         0 AS conversion_value_micros
  FROM first_impressions
  UNION ALL
  SELECT auction_id, dsp, advertiser, campaign_id, line_item_id, creative_id,
         0, 0, 1, 0, 0
  FROM clicks
  UNION ALL
  SELECT auction_id, dsp, advertiser, campaign_id, line_item_id, '' AS creative_id,
         0, 0, 0, 1, value_micros
  FROM first_conversions
)
SELECT {hour} AS hour,
       coalesce(d.publisher_id, '') AS publisher_id, coalesce(d.placement, '') AS placement,
       coalesce(d.country, '') AS country, coalesce(d.device_type, '') AS device_type,
       f.dsp, f.advertiser, f.campaign_id, f.line_item_id, f.creative_id,
       CAST(sum(f.impressions) AS BIGINT) AS impressions,
       CAST(sum(f.price_cpm_micros) AS BIGINT) AS price_cpm_micros,
       CAST(sum(f.clicks) AS BIGINT) AS clicks,
       CAST(sum(f.conversions) AS BIGINT) AS conversions,
       CAST(sum(f.conversion_value_micros) AS BIGINT) AS conversion_value_micros
FROM facts AS f LEFT JOIN dims AS d ON f.auction_id = d.auction_id
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
"""

_SQL = {"auction": _AUCTION, "bid": _BID, "delivery": _DELIVERY}


def render(grain: str, dialect: str, hour: int) -> str:
    """The statement of `grain` for the hour `hour` in `dialect` (`duckdb` or `spark`)."""
    sql = _SQL[grain].format(hour=f"CAST({int(hour)} AS BIGINT)")
    if dialect == "duckdb":
        return sql
    return sqlglot.transpile(sql, read="duckdb", write=dialect)[0]
