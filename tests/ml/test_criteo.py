"""On real click data (the first 1,999 Criteo rows): train on 1,599, test on the last 400."""

from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pytest
from sklearn.linear_model import LogisticRegression

from openbid.ml.features import FeatureSpec, Featurizer, NumericField
from openbid.ml.fm import FactorizationMachine
from openbid.ml.ftrl import FTRLLogisticRegression
from openbid.ml.metrics import base_rate_logloss, evaluate, log_loss

CRITEO = Path(__file__).resolve().parents[3] / "shared" / "data" / "ctr" / "criteo_tiny.csv"
SPEC = FeatureSpec(
    categorical=[f"C{i}" for i in range(1, 27)],
    numeric=[NumericField(f"I{i}") for i in range(1, 14)],  # counts, log-bucketed
    hash_bits=20,
)


@pytest.fixture(scope="module")
def split():
    table = pcsv.read_csv(CRITEO)
    assert table.num_rows == 1_999
    rows = Featurizer(SPEC).transform_columns(table)
    y = table.column("Label").to_numpy().astype(float)
    return rows.slice(0, 1_599), y[:1_599], rows.slice(1_599, 1_999), y[1_599:]


def test_ftrl_beats_the_base_rate_and_logistic_regression(split):
    train, y_train, test, y_test = split
    base = base_rate_logloss(y_train.mean())
    base_on_test = log_loss(y_test, np.full(400, y_train.mean()))
    assert base_on_test == pytest.approx(0.52, abs=0.01)
    model = FTRLLogisticRegression(n_features=SPEC.n_features).fit(train, y_train)
    ours = evaluate(y_test, model.predict_proba(test)[:, 1])
    # scikit-learn on the very same hashed features, C picked for it on this split; columns
    # no row uses are dropped (their weights stay 0 under L2, so the fit is the same, faster)
    used = np.unique(np.concatenate([train.indices, test.indices]))
    x_train, x_test = train.to_scipy()[:, used], test.to_scipy()[:, used]
    sklearn_losses = [
        log_loss(
            y_test,
            LogisticRegression(C=c, max_iter=2_000)
            .fit(x_train, y_train)
            .predict_proba(x_test)[:, 1],
        )
        for c in (0.03, 0.1, 0.3, 1.0)
    ]
    assert ours.logloss < base_on_test - 0.02
    assert ours.logloss <= min(sklearn_losses) + 0.01
    assert ours.auc > 0.65
    assert 0.7 < ours.calibration_ratio < 1.3
    assert base > 0


def test_fm_beats_the_base_rate(split):
    train, y_train, test, y_test = split
    fm = FactorizationMachine(n_features=SPEC.n_features).fit(train, y_train)
    assert (
        log_loss(y_test, fm.predict_proba(test)[:, 1])
        < log_loss(y_test, np.full(400, y_train.mean())) - 0.02
    )
