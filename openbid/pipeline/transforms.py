"""The training sets' transformations, written once in DuckDB's SQL and transpiled by SQLGlot
to each engine's dialect (DuckDB, Spark), so both engines run the same joins.

Each set reads event tables registered under the kind's plural (`auctions`, `bids`,
`impressions`, `clicks`, `conversions`) and takes integer parameters (`:since_micros`, ...)
that are bound before transpiling. Rules that keep both engines' rows identical:

- every ordering that picks one row (`ROW_NUMBER`) orders by enough columns to be total
  over the columns kept, so ties can only be between identical rows;
- maps (`features`) never enter an engine: `auctions` is registered without its `features`
  and with `auction_index`, the auction's row in the table that was read; a query outputs
  `auction_index` where the map goes, and `CARRIED` says which map `build.join` takes back
  from that row once the rows are fetched (Arrow, the same code for both engines). Moving a
  map through an engine's scan, joins, sort and export cost 60% of the click set's join
  (measured, DuckDB: 0.48 of 0.81 s), and the SQL never looks into it;
- each output column has one type (`OUTPUT_SCHEMAS`), cast once the rows are fetched.

>>> sql = render("shaping", "spark", {"since_micros": 0, "until_micros": 10})
>>> "FROM bids AS b JOIN auctions AS a" in sql and "NULLS LAST" in sql
True
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

SETS: tuple[str, ...] = ("shaping", "click", "conversion")
DIALECTS: tuple[str, ...] = ("duckdb", "spark")

NOT_SENT_ERRORS: tuple[str, ...] = ("circuit_open", "consent_blocked", "no_time", "qps_capped")
"""Bid-event errors of calls the exchange decided not to send (the exchange's `NOT_SENT`
less `filtered`, a decision): such a call has no label. The tests hold this to the exchange."""

_NOT_SENT_SQL = ", ".join(f"'{error}'" for error in NOT_SENT_ERRORS)

# One row per bid event of an auction in the window; the label is whether it was a bid.
# Auctions and bids are not deduplicated: the exchange writes one auction event and one bid
# event per call (per bid) once, and the reader never returns a log file and its segments.
# The auction's features are written once per auction (`_SHAPING_AUCTIONS`), not on each of
# its ~8 rows: copying them per row cost 3/4 of the join's time (measured, DuckDB) and 8 times
# the space; rows point at their auction (`auction_row`, added after the join).
_SHAPING_ROWS = f"""
SELECT
  a.ts_micros AS ts_micros,
  a.auction_id AS auction_id,
  b.dsp AS dsp,
  b.decision AS decision,
  b.send_probability AS send_probability,
  b.shaping_score AS shaping_score,
  (b.decision <> 'filtered' AND b.error NOT IN ({_NOT_SENT_SQL})) AS sent,
  CAST(b.bid AS INTEGER) AS label,
  b.bid_id AS bid_id,
  b.imp_id AS imp_id,
  b.price_micros AS price_micros,
  b.deal_id AS deal_id,
  b.latency_ms AS latency_ms,
  b.error AS error,
  b.won AS won
FROM bids AS b JOIN auctions AS a ON a.auction_id = b.auction_id
WHERE a.ts_micros >= :since_micros AND a.ts_micros < :until_micros
ORDER BY ts_micros, auction_id, dsp, bid_id, decision, error
"""

_SHAPING_AUCTIONS = """
SELECT
  a.ts_micros AS ts_micros,
  a.auction_id AS auction_id,
  a.publisher_id AS publisher_id,
  a.auction_index AS auction_index
FROM auctions AS a
WHERE a.ts_micros >= :since_micros AND a.ts_micros < :until_micros
  AND a.auction_id IN (SELECT b.auction_id FROM bids AS b)
ORDER BY ts_micros, auction_id
"""

# A tracker may fire more than once (a reload, a retry, a second worker whose dedup store
# was down): the first hit of each (auction, bid) is the impression (or click). Impressions
# hit once (nearly all) pass as they are; only the repeated ones are ranked: ranking them
# all was the click set's largest step (a sort of every impression; measured, DuckDB).
# Event ids are never NULL (the schema's strings), so the anti-join loses no row.
_FIRST_IMPRESSIONS = """
repeated_impressions AS (
  SELECT auction_id, bid_id FROM impressions GROUP BY auction_id, bid_id HAVING COUNT(*) > 1
),
first_impressions AS (
  SELECT i.ts_micros, i.auction_id, i.bid_id, i.dsp, i.imp_id, i.creative_id, i.campaign_id,
    i.user_id, i.price_micros
  FROM impressions AS i
  WHERE NOT EXISTS (
    SELECT 1 FROM repeated_impressions AS r
    WHERE r.auction_id = i.auction_id AND r.bid_id = i.bid_id
  )
  UNION ALL
  SELECT ts_micros, auction_id, bid_id, dsp, imp_id, creative_id, campaign_id, user_id,
    price_micros
  FROM (
    SELECT i.*, ROW_NUMBER() OVER (
      PARTITION BY i.auction_id, i.bid_id
      ORDER BY i.ts_micros, i.dsp, i.imp_id, i.creative_id, i.campaign_id, i.user_id,
        i.price_micros
    ) AS nth
    FROM impressions AS i
    JOIN repeated_impressions AS r ON r.auction_id = i.auction_id AND r.bid_id = i.bid_id
  ) AS ranked
  WHERE nth = 1
)"""

_FIRST_CLICKS = """
first_clicks AS (
  SELECT ts_micros, auction_id, bid_id, dsp, creative_id, campaign_id, user_id
  FROM (
    SELECT c.*, ROW_NUMBER() OVER (
      PARTITION BY c.auction_id, c.bid_id
      ORDER BY c.ts_micros, c.dsp, c.creative_id, c.campaign_id, c.user_id
    ) AS nth
    FROM clicks AS c
  ) AS ranked
  WHERE nth = 1
)"""

# One row per impression whose click window (and the wait for late events) has closed by
# `:closed_until_micros`; the label is whether a click on its bid came within the window.
# A click logged a little before its impression (two workers' clocks) still counts.
_CLICK = f"""
WITH {_FIRST_IMPRESSIONS},
window_clicks AS (
  SELECT f.auction_id AS auction_id, f.bid_id AS bid_id, COUNT(*) AS clicks,
    MIN(c.ts_micros) AS first_click_ts_micros
  FROM first_impressions AS f
  JOIN clicks AS c ON c.auction_id = f.auction_id AND c.bid_id = f.bid_id
  WHERE c.ts_micros <= f.ts_micros + :click_window_micros
  GROUP BY f.auction_id, f.bid_id
)
SELECT
  f.ts_micros AS ts_micros,
  f.auction_id AS auction_id,
  f.bid_id AS bid_id,
  f.imp_id AS imp_id,
  f.dsp AS dsp,
  f.creative_id AS creative_id,
  f.campaign_id AS campaign_id,
  f.user_id AS user_id,
  f.price_micros AS price_micros,
  a.ts_micros AS auction_ts_micros,
  a.publisher_id AS publisher_id,
  a.auction_index AS auction_index,
  CAST(COALESCE(k.clicks, 0) > 0 AS INTEGER) AS label,
  COALESCE(k.clicks, 0) AS clicks,
  k.first_click_ts_micros AS first_click_ts_micros
FROM first_impressions AS f
JOIN auctions AS a ON a.auction_id = f.auction_id
LEFT JOIN window_clicks AS k ON k.auction_id = f.auction_id AND k.bid_id = f.bid_id
WHERE f.ts_micros >= :since_micros AND f.ts_micros < :closed_until_micros
ORDER BY ts_micros, auction_id, bid_id
"""

# A conversion (once per conversion id) is attributed post-click when it follows its bid's
# first click within the post-click window, else post-view when it follows the bid's
# impression within the post-view window, else to nothing. One row per touch (a bid's first
# click: `click`; its impression: `view`) whose window has closed; the label is whether a
# conversion was attributed to that touch. A conversion after its window counts for nothing.
_CONVERSION = f"""
WITH {_FIRST_IMPRESSIONS},
{_FIRST_CLICKS},
conversions_once AS (
  SELECT ts_micros, auction_id, bid_id, conversion_id, value_micros
  FROM (
    SELECT v.*, ROW_NUMBER() OVER (
      PARTITION BY v.conversion_id
      ORDER BY v.ts_micros, v.auction_id, v.bid_id, v.value_micros
    ) AS nth
    FROM conversions AS v
    WHERE v.bid_id <> ''
  ) AS ranked
  WHERE nth = 1
),
attributed AS (
  SELECT v.auction_id AS auction_id, v.bid_id AS bid_id, v.ts_micros AS ts_micros,
    v.value_micros AS value_micros,
    CASE
      WHEN fc.ts_micros IS NOT NULL AND v.ts_micros >= fc.ts_micros
        AND v.ts_micros <= fc.ts_micros + :post_click_window_micros THEN 'click'
      WHEN fi.ts_micros IS NOT NULL AND v.ts_micros >= fi.ts_micros
        AND v.ts_micros <= fi.ts_micros + :post_view_window_micros THEN 'view'
      ELSE ''
    END AS touch
  FROM conversions_once AS v
  LEFT JOIN first_clicks AS fc ON fc.auction_id = v.auction_id AND fc.bid_id = v.bid_id
  LEFT JOIN first_impressions AS fi ON fi.auction_id = v.auction_id AND fi.bid_id = v.bid_id
),
touch_conversions AS (
  SELECT auction_id, bid_id, touch, COUNT(*) AS conversions,
    SUM(value_micros) AS value_micros, MIN(ts_micros) AS first_conversion_ts_micros
  FROM attributed
  WHERE touch <> ''
  GROUP BY auction_id, bid_id, touch
),
touches AS (
  SELECT 'click' AS touch, fc.ts_micros AS ts_micros, fc.auction_id AS auction_id,
    fc.bid_id AS bid_id, COALESCE(fi.imp_id, '') AS imp_id, fc.dsp AS dsp,
    fc.creative_id AS creative_id, fc.campaign_id AS campaign_id, fc.user_id AS user_id,
    COALESCE(fi.price_micros, 0) AS price_micros
  FROM first_clicks AS fc
  LEFT JOIN first_impressions AS fi ON fi.auction_id = fc.auction_id AND fi.bid_id = fc.bid_id
  WHERE fc.ts_micros >= :since_micros AND fc.ts_micros < :click_closed_until_micros
  UNION ALL
  SELECT 'view' AS touch, fi.ts_micros AS ts_micros, fi.auction_id AS auction_id,
    fi.bid_id AS bid_id, fi.imp_id AS imp_id, fi.dsp AS dsp, fi.creative_id AS creative_id,
    fi.campaign_id AS campaign_id, fi.user_id AS user_id, fi.price_micros AS price_micros
  FROM first_impressions AS fi
  WHERE fi.ts_micros >= :since_micros AND fi.ts_micros < :view_closed_until_micros
)
SELECT
  t.touch AS touch,
  t.ts_micros AS ts_micros,
  t.auction_id AS auction_id,
  t.bid_id AS bid_id,
  t.imp_id AS imp_id,
  t.dsp AS dsp,
  t.creative_id AS creative_id,
  t.campaign_id AS campaign_id,
  t.user_id AS user_id,
  t.price_micros AS price_micros,
  a.ts_micros AS auction_ts_micros,
  a.publisher_id AS publisher_id,
  a.auction_index AS auction_index,
  CAST(COALESCE(k.conversions, 0) > 0 AS INTEGER) AS label,
  COALESCE(k.conversions, 0) AS conversions,
  COALESCE(k.value_micros, 0) AS value_micros,
  k.first_conversion_ts_micros AS first_conversion_ts_micros
FROM touches AS t
JOIN auctions AS a ON a.auction_id = t.auction_id
LEFT JOIN touch_conversions AS k
  ON k.auction_id = t.auction_id AND k.bid_id = t.bid_id AND k.touch = t.touch
ORDER BY ts_micros, auction_id, bid_id, touch
"""

SQL: dict[str, dict[str, str]] = {
    "shaping": {"rows": _SHAPING_ROWS, "auctions": _SHAPING_AUCTIONS},
    "click": {"rows": _CLICK},
    "conversion": {"rows": _CONVERSION},
}
"""Per set, its outputs (`rows`, and for shaping `auctions`) and the query of each."""

INPUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "shaping": {
        "auctions": ("ts_micros", "auction_id", "publisher_id", "features"),
        "bids": (
            "ts_micros",
            "auction_id",
            "dsp",
            "decision",
            "send_probability",
            "shaping_score",
            "bid",
            "bid_id",
            "imp_id",
            "price_micros",
            "deal_id",
            "latency_ms",
            "error",
            "won",
        ),
    },
    "click": {
        "auctions": ("ts_micros", "auction_id", "publisher_id", "features"),
        "impressions": (
            "ts_micros",
            "auction_id",
            "bid_id",
            "dsp",
            "imp_id",
            "creative_id",
            "campaign_id",
            "user_id",
            "price_micros",
        ),
        "clicks": ("ts_micros", "auction_id", "bid_id"),
    },
    "conversion": {
        "auctions": ("ts_micros", "auction_id", "publisher_id", "features"),
        "impressions": (
            "ts_micros",
            "auction_id",
            "bid_id",
            "dsp",
            "imp_id",
            "creative_id",
            "campaign_id",
            "user_id",
            "price_micros",
        ),
        "clicks": (
            "ts_micros",
            "auction_id",
            "bid_id",
            "dsp",
            "creative_id",
            "campaign_id",
            "user_id",
        ),
        "conversions": ("ts_micros", "auction_id", "bid_id", "conversion_id", "value_micros"),
    },
}
"""Per set, the event tables it reads (named as in its SQL) and the columns it needs."""

TABLE_KINDS: dict[str, str] = {
    "auctions": "auction",
    "bids": "bid",
    "impressions": "impression",
    "clicks": "click",
    "conversions": "conversion",
}
"""Table name in the SQL -> event kind in the log."""

CARRIED: dict[str, tuple[str, str]] = {"auctions": ("features", "auction_index")}
"""Table -> (its map column, kept out of the engines; the column of row positions that
stands for it in the SQL and its outputs)."""

PARAMETERS: dict[str, tuple[str, ...]] = {
    "shaping": ("since_micros", "until_micros"),
    "click": ("since_micros", "closed_until_micros", "click_window_micros"),
    "conversion": (
        "since_micros",
        "click_closed_until_micros",
        "view_closed_until_micros",
        "post_click_window_micros",
        "post_view_window_micros",
    ),
}

_FEATURES = pa.map_(pa.string(), pa.string())
_TRACKED = [
    ("ts_micros", pa.int64()),
    ("auction_id", pa.string()),
    ("bid_id", pa.string()),
    ("imp_id", pa.string()),
    ("dsp", pa.string()),
    ("creative_id", pa.string()),
    ("campaign_id", pa.string()),
    ("user_id", pa.string()),
    ("price_micros", pa.int64()),
    ("auction_ts_micros", pa.int64()),
    ("publisher_id", pa.string()),
    ("features", _FEATURES),
]

OUTPUT_SCHEMAS: dict[str, dict[str, pa.Schema]] = {
    "shaping": {
        "rows": pa.schema(
            [
                ("ts_micros", pa.int64()),
                ("auction_id", pa.string()),
                ("auction_row", pa.int64()),
                ("dsp", pa.string()),
                ("decision", pa.string()),
                ("send_probability", pa.float64()),
                ("shaping_score", pa.float64()),
                ("sent", pa.bool_()),
                ("label", pa.int32()),
                ("bid_id", pa.string()),
                ("imp_id", pa.string()),
                ("price_micros", pa.int64()),
                ("deal_id", pa.string()),
                ("latency_ms", pa.float64()),
                ("error", pa.string()),
                ("won", pa.bool_()),
            ]
        ),
        "auctions": pa.schema(
            [
                ("ts_micros", pa.int64()),
                ("auction_id", pa.string()),
                ("publisher_id", pa.string()),
                ("features", _FEATURES),
            ]
        ),
    },
    "click": {
        "rows": pa.schema(
            [
                *_TRACKED,
                ("label", pa.int32()),
                ("clicks", pa.int64()),
                ("first_click_ts_micros", pa.int64()),
            ]
        )
    },
    "conversion": {
        "rows": pa.schema(
            [
                ("touch", pa.string()),
                *_TRACKED,
                ("label", pa.int32()),
                ("conversions", pa.int64()),
                ("value_micros", pa.int64()),
                ("first_conversion_ts_micros", pa.int64()),
            ]
        )
    },
}
"""The columns of each training set, whichever engine built it."""


def render(set_name: str, dialect: str, parameters: Mapping[str, int], output: str = "rows") -> str:
    """The SQL of `set_name`'s `output` for `dialect`, with its integer parameters bound. Raises
    ValueError for an unknown set, dialect or a missing parameter, and SQLGlot's
    `UnsupportedError` if a construct has no equivalent in the dialect (never a silent
    approximation)."""
    if set_name not in SQL:
        raise ValueError(f"unknown training set {set_name!r}; expected one of {list(SETS)}")
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {list(DIALECTS)}")
    missing = [name for name in PARAMETERS[set_name] if name not in parameters]
    if missing:
        raise ValueError(f"training set {set_name!r} needs the parameters {missing}")
    values = {name: int(parameters[name]) for name in PARAMETERS[set_name]}
    if output not in SQL[set_name]:
        raise ValueError(f"training set {set_name!r} has no output {output!r}")
    tree = sqlglot.parse_one(SQL[set_name][output], read="duckdb")
    tree = exp.replace_placeholders(tree, **values)
    return tree.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE)
