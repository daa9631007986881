"""The learning core: hashing featurizer, FTRL-Proximal logistic regression and
factorization machines (numba kernels), calibration, metrics, the model artifact format,
multi-model scoring for the servers, and streaming training input."""

from openbid.ml.artifacts import ModelArtifact, TrainingWindow, load_model, save_model
from openbid.ml.calibration import CalibrationTable, fit_calibration
from openbid.ml.errors import FeatureSpecError, MLError, ModelArtifactError, TrainingDataError
from openbid.ml.features import FeatureSpec, Featurizer, NumericField, spec_hash
from openbid.ml.fm import FactorizationMachine
from openbid.ml.ftrl import FTRLLogisticRegression
from openbid.ml.metrics import (
    CalibrationCurve,
    Metrics,
    calibration_curve,
    evaluate,
    evaluate_by_slice,
    plot_calibration,
)
from openbid.ml.rows import HashedRows
from openbid.ml.sampling import recalibrate, subsample_negatives
from openbid.ml.scoring import MultiModelScorer, ScoringModel
from openbid.ml.stream import TrainingStream, train_on_stream

__all__ = [
    "CalibrationCurve",
    "CalibrationTable",
    "FTRLLogisticRegression",
    "FactorizationMachine",
    "FeatureSpec",
    "FeatureSpecError",
    "Featurizer",
    "HashedRows",
    "MLError",
    "Metrics",
    "ModelArtifact",
    "ModelArtifactError",
    "MultiModelScorer",
    "NumericField",
    "ScoringModel",
    "TrainingDataError",
    "TrainingStream",
    "TrainingWindow",
    "calibration_curve",
    "evaluate",
    "evaluate_by_slice",
    "fit_calibration",
    "load_model",
    "plot_calibration",
    "recalibrate",
    "save_model",
    "spec_hash",
    "subsample_negatives",
    "train_on_stream",
]
