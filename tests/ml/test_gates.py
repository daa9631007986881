"""The registry gate refuses a model worse than the constant, miscalibrated, broken, worse
than production, or judged on too little data; and says why, with its numbers."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.ml import GateSettings, gate_model
from openbid.ml.errors import TrainingDataError
from openbid.ml.metrics import base_rate_logloss, log_loss


@pytest.fixture(scope="module")
def window():
    """A held-out window with known click probabilities (rate about 2%)."""
    rng = np.random.default_rng(0)
    truth = rng.beta(0.5, 25.0, 50_000)
    y = (rng.random(truth.shape[0]) < truth).astype(float)
    return truth, y


def test_a_good_model_passes_with_its_numbers(window):
    truth, y = window
    verdict = gate_model(y, truth)
    assert verdict.passed and verdict.reasons == []
    assert verdict.rows == 50_000 and verdict.positives == y.sum()
    assert verdict.logloss == pytest.approx(log_loss(y, truth))
    assert verdict.base_logloss == pytest.approx(base_rate_logloss(y.mean()))
    assert verdict.normalized_entropy < 0.95
    assert verdict.calibration_ratio == pytest.approx(1.0, abs=0.05)


def test_the_gate_refuses_a_model_worse_than_the_constant(window):
    truth, y = window
    # calibrated on average, but its ranking is noise: worse than the base rate itself
    rng = np.random.default_rng(1)
    noise = rng.permutation(truth)
    verdict = gate_model(y, noise)
    assert not verdict.passed
    assert [r.split(":")[0] for r in verdict.reasons] == ["base rate"]
    assert verdict.logloss > verdict.base_logloss
    assert verdict.calibration_ratio == pytest.approx(1.0, abs=0.1)
    # the constant itself is not better than itself either
    assert not gate_model(y, np.full(y.shape, y.mean())).passed


def test_the_gate_refuses_a_miscalibrated_model(window):
    truth, y = window
    verdict = gate_model(y, np.clip(4.0 * truth, 0, 1))  # the 4x: sampled negatives
    assert not verdict.passed
    assert verdict.reasons[0].startswith("calibration: expected / actual is 4.1")
    assert verdict.calibration_band == pytest.approx(0.1)


def test_the_band_widens_when_few_clicks_are_held_out():
    y = np.zeros(2_000)
    y[:36] = 1.0
    p = np.where(y == 1, 0.06, 0.014)
    p *= 1.3 * 36 / p.sum()  # expected / actual 1.3: within 3 / sqrt(36) of 1
    verdict = gate_model(y, p)
    assert verdict.calibration_band == pytest.approx(3.0 / 6.0)  # z / sqrt(36)
    assert verdict.calibration_ratio == pytest.approx(1.3)
    assert verdict.passed


def test_the_gate_refuses_nan_too_little_data_and_a_regression_from_production(window):
    truth, y = window
    broken = truth.copy()
    broken[:3] = np.nan
    assert gate_model(y, broken).reasons[0] == "predictions: 3 are NaN, infinite or outside [0, 1]"
    small = gate_model(y[:500], truth[:500])
    assert not small.passed and small.reasons[0].startswith("data: 500 rows")
    worse = 0.8 * truth + 0.2 * truth.mean()  # as calibrated, less sharp
    verdict = gate_model(y, worse, production=truth)
    assert not verdict.passed
    assert verdict.reasons[-1].startswith("production: log loss")
    assert verdict.production_logloss == pytest.approx(log_loss(y, truth))
    lenient = gate_model(y, worse, production=truth, settings=GateSettings(production_margin=0.1))
    assert lenient.passed


def test_the_gate_checks_its_inputs():
    with pytest.raises(TrainingDataError, match="one prediction"):
        gate_model([0, 1], [0.5])
    with pytest.raises(TrainingDataError, match="0 or 1"):
        gate_model([0, 2], [0.5, 0.5])
    with pytest.raises(TrainingDataError, match="production"):
        gate_model([0, 1], [0.5, 0.5], production=[0.5])


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.001, 0.5),
    n=st.integers(0, 3_000),
    scale=st.floats(0.0, 5.0),
    seed=st.integers(0, 1_000),
)
def test_a_verdict_passes_exactly_when_every_bar_is_cleared(rate, n, scale, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(float)
    p = np.clip(rng.random(n) * 2 * rate * scale, 0.0, 1.0)
    s = GateSettings(min_rows=100, min_positives=5)
    verdict = gate_model(y, p, settings=s)
    assert verdict.passed == (verdict.reasons == [])
    if verdict.passed:
        assert verdict.rows >= 100 and verdict.positives >= 5
        assert verdict.logloss < verdict.base_logloss
        assert abs(verdict.calibration_ratio - 1.0) <= verdict.calibration_band
        assert math.isfinite(verdict.logloss)
