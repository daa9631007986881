"""The learning core: hashing featurizer, FTRL-Proximal logistic regression and
factorization machines (numba kernels), hyper-parameters chosen from the data (`fit_auto`),
calibration, metrics, the registry gate, the model artifact format, multi-model scoring for
the servers, and streaming training input."""

from openbid.ml.artifacts import ModelArtifact, TrainingWindow, load_model, save_model
from openbid.ml.auto import AutoModel, AutoReport, AutoSettings, fit_auto
from openbid.ml.calibration import (
    CalibrationChoice,
    CalibrationTable,
    choose_calibration,
    fit_calibration,
)
from openbid.ml.errors import FeatureSpecError, MLError, ModelArtifactError, TrainingDataError
from openbid.ml.features import FeatureSpec, Featurizer, NumericField, spec_hash
from openbid.ml.fm import FactorizationMachine
from openbid.ml.ftrl import FTRLLogisticRegression
from openbid.ml.gates import GateSettings, GateVerdict, gate_model
from openbid.ml.metrics import (
    CalibrationCurve,
    Metrics,
    calibration_curve,
    evaluate,
    evaluate_by_slice,
    plot_calibration,
)
from openbid.ml.rows import HashedRows
from openbid.ml.sampling import recalibrate, served_table, subsample_negatives
from openbid.ml.scoring import MultiModelScorer, ScoringModel
from openbid.ml.stream import TrainingStream, train_on_stream

__all__ = [
    "AutoModel",
    "AutoReport",
    "AutoSettings",
    "CalibrationChoice",
    "CalibrationCurve",
    "CalibrationTable",
    "FTRLLogisticRegression",
    "FactorizationMachine",
    "FeatureSpec",
    "FeatureSpecError",
    "Featurizer",
    "GateSettings",
    "GateVerdict",
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
    "choose_calibration",
    "evaluate",
    "evaluate_by_slice",
    "fit_auto",
    "fit_calibration",
    "gate_model",
    "load_model",
    "plot_calibration",
    "recalibrate",
    "save_model",
    "served_table",
    "spec_hash",
    "subsample_negatives",
    "train_on_stream",
]
