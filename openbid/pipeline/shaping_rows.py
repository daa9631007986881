"""The shaping training set as the shaping trainer's rows (`ShapingRows`): what
`openbid.shaping.training.rows_from_events` builds from the raw auction and bid tables, built
here from the ETL's output instead (`read_training_set(...)` tables), so the trainer can read
training sets built on any engine.

Same rules as the trainer: calls not sent (filtered, or not sent by the exchange: `sent`
false) have no label; a DSP that returned several bids is one positive row valued at its
highest bid; the row's weight is 1 / the probability the call was sent.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openbid.shaping.errors import ShapingDataError
from openbid.shaping.features import REQUEST_FIELDS
from openbid.shaping.training import ShapingRows


def shaping_rows(tables: dict[str, pa.Table]) -> ShapingRows:
    """`ShapingRows` from a shaping training set's `rows` and `auctions` tables."""
    rows, auctions = tables["rows"], tables["auctions"]
    sent = rows.filter(rows["sent"])
    if sent.num_rows == 0:
        raise ShapingDataError("the training set has no calls that were sent")
    grouped = sent.group_by(["auction_row", "dsp"], use_threads=False).aggregate(
        [("label", "max"), ("price_micros", "max"), ("send_probability", "min")]
    )
    grouped = grouped.sort_by([("auction_row", "ascending"), ("dsp", "ascending")])
    send_probability = grouped["send_probability_min"].to_numpy()
    if np.any(~(send_probability > 0.0)) or np.any(send_probability > 1.0):
        raise ShapingDataError("bid events carry a send_probability outside (0, 1]")
    auction_row = grouped["auction_row"]
    used = pc.unique(auction_row)  # ascending: the auctions file is in time order
    request = pc.index_in(auction_row, value_set=used).to_numpy().astype(np.int64)
    feature_map = auctions["features"].take(used).combine_chunks()
    label = grouped["label_max"].to_numpy().astype(np.float64)
    return ShapingRows(
        features={
            name: pc.map_lookup(feature_map, pa.scalar(name), "first") for name in REQUEST_FIELDS
        },
        auction_id=np.asarray(auctions["auction_id"].take(used).to_pylist(), dtype=object),
        ts_micros=auctions["ts_micros"].take(used).to_numpy().astype(np.int64),
        request=request,
        dsp=np.asarray(grouped["dsp"].to_pylist(), dtype=object),
        label=label,
        weight=1.0 / send_probability,
        value_micros=np.where(label > 0, grouped["price_micros_max"].to_numpy(), 0).astype(
            np.int64
        ),
    )
