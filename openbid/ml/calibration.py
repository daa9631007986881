"""Calibration: map raw model probabilities to observed rates, fitted on a held-out slice.

Two methods: isotonic regression (scikit-learn's, monotone and non-parametric; needs a few
thousand rows) and Platt scaling (a logistic fit on the logit; two parameters, fine on
small slices). Either is exported as a small piecewise-linear `CalibrationTable`, which is
what is stored in `model.json` and applied inside the numba scorer.

>>> rng = np.random.default_rng(0)
>>> raw = rng.uniform(0.01, 0.5, 20_000)
>>> y = (rng.random(20_000) < raw / 2).astype(float)  # the model over-predicts twice
>>> table = fit_calibration(raw, y, method="platt")
>>> round(calibration_ratio(y, raw), 2), round(calibration_ratio(y, table.apply(raw)), 2)
(1.98, 1.0)
"""

from __future__ import annotations

from typing import Literal

import msgspec
import numpy as np

from openbid.ml.errors import TrainingDataError
from openbid.ml.metrics import calibration_ratio

MAX_KNOTS = 256
_LOGIT_CLIP = 15.0


class CalibrationTable(msgspec.Struct, frozen=True):
    """A piecewise-linear map from raw probability `x` (increasing knots) to calibrated `y`;
    constant beyond the first and last knots."""

    method: str
    x: list[float]
    y: list[float]

    def apply(self, p) -> np.ndarray:
        return np.interp(np.asarray(p, dtype=np.float64), self.x, self.y)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64)


IDENTITY = CalibrationTable("identity", [0.0, 1.0], [0.0, 1.0])


def validate_table(table: CalibrationTable) -> None:
    """Raise `TrainingDataError` unless the knots are usable by the scorer."""
    x, y = table.arrays()
    if x.shape != y.shape or x.shape[0] < 2 or x.shape[0] > MAX_KNOTS:
        raise TrainingDataError(f"calibration table needs 2..{MAX_KNOTS} knots with one y per x")
    if np.any(np.diff(x) < 0) or not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
        raise TrainingDataError("calibration knots must be finite and x non-decreasing")
    if np.any((y < 0) | (y > 1)):
        raise TrainingDataError("calibrated probabilities must lie in [0, 1]")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.clip(np.log(p) - np.log1p(-p), -_LOGIT_CLIP, _LOGIT_CLIP)


def fit_platt(p, y, sample_weight=None) -> tuple[float, float]:
    """(a, b) such that sigmoid(a * logit(p) + b) is calibrated on (p, y)."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=np.inf).fit(
        _logit(np.asarray(p, dtype=np.float64)).reshape(-1, 1), y, sample_weight=sample_weight
    )
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def fit_calibration(
    p,
    y,
    method: Literal["isotonic", "platt"] = "isotonic",
    sample_weight=None,
    n_knots: int = 64,
) -> CalibrationTable:
    """Fit a calibration on held-out predictions `p` and labels `y`; return its table."""
    probs = np.asarray(p, dtype=np.float64).reshape(-1)
    labels = np.asarray(y, dtype=np.float64).reshape(-1)
    if probs.shape != labels.shape or probs.size == 0:
        raise TrainingDataError("calibration needs one label per prediction, at least one row")
    if labels.min() == labels.max():
        raise TrainingDataError("calibration needs both clicks and non-clicks in the slice")
    if method == "platt":
        a, b = fit_platt(probs, labels, sample_weight)
        # knots evenly spaced in logit space cover the tails, where click rates live
        x = 1.0 / (1.0 + np.exp(-np.linspace(-_LOGIT_CLIP, _LOGIT_CLIP, n_knots)))
        x = np.concatenate([[0.0], x, [1.0]])
        y_knots = 1.0 / (1.0 + np.exp(-(a * _logit(x) + b)))
    elif method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            probs, labels, sample_weight=sample_weight
        )
        x, y_knots = iso.X_thresholds_, iso.y_thresholds_
        if x.shape[0] > MAX_KNOTS:
            keep = np.unique(np.linspace(0, x.shape[0] - 1, MAX_KNOTS).round().astype(int))
            x, y_knots = x[keep], y_knots[keep]
        if x.shape[0] == 1:
            x, y_knots = np.array([0.0, 1.0]), np.repeat(y_knots, 2)
    else:
        raise TrainingDataError(f"unknown calibration method {method!r}: isotonic or platt")
    table = CalibrationTable(method, [float(v) for v in x], [float(v) for v in y_knots])
    validate_table(table)
    return table


__all__ = ["IDENTITY", "CalibrationTable", "calibration_ratio", "fit_calibration", "fit_platt"]
