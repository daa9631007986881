"""What a training job cuts from a training set: the later window held out for the gate
(a share of the rows, widened to a minimum of rows and positives, never a fixed number of
hours: the demo's log spans minutes, production's days), and the columns and feature spec
of the click and conversion models.

>>> ts = np.arange(10_000)
>>> labels = (ts % 50 == 0).astype(float)  # 200 positives, one every 50 rows
>>> heldout_start(ts, labels, share=0.2, min_rows=1000, min_positives=30)
8000
>>> heldout_start(ts, labels, share=0.05, min_rows=100, min_positives=30)  # 30 positives
8500
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openbid.errors import OpenbidError
from openbid.ml import FeatureSpec
from openbid.shaping.features import REQUEST_FIELDS


class NotEnoughData(OpenbidError):
    """The training set cannot yet give both a training part and a held-out window of the
    minimum size: the job is skipped until the data has grown (not a failure)."""


def heldout_start(
    ts_micros: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    share: float,
    min_rows: int,
    min_positives: float,
) -> int:
    """The first row of the held-out window of rows in time order: the last `share` of the
    rows, widened (earlier) until it holds `min_rows` rows and `min_positives` (weighted)
    positives, then moved back to the first row of its timestamp so that no instant is split.
    The rows before it must hold as many rows and positives, else `NotEnoughData`."""
    n = int(len(ts_micros))
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if n == 0:
        raise NotEnoughData("the training set is empty")
    positives = w * (y > 0)
    from_end = np.cumsum(positives[::-1])  # from_end[k - 1]: positives of the last k rows
    count = max(int(math.ceil(share * n)), int(min_rows))
    enough = np.flatnonzero(from_end >= min_positives)
    if enough.size == 0:
        raise NotEnoughData(
            f"only {float(from_end[-1]):g} positives in {n:,} rows (a held-out window needs "
            f"{min_positives:g}, and as many before it to train on)"
        )
    count = max(count, int(enough[0]) + 1)
    start = n - count
    if start <= 0:
        raise NotEnoughData(
            f"only {n:,} rows (a held-out window of {count:,}: share {share:g}, at least "
            f"{min_rows:,} rows and {min_positives:g} positives, leaves none to train on)"
        )
    ts = np.asarray(ts_micros)
    start = int(np.searchsorted(ts, ts[start], side="left"))  # keep each instant whole
    before_rows = start
    before_positives = float(positives[:start].sum())
    if before_rows < min_rows or before_positives < min_positives:
        raise NotEnoughData(
            f"only {before_rows:,} rows and {before_positives:g} positives before the held-out "
            f"window (training needs at least {min_rows:,} and {min_positives:g})"
        )
    return start


def effective_weights(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`weights` scaled so that the weighted positives equal the effective number of
    positives (Kish: (sum w y)^2 / sum (w y)^2): a window whose bids are mostly explored
    calls (weight 1 / exploration share) tells less than its weighted count says, and the
    gate's minimum of positives and noise band (z / sqrt(positives)) must see that. Log
    losses, base rates and expected / actual do not change with one scale for all rows.

    >>> effective_weights(np.array([1.0, 1.0, 0.0]), np.ones(3)).tolist()  # unit: unchanged
    [1.0, 1.0, 1.0]
    >>> w = effective_weights(np.array([1.0, 1.0, 0.0, 0.0]), np.array([1.0, 99.0, 1.0, 99.0]))
    >>> round(float(w[:2].sum()), 3)  # 100 weighted positives, about 1 effective one
    1.02
    """
    y = np.asarray(labels, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    positive = w * (y > 0)
    total, squares = float(positive.sum()), float((positive**2).sum())
    if total <= 0 or squares <= 0:
        return w
    return w * (total / squares)


AD_FIELDS: tuple[str, ...] = ("dsp", "campaign_id", "creative_id")
"""What the click and conversion models know of the ad (a campaign is an advertiser's)."""
PROBABILITY_REQUEST_FIELDS: tuple[str, ...] = tuple(
    name
    for name in REQUEST_FIELDS
    if name not in ("consent_string", "gdpr", "us_opt_out", "coppa", "lmt", "floor")
)
"""The auction features the click and conversion models read (what the user sees and
where; not the consent flags, which only decide whether an ad may be shown)."""
PROBABILITY_CROSSES: tuple[tuple[str, ...], ...] = (
    ("site_id", "campaign_id"),  # a site's audience likes some advertisers more
    ("categories", "campaign_id"),  # a sports ad on a sports page
    ("os", "campaign_id"),
    ("region", "campaign_id"),
    ("device_type", "media"),
    ("media", "size"),
)


def probability_spec(set_name: str, hash_bits: int) -> FeatureSpec:
    """The feature spec of the click (`click`) or conversion (`conversion`) model."""
    categorical = [*PROBABILITY_REQUEST_FIELDS, *AD_FIELDS]
    crosses = [list(cross) for cross in PROBABILITY_CROSSES]
    if set_name == "conversion":  # a click converts far more often than a view
        categorical.append("touch")
        crosses.append(["touch", "campaign_id"])
    return FeatureSpec(categorical=categorical, crosses=crosses, hash_bits=hash_bits)


def probability_columns(rows: pa.Table, spec: FeatureSpec) -> dict[str, pa.Array]:
    """The columns `Featurizer.transform_columns` hashes, from a click or conversion
    training set's rows: the auction's features (looked up in its `features` map) and the
    ad's own columns."""
    features = rows["features"].combine_chunks() if rows.num_rows else None
    columns: dict[str, pa.Array] = {}
    for name in spec.categorical:
        if name in rows.column_names:
            columns[name] = rows[name].combine_chunks()
        elif features is None:
            columns[name] = pa.array([], pa.string())
        else:
            columns[name] = pc.map_lookup(features, pa.scalar(name), "first")
    return columns
