"""FTRL-LR and FM: gradients match finite differences, training converges to known weights,
the FM learns an interaction LR cannot, weights and negative subsampling behave."""

import numpy as np
import pytest

from openbid.ml.errors import TrainingDataError
from openbid.ml.fm import FactorizationMachine, fm_loss_and_gradient
from openbid.ml.ftrl import FTRLLogisticRegression, lr_loss_and_gradient
from openbid.ml.metrics import log_loss
from openbid.ml.rows import HashedRows
from openbid.ml.sampling import recalibrate, subsample_negatives


def random_rows(rng, n_rows, n_features, width, with_values):
    indices = rng.integers(0, n_features, size=(n_rows, width))
    indices[0, 1] = indices[0, 0]  # a duplicate index in one row (a hash collision)
    values = rng.normal(size=n_rows * width).astype(np.float32) if with_values else None
    return HashedRows(indices.reshape(-1), np.arange(n_rows + 1) * width, n_features, values)


@pytest.mark.parametrize("with_values", [False, True])
def test_lr_gradient_matches_finite_differences(with_values):
    rng = np.random.default_rng(0)
    rows = random_rows(rng, 12, 10, 4, with_values)
    y = rng.integers(0, 2, 12).astype(float)
    sw = rng.uniform(0.5, 2.0, 12)
    w = rng.normal(size=10)
    args = (rows.indices, rows.indptr, rows.kernel_values(), y, sw)
    _, grad = lr_loss_and_gradient(*args, w)
    step = 1e-6
    for j in range(10):
        e = np.zeros(10)
        e[j] = step
        numeric = (
            lr_loss_and_gradient(*args, w + e)[0] - lr_loss_and_gradient(*args, w - e)[0]
        ) / (2 * step)
        assert grad[j] == pytest.approx(numeric, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("with_values", [False, True])
def test_fm_gradient_matches_finite_differences(with_values):
    rng = np.random.default_rng(1)
    rows = random_rows(rng, 10, 8, 4, with_values)
    y = rng.integers(0, 2, 10).astype(float)
    sw = rng.uniform(0.5, 2.0, 10)
    linear = rng.normal(size=8)
    factors = rng.normal(scale=0.5, size=(8, 3))
    args = (rows.indices, rows.indptr, rows.kernel_values(), y, sw)
    _, grad_linear, grad_factors = fm_loss_and_gradient(*args, linear, factors)
    step = 1e-6

    def loss(lin, fac):
        return fm_loss_and_gradient(*args, lin, fac)[0]

    for j in range(8):
        e = np.zeros(8)
        e[j] = step
        assert grad_linear[j] == pytest.approx(
            (loss(linear + e, factors) - loss(linear - e, factors)) / (2 * step), rel=1e-5, abs=1e-7
        )
        for f in range(3):
            e = np.zeros((8, 3))
            e[j, f] = step
            assert grad_factors[j, f] == pytest.approx(
                (loss(linear, factors + e) - loss(linear, factors - e)) / (2 * step),
                rel=1e-5,
                abs=1e-7,
            )


def one_hot_data(rng, true_weights, n_rows, noisy=True):
    """Each row: one of fields A (4 values) and B (3 values), plus a bias (index 7)."""
    a = rng.integers(0, 4, n_rows)
    b = 4 + rng.integers(0, 3, n_rows)
    indices = np.stack([a, b, np.full(n_rows, 7)], axis=1)
    logits = true_weights[a] + true_weights[b] + true_weights[7]
    if noisy:
        y = (rng.random(n_rows) < 1 / (1 + np.exp(-logits))).astype(float)
    else:
        y = (logits > 0).astype(float)
    return HashedRows.from_matrix(indices, n_features=8), y, logits


def test_ftrl_on_noisy_data_recovers_the_true_logits():
    rng = np.random.default_rng(2)
    true_weights = np.array([-1.0, 0.0, 0.5, 1.5, -0.5, 0.3, 0.8, -1.2])
    rows, y, logits = one_hot_data(rng, true_weights, 60_000)
    model = FTRLLogisticRegression(n_features=8, alpha=0.1, l2=0.0, n_passes=3).fit(rows, y)
    learned = model.decision_function(rows)
    # the model is identifiable up to the split between bias and fields: compare logits
    assert np.max(np.abs(learned - logits)) < 0.12
    assert model.progressive_logloss_[-1] < model.progressive_logloss_[0] + 1e-3
    assert model.n_seen_ == 3 * 60_000


def test_ftrl_on_separable_data_classifies_every_row_and_stays_finite():
    rng = np.random.default_rng(3)
    true_weights = np.array([-3.0, -1.0, 1.0, 3.0, 0.5, 0.0, -0.5, 0.0])
    rows, y, logits = one_hot_data(rng, true_weights, 5_000, noisy=False)
    model = FTRLLogisticRegression(n_features=8, alpha=0.5, l2=1.0, n_passes=5).fit(rows, y)
    p = model.predict_proba(rows)[:, 1]
    assert np.all((p > 0.5) == (y == 1))
    assert log_loss(y, p) < 0.05
    assert np.all(np.isfinite(model.coef_))
    # field A alone decides the label: its negative values end up below its positive ones
    assert model.coef_[:2].max() < 0 < model.coef_[2:4].min()


def test_l1_zeroes_weights_of_useless_features():
    rng = np.random.default_rng(4)
    n = 20_000
    signal = rng.integers(0, 2, n)
    noise = 2 + rng.integers(0, 50, n)
    rows = HashedRows.from_matrix(np.stack([signal, noise], axis=1), n_features=64)
    y = (rng.random(n) < np.where(signal == 1, 0.7, 0.3)).astype(float)
    sparse = FTRLLogisticRegression(n_features=64, alpha=0.1, l1=20.0).fit(rows, y)
    dense = FTRLLogisticRegression(n_features=64, alpha=0.1, l1=0.0).fit(rows, y)
    assert np.count_nonzero(sparse.coef_[2:52]) < 5 < np.count_nonzero(dense.coef_[2:52])
    assert sparse.coef_[1] - sparse.coef_[0] > 1.0


def test_fm_recovers_a_planted_interaction_that_lr_cannot():
    rng = np.random.default_rng(5)
    n = 40_000
    site = rng.integers(0, 5, n)
    size = 5 + rng.integers(0, 5, n)
    # clicks happen when site and ad size "match": a pure interaction, no main effect
    true_p = np.where(site == size - 5, 0.6, 0.05)
    y = (rng.random(n) < true_p).astype(float)
    rows = HashedRows.from_matrix(np.stack([site, size, np.full(n, 10)], axis=1), n_features=16)
    train, test = rows.slice(0, 30_000), rows.slice(30_000, n)
    fm = FactorizationMachine(n_features=16, n_factors=4, factor_learning_rate=0.05, n_passes=2)
    fm.fit(train, y[:30_000])
    lr = FTRLLogisticRegression(n_features=16, alpha=0.1, n_passes=2).fit(train, y[:30_000])
    fm_loss = log_loss(y[30_000:], fm.predict_proba(test)[:, 1])
    lr_loss = log_loss(y[30_000:], lr.predict_proba(test)[:, 1])
    oracle_loss = log_loss(y[30_000:], true_p[30_000:])
    assert fm_loss < oracle_loss + 0.01
    assert lr_loss > oracle_loss + 0.1
    match = HashedRows.from_matrix(np.array([[2, 7, 10], [2, 8, 10]]), n_features=16)
    assert fm.predict_proba(match)[:, 1] == pytest.approx([0.6, 0.05], abs=0.06)


def test_partial_fit_continues_where_fit_stopped():
    rng = np.random.default_rng(6)
    rows, y, _ = one_hot_data(rng, np.linspace(-1, 1, 8), 2_000)
    whole = FTRLLogisticRegression(n_features=8, n_passes=2).fit(rows, y)
    halves = FTRLLogisticRegression(n_features=8)
    for _ in range(2):
        halves.partial_fit(rows.slice(0, 1_000), y[:1_000])
        halves.partial_fit(rows.slice(1_000, 2_000), y[1_000:])
    np.testing.assert_allclose(halves.coef_, whole.coef_, rtol=1e-6)


def test_sample_weight_counts_like_repeating_a_row_in_the_loss():
    rng = np.random.default_rng(7)
    rows, y, _ = one_hot_data(rng, np.linspace(-1, 1, 8), 1_000)
    weights = rng.integers(1, 3, 1_000).astype(float)
    model = FTRLLogisticRegression(n_features=8).fit(rows, y, sample_weight=weights)
    zero = FTRLLogisticRegression(n_features=8).fit(rows, y, sample_weight=np.zeros(1_000))
    assert np.all(zero.coef_ == 0)  # weight 0 rows teach nothing
    assert not np.all(model.coef_ == 0)


def test_negative_subsampling_weights_and_recalibration_restore_the_base_rate():
    rng = np.random.default_rng(8)
    n = 100_000
    feature = rng.integers(0, 10, n)
    true_p = 0.01 + 0.01 * feature
    y = (rng.random(n) < true_p).astype(float)
    rows = HashedRows.from_matrix(np.stack([feature, np.full(n, 10)], axis=1), n_features=16)
    kept, weights = subsample_negatives(y, keep_rate=0.1, seed=1)
    assert np.all(y[np.setdiff1d(np.arange(n), kept)] == 0)  # every positive is kept
    sample = rows.take(kept)
    weighted = FTRLLogisticRegression(n_features=16, alpha=0.05, n_passes=3)
    weighted.fit(sample, y[kept], sample_weight=weights)
    unweighted = FTRLLogisticRegression(n_features=16, alpha=0.05, n_passes=3).fit(sample, y[kept])
    biased = unweighted.predict_proba(rows)[:, 1]
    assert biased.mean() > 2 * y.mean()
    for p in (weighted.predict_proba(rows)[:, 1], recalibrate(biased, 0.1)):
        assert p.mean() == pytest.approx(y.mean(), rel=0.1)


@pytest.mark.parametrize(
    ("labels", "message"), [([0.0, 2.0], "0 or 1"), ([1.0], "got 1 labels for 2 rows")]
)
def test_bad_labels_are_refused(labels, message):
    rows = HashedRows.from_matrix(np.array([[0], [1]]), n_features=2)
    with pytest.raises(TrainingDataError, match=message):
        FTRLLogisticRegression(n_features=2).fit(rows, labels)


def test_rows_from_a_larger_hash_space_are_refused():
    rows = HashedRows.from_matrix(np.array([[0], [1]]), n_features=1 << 20)
    with pytest.raises(TrainingDataError, match="hashed into"):
        FactorizationMachine(n_features=1 << 18).fit(rows, [0, 1])


def test_unfitted_model_says_so():
    with pytest.raises(TrainingDataError, match="not fitted"):
        FTRLLogisticRegression().coef_  # noqa: B018
