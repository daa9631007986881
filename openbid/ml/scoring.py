"""Fast scoring for the servers: one numba call scores rows against several models at once.

Shaping scores a request once per DSP, pricing once per candidate ad: the scorer stacks
several models' weights side by side (`(n_features, n_models)`, so one hashed index reads
every model's weight from one cache line), with factors for FMs and a calibration per model
(its table resampled on a grid of raw logits, `calibration_grid`: a calibrated model scores
as fast as an uncalibrated one). A `MultiModelScorer` is immutable after construction (its attributes cannot be
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

from openbid.ml._kernels import KERNEL_OPTIONS
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


GRID_CELLS = 1024
GRID_LOGIT = 16.0
_GRID_SCALE = GRID_CELLS / (2.0 * GRID_LOGIT)


def calibration_grid(table: CalibrationTable) -> np.ndarray:
    """`table` resampled at `GRID_CELLS + 1` raw logits evenly spaced over [-16, 16]: what
    the kernels interpolate, in logit space, instead of computing the sigmoid and searching
    the table's knots (a binary search over 256 knots took 40% of the batch scoring time;
    this costs less than the sigmoid it replaces). Cells are 1/32 logit wide, so a smooth
    calibration is reproduced within about 1e-4 of its value (a Platt map with slope 1: the
    sigmoid's curvature over a cell, 0.031^2 / 8), and a step of an isotonic table is spread
    over a cell; raw logits beyond +/-16 get the value at the end."""
    logits = np.linspace(-GRID_LOGIT, GRID_LOGIT, GRID_CELLS + 1)
    return table.apply(1.0 / (1.0 + np.exp(-logits)))


@numba.njit(cache=True, error_model="numpy", inline="always")
def _from_grid(logit: float, grid, m: int) -> float:
    position = (min(max(logit, -GRID_LOGIT), GRID_LOGIT) + GRID_LOGIT) * _GRID_SCALE
    cell = min(int(position), GRID_CELLS - 1)
    low = grid[m, cell]
    return low + (position - cell) * (grid[m, cell + 1] - low)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _linear_logits(indices, values, start, end, linear, out) -> None:
    """The linear logit of one row under every model (columns of `linear`) into `out`.

    One model at a time, summing in a register: an accumulator in memory would chain every
    add through a store-load round trip. No fast-math here: reassociating this sum makes
    LLVM gather 8 weights at a time, which is slower than the scalar loads."""
    has_values = values.shape[0] > 0
    for m in range(linear.shape[1]):
        total = 0.0
        if has_values:
            for p in range(start, end):
                total += linear[np.uintp(indices[p]), m] * values[p]
        else:
            for p in range(start, end):
                total += linear[np.uintp(indices[p]), m]
        out[m] = total


@numba.njit(**KERNEL_OPTIONS)
def _interaction8(indices, values, start, end, factors, column) -> float:
    """`sum_f (sum_i v_if x_i)^2 - sum_i (v_if x_i)^2` over the 8 factor columns from
    `column`: twice the FM interaction term of those factors.

    Sixteen scalar accumulators that LLVM packs into two vector registers; a loop over an
    accumulator array would keep them in memory and run at scalar speed."""
    has_values = values.shape[0] > 0
    zero = np.float32(0.0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
    q0 = q1 = q2 = q3 = q4 = q5 = q6 = q7 = zero
    c = np.uintp(column)
    for p in range(start, end):
        row = factors[np.uintp(indices[p])]
        x = values[p] if has_values else np.float32(1.0)
        v0, v1, v2, v3 = row[c] * x, row[c + 1] * x, row[c + 2] * x, row[c + 3] * x
        v4, v5, v6, v7 = row[c + 4] * x, row[c + 5] * x, row[c + 6] * x, row[c + 7] * x
        s0, s1, s2, s3 = s0 + v0, s1 + v1, s2 + v2, s3 + v3
        s4, s5, s6, s7 = s4 + v4, s5 + v5, s6 + v6, s7 + v7
        q0, q1, q2, q3 = q0 + v0 * v0, q1 + v1 * v1, q2 + v2 * v2, q3 + v3 * v3
        q4, q5, q6, q7 = q4 + v4 * v4, q5 + v5 * v5, q6 + v6 * v6, q7 + v7 * v7
    squares = s0 * s0 + s1 * s1 + s2 * s2 + s3 * s3 + s4 * s4 + s5 * s5 + s6 * s6 + s7 * s7
    return squares - (q0 + q1 + q2 + q3 + q4 + q5 + q6 + q7)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _add_interactions(indices, values, start, end, factors, out) -> None:
    """Adds each model's FM interaction term to its logit in `out`."""
    n_models = out.shape[0]
    chunks = factors.shape[1] // (8 * n_models)  # groups of 8 factor columns per model
    for m in range(n_models):
        twice = 0.0
        for c in range(chunks):
            twice += _interaction8(indices, values, start, end, factors, (m * chunks + c) * 8)
        out[m] += 0.5 * twice


@numba.njit(cache=True, error_model="numpy", inline="always")
def _probabilities(grid, calibrated, out) -> None:
    """Logits in `out` -> (calibrated) probabilities, in place."""
    for m in range(out.shape[0]):
        if calibrated[m]:
            out[m] = _from_grid(out[m], grid, m)
        else:
            logit = min(max(out[m], -MAX_LOGIT), MAX_LOGIT)
            out[m] = 1.0 / (1.0 + math.exp(-logit))


# Linear models and FMs have kernels of their own: the mere presence of the (unused)
# interaction call in the row loop makes LLVM compile the linear sum about half as fast.


@numba.njit(cache=True, error_model="numpy")
def _score_batch_linear(indices, indptr, values, linear, factors, grid, calibrated, out):
    for r in range(indptr.shape[0] - 1):
        _linear_logits(indices, values, indptr[r], indptr[r + 1], linear, out[r])
        _probabilities(grid, calibrated, out[r])


@numba.njit(cache=True, error_model="numpy")
def _score_batch_fm(indices, indptr, values, linear, factors, grid, calibrated, out):
    for r in range(indptr.shape[0] - 1):
        start, end = indptr[r], indptr[r + 1]
        _linear_logits(indices, values, start, end, linear, out[r])
        _add_interactions(indices, values, start, end, factors, out[r])
        _probabilities(grid, calibrated, out[r])


@numba.njit(cache=True, error_model="numpy", inline="always")
def _in_range(indices, n_features) -> bool:
    for j in indices:  # noqa: SIM110 (numba does not compile all() over a generator)
        if j < 0 or j >= n_features:
            return False
    return True


# score one row into `out`; False (and nothing scored) if an index is out of range. The
# caller allocates `out`: returning a new array from numba costs more than the scoring.


@numba.njit(cache=True, error_model="numpy")
def _score_one_linear(indices, values, linear, factors, grid, calibrated, out) -> bool:
    if not _in_range(indices, linear.shape[0]):
        return False
    _linear_logits(indices, values, 0, indices.shape[0], linear, out)
    _probabilities(grid, calibrated, out)
    return True


@numba.njit(cache=True, error_model="numpy")
def _score_one_fm(indices, values, linear, factors, grid, calibrated, out) -> bool:
    if not _in_range(indices, linear.shape[0]):
        return False
    _linear_logits(indices, values, 0, indices.shape[0], linear, out)
    _add_interactions(indices, values, 0, indices.shape[0], factors, out)
    _probabilities(grid, calibrated, out)
    return True


_NO_VALUES = np.empty(0, dtype=np.float32)


class MultiModelScorer:
    """Scores hashed rows against several models in one numba call.

    All models must share the hash space (and, when given, the spec hash). LR models have
    no factors; when FMs with different k are mixed, smaller factor sets are zero-padded.
    """

    __slots__ = (
        "model_names", "n_features", "spec_hash", "_linear", "_factors", "_grid", "_calibrated",
        "_n_models", "_batch_kernel", "_one_kernel",
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
            # model i's factors in columns [i * padded, (i + 1) * padded), zero-padded to a
            # multiple of 8 (zero factors add nothing): the kernel sums 8 columns at a time
            padded = -(-k // 8) * 8
            factors = np.zeros((n_features, n_models * padded), dtype=np.float32)
            for i, m in enumerate(models):
                if m.factors is not None:
                    factors[:, i * padded : i * padded + m.factors.shape[1]] = m.factors
        else:
            factors = np.zeros((1, 0), dtype=np.float32)
        calibrated = np.array([m.calibration is not None for m in models])
        grid = np.zeros((n_models, GRID_CELLS + 1 if calibrated.any() else 1))
        for i, m in enumerate(models):
            if m.calibration is not None:
                grid[i] = calibration_grid(m.calibration)
        set_ = object.__setattr__
        set_(self, "model_names", tuple(m.name for m in models))
        set_(self, "n_features", n_features)
        set_(self, "spec_hash", hashes.pop() if hashes else "")
        set_(self, "_linear", linear)
        set_(self, "_factors", factors)
        set_(self, "_grid", grid)
        set_(self, "_calibrated", calibrated)
        set_(self, "_n_models", n_models)
        set_(self, "_batch_kernel", _score_batch_fm if k else _score_batch_linear)
        set_(self, "_one_kernel", _score_one_fm if k else _score_one_linear)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a MultiModelScorer is immutable; build a new one and swap")

    def score_one(self, indices: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """Probabilities (one per model) of one row of hashed indices (int32, in range)."""
        if indices.dtype != np.int32:
            indices = indices.astype(np.int32)
        out = np.empty(self._n_models)
        ok = self._one_kernel(
            indices,
            _NO_VALUES if values is None else np.asarray(values, dtype=np.float32),
            self._linear, self._factors, self._grid, self._calibrated, out,
        )  # fmt: skip
        if not ok:
            raise TrainingDataError(f"feature indices must lie in [0, {self.n_features})")
        return out

    def score_batch(self, rows: HashedRows) -> np.ndarray:
        """Probabilities `(n_rows, n_models)`."""
        rows = as_rows(rows, self.n_features)
        out = np.empty((len(rows), self._n_models))
        self._batch_kernel(
            rows.indices, rows.indptr, rows.kernel_values(), self._linear, self._factors,
            self._grid, self._calibrated, out,
        )  # fmt: skip
        return out
