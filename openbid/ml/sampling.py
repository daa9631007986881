"""Negative subsampling: keep every positive and a share of negatives, then correct for it.

Either train with the weights returned (each kept negative counts `1 / keep_rate`), and
predictions are calibrated as they are; or train unweighted and map predictions back with
`recalibrate` (He et al. 2014): `p = q / (q + (1 - q) / keep_rate)`. `served_table` folds
that map into a model's calibration table, so the scorer serves full-traffic probabilities
with no extra step.

>>> labels = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
>>> rows, weights = subsample_negatives(labels, keep_rate=0.5, seed=3)
>>> rows.tolist(), weights.tolist()
([0, 1, 4, 5, 6, 7, 9], [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0])
>>> round(float(recalibrate(0.5, keep_rate=0.1)), 4)
0.0909
"""

from __future__ import annotations

import numpy as np

from openbid.ml.calibration import CalibrationTable, logit_knots, validate_table
from openbid.ml.errors import TrainingDataError


def _check_rate(keep_rate: float) -> None:
    if not 0 < keep_rate <= 1:
        raise TrainingDataError(f"keep_rate must be in (0, 1], got {keep_rate}")


def subsample_negatives(labels, keep_rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers to keep (in order) and their importance weights."""
    _check_rate(keep_rate)
    y = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    keep = (y == 1) | (rng.random(y.shape[0]) < keep_rate)
    rows = np.flatnonzero(keep)
    weights = np.where(y[rows] == 1, 1.0, 1.0 / keep_rate)
    return rows, weights


def recalibrate(q, keep_rate: float):
    """The probability on the full data, from `q` predicted by a model trained (unweighted)
    on data whose negatives were kept with probability `keep_rate`."""
    _check_rate(keep_rate)
    q = np.asarray(q, dtype=np.float64)
    return q / (q + (1.0 - q) / keep_rate)


def served_table(table: CalibrationTable | None, keep_rate: float) -> CalibrationTable | None:
    """The table a scorer applies to serve full-traffic probabilities: `table` (fitted on
    data sampled like the training rows; None for raw scores) followed by `recalibrate` at
    `keep_rate`. Exact at every knot; with no table, knots evenly spaced in logit space.

    >>> served = served_table(None, keep_rate=0.25)
    >>> round(float(served.apply(0.5)), 3), round(float(recalibrate(0.5, 0.25)), 3)
    (0.2, 0.2)
    """
    _check_rate(keep_rate)
    if keep_rate == 1.0:
        return table
    if table is None:
        x = logit_knots()
        method = "identity"
    else:
        x = np.asarray(table.x, dtype=np.float64)
        method = table.method
    y = x if table is None else np.asarray(table.y, dtype=np.float64)
    served = CalibrationTable(
        method, [float(v) for v in x], [float(v) for v in recalibrate(y, keep_rate)]
    )
    validate_table(served)
    return served
