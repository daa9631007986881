"""fit_auto: the search beats a bad fixed setting, calibration and negative sampling give
unbiased probabilities, a model with nothing to learn serves the base rate."""

import numpy as np
import pytest

from openbid.ml import (
    AutoSettings,
    FTRLLogisticRegression,
    HashedRows,
    MultiModelScorer,
    choose_calibration,
    evaluate,
    fit_auto,
    load_model,
    subsample_negatives,
)
from openbid.ml.errors import TrainingDataError
from openbid.ml.features import FeatureSpec
from openbid.ml.metrics import calibration_ratio, log_loss
from openbid.ml.search import prior_index, validation_windows

N_FEATURES = 1 << 18  # the smallest hash space an artifact takes
FIELDS, VALUES = 6, 300
BIAS = N_FEATURES - 1


def planted(n: int, seed: int, base_logit: float = -3.0, scale: float = 0.8):
    """Rows of 6 categorical fields (300 values each, Zipf-like) and a bias; labels drawn
    from a planted logistic model (the same model for every seed)."""
    weights = np.random.default_rng(99).normal(0.0, scale, (FIELDS, VALUES))
    rng = np.random.default_rng(seed)
    values = np.minimum(rng.zipf(1.3, (n, FIELDS)) - 1, VALUES - 1)
    logit = base_logit + weights[np.arange(FIELDS), values].sum(axis=1)
    p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(n) < p).astype(float)
    indices = np.concatenate([values + VALUES * np.arange(FIELDS), np.full((n, 1), BIAS)], axis=1)
    return HashedRows.from_matrix(indices, N_FEATURES), y, p


FAST = AutoSettings(kind="ftrl_lr", max_passes=4)


def test_the_search_picks_a_better_alpha_than_a_deliberately_bad_fixed_one():
    train, y_train, _ = planted(40_000, seed=1)
    test, y_test, _ = planted(20_000, seed=2)
    bad = FTRLLogisticRegression(n_features=N_FEATURES, alpha=3.0, n_passes=3).fit(train, y_train)
    auto = fit_auto(train, y_train, settings=FAST)
    assert auto.report.params["alpha"] != 3.0
    bad_loss = log_loss(y_test, bad.predict_proba(test)[:, 1])
    auto_loss = log_loss(y_test, auto.predict_proba(test)[:, 1])
    assert auto_loss < bad_loss - 0.005
    # every trial is in the report, and the chosen one has the lowest held-out loss (within
    # the tolerance that prefers fewer passes)
    best = min(t.best_loss for t in auto.report.trials)
    assert auto.report.validation_criterion <= best * (1 + FAST.tolerance)
    assert auto.report.validation_criterion == pytest.approx(
        auto.report.validation_logloss, rel=0.01
    )
    assert auto.report.validation_logloss < auto.report.validation_base_logloss


def test_the_search_stays_within_its_budget():
    train, y_train, _ = planted(40_000, seed=3)
    settings = AutoSettings(kind="ftrl_lr", budget_passes=6.0, min_budget_rows=0, max_passes=4)
    auto = fit_auto(train, y_train, settings=settings)
    # trials start only while budget is left; the last may overrun by what one trial costs
    assert auto.report.search_passes <= 6.0 + settings.max_passes
    assert len(auto.report.trials) < 6


def test_calibration_makes_a_biased_models_expected_over_actual_about_one():
    rng = np.random.default_rng(4)
    truth = rng.beta(1.0, 30.0, 120_000)
    y = (rng.random(truth.shape[0]) < truth).astype(float)
    biased = np.clip(3.0 * truth**0.8, 0.0, 1.0)  # over-predicts ~3x, more at low rates
    fit, fresh = slice(0, 60_000), slice(60_000, None)
    assert calibration_ratio(y[fresh], biased[fresh]) > 2.5
    choice = choose_calibration(biased[fit], y[fit])
    assert choice.method in ("platt", "isotonic")
    served = choice.table.apply(biased[fresh])
    assert calibration_ratio(y[fresh], served) == pytest.approx(1.0, abs=0.05)
    assert log_loss(y[fresh], served) < log_loss(y[fresh], biased[fresh])


def test_negative_subsampling_with_a_declared_rate_serves_the_true_base_rate(tmp_path):
    rows, y, _ = planted(200_000, seed=5, base_logit=-4.5)
    fresh, y_fresh, p_fresh = planted(60_000, seed=6, base_logit=-4.5)
    keep = 0.1
    kept, _ = subsample_negatives(y, keep, seed=7)
    sampled, y_sampled = rows.take(kept), y[kept]
    assert y_sampled.mean() > 5 * y.mean()
    declared = fit_auto(sampled, y_sampled, keep_rate=keep, settings=FAST)
    undeclared = fit_auto(sampled, y_sampled, settings=FAST)
    served = declared.predict_proba(fresh)[:, 1]
    # unbiased against the planted probabilities (no label noise) and the clicks
    assert served.mean() / p_fresh.mean() == pytest.approx(1.0, abs=0.05)
    assert calibration_ratio(y_fresh, served) == pytest.approx(1.0, abs=0.1)
    # undeclared, the model can only serve the rate it was shown
    assert undeclared.predict_proba(fresh)[:, 1].mean() > 4 * p_fresh.mean()
    assert undeclared.report.training_base_rate == pytest.approx(y_sampled.mean())
    # the artifact stores the rate and serves the same probabilities
    spec = FeatureSpec(categorical=["x"], hash_bits=18)
    path = declared.save(tmp_path / "m", spec)
    artifact = load_model(path)
    assert artifact.meta.negative_keep_rate == keep
    scored = MultiModelScorer([artifact.scoring_model()]).score_batch(fresh)[:, 0]
    np.testing.assert_allclose(scored, served, rtol=2e-4)


def test_with_nothing_to_learn_the_model_serves_the_base_rate():
    rows, _, _ = planted(30_000, seed=8)
    y = (np.random.default_rng(9).random(30_000) < 0.05).astype(float)  # unrelated to rows
    fresh, _, _ = planted(20_000, seed=10)
    y_fresh = (np.random.default_rng(11).random(20_000) < 0.05).astype(float)
    auto = fit_auto(rows, y, settings=FAST)
    served = auto.predict_proba(fresh)[:, 1]
    assert served.std() < 0.01
    assert served.mean() == pytest.approx(0.05, rel=0.1)
    base = log_loss(y_fresh, np.full(y_fresh.shape, y.mean()))
    assert log_loss(y_fresh, served) <= base * 1.002


def test_choose_calibration_falls_back_to_the_constant_for_scores_without_information():
    rng = np.random.default_rng(12)
    y = (rng.random(40_000) < 0.1).astype(float)
    noise = rng.uniform(0.0, 0.6, 40_000)
    choice = choose_calibration(noise, y)
    assert choice.heldout_logloss["constant"] <= choice.heldout_logloss["none"]
    assert choice.method in ("constant", "platt", "isotonic")
    assert np.ptp(choice.table.apply(noise)) < 0.02


def test_small_data_is_held_out_in_three_rolling_windows_in_time_order():
    settings = AutoSettings()
    many = np.zeros(100_000)
    many[::50] = 1  # 400 positives in the last 20%
    assert validation_windows(100_000, many, settings) == [(80_000, 100_000)]
    few = np.zeros(1_000)
    few[::10] = 1
    assert validation_windows(1_000, few, settings) == [(400, 600), (600, 800), (800, 1000)]
    rows, y, _ = planted(2_000, seed=13, base_logit=-1.0)
    auto = fit_auto(rows, y, settings=FAST)
    assert len(auto.report.validation_windows) == 3


def test_the_bias_starts_at_the_base_rate_and_stays_without_evidence():
    rows, y, _ = planted(5_000, seed=14)
    assert prior_index(rows) == BIAS
    learner = FTRLLogisticRegression(n_features=N_FEATURES, l1=0.5, l2=3.0).start_at(BIAS, -3.2)
    assert learner.coef_[BIAS] == pytest.approx(-3.2, rel=1e-6)
    # rows whose label rate is exactly what the bias says: the bias barely moves
    only_bias = HashedRows.from_matrix(np.full((4_000, 1), BIAS), N_FEATURES)
    rate = 1.0 / (1.0 + np.exp(3.2))
    labels = (np.arange(4_000) % round(1 / rate) == 0).astype(float)
    learner.partial_fit(only_bias, labels)
    assert learner.coef_[BIAS] == pytest.approx(-3.2, abs=0.1)
    with pytest.raises(TrainingDataError, match="start_at"):
        learner.start_at(N_FEATURES, 0.0)


def test_fit_auto_refuses_labels_of_one_class_and_bad_settings():
    rows, _, _ = planted(1_000, seed=15)
    with pytest.raises(TrainingDataError, match="both positives and negatives"):
        fit_auto(rows, np.zeros(1_000))
    with pytest.raises(TrainingDataError, match="validation_share"):
        fit_auto(rows, np.arange(1_000) % 2, settings=AutoSettings(validation_share=0.7))
    with pytest.raises(TrainingDataError, match="keep_rate"):
        fit_auto(rows, np.arange(1_000) % 2, keep_rate=0.0)


def test_the_fm_is_chosen_only_when_it_beats_lr_held_out():
    """A pure interaction (XOR of two fields): LR cannot learn it, the FM can."""
    rng = np.random.default_rng(16)
    n = 30_000
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    y = (rng.random(n) < np.where(a == b, 0.3, 0.05)).astype(float)
    rows = HashedRows.from_matrix(np.stack([a, 2 + b, np.full(n, 4)], axis=1), 8)
    auto = fit_auto(rows, y, settings=AutoSettings(max_passes=3))
    assert auto.report.kind == "fm"
    assert evaluate(y, auto.predict_proba(rows)[:, 1]).auc > 0.7
    linear_only = fit_auto(rows, y, settings=AutoSettings(kind="ftrl_lr", max_passes=3))
    assert linear_only.report.kind == "ftrl_lr"


def test_a_criterion_other_than_log_loss_drives_the_search():
    train, y_train, _ = planted(30_000, seed=17)
    calls = []

    def top_decile_miss(y, p, w):  # the share of clicks outside the top 10% of scores
        calls.append(len(y))
        top = p >= np.quantile(p, 0.9)
        return float(1.0 - np.sum(w * y * top) / np.sum(w * y))

    auto = fit_auto(train, y_train, settings=FAST, criterion=top_decile_miss)
    assert calls and all(n == 6_000 for n in calls)  # the held-out 20%
    best = min(t.best_loss for t in auto.report.trials)
    assert auto.report.validation_criterion <= best * (1 + FAST.tolerance)
    assert 0.0 < auto.report.validation_criterion < 0.9  # a share, not a log loss
