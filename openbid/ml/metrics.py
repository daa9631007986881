"""How good are predicted click (or bid) probabilities: log loss, normalized entropy, AUC,
the calibration ratio, calibration curves (data and a PNG plot), overall and by slice.

>>> y = np.array([0, 0, 1, 0, 1, 0, 0, 1])
>>> p = np.array([0.1, 0.2, 0.7, 0.3, 0.6, 0.2, 0.4, 0.5])
>>> m = evaluate(y, p)
>>> round(m.logloss, 4), round(m.normalized_entropy, 4), m.auc, round(m.calibration_ratio, 3)
(0.3725, 0.563, 1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np

from openbid.ml.errors import TrainingDataError

EPSILON = 1e-15


class Metrics(msgspec.Struct, frozen=True):
    """Quality of predictions on one set of rows (all weighted by sample weight)."""

    rows: int
    positives: float
    logloss: float
    normalized_entropy: float
    """Log loss divided by the log loss of always predicting the base rate; < 1 is better."""
    auc: float
    """Area under the ROC curve; NaN when only one class is present."""
    calibration_ratio: float
    """Expected / actual: sum of predictions over sum of labels; 1 is calibrated."""
    mean_prediction: float
    base_rate: float


class CalibrationCurve(msgspec.Struct, frozen=True):
    """Per bin of predicted probability: mean prediction, observed rate and row count."""

    mean_predicted: list[float]
    observed_rate: list[float]
    rows: list[int]


def _check(y, p, sample_weight=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.asarray(y, dtype=np.float64).reshape(-1)
    probs = np.asarray(p, dtype=np.float64).reshape(-1)
    if labels.shape != probs.shape:
        raise TrainingDataError(f"got {labels.shape[0]} labels and {probs.shape[0]} predictions")
    if labels.size == 0:
        raise TrainingDataError("cannot evaluate zero rows")
    if np.any(np.isnan(probs)):
        raise TrainingDataError("predictions contain NaN")
    weights = (
        np.ones_like(labels)
        if sample_weight is None
        else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    )
    return labels, probs, weights


def log_loss(y, p, sample_weight=None) -> float:
    """Mean (weighted) negative log-likelihood, predictions clipped to [1e-15, 1 - 1e-15].

    >>> round(log_loss([1, 0], [0.9, 0.2]), 4)
    0.1643
    """
    labels, probs, weights = _check(y, p, sample_weight)
    probs = np.clip(probs, EPSILON, 1 - EPSILON)
    losses = -(labels * np.log(probs) + (1 - labels) * np.log1p(-probs))
    return float(np.sum(weights * losses) / np.sum(weights))


def base_rate_logloss(base_rate: float) -> float:
    """The log loss of always predicting `base_rate` on data whose rate is `base_rate`."""
    q = min(max(base_rate, EPSILON), 1 - EPSILON)
    return float(-(q * np.log(q) + (1 - q) * np.log1p(-q)))


def normalized_entropy(y, p, sample_weight=None) -> float:
    """Log loss / base-rate entropy (He et al. 2014, "Practical lessons ... at Facebook")."""
    labels, _, weights = _check(y, p, sample_weight)
    rate = float(np.sum(weights * labels) / np.sum(weights))
    return log_loss(y, p, sample_weight) / base_rate_logloss(rate)


def auc(y, p, sample_weight=None) -> float:
    """ROC AUC (ties count half); NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels, probs, weights = _check(y, p, sample_weight)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, probs, sample_weight=weights))


def calibration_ratio(y, p, sample_weight=None) -> float:
    """Expected / actual clicks: sum of predictions over sum of labels (inf if no positives).

    >>> calibration_ratio([1, 0, 0, 0], [0.5, 0.5, 0.25, 0.25])
    1.5
    """
    labels, probs, weights = _check(y, p, sample_weight)
    actual = float(np.sum(weights * labels))
    expected = float(np.sum(weights * probs))
    return expected / actual if actual else float("inf")


def evaluate(y, p, sample_weight=None) -> Metrics:
    """All metrics at once."""
    labels, probs, weights = _check(y, p, sample_weight)
    total = float(np.sum(weights))
    positives = float(np.sum(weights * labels))
    return Metrics(
        rows=int(labels.shape[0]),
        positives=positives,
        logloss=log_loss(labels, probs, weights),
        normalized_entropy=normalized_entropy(labels, probs, weights),
        auc=auc(labels, probs, weights),
        calibration_ratio=calibration_ratio(labels, probs, weights),
        mean_prediction=float(np.sum(weights * probs) / total),
        base_rate=positives / total,
    )


def evaluate_by_slice(y, p, slices: Sequence, sample_weight=None) -> dict[str, Metrics]:
    """`evaluate` for each distinct value of `slices` (e.g. DSP, country), plus "all".

    >>> by = evaluate_by_slice([1, 0, 0, 1], [0.6, 0.4, 0.2, 0.9], ["a", "a", "b", "b"])
    >>> sorted(by), by["a"].rows, round(by["b"].calibration_ratio, 2)
    (['a', 'all', 'b'], 2, 1.1)
    """
    labels, probs, weights = _check(y, p, sample_weight)
    keys = np.asarray(slices).astype(str)
    if keys.shape != labels.shape:
        raise TrainingDataError("slices must have one value per row")
    result = {"all": evaluate(labels, probs, weights)}
    for key in np.unique(keys):
        rows = keys == key
        result[str(key)] = evaluate(labels[rows], probs[rows], weights[rows])
    return result


def calibration_curve(y, p, n_bins: int = 10, sample_weight=None) -> CalibrationCurve:
    """Bins of equal row count by predicted probability (quantiles), so sparse tails of
    click probabilities do not leave most bins empty."""
    labels, probs, weights = _check(y, p, sample_weight)
    order = np.argsort(probs, kind="stable")
    mean_predicted, observed, counts = [], [], []
    for chunk in np.array_split(order, min(n_bins, labels.shape[0])):
        w = weights[chunk]
        total = float(np.sum(w))
        if total == 0:
            continue
        mean_predicted.append(float(np.sum(w * probs[chunk]) / total))
        observed.append(float(np.sum(w * labels[chunk]) / total))
        counts.append(int(chunk.shape[0]))
    return CalibrationCurve(mean_predicted, observed, counts)


def plot_calibration(
    curves: dict[str, CalibrationCurve], path: str | Path, title: str = "Calibration"
) -> Path:
    """Write a PNG reliability diagram (one line per named curve) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    figure, axes = plt.subplots(figsize=(5, 5), dpi=100)
    try:
        highest = 0.0
        for name, curve in curves.items():
            axes.plot(curve.mean_predicted, curve.observed_rate, marker="o", label=name)
            highest = max([highest, *curve.mean_predicted, *curve.observed_rate])
        limit = min(1.0, highest * 1.1) or 1.0
        axes.plot([0, limit], [0, limit], linestyle="--", color="grey", label="perfect")
        axes.set_xlabel("mean predicted probability")
        axes.set_ylabel("observed rate")
        axes.set_title(title)
        axes.legend(loc="upper left")
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
    return path
