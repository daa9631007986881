"""Traffic shaping: which demand partners are worth calling for a request.

A per-DSP bid-probability model (FTRL logistic regression on the request's raw features),
thresholds chosen on a held-out day to keep a share of each DSP's bid value (99.7% by
default) or of its bids, a seeded exploration share of
filtered calls (weighted by 1 / share in training), QPS caps that keep the best-scored
requests, and fail-open serving. See docs/shaping.md.
"""

from openbid.shaping.base import PassThroughShaper, Shaper, ShapingDecision
from openbid.shaping.errors import ShapingDataError, ShapingError, ShapingModelError
from openbid.shaping.model import ShapingModel, load_shaping_model, save_shaping_model
from openbid.shaping.serving import ModelShaper, QpsCapGate
from openbid.shaping.training import (
    FTRLParams,
    ShapingRows,
    TrainedShaping,
    rows_from_events,
    train_shaping,
)

__all__ = [
    "FTRLParams",
    "ModelShaper",
    "PassThroughShaper",
    "QpsCapGate",
    "Shaper",
    "ShapingDataError",
    "ShapingDecision",
    "ShapingError",
    "ShapingModel",
    "ShapingModelError",
    "ShapingRows",
    "TrainedShaping",
    "load_shaping_model",
    "rows_from_events",
    "save_shaping_model",
    "train_shaping",
]
