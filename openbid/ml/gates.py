"""The registry gate: may a newly trained model be registered? A pure function of its
predictions on a held-out window (rows later than any it trained on, sampled like
serving), and of the production model's predictions on the same rows when there is one.

A model is refused, with every reason and the numbers behind them, when:

- the window is too small to judge (`min_rows`, `min_positives`);
- a prediction is NaN, infinite or outside [0, 1];
- its expected / actual clicks is outside 1 +/- the band (`calibration_band`, widened to
  `z / sqrt(positives)` when the window has few clicks, so that noise alone does not
  refuse a good model): it would over- or under-bid on average;
- its log loss is not below the log loss of the window's own base rate (a constant that
  knew the window's click rate would do as well);
- its log loss exceeds the production model's by more than `production_margin`.

>>> y = np.array([0.0] * 950 + [1.0] * 50)
>>> good = np.where(y == 1, 0.2, 0.042)
>>> gate_model(y, good).passed
True
>>> verdict = gate_model(y, np.full(1000, 0.2))
>>> verdict.passed, verdict.reasons[0].split(":")[0]
(False, 'calibration')
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from openbid.ml.errors import TrainingDataError
from openbid.ml.metrics import EPSILON, base_rate_logloss, log_loss


class GateSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The bars a model must clear; the defaults are for click and bid models."""

    min_rows: int = 1_000
    min_positives: float = 30.0
    calibration_band: float = 0.1
    """Expected / actual must be within 1 +/- this (or +/- `z / sqrt(positives)`, if wider)."""
    z: float = 3.0
    max_normalized_entropy: float = 1.0
    """Log loss / the window base rate's log loss must be below this."""
    production_margin: float = 0.001
    """The log loss may exceed the production model's by at most this share."""


class GateVerdict(msgspec.Struct, frozen=True):
    """The decision and the numbers it was made on (all weighted by sample weight)."""

    passed: bool
    reasons: list[str]
    """Why the model was refused (each starts with the check's name); empty when passed."""
    rows: int
    positives: float
    base_rate: float
    mean_prediction: float
    calibration_ratio: float
    calibration_band: float
    """The band applied: max(`calibration_band`, `z / sqrt(positives)`)."""
    logloss: float
    base_logloss: float
    normalized_entropy: float
    production_logloss: float | None = None


def gate_model(
    labels,
    predictions,
    sample_weight=None,
    *,
    production=None,
    settings: GateSettings | None = None,
) -> GateVerdict:
    """Judge `predictions` (the new model's served probabilities) on held-out `labels`;
    `production`: the current model's predictions on the same rows, if there is one."""
    settings = settings or GateSettings()
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.asarray(predictions, dtype=np.float64).reshape(-1)
    w = (
        np.ones_like(y)
        if sample_weight is None
        else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    )
    if y.shape != p.shape or y.shape != w.shape:
        raise TrainingDataError(
            f"gate needs one prediction and weight per label: {y.shape[0]} labels, "
            f"{p.shape[0]} predictions, {w.shape[0]} weights"
        )
    if y.size and not np.all((y == 0.0) | (y == 1.0)):
        raise TrainingDataError("gate: labels must be 0 or 1")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise TrainingDataError("gate: sample weights must be finite and >= 0")
    reasons: list[str] = []
    total = float(w.sum())
    positives = float(np.sum(w * y))
    base_rate = positives / total if total > 0 else math.nan
    if y.size < settings.min_rows or positives < settings.min_positives:
        reasons.append(
            f"data: {y.size} rows and {positives:g} positives held out; need at least "
            f"{settings.min_rows} and {settings.min_positives:g} to judge a model"
        )
    bad = ~np.isfinite(p) | (p < 0.0) | (p > 1.0)
    if bad.any():
        reasons.append(f"predictions: {int(bad.sum())} are NaN, infinite or outside [0, 1]")
        p = np.where(bad, 0.5, p)  # keep computing the other numbers for the report
    mean_prediction = float(np.sum(w * p) / total) if total > 0 else math.nan
    ratio = float(np.sum(w * p) / positives) if positives > 0 else math.inf
    band = max(settings.calibration_band, settings.z / math.sqrt(max(positives, EPSILON)))
    if not abs(ratio - 1.0) <= band:
        reasons.append(
            f"calibration: expected / actual is {ratio:.3f} (mean prediction "
            f"{mean_prediction:.5g}, window base rate {base_rate:.5g}); allowed 1 +/- {band:.3f}"
        )
    ll = log_loss(y, p, w) if total > 0 else math.nan
    base_ll = base_rate_logloss(base_rate) if total > 0 else math.nan
    ne = ll / base_ll if base_ll > 0 else math.inf
    if not ne < settings.max_normalized_entropy:
        reasons.append(
            f"base rate: log loss {ll:.5f} is not below the window base rate's {base_ll:.5f} "
            f"(normalized entropy {ne:.4f})"
        )
    production_ll = None
    if production is not None:
        q = np.asarray(production, dtype=np.float64).reshape(-1)
        if q.shape != y.shape:
            raise TrainingDataError(
                f"gate: {q.shape[0]} production predictions for {y.shape[0]} labels"
            )
        production_ll = log_loss(y, np.where(np.isfinite(q), q, 0.5), w)
        if not ll <= production_ll * (1.0 + settings.production_margin):
            reasons.append(
                f"production: log loss {ll:.5f} is worse than the production model's "
                f"{production_ll:.5f} by more than {settings.production_margin:.2%}"
            )
    return GateVerdict(
        passed=not reasons,
        reasons=reasons,
        rows=int(y.size),
        positives=positives,
        base_rate=base_rate,
        mean_prediction=mean_prediction,
        calibration_ratio=ratio,
        calibration_band=band,
        logloss=ll,
        base_logloss=base_ll,
        normalized_entropy=ne,
        production_logloss=production_ll,
    )


__all__ = ["GateSettings", "GateVerdict", "gate_model"]
