"""User journeys from the event log, built on an ETL engine (DuckDB by default, Spark at
scale: `openbid.pipeline.engines`), one SQL written in DuckDB's dialect and transpiled by
SQLGlot, as the pipeline's training sets are.

A journey is a user's touches (first impression and first click of each bid, labelled by
`by`: campaign, publisher, dsp or creative) up to a conversion of that user; the touches
after the user's last conversion form a journey that did not convert (a null path) once its
window has closed (its last touch is more than `lookback_s` before `until`), else it is
still open and left out. Touches more than `lookback_s` before their conversion are left
out of it. A conversion with no user id takes its bid's impression's user. A conversion
with no touch before it is counted as unattributed.

The engine returns the paths aggregated (one row per distinct path) and the time-decay
credit per channel from the touches' real ages; the models run on the paths in numpy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from openbid.insights.attribution.heuristics import Credit
from openbid.insights.attribution.paths import Paths
from openbid.insights.errors import InsightsError
from openbid.pipeline.engines import Engine
from openbid.pipeline.source import EventSource

MICROS = 1_000_000
SEPARATOR = "\x1f"
"""Between channels of a path in the SQL's output: a control character no id holds."""
UNKNOWN = "(unknown)"
"""The channel of a touch that lacks the dimension (an impression without a campaign id)."""

DIMENSIONS: dict[str, str] = {
    "campaign": "x.campaign_id",
    "publisher": "COALESCE(a.publisher_id, '')",
    "dsp": "x.dsp",
    "creative": "x.creative_id",
}
"""What names a touch's channel, as a SQL expression over the touch (`x`) and its auction."""

_TOUCH_COLUMNS = (
    "ts_micros",
    "auction_id",
    "bid_id",
    "dsp",
    "creative_id",
    "campaign_id",
    "user_id",
)


def _first(table: str) -> str:
    # a tracker may fire twice: the first hit of each (auction, bid) is the touch
    return f"""
SELECT ts_micros, auction_id, bid_id, dsp, creative_id, campaign_id, user_id FROM (
  SELECT t.*, ROW_NUMBER() OVER (
    PARTITION BY t.auction_id, t.bid_id
    ORDER BY t.ts_micros, t.dsp, t.creative_id, t.campaign_id, t.user_id
  ) AS nth
  FROM {table} AS t
) AS ranked
WHERE nth = 1"""


def _steps_sql(channel: str, with_auctions: bool) -> str:
    """The CTEs up to `steps`: one row per touch kept in a journey."""
    auction_join = "LEFT JOIN auctions AS a ON a.auction_id = x.auction_id" if with_auctions else ""
    channel = f"COALESCE(NULLIF({channel}, ''), '{UNKNOWN}')"
    return f"""
WITH first_views AS ({_first("impressions")}),
first_clicks AS ({_first("clicks")}),
touches AS (
  SELECT x.user_id AS user_id, x.ts_micros AS ts_micros, 0 AS kind_order, {channel} AS channel
  FROM first_views AS x {auction_join}
  WHERE x.user_id <> '' AND x.ts_micros < :until_micros AND :with_views = 1
  UNION ALL
  SELECT x.user_id AS user_id, x.ts_micros AS ts_micros, 1 AS kind_order, {channel} AS channel
  FROM first_clicks AS x {auction_join}
  WHERE x.user_id <> '' AND x.ts_micros < :until_micros AND :with_clicks = 1
),
conversions_once AS (
  SELECT ts_micros, conversion_id, value_micros, user_id FROM (
    SELECT v.ts_micros AS ts_micros, v.conversion_id AS conversion_id,
      v.value_micros AS value_micros,
      COALESCE(NULLIF(v.user_id, ''), i.user_id, '') AS user_id,
      ROW_NUMBER() OVER (
        PARTITION BY v.conversion_id
        ORDER BY v.ts_micros, v.auction_id, v.bid_id, v.value_micros
      ) AS nth
    FROM conversions AS v
    LEFT JOIN first_views AS i ON i.auction_id = v.auction_id AND i.bid_id = v.bid_id
    WHERE v.ts_micros >= :since_micros AND v.ts_micros < :until_micros
  ) AS ranked
  WHERE nth = 1 AND user_id <> ''
),
timeline AS (
  SELECT user_id, ts_micros, 0 AS is_conversion, kind_order, channel, 0 AS value_micros,
    '' AS conversion_id
  FROM touches
  UNION ALL
  SELECT user_id, ts_micros, 1 AS is_conversion, 2 AS kind_order, '' AS channel, value_micros,
    conversion_id
  FROM conversions_once
),
numbered AS (
  SELECT t.*, COALESCE(SUM(t.is_conversion) OVER (
    PARTITION BY t.user_id
    ORDER BY t.ts_micros, t.is_conversion, t.kind_order, t.channel, t.conversion_id
    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
  ), 0) AS journey
  FROM timeline AS t
),
ends AS (
  SELECT user_id, journey, ts_micros AS end_ts, value_micros
  FROM numbered WHERE is_conversion = 1
),
steps AS (
  SELECT n.user_id AS user_id, n.journey AS journey, n.ts_micros AS ts_micros,
    n.kind_order AS kind_order, n.channel AS channel, e.end_ts AS end_ts,
    COALESCE(e.value_micros, 0) AS value_micros,
    CASE WHEN e.end_ts IS NULL THEN 0 ELSE 1 END AS converted
  FROM numbered AS n
  LEFT JOIN ends AS e ON e.user_id = n.user_id AND e.journey = n.journey
  WHERE n.is_conversion = 0
    AND (e.end_ts IS NULL OR n.ts_micros >= e.end_ts - :lookback_micros)
    AND (e.end_ts IS NOT NULL OR n.ts_micros >= :since_micros)
)"""


def _paths_sql(steps: str) -> str:
    return f"""{steps},
journeys AS (
  SELECT user_id, journey, MAX(converted) AS converted, MAX(value_micros) AS value_micros,
    MAX(ts_micros) AS last_ts,
    STRING_AGG(channel, CHR(31) ORDER BY ts_micros, kind_order, channel) AS path
  FROM steps
  GROUP BY user_id, journey
)
SELECT path,
  CAST(SUM(converted) AS BIGINT) AS conversions,
  CAST(SUM(CASE WHEN converted = 1 THEN value_micros ELSE 0 END) AS BIGINT) AS value_micros,
  CAST(SUM(CASE WHEN converted = 0 AND last_ts < :closed_before_micros THEN 1 ELSE 0 END)
    AS BIGINT) AS nulls,
  CAST(SUM(CASE WHEN converted = 0 AND last_ts >= :closed_before_micros THEN 1 ELSE 0 END)
    AS BIGINT) AS open
FROM journeys
GROUP BY path
ORDER BY path"""


def _time_decay_sql(steps: str) -> str:
    return f"""{steps},
weighted AS (
  SELECT channel, value_micros, user_id, journey,
    POWER(0.5, CAST(end_ts - ts_micros AS DOUBLE) / :half_life_micros) AS weight
  FROM steps WHERE converted = 1
),
shared AS (
  SELECT channel, value_micros,
    weight / SUM(weight) OVER (PARTITION BY user_id, journey) AS share
  FROM weighted
)
SELECT channel, CAST(SUM(share) AS DOUBLE) AS conversions,
  CAST(SUM(share * value_micros) AS DOUBLE) AS value_micros
FROM shared
GROUP BY channel
ORDER BY channel"""


_COUNT_SQL_TAIL = """
SELECT COUNT(*) AS conversions, COUNT(DISTINCT user_id) AS users FROM conversions_once"""


def render(sql: str, dialect: str, parameters: dict[str, int]) -> str:
    """`sql` (DuckDB's dialect) with its integer parameters bound, in `dialect`."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    tree = exp.replace_placeholders(tree, **{k: int(v) for k, v in parameters.items()})
    return tree.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE)


@dataclass(slots=True)
class Journeys:
    """The paths (value in micros), the time-decay credit from real ages (aligned with
    `paths.channels`), and counts: conversions seen, attributed (with a touch before them),
    null and still-open journeys."""

    paths: Paths
    time_decay: Credit
    stats: dict[str, float] = field(default_factory=dict)


def build_journeys(
    source: EventSource,
    engine: Engine,
    *,
    since_micros: int,
    until_micros: int,
    by: str = "campaign",
    touches: tuple[str, ...] = ("view", "click"),
    lookback_s: float = 30 * 86400.0,
    half_life_s: float = 7 * 86400.0,
    campaign_ids: tuple[str, ...] = (),
) -> Journeys:
    """Journeys of conversions in `[since_micros, until_micros)`, their touches read from
    `lookback_s` before."""
    if by not in DIMENSIONS:
        raise InsightsError(f"unknown channel dimension {by!r}; expected one of {list(DIMENSIONS)}")
    unknown = [t for t in touches if t not in ("view", "click")]
    if unknown or not touches:
        raise InsightsError(f"touches must be some of ['view', 'click'], got {list(touches)}")
    if until_micros <= since_micros:
        raise InsightsError(
            f"empty window: until ({until_micros}) must be after since ({since_micros})"
        )
    if not lookback_s > 0 or not half_life_s > 0:
        raise InsightsError("lookback_s and half_life_s must be positive")
    lookback_micros = int(lookback_s * MICROS)
    started = time.perf_counter()
    load_since = max(since_micros - lookback_micros, 0)
    tables = {
        "impressions": source.load("impression", _TOUCH_COLUMNS, load_since, until_micros),
        "clicks": source.load("click", _TOUCH_COLUMNS, load_since, until_micros),
        "conversions": source.load(
            "conversion",
            (
                "ts_micros",
                "auction_id",
                "bid_id",
                "conversion_id",
                "campaign_id",
                "user_id",
                "value_micros",
            ),
            since_micros,
            until_micros,
        ),
    }
    with_auctions = by == "publisher"
    if with_auctions:
        tables["auctions"] = source.load(
            "auction", ("auction_id", "publisher_id"), load_since, until_micros
        )
    if campaign_ids:
        wanted = pa.array(list(campaign_ids), pa.string())
        for name in ("impressions", "clicks", "conversions"):
            tables[name] = tables[name].filter(
                pc.is_in(tables[name]["campaign_id"], value_set=wanted)
            )
    read_s = time.perf_counter() - started
    for name, table in tables.items():
        engine.register(name, table)
    parameters = {
        "since_micros": since_micros,
        "until_micros": until_micros,
        "lookback_micros": lookback_micros,
        "closed_before_micros": until_micros - lookback_micros,
        "half_life_micros": max(int(half_life_s * MICROS), 1),
        "with_views": int("view" in touches),
        "with_clicks": int("click" in touches),
    }
    steps = _steps_sql(DIMENSIONS[by], with_auctions)
    started = time.perf_counter()
    aggregated = engine.query(render(_paths_sql(steps), engine.dialect, parameters))
    decay = engine.query(render(_time_decay_sql(steps), engine.dialect, parameters))
    counts = engine.query(render(steps + _COUNT_SQL_TAIL, engine.dialect, parameters)).to_pylist()[
        0
    ]
    query_s = time.perf_counter() - started
    total = int(counts["conversions"] or 0)
    open_journeys = float(pc.sum(aggregated["open"]).as_py() or 0)
    # paths whose journeys are all still open carry no weight yet
    aggregated = aggregated.filter(
        pc.greater(pc.add(aggregated["conversions"], aggregated["nulls"]), 0)
    )
    if aggregated.num_rows == 0:
        raise InsightsError(
            f"no journeys in the window ({total} conversions, none with a touch of a known user)"
        )
    paths = Paths.from_strings(
        aggregated["path"],
        conversions=aggregated["conversions"],
        value=aggregated["value_micros"],
        nulls=aggregated["nulls"],
        sep=SEPARATOR,
    )
    index = {name: i for i, name in enumerate(paths.channels)}
    credit_conv = np.zeros(paths.n_channels)
    credit_value = np.zeros(paths.n_channels)
    for row in decay.to_pylist():
        i = index.get(str(row["channel"]).strip())
        if i is not None:
            credit_conv[i] += float(row["conversions"] or 0.0)
            credit_value[i] += float(row["value_micros"] or 0.0)
    attributed = paths.total_conversions
    return Journeys(
        paths=paths,
        time_decay=Credit(conversions=credit_conv, value=credit_value),
        stats={
            "conversions": float(total),
            "attributed_conversions": attributed,
            "unattributed_conversions": float(total) - attributed,
            "converting_users": float(counts["users"] or 0),
            "null_journeys": float(paths.nulls.sum()),
            "open_journeys": open_journeys,
            "distinct_paths": float(paths.n_paths),
            "read_s": read_s,
            "query_s": query_s,
        },
    )
