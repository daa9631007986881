"""Calibration: map raw model probabilities to observed rates, fitted on a held-out slice.

Two methods: isotonic regression (scikit-learn's, monotone and non-parametric; needs a few
thousand rows) and Platt scaling (a logistic fit on the logit; two parameters, fine on
small slices). Either is exported as a small piecewise-linear `CalibrationTable`, which is
what is stored in `model.json` and applied inside the numba scorer. `choose_calibration`
picks among them (and the raw scores, and a constant) by held-out loss.

>>> rng = np.random.default_rng(0)
>>> raw = rng.uniform(0.01, 0.5, 20_000)
>>> y = (rng.random(20_000) < raw / 2).astype(float)  # the model over-predicts twice
>>> table = fit_calibration(raw, y, method="platt")
>>> round(calibration_ratio(y, raw), 2), round(calibration_ratio(y, table.apply(raw)), 2)
(1.98, 1.0)
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec
import numpy as np

from openbid.ml.errors import TrainingDataError
from openbid.ml.metrics import calibration_ratio

MAX_KNOTS = 256
_LOGIT_CLIP = 15.0
ISOTONIC_FLOOR = 1e-6
"""Isotonic bins without a click are served this, not 0: a probability of exactly 0 never
bids and makes a single click cost an infinite log loss."""


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


def logit_knots(n_knots: int = MAX_KNOTS - 2) -> np.ndarray:
    """Probabilities evenly spaced in logit space over [-15, 15], plus 0 and 1: where a
    smooth map of probabilities is tabulated. 254 knots are 0.12 apart in logit, so linear
    interpolation between them is off by at most 0.2% of the probability (0.25 x 0.12^2 / 8
    relative, from the curvature of the sigmoid); 64 knots would be off by up to 2.7%."""
    x = 1.0 / (1.0 + np.exp(-np.linspace(-_LOGIT_CLIP, _LOGIT_CLIP, n_knots)))
    return np.concatenate([[0.0], x, [1.0]])


def constant_table(rate: float) -> CalibrationTable:
    """The table that serves `rate` whatever the model says (the base-rate fallback)."""
    rate = min(max(float(rate), ISOTONIC_FLOOR), 1.0 - ISOTONIC_FLOOR)
    return CalibrationTable("constant", [0.0, 1.0], [rate, rate])


def fit_calibration(
    p,
    y,
    method: Literal["isotonic", "platt", "constant"] = "isotonic",
    sample_weight=None,
    n_knots: int = MAX_KNOTS - 2,
) -> CalibrationTable:
    """Fit a calibration on held-out predictions `p` and labels `y`; return its table."""
    probs = np.asarray(p, dtype=np.float64).reshape(-1)
    labels = np.asarray(y, dtype=np.float64).reshape(-1)
    if probs.shape != labels.shape or probs.size == 0:
        raise TrainingDataError("calibration needs one label per prediction, at least one row")
    if labels.min() == labels.max():
        raise TrainingDataError("calibration needs both clicks and non-clicks in the slice")
    if method == "constant":
        return constant_table(np.average(labels, weights=sample_weight))
    if method == "platt":
        a, b = fit_platt(probs, labels, sample_weight)
        # knots evenly spaced in logit space cover the tails, where click rates live
        x = logit_knots(n_knots)
        y_knots = 1.0 / (1.0 + np.exp(-(a * _logit(x) + b)))
    elif method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(
            y_min=ISOTONIC_FLOOR, y_max=1.0 - ISOTONIC_FLOOR, out_of_bounds="clip"
        ).fit(probs, labels, sample_weight=sample_weight)
        x, y_knots = iso.X_thresholds_, iso.y_thresholds_
        if x.shape[0] > MAX_KNOTS:
            keep = np.unique(np.linspace(0, x.shape[0] - 1, MAX_KNOTS).round().astype(int))
            x, y_knots = x[keep], y_knots[keep]
        if x.shape[0] == 1:
            x, y_knots = np.array([0.0, 1.0]), np.repeat(y_knots, 2)
    else:
        raise TrainingDataError(
            f"unknown calibration method {method!r}: isotonic, platt or constant"
        )
    table = CalibrationTable(method, [float(v) for v in x], [float(v) for v in y_knots])
    validate_table(table)
    return table


class CalibrationChoice(msgspec.Struct, frozen=True):
    """What `choose_calibration` chose and why: each method's held-out log loss."""

    method: str
    """"platt", "isotonic", "none" (the raw scores) or "constant" (the base rate)."""
    table: CalibrationTable | None
    """Fitted on the whole slice; None for "none"."""
    heldout_logloss: dict[str, float]
    """Per method tried: the log loss of a fit on one half of the slice on the other half,
    both ways round (the halves in time order), weighted over the whole slice."""


MIN_ISOTONIC_POSITIVES = 100
"""Isotonic regression is only tried when each half of the slice has this many positives
(weighted): with fewer, its steps follow the noise."""


def choose_calibration(
    p,
    y,
    sample_weight=None,
    methods: tuple[str, ...] = ("platt", "isotonic", "none", "constant"),
) -> CalibrationChoice:
    """The calibration with the lowest held-out loss on predictions `p` (rows in time
    order, never the rows the model trained on), fitted on all of them.

    Each method is fitted on the first half and scored on the second, then the other way
    round; "none" serves the raw scores; "constant" serves the slice's base rate, so a model
    whose scores carry no information on this slice is served as the constant instead.

    >>> rng = np.random.default_rng(1)
    >>> raw = rng.uniform(0.01, 0.3, 40_000)
    >>> y = (rng.random(40_000) < raw / 3).astype(float)  # over-predicts three times
    >>> choice = choose_calibration(raw, y)
    >>> choice.method in ("platt", "isotonic"), round(calibration_ratio(y, choice.table.apply(raw)), 2)
    (True, 1.0)
    """
    from openbid.ml.metrics import log_loss

    probs = np.asarray(p, dtype=np.float64).reshape(-1)
    labels = np.asarray(y, dtype=np.float64).reshape(-1)
    weights = (
        np.ones_like(labels)
        if sample_weight is None
        else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    )
    if probs.shape != labels.shape or probs.shape != weights.shape or probs.size < 4:
        raise TrainingDataError("calibration needs at least 4 rows, one label and weight per row")
    half = probs.size // 2
    halves = [slice(0, half), slice(half, None)]
    positives = [float(np.sum(weights[h] * labels[h])) for h in halves]
    negatives = [float(np.sum(weights[h] * (1 - labels[h]))) for h in halves]
    if min(positives) <= 0 or min(negatives) <= 0:
        raise TrainingDataError(
            "calibration needs clicks and non-clicks in both halves of the held-out slice"
        )
    losses: dict[str, float] = {}
    for method in methods:
        if method == "isotonic" and min(positives) < MIN_ISOTONIC_POSITIVES:
            continue
        total = 0.0
        for fit_part, score_part in (halves, halves[::-1]):
            if method == "none":
                served = probs[score_part]
            else:
                table = fit_calibration(
                    probs[fit_part],
                    labels[fit_part],
                    method,
                    weights[fit_part],  # type: ignore[arg-type]
                )
                served = table.apply(probs[score_part])
            total += log_loss(labels[score_part], served, weights[score_part]) * float(
                np.sum(weights[score_part])
            )
        losses[method] = total / float(np.sum(weights))
    if not losses:
        raise TrainingDataError(f"no calibration method to choose from in {methods}")
    best = min(losses, key=lambda m: (losses[m], m != "none"))
    if not math.isfinite(losses[best]):
        best = "constant"
    table = None if best == "none" else fit_calibration(probs, labels, best, weights)  # type: ignore[arg-type]
    return CalibrationChoice(best, table, losses)


__all__ = [
    "IDENTITY",
    "CalibrationChoice",
    "CalibrationTable",
    "calibration_ratio",
    "choose_calibration",
    "constant_table",
    "fit_calibration",
    "fit_platt",
    "logit_knots",
]
