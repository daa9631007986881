"""Logged choices from the event log: impressions a policy chose (a `propensity` above 0,
schema 3), each with its segment, creative and reward (a click on the same bid, counted
once, within `reward_window_s`), joined on a pipeline engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from openbid.insights.attribution.journeys import render
from openbid.insights.errors import InsightsError
from openbid.insights.personalize.ope import Logged
from openbid.pipeline.engines import Engine
from openbid.pipeline.source import EventSource

_CHOICES_SQL = """
WITH chosen AS (
  SELECT auction_id, bid_id, MIN(ts_micros) AS ts_micros, MIN(segment) AS segment,
    MIN(creative_id) AS creative_id, MIN(propensity) AS propensity, MIN(policy) AS policy
  FROM impressions
  WHERE propensity > 0
  GROUP BY auction_id, bid_id
),
clicked AS (SELECT DISTINCT auction_id, bid_id, ts_micros FROM clicks)
SELECT c.segment AS segment, c.creative_id AS creative_id, c.propensity AS propensity,
  c.policy AS policy,
  MAX(CASE WHEN k.ts_micros IS NOT NULL AND k.ts_micros >= c.ts_micros
    AND k.ts_micros < c.ts_micros + :reward_window_micros THEN 1 ELSE 0 END) AS reward
FROM chosen AS c
LEFT JOIN clicked AS k ON k.auction_id = c.auction_id AND k.bid_id = c.bid_id
GROUP BY c.auction_id, c.bid_id, c.segment, c.creative_id, c.propensity, c.policy"""


@dataclass(slots=True)
class LoggedChoices:
    """The choices as arrays over `segments` and `creatives` (indices), and the policies
    that made them with their counts."""

    logged: Logged
    segments: list[str]
    creatives: list[str]
    policies: dict[str, int]


def read_choices(
    source: EventSource,
    engine: Engine,
    campaign_id: str,
    *,
    since_micros: int,
    until_micros: int,
    reward_window_s: float = 3600.0,
) -> LoggedChoices:
    impressions = source.load(
        "impression",
        ("ts_micros", "auction_id", "bid_id", "campaign_id", "creative_id", "propensity", "policy", "segment"),
        since_micros,
        until_micros,
    )  # fmt: skip
    clicks = source.load(
        "click",
        ("ts_micros", "auction_id", "bid_id"),
        since_micros,
        until_micros + int(reward_window_s * 1_000_000),
    )
    impressions = impressions.filter(pc.equal(impressions["campaign_id"], campaign_id))
    engine.register("impressions", impressions)
    engine.register("clicks", clicks)
    window = {"reward_window_micros": int(reward_window_s * 1_000_000)}
    table = engine.query(render(_CHOICES_SQL, engine.dialect, window))
    if table.num_rows == 0:
        raise InsightsError(
            f"no logged choices for campaign {campaign_id!r} in the window (impressions with a "
            "propensity, event schema 3)"
        )
    segments = sorted(set(table["segment"].to_pylist()))
    creatives = sorted(set(table["creative_id"].to_pylist()))
    s_index = {s: i for i, s in enumerate(segments)}
    c_index = {c: i for i, c in enumerate(creatives)}
    logged = Logged(
        np.array([s_index[s] for s in table["segment"].to_pylist()], dtype=np.int64),
        np.array([c_index[c] for c in table["creative_id"].to_pylist()], dtype=np.int64),
        table["reward"].to_numpy().astype(np.float64),
        table["propensity"].to_numpy().astype(np.float64),
    )
    counts = table.group_by("policy").aggregate([("policy", "count")]).to_pylist()
    return LoggedChoices(
        logged, segments, creatives, {r["policy"]: r["policy_count"] for r in counts}
    )
