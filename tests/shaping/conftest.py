"""Synthetic event logs for the shaping tests: auction and bid tables in the log's schema."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from openbid.events import AuctionEvent, BidEvent, arrow_schema
from openbid.ml import Featurizer, FTRLLogisticRegression
from openbid.shaping.features import shaping_spec
from openbid.shaping.model import save_shaping_model
from openbid.shaping.training import TrainedShaping

HOUR_MICROS = 3_600 * 1_000_000
START_MICROS = 1_709_510_400 * 1_000_000  # 2024-03-04T00:00:00Z


def event_tables(
    features: list[dict[str, str]],
    dsps: list[str],
    bid: np.ndarray,
    decision: np.ndarray,
    send_probability: np.ndarray,
    span_hours: float = 48.0,
) -> tuple[pa.Table, pa.Table]:
    """Auction and bid tables as the exchange logs them; arrays are (auctions, DSPs).
    Filtered calls are logged without a bid, whatever `bid` says."""
    n = len(features)
    ts = START_MICROS + (np.arange(n) * (span_hours * HOUR_MICROS / n)).astype(np.int64)
    ids = [f"a{i}" for i in range(n)]
    auction_schema = arrow_schema(AuctionEvent)
    auctions = pa.table(
        {
            "ts_micros": ts,
            "auction_id": ids,
            "request_id": ids,
            "features": pa.array(
                [list(row.items()) for row in features], pa.map_(pa.string(), pa.string())
            ),
        }
    )
    auctions = auctions.cast(pa.schema([auction_schema.field(c) for c in auctions.column_names]))
    sent = decision != "filtered"
    bids = pa.table(
        {
            "ts_micros": np.repeat(ts, len(dsps)),
            "auction_id": np.repeat(np.array(ids, dtype=object), len(dsps)),
            "dsp": np.tile(np.array(dsps, dtype=object), n),
            "decision": decision.reshape(-1).astype(object),
            "send_probability": send_probability.reshape(-1),
            "bid": (bid & sent).reshape(-1),
            "price_micros": np.where(bid & sent, 1_000_000, 0).reshape(-1),
            "error": np.full(n * len(dsps), "", dtype=object),
        }
    )
    bid_schema = arrow_schema(BidEvent)
    bids = bids.cast(pa.schema([bid_schema.field(c) for c in bids.column_names]))
    return auctions, bids


def tiny_model(path, dsps: list[str], weights_by_dsp: dict[str, dict[str, float]], **kwargs):
    """A per-DSP shaping model whose logit is the sum of `weights_by_dsp[dsp][value]` over
    the request's `site_id` values (set by hand, no training), saved at `path`."""
    spec = shaping_spec("per_dsp", hash_bits=18)
    featurizer = Featurizer(spec)
    site = spec.categorical.index("site_id")
    learners = {}
    for dsp in dsps:
        coef = np.zeros(spec.n_features, dtype=np.float32)
        coef[featurizer.bias_index] = -3.0
        for value, weight in weights_by_dsp.get(dsp, {}).items():
            coef[featurizer.transform_one({"site_id": value})[site]] += weight
        # with alpha = beta = 1 and no regularization, an FTRL weight is -z at n = 0
        state = np.stack([-coef, np.zeros_like(coef)], axis=1)
        learners[dsp] = FTRLLogisticRegression.from_state(
            state, alpha=1.0, beta=1.0, l1=0.0, l2=0.0
        )
    trained = TrainedShaping(
        layout="per_dsp",
        spec=spec,
        dsps=list(dsps),
        learners=learners,
        thresholds=kwargs.pop("thresholds", {dsp: 0.5 for dsp in dsps}),
        target_kind="recall",
        target=0.99,
        exploration_share=kwargs.pop("exploration_share", 0.01),
        window_start_micros=START_MICROS,
        window_end_micros=START_MICROS + HOUR_MICROS,
        rows=1,
    )
    return save_shaping_model(trained, path, **kwargs)


@pytest.fixture
def model_factory(tmp_path):
    counter = iter(range(1000))

    def make(dsps, weights_by_dsp, **kwargs):
        return tiny_model(tmp_path / f"model{next(counter)}", dsps, weights_by_dsp, **kwargs)

    return make
