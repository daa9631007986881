"""A synthetic event log whose labels depend on the features by a known rule, for the
backtest and monitoring tests and `bench/experiments.py`: the ETL's synthetic log
(`openbid.pipeline.synthetic`) with its bids and clicks drawn again, the bid probability a
logistic function of (DSP, country, media) and the click probability one of (country,
device type). A model that reads those fields beats one that does not.

`clicks_stop_at_micros` drops every click from then on (a tracker that broke): the label
shift the training halt must catch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openbid.events import ClickEvent, arrow_schema
from openbid.pipeline.synthetic import synthetic_tables

COUNTRY_LOGIT = {"USA": 1.2, "DEU": 0.6, "FRA": 0.0, "GBR": 0.4, "BRA": -0.8, "IND": -1.2,
                 "JPN": 0.2, "CAN": 0.8}  # fmt: skip
MEDIA_LOGIT = {"banner": 0.0, "video": 1.0, "native": -0.5}
DEVICE_LOGIT = {"mobile": 0.5, "desktop": 0.0, "tablet": 0.3, "ctv": -1.0}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _feature(tables: dict[str, pa.Table], name: str, auction_ids: pa.Array) -> np.ndarray:
    auctions = tables["auction"]
    values = pc.map_lookup(auctions["features"].combine_chunks(), pa.scalar(name), "first")
    at = pc.index_in(auction_ids, value_set=auctions["auction_id"].combine_chunks())
    return np.asarray(values.take(at).to_pylist(), dtype=object)


def _logit(values: np.ndarray, table: dict[str, float]) -> np.ndarray:
    return np.array([table.get(v, 0.0) for v in values], dtype=np.float64)


def signal_tables(
    n_auctions: int,
    *,
    seed: int = 11,
    start_micros: int = 1_800_000_000 * 1_000_000,
    span_s: float = 6 * 3600.0,
    clicks_stop_at_micros: int | None = None,
    click_base_logit: float = -3.5,
) -> dict[str, pa.Table]:
    """Event tables (one per kind) for `n_auctions` auctions over `span_s` seconds."""
    tables = synthetic_tables(n_auctions, seed=seed, start_micros=start_micros, span_s=span_s)
    rng = np.random.default_rng(seed + 1)
    bids = tables["bid"]
    dsp = np.asarray(bids["dsp"].to_pylist(), dtype=object)
    dsp_logit = np.array([-2.5 + 0.3 * int(name[3:]) for name in dsp])
    auction_ids = bids["auction_id"].combine_chunks()
    logit = (
        dsp_logit
        + _logit(_feature(tables, "country", auction_ids), COUNTRY_LOGIT)
        + _logit(_feature(tables, "media", auction_ids), MEDIA_LOGIT)
    )
    sent = np.asarray(bids["decision"].to_pylist(), dtype=object) != "filtered"
    bid = sent & (rng.random(bids.num_rows) < _sigmoid(logit))
    price = np.where(bid, rng.lognormal(13.5, 0.6, bids.num_rows).astype(np.int64), 0)
    bids = bids.set_column(bids.column_names.index("bid"), "bid", pa.array(bid))
    bids = bids.set_column(
        bids.column_names.index("price_micros"), "price_micros", pa.array(price, pa.int64())
    )
    tables["bid"] = bids
    impressions = tables["impression"]
    imp_auctions = impressions["auction_id"].combine_chunks()
    click_logit = (
        click_base_logit
        + _logit(_feature(tables, "country", imp_auctions), COUNTRY_LOGIT)
        + _logit(_feature(tables, "device_type", imp_auctions), DEVICE_LOGIT)
    )
    clicked = rng.random(impressions.num_rows) < _sigmoid(click_logit)
    click_ts = (
        impressions["ts_micros"].to_numpy() + rng.integers(1, 600, impressions.num_rows) * 1_000_000
    )
    if clicks_stop_at_micros is not None:
        clicked &= click_ts < clicks_stop_at_micros
    rows = np.flatnonzero(clicked)
    schema = arrow_schema(ClickEvent)
    clicks = {
        "ts_micros": pa.array(click_ts[rows], pa.int64()),
        "auction_id": impressions["auction_id"].take(rows),
        "bid_id": impressions["bid_id"].take(rows),
        "dsp": impressions["dsp"].take(rows),
        "creative_id": impressions["creative_id"].take(rows),
        "campaign_id": impressions["campaign_id"].take(rows),
        "user_id": impressions["user_id"].take(rows),
        "click_id": pa.array([f"c{i}" for i in rows], pa.string()),
        "advertiser": impressions["advertiser"].take(rows),
    }
    tables["click"] = pa.table(
        [clicks[name].combine_chunks() if isinstance(clicks[name], pa.ChunkedArray)
         else clicks[name] for name in schema.names],
        schema=schema,
    )  # fmt: skip
    return tables
