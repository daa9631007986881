"""Metrics agree with scikit-learn; calibration fixes a mis-calibrated model."""

import numpy as np
import pytest
from sklearn import metrics as sk

from openbid.ml.calibration import fit_calibration
from openbid.ml.errors import TrainingDataError
from openbid.ml.metrics import (
    calibration_curve,
    evaluate,
    evaluate_by_slice,
    log_loss,
    normalized_entropy,
    plot_calibration,
)


@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(0)
    truth = rng.beta(1, 8, 20_000)
    y = (rng.random(20_000) < truth).astype(float)
    skewed = np.clip(truth**0.7, 0, 1)  # a model that over-predicts, more so at low rates
    weights = rng.uniform(0.5, 2.0, 20_000)
    return truth, y, skewed, weights


def test_metrics_agree_with_scikit_learn(predictions):
    truth, y, _, weights = predictions
    assert log_loss(y, truth, weights) == pytest.approx(
        sk.log_loss(y, truth, sample_weight=weights)
    )
    m = evaluate(y, truth, weights)
    assert m.auc == pytest.approx(sk.roc_auc_score(y, truth, sample_weight=weights))
    rate = np.average(y, weights=weights)
    assert m.normalized_entropy == pytest.approx(
        m.logloss / sk.log_loss(y, np.full_like(y, rate), sample_weight=weights)
    )
    assert m.calibration_ratio == pytest.approx(1.0, abs=0.03)
    assert normalized_entropy(y, np.full_like(y, y.mean())) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_fitted_on_a_held_out_slice_fixes_the_ratio(predictions, method):
    truth, y, skewed, _ = predictions
    held_out, test = slice(0, 10_000), slice(10_000, 20_000)
    assert evaluate(y[test], skewed[test]).calibration_ratio > 1.3
    table = fit_calibration(skewed[held_out], y[held_out], method=method)
    calibrated = table.apply(skewed[test])
    assert evaluate(y[test], calibrated).calibration_ratio == pytest.approx(1.0, abs=0.06)
    assert log_loss(y[test], calibrated) < log_loss(y[test], skewed[test])
    assert 2 <= len(table.x) <= 256 and np.all(np.diff(table.x) >= 0)


def test_calibration_needs_both_classes():
    with pytest.raises(TrainingDataError, match="both clicks and non-clicks"):
        fit_calibration([0.1, 0.2], [0, 0])


def test_calibration_curve_and_plot(predictions, tmp_path):
    truth, y, skewed, _ = predictions
    good = calibration_curve(y, truth, n_bins=10)
    bad = calibration_curve(y, skewed, n_bins=10)
    assert sum(good.rows) == 20_000 and len(good.rows) == 10
    assert np.all(np.diff(good.mean_predicted) > 0)
    assert np.max(np.abs(np.subtract(good.mean_predicted, good.observed_rate))) < 0.03
    assert np.max(np.subtract(bad.mean_predicted, bad.observed_rate)) > 0.05
    png = plot_calibration({"truth": good, "skewed": bad}, tmp_path / "calibration.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_by_slice(predictions):
    truth, y, skewed, _ = predictions
    slices = np.where(np.arange(20_000) % 2 == 0, "dsp-a", "dsp-b")
    p = np.where(slices == "dsp-a", truth, skewed)
    by = evaluate_by_slice(y, p, slices)
    assert set(by) == {"all", "dsp-a", "dsp-b"}
    assert by["dsp-a"].rows == by["dsp-b"].rows == 10_000
    assert by["dsp-a"].calibration_ratio < 1.1 < by["dsp-b"].calibration_ratio
    assert np.isnan(evaluate([1, 1], [0.5, 0.6]).auc)
