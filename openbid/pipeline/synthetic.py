"""A seeded synthetic event log, built column-wise with numpy: the kinds, rates and delays of
a real one (8 DSPs called per auction by default, one imp or several, a few of them filtered or explored, ~20% bid, the
winner's ad rendered, ~2% clicked, conversions after clicks and views, some past their
windows, duplicated tracker hits and postbacks), for the ETL's benchmark and tests. Millions
of events take seconds, where emitting them one by one through `EventLog` takes minutes.

`write_segments` writes the tables in the segment layout the event log's roller writes
(`<segments>/<kind>/hour=<YYYY-MM-DDTHH>/<stem>.parquet`), through fsspec.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openbid.events import EVENT_TYPES, arrow_schema
from openbid.pipeline.source import HOUR_MICROS, hour_label

MICROS = 1_000_000

_VOCABULARY: dict[str, tuple[str, ...]] = {
    "publisher_id": tuple(f"pub{i}" for i in range(40)),
    "site_id": tuple(f"site{i}" for i in range(400)),
    "inventory_type": ("site", "app"),
    "media": ("banner", "video", "native"),
    "size": ("300x250", "728x90", "320x50", "300x600", "160x600"),
    "device_type": ("mobile", "desktop", "tablet", "ctv"),
    "os": ("ios", "android", "windows", "macos", "linux"),
    "browser": ("chrome", "safari", "firefox", "edge", "other"),
    "country": ("USA", "DEU", "FRA", "GBR", "BRA", "IND", "JPN", "CAN"),
    "hour": tuple(str(h) for h in range(24)),
    "floor": ("0", "0.1", "0.25", "0.5", "1", "2", "5"),
    "gdpr": ("0", "1"),
}


def synthetic_tables(
    n_auctions: int,
    *,
    seed: int = 7,
    start_micros: int = 1_800_000_000 * MICROS,
    span_s: float = 6 * 3600.0,
    n_dsps: int = 8,
    imps_per_auction: int = 1,
) -> dict[str, pa.Table]:
    """Event tables (one per kind, each with the kind's full Parquet schema) for
    `n_auctions` auctions of `imps_per_auction` imps each, `n_dsps` DSPs called per auction,
    spread over `span_s` seconds from `start_micros`."""
    rng = np.random.default_rng(seed)
    n = int(n_auctions)
    ts = start_micros + np.sort(rng.integers(0, int(span_s * MICROS), n))
    auction_id = _ids("a", np.arange(n))
    # auctions: the request's raw features, as a map
    keys = list(_VOCABULARY)
    offsets, flat_vocab = [], []
    for key in keys:
        offsets.append(len(flat_vocab))
        flat_vocab.extend(_VOCABULARY[key])
    choice = np.stack(
        [offsets[k] + _zipf(rng, len(_VOCABULARY[key]), n) for k, key in enumerate(keys)],
        axis=1,
    ).ravel()
    values = pa.array(flat_vocab).take(pa.array(choice))
    features = pa.MapArray.from_arrays(
        pa.array(np.arange(0, n * len(keys) + 1, len(keys), dtype=np.int32)),
        pa.array(keys * n),
        values,
    )
    publisher = values.take(pa.array(np.arange(n) * len(keys)))
    # bids: every DSP in every auction; some filtered, a few of those explored. A DSP called
    # bids on each of the auction's imps apart; a call gives one bid event per bid, or one
    # (no bid) when it bid on none
    call_auction = np.repeat(np.arange(n), n_dsps)
    call_dsp = np.tile(np.arange(n_dsps), n)
    draw = rng.random(call_auction.size)
    call_filtered = draw < 0.15
    call_explored = call_filtered & (rng.random(call_auction.size) < 0.05)
    call_sent = ~call_filtered | call_explored
    bid_rate = 0.05 + 0.35 * (call_dsp / max(n_dsps - 1, 1))
    n_imps = max(int(imps_per_auction), 1)
    bid_grid = call_sent[:, None] & (rng.random((call_auction.size, n_imps)) < bid_rate[:, None])
    price_grid = rng.lognormal(13.5, 0.6, bid_grid.shape).astype(np.int64)
    event_grid = bid_grid.copy()
    event_grid[~bid_grid.any(axis=1), 0] = True
    call_of, imp_of = np.nonzero(event_grid)  # by call, then imp
    auction_of, dsp_index = call_auction[call_of], call_dsp[call_of]
    explored, sent = call_explored[call_of], call_sent[call_of]
    decision = np.where(call_filtered, "filtered", "called").astype(object)
    decision[call_explored] = "explored"
    decision = decision[call_of]
    bid = bid_grid[call_of, imp_of]
    price = np.where(bid, price_grid[call_of, imp_of], 0)
    dsp_names = np.array([f"dsp{i}" for i in range(n_dsps)], dtype=object)
    imp_names = np.array([str(i + 1) for i in range(n_imps)], dtype=object)
    bid_ids = np.where(bid, _strings("b", np.arange(auction_of.size)), "")
    # the winner: the highest bid on each imp of each auction
    order = np.lexsort((-price, imp_of, auction_of))
    slot = auction_of[order] * n_imps + imp_of[order]
    first_of_slot = np.r_[True, slot[1:] != slot[:-1]]
    winners = order[first_of_slot & bid[order]]
    won = np.zeros(auction_of.size, dtype=bool)
    won[winners] = True
    bids = {
        "ts_micros": ts[auction_of],
        "auction_id": auction_id.take(pa.array(auction_of)),
        "dsp": dsp_names[dsp_index],
        "decision": decision,
        "send_probability": np.where(explored, 0.05, 1.0),
        "shaping_score": rng.random(auction_of.size),
        "bid": bid,
        "bid_id": bid_ids,
        "imp_id": np.where(bid, imp_names[imp_of], ""),
        "price_micros": price,
        "latency_ms": np.where(sent, rng.gamma(4.0, 10.0, auction_of.size), 0.0),
        "error": np.where(sent & (rng.random(auction_of.size) < 0.01), "timeout", ""),
        "won": won,
    }
    auctions = {
        "ts_micros": ts,
        "auction_id": auction_id,
        "request_id": _ids("r", np.arange(n)),
        "publisher_id": publisher,
        "features": features,
        "dsps_eligible": np.full(n, n_dsps),
        "dsps_called": np.bincount(call_auction[call_sent], minlength=n),
    }
    # impressions: 90% of the winners render, seconds later; 1% of trackers fire twice
    rendered = winners[rng.random(winners.size) < 0.9]
    imp_ts = ts[auction_of[rendered]] + rng.integers(50_000, 5 * MICROS, rendered.size)
    twice = rendered[rng.random(rendered.size) < 0.01]
    imp_rows = np.concatenate([rendered, twice])
    imp_ts = np.concatenate([imp_ts, ts[auction_of[twice]] + 6 * MICROS])
    impressions = _tracked(imp_rows, imp_ts, auction_id, auction_of, dsp_names, dsp_index, bid_ids)
    impressions["imp_id"] = imp_names[imp_of[imp_rows]]
    impressions["price_micros"] = price[imp_rows]
    impressions["creative_id"] = _strings("cr", dsp_index[imp_rows] * 10 + imp_rows % 10)
    impressions["campaign_id"] = _strings("cmp", dsp_index[imp_rows] * 3 + imp_rows % 3)
    # clicks: ~2% of impressions, seconds to an hour later (a few past a short window)
    clicked = rendered[rng.random(rendered.size) < 0.02]
    click_ts = (
        ts[auction_of[clicked]] + rng.exponential(120.0, clicked.size).astype(np.int64) * MICROS
    )
    clicks = _tracked(clicked, click_ts, auction_id, auction_of, dsp_names, dsp_index, bid_ids)
    # conversions: 8% of clicks and 0.3% of unclicked views, minutes to days later
    converting = clicked[rng.random(clicked.size) < 0.08]
    viewing = rendered[rng.random(rendered.size) < 0.003]
    conv_rows = np.concatenate([converting, viewing])
    conv_ts = (
        ts[auction_of[conv_rows]]
        + rng.exponential(4 * 3600.0, conv_rows.size).astype(np.int64) * MICROS
    )
    postback_twice = np.flatnonzero(rng.random(conv_rows.size) < 0.02)
    conv_ids = _strings("cv", np.arange(conv_rows.size))
    conversions = {
        "ts_micros": np.concatenate([conv_ts, conv_ts[postback_twice] + 30 * MICROS]),
        "auction_id": auction_id.take(
            pa.array(np.concatenate([auction_of[conv_rows], auction_of[conv_rows[postback_twice]]]))
        ),
        "conversion_id": np.concatenate([conv_ids, conv_ids[postback_twice]]),
        "bid_id": np.concatenate([bid_ids[conv_rows], bid_ids[conv_rows[postback_twice]]]),
        "value_micros": rng.integers(1, 200, conv_rows.size + postback_twice.size) * MICROS,
    }
    return {
        "auction": _table("auction", auctions),
        "bid": _table("bid", bids),
        "impression": _table("impression", impressions),
        "click": _table("click", clicks),
        "conversion": _table("conversion", conversions),
    }


def write_segments(
    tables: dict[str, pa.Table], segments_url: str, stem: str = "synthetic"
) -> list[str]:
    """Writes each kind's table as the roller would, one Parquet file per kind and hour
    (`<segments>/<kind>/hour=<hour>/<stem>.parquet`); returns the paths."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(segments_url.rstrip("/"))
    paths = []
    for kind, table in tables.items():
        if table.num_rows == 0:
            continue
        hours = pc.divide(table["ts_micros"], HOUR_MICROS)
        for hour in pc.unique(hours).to_pylist():
            path = f"{root}/{kind}/hour={hour_label(hour)}/{stem}.parquet"
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with fs.open(path, "wb") as handle:
                pq.write_table(table.filter(pc.equal(hours, hour)), handle, compression="zstd")
            paths.append(path)
    return paths


def _tracked(rows, ts, auction_id, auction_of, dsp_names, dsp_index, bid_ids) -> dict:
    order = np.argsort(ts, kind="stable")
    rows, ts = rows[order], ts[order]
    return {
        "ts_micros": ts,
        "auction_id": auction_id.take(pa.array(auction_of[rows])),
        "bid_id": bid_ids[rows],
        "dsp": dsp_names[dsp_index[rows]],
    }


def _table(kind: str, columns: dict) -> pa.Table:
    """The kind's full schema: the columns given, the rest at their defaults."""
    schema = arrow_schema(EVENT_TYPES[kind])
    length = len(columns["ts_micros"])
    fields = {f.name: f for f in msgspec.inspect.type_info(EVENT_TYPES[kind]).fields}
    arrays = []
    for target in schema:
        if target.name in columns:
            value = columns[target.name]
            arrays.append(value if isinstance(value, pa.Array) else pa.array(value, target.type))
            continue
        spec = fields[target.name]
        default = spec.default if spec.default is not msgspec.NODEFAULT else spec.default_factory()
        if isinstance(default, dict):
            default = list(default.items())
        arrays.append(pa.array([default] * length, target.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    return table.sort_by("ts_micros")


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")


def _strings(prefix: str, numbers: np.ndarray) -> np.ndarray:
    return np.asarray(_ids(prefix, numbers).to_numpy(zero_copy_only=False), dtype=object)


def _zipf(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """Indices in [0, size) with a long tail, as real traffic's values have."""
    weights = 1.0 / np.arange(1, size + 1)
    return rng.choice(size, count, p=weights / weights.sum())
