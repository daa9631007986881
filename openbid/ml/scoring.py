"""Fast scoring for the servers: one numba call scores rows against several models at once.

Shaping scores a request once per DSP, pricing once per candidate ad: the scorer stacks
several models' weights side by side (`(n_features, n_models)`, so one hashed index reads
every model's weight from one cache line), with factors for FMs and a calibration table per
model. A `MultiModelScorer` is immutable after construction (its attributes cannot be
rebound and its private arrays are copies no one else holds; they stay writeable because
numba types read-only arrays through a slow path); a hot swap replaces the one Python
reference to it.

>>> from openbid.ml.ftrl import FTRLLogisticRegression
>>> rows = HashedRows.from_matrix(np.array([[0, 2], [1, 2]] * 50), n_features=4)
>>> y = np.array([0.0, 1.0] * 50)
>>> a = FTRLLogisticRegression(n_features=4, alpha=0.5).fit(rows, y)
>>> b = FTRLLogisticRegression(n_features=4, alpha=0.5).fit(rows, 1 - y)
>>> scorer = MultiModelScorer([ScoringModel.from_learner("dsp-a", a),
...                            ScoringModel.from_learner("dsp-b", b)])
>>> np.round(scorer.score_one(np.array([1, 2], dtype=np.int32)), 3).tolist()
[0.885, 0.115]
>>> scorer.score_batch(rows.slice(0, 3)).shape
(3, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

from openbid.ml.calibration import CalibrationTable, validate_table
from openbid.ml.errors import TrainingDataError
from openbid.ml.ftrl import MAX_LOGIT
from openbid.ml.rows import HashedRows, as_rows


class ScoringModel:
    """What the scorer needs of one model: dense linear weights, optional FM factors,
    an optional calibration table, and the spec hash the indices were made with."""

    __slots__ = ("name", "linear", "factors", "calibration", "spec_hash")

    def __init__(
        self,
        name: str,
        linear: np.ndarray,
        factors: np.ndarray | None = None,
        calibration: CalibrationTable | None = None,
        spec_hash: str = "",
    ) -> None:
        if linear.ndim != 1:
            raise TrainingDataError(f"model {name!r}: linear weights must be 1-D")
        if factors is not None and (factors.ndim != 2 or factors.shape[0] != linear.shape[0]):
            raise TrainingDataError(f"model {name!r}: factors must be (n_features, k)")
        if calibration is not None:
            validate_table(calibration)
        self.name = name
        self.linear = linear
        self.factors = factors
        self.calibration = calibration
        self.spec_hash = spec_hash

    @classmethod
    def from_learner(
        cls, name: str, learner, calibration: CalibrationTable | None = None, spec_hash: str = ""
    ) -> ScoringModel:
        """From a fitted `FTRLLogisticRegression` or `FactorizationMachine`."""
        return cls(name, learner.coef_, getattr(learner, "factors_", None), calibration, spec_hash)


@numba.njit(cache=True, inline="always")
def _interp(p: float, xs, ys, length: int) -> float:
    if p <= xs[0]:
        return ys[0]
    if p >= xs[length - 1]:
        return ys[length - 1]
    lo, hi = 0, length - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if xs[mid] <= p:
            lo = mid
        else:
            hi = mid
    span = xs[hi] - xs[lo]
    if span <= 0.0:
        return ys[hi]
    return ys[lo] + (ys[hi] - ys[lo]) * (p - xs[lo]) / span


@numba.njit(cache=True, inline="always")
def _score_row(indices, values, start, end, linear, factors, calibration, cal_len, sums, out):
    """Scores of one row under every model, written to `out` (length n_models)."""
    n_models = linear.shape[1]
    k = factors.shape[2]
    has_values = values.shape[0] > 0
    # one model at a time, summing in a register: an accumulator in memory would chain
    # every add through a store-load round trip
    for m in range(n_models):
        total = 0.0
        if has_values:
            for p in range(start, end):
                total += linear[indices[p], m] * values[p]
        else:
            for p in range(start, end):
                total += linear[indices[p], m]
        out[m] = total
    if k > 0:
        for m in range(n_models):
            interaction = 0.0
            square_sum = 0.0
            for f in range(k):
                sums[f] = 0.0
            for p in range(start, end):
                j = indices[p]
                x = values[p] if has_values else 1.0
                for f in range(k):
                    v = factors[j, m, f] * x
                    sums[f] += v
                    square_sum += v * v
            for f in range(k):
                interaction += sums[f] * sums[f]
            out[m] += 0.5 * (interaction - square_sum)
    for m in range(n_models):
        logit = min(max(out[m], -MAX_LOGIT), MAX_LOGIT)
        prob = 1.0 / (1.0 + math.exp(-logit))
        if cal_len[m] > 0:
            prob = _interp(prob, calibration[m, 0], calibration[m, 1], cal_len[m])
        out[m] = prob


@numba.njit(cache=True)
def _score_batch(indices, indptr, values, linear, factors, calibration, cal_len, out):
    sums = np.empty(max(factors.shape[2], 1), dtype=np.float64)
    for r in range(indptr.shape[0] - 1):
        _score_row(
            indices, values, indptr[r], indptr[r + 1], linear, factors, calibration, cal_len,
            sums, out[r],
        )  # fmt: skip


@numba.njit(cache=True)
def _score_one(indices, values, linear, factors, calibration, cal_len, out) -> bool:
    """Scores into `out`; False (and nothing scored) if an index is out of range. The
    caller allocates `out`: returning a new array from numba costs more than the scoring."""
    n_features = linear.shape[0]
    for j in indices:
        if j < 0 or j >= n_features:
            return False
    sums = np.empty(max(factors.shape[2], 1), dtype=np.float64)
    _score_row(
        indices, values, 0, indices.shape[0], linear, factors, calibration, cal_len, sums, out
    )
    return True


_NO_VALUES = np.empty(0, dtype=np.float32)


class MultiModelScorer:
    """Scores hashed rows against several models in one numba call.

    All models must share the hash space (and, when given, the spec hash). LR models have
    no factors; when FMs with different k are mixed, smaller factor sets are zero-padded.
    """

    __slots__ = (
        "model_names", "n_features", "spec_hash", "_linear", "_factors", "_calibration",
        "_cal_len",
    )  # fmt: skip

    def __init__(self, models: Sequence[ScoringModel]) -> None:
        if not models:
            raise TrainingDataError("a scorer needs at least one model")
        n_features = models[0].linear.shape[0]
        hashes = {m.spec_hash for m in models if m.spec_hash}
        if len(hashes) > 1:
            raise TrainingDataError(f"models were trained with different feature specs: {hashes}")
        for m in models:
            if m.linear.shape[0] != n_features:
                raise TrainingDataError(
                    f"model {m.name!r} has {m.linear.shape[0]} features, expected {n_features}"
                )
        n_models = len(models)
        k = max((m.factors.shape[1] for m in models if m.factors is not None), default=0)
        linear = np.empty((n_features, n_models), dtype=np.float32)
        for i, m in enumerate(models):
            linear[:, i] = m.linear
        if k:
            factors = np.zeros((n_features, n_models, k), dtype=np.float32)
            for i, m in enumerate(models):
                if m.factors is not None:
                    factors[:, i, : m.factors.shape[1]] = m.factors
        else:
            factors = np.zeros((1, n_models, 0), dtype=np.float32)
        knots = max((len(m.calibration.x) for m in models if m.calibration), default=1)
        calibration = np.zeros((n_models, 2, knots))  # per model: knots x, then y
        cal_len = np.zeros(n_models, dtype=np.int64)
        for i, m in enumerate(models):
            if m.calibration is not None:
                x, y = m.calibration.arrays()
                calibration[i, 0, : len(x)], calibration[i, 1, : len(y)] = x, y
                cal_len[i] = len(x)
        set_ = object.__setattr__
        set_(self, "model_names", tuple(m.name for m in models))
        set_(self, "n_features", n_features)
        set_(self, "spec_hash", hashes.pop() if hashes else "")
        set_(self, "_linear", linear)
        set_(self, "_factors", factors)
        set_(self, "_calibration", calibration)
        set_(self, "_cal_len", cal_len)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a MultiModelScorer is immutable; build a new one and swap")

    def score_one(self, indices: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """Probabilities (one per model) of one row of hashed indices (int32, in range)."""
        if indices.dtype != np.int32:
            indices = indices.astype(np.int32)
        out = np.empty(len(self.model_names))
        ok = _score_one(
            indices,
            _NO_VALUES if values is None else np.asarray(values, dtype=np.float32),
            self._linear, self._factors, self._calibration, self._cal_len, out,
        )  # fmt: skip
        if not ok:
            raise TrainingDataError(f"feature indices must lie in [0, {self.n_features})")
        return out

    def score_batch(self, rows: HashedRows) -> np.ndarray:
        """Probabilities `(n_rows, n_models)`."""
        rows = as_rows(rows, self.n_features)
        out = np.empty((len(rows), len(self.model_names)))
        _score_batch(
            rows.indices, rows.indptr, rows.kernel_values(), self._linear, self._factors,
            self._calibration, self._cal_len, out,
        )  # fmt: skip
        return out
