"""Fixtures of the registry and hot-swap tests: a real MLflow registry on SQLite (each test
gets a copy of one migrated database: creating one runs MLflow's migrations, ~10 s here),
a model store and a cache in the test's directory, and small hand-set models."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest

from openbid.config import ModelsConfig
from openbid.ml import CalibrationTable, Featurizer, FTRLLogisticRegression, save_model
from openbid.ml.artifacts import TrainingWindow
from openbid.ml.features import FeatureSpec
from openbid.shaping.features import shaping_spec
from openbid.shaping.model import save_shaping_model
from openbid.shaping.training import TrainedShaping

HOUR_MICROS = 3_600 * 1_000_000
START_MICROS = 1_760_000_000 * 1_000_000  # 2025-10-09T08:53:20Z


def _learner(coef: np.ndarray) -> FTRLLogisticRegression:
    # with alpha = beta = 1 and no regularization, an FTRL weight is -z at n = 0
    state = np.stack([-coef, np.zeros_like(coef)], axis=1)
    return FTRLLogisticRegression.from_state(state, alpha=1.0, beta=1.0, l1=0.0, l2=0.0)


def shaping_model(path, weights_by_dsp: dict[str, dict[str, float]], *, end_micros=None, **kw):
    """A per-DSP shaping model whose logit for a DSP is -3 plus `weights_by_dsp[dsp]` of
    the request's `site_id` (set by hand, no training); threshold 0.5 for every DSP."""
    spec = shaping_spec("per_dsp", hash_bits=kw.pop("hash_bits", 18))
    featurizer = Featurizer(spec)
    site = spec.categorical.index("site_id")
    learners = {}
    for dsp, weights in weights_by_dsp.items():
        coef = np.zeros(spec.n_features, dtype=np.float32)
        coef[featurizer.bias_index] = -3.0
        for value, weight in weights.items():
            coef[featurizer.transform_one({"site_id": value})[site]] += weight
        learners[dsp] = _learner(coef)
    end = START_MICROS + HOUR_MICROS if end_micros is None else end_micros
    trained = TrainedShaping(
        layout="per_dsp",
        spec=spec,
        dsps=list(weights_by_dsp),
        learners=learners,
        thresholds=kw.pop("thresholds", {dsp: 0.5 for dsp in weights_by_dsp}),
        target_kind="recall",
        target=0.99,
        exploration_share=0.01,
        window_start_micros=end - HOUR_MICROS,
        window_end_micros=end,
        rows=1000,
        metrics={dsp: {"log_loss": 0.3, "auc": 0.7} for dsp in weights_by_dsp},
    )
    return save_shaping_model(trained, path, **kw)


def ctr_model(path, bias: float = -3.0, *, calibrated: bool = True):
    """A click model: one bias weight (p = sigmoid(bias)) and a calibration table."""
    spec = FeatureSpec(categorical=["site_id", "country"], hash_bits=18)
    coef = np.zeros(spec.n_features, dtype=np.float32)
    coef[Featurizer(spec).bias_index] = bias
    table = CalibrationTable("isotonic", [0.0, 0.05, 1.0], [0.0, 0.04, 1.0]) if calibrated else None
    return save_model(
        _learner(coef),
        path,
        spec,
        name="ctr-test",
        training_window=TrainingWindow(START_MICROS, START_MICROS + HOUR_MICROS, 500),
        metrics={"log_loss": 0.2, "auc": 0.65},
        calibration=table,
    )


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    """An MLflow SQLite database with MLflow's schema, made once per session."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "template.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def models_settings(tmp_path, mlflow_template) -> ModelsConfig:
    database = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, database)
    return ModelsConfig(
        tracking_uri=f"sqlite:///{database}",
        artifact_location=str(tmp_path / "mlflow-artifacts"),
        store_url=str(tmp_path / "store"),
        cache_dir=str(tmp_path / "cache"),
        lock_file=str(tmp_path / "registry.lock"),
        poll_interval_s=0.05,
    )


@pytest.fixture
def registry(models_settings):
    from openbid.pipeline.registry import Registry

    return Registry(models_settings)


@pytest.fixture
def make_shaping(tmp_path):
    """Makes shaping models (see `shaping_model`) in the test's directory."""
    counter = itertools.count(1)

    def make(weights_by_dsp, **kw):
        return shaping_model(tmp_path / "made" / f"shaping{next(counter)}", weights_by_dsp, **kw)

    return make


@pytest.fixture
def make_ctr(tmp_path):
    """Makes click models (see `ctr_model`) in the test's directory."""
    counter = itertools.count(1)

    def make(bias: float = -3.0, **kw):
        return ctr_model(tmp_path / "made" / f"ctr{next(counter)}", bias, **kw)

    return make
