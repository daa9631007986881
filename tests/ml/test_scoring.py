"""The multi-model scorer agrees with each learner, one row with a batch, and is immutable."""

import numpy as np
import pytest

from openbid.ml.calibration import CalibrationTable
from openbid.ml.errors import TrainingDataError
from openbid.ml.fm import FactorizationMachine
from openbid.ml.ftrl import FTRLLogisticRegression
from openbid.ml.rows import HashedRows
from openbid.ml.scoring import MultiModelScorer, ScoringModel

N_FEATURES = 256


@pytest.fixture(scope="module")
def models_and_rows():
    rng = np.random.default_rng(0)
    rows = HashedRows.from_matrix(rng.integers(0, N_FEATURES, size=(3_000, 6)), N_FEATURES)
    learners = []
    for i in range(3):
        y = (rng.random(3_000) < 0.2 + 0.1 * i).astype(float)
        learners.append(FTRLLogisticRegression(n_features=N_FEATURES, alpha=0.2).fit(rows, y))
        learners.append(
            FactorizationMachine(
                n_features=N_FEATURES, n_factors=2 + 2 * i, init_std=0.1, random_state=i
            ).fit(rows, y)
        )
    return learners, rows


def test_stacked_models_score_like_each_learner(models_and_rows):
    learners, rows = models_and_rows
    scorer = MultiModelScorer(
        [ScoringModel.from_learner(f"m{i}", m) for i, m in enumerate(learners)]
    )
    scores = scorer.score_batch(rows)
    assert scores.shape == (len(rows), 6)
    expected = np.stack([m.predict_proba(rows)[:, 1] for m in learners], axis=1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    for i in (0, 17, 2_999):  # FM sums in another order per path (SIMD): ~1e-8 apart
        np.testing.assert_allclose(scorer.score_one(rows.row(i)), scores[i], rtol=1e-7)
    assert scorer.model_names == tuple(f"m{i}" for i in range(6))


def test_rows_with_values_are_scored_with_them(models_and_rows):
    learners, rows = models_and_rows
    weighted = HashedRows(rows.indices, rows.indptr, N_FEATURES, np.full(rows.nnz, 0.5))
    scorer = MultiModelScorer([ScoringModel.from_learner("fm", learners[1])])
    np.testing.assert_allclose(
        scorer.score_batch(weighted)[:, 0], learners[1].predict_proba(weighted)[:, 1], rtol=1e-5
    )


def test_calibration_tables_are_applied_per_model(models_and_rows):
    learners, rows = models_and_rows
    halve = CalibrationTable("platt", [0.0, 1.0], [0.0, 0.5])
    scorer = MultiModelScorer(
        [
            ScoringModel.from_learner("raw", learners[0]),
            ScoringModel.from_learner("cal", learners[0], halve),
        ]
    )
    scores = scorer.score_batch(rows)
    # the table is interpolated on a grid of raw logits 1/32 wide: within 2e-4 of its value
    np.testing.assert_allclose(scores[:, 1], scores[:, 0] / 2, rtol=2e-4)
    for i in (0, 17, 2_999):  # FM sums in another order per path (SIMD): ~1e-8 apart
        np.testing.assert_allclose(scorer.score_one(rows.row(i)), scores[i], rtol=1e-7)


def test_scorer_is_immutable(models_and_rows):
    learners, rows = models_and_rows
    learners = [FTRLLogisticRegression(n_features=N_FEATURES).fit(rows, np.zeros(len(rows)))]
    scorer = MultiModelScorer([ScoringModel.from_learner("a", learners[0])])
    with pytest.raises(AttributeError, match="immutable"):
        scorer.model_names = ("b",)
    # the scorer owns copies: training the learner further does not change its scores
    before = scorer.score_batch(rows)
    learners[0].partial_fit(rows, np.ones(len(rows)))
    np.testing.assert_array_equal(scorer.score_batch(rows), before)


def test_mismatched_models_and_indices_are_refused(models_and_rows):
    learners, _ = models_and_rows
    small = FTRLLogisticRegression(n_features=8).fit(
        HashedRows.from_matrix(np.array([[1]]), 8), [1]
    )
    with pytest.raises(TrainingDataError, match="expected 256"):
        MultiModelScorer(
            [ScoringModel.from_learner("a", learners[0]), ScoringModel.from_learner("b", small)]
        )
    with pytest.raises(TrainingDataError, match="different feature specs"):
        MultiModelScorer(
            [
                ScoringModel.from_learner("a", learners[0], spec_hash="aaaa"),
                ScoringModel.from_learner("b", learners[0], spec_hash="bbbb"),
            ]
        )
    scorer = MultiModelScorer([ScoringModel.from_learner("a", learners[0])])
    with pytest.raises(TrainingDataError, match=r"\[0, 256\)"):
        scorer.score_one(np.array([3, 256], dtype=np.int32))


@pytest.mark.parametrize("n_factors", [1, 8, 12])
def test_factor_counts_beyond_one_group_of_eight_score_like_the_learner(n_factors):
    rng = np.random.default_rng(n_factors)
    rows = HashedRows.from_matrix(rng.integers(0, N_FEATURES, size=(500, 9)), N_FEATURES)
    y = (rng.random(500) < 0.3).astype(float)
    fm = FactorizationMachine(n_features=N_FEATURES, n_factors=n_factors, init_std=0.2).fit(rows, y)
    lr = FTRLLogisticRegression(n_features=N_FEATURES).fit(rows, y)
    scorer = MultiModelScorer(
        [ScoringModel.from_learner("lr", lr), ScoringModel.from_learner("fm", fm)]
    )
    expected = np.stack([lr.predict_proba(rows)[:, 1], fm.predict_proba(rows)[:, 1]], axis=1)
    np.testing.assert_allclose(scorer.score_batch(rows), expected, rtol=1e-5)
