"""FTRL-Proximal logistic regression (McMahan et al., "Ad Click Prediction: a View from the
Trenches", KDD 2013), trained by a numba kernel over hashed rows.

Each coordinate keeps `z` and `n` (sum of squared gradients; stored as `sqrt(n)`, the form
every step uses); its weight is computed lazily: `w = 0` if `|z| <= l1`, else
`-(z - sign(z) * l1) / ((beta + sqrt(n)) / alpha + l2)`. So L1
gives truly sparse weights and each coordinate has its own learning rate `alpha / (beta +
sqrt(n))`. The log loss of each example is recorded *before* it is learned from
(progressive validation), which is an honest held-out estimate while streaming.

>>> rng = np.random.default_rng(0)
>>> n = 20_000
>>> feature = rng.integers(0, 2, n)  # index 0 or 1; index 2 is the bias
>>> rows = HashedRows.from_matrix(np.stack([feature, np.full(n, 2)], axis=1), n_features=4)
>>> true_logit = np.where(feature == 1, 1.0, -1.0) - 0.5
>>> y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(float)
>>> model = FTRLLogisticRegression(n_features=4, alpha=0.1, l2=0.0, n_passes=3).fit(rows, y)
>>> w = model.coef_  # the logits of "feature 0" and "feature 1" rows (true: -1.5 and 0.5)
>>> round(float(w[0] + w[2]), 2), round(float(w[1] + w[2]), 2)
(-1.52, 0.55)
>>> round(model.progressive_logloss_[0], 3)
0.567
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Self

import numba
import numpy as np

from openbid.ml._kernels import KERNEL_OPTIONS, prefetch
from openbid.ml.errors import TrainingDataError
from openbid.ml.rows import HashedRows, as_labels, as_rows, as_weights

# logits are clipped so exp() never overflows and log loss stays finite
MAX_LOGIT = 35.0


@numba.njit(cache=True, inline="always")
def sigmoid(logit: float) -> float:
    logit = min(max(logit, -MAX_LOGIT), MAX_LOGIT)
    return 1.0 / (1.0 + math.exp(-logit))


@numba.njit(cache=True, inline="always")
def logistic_loss(logit: float, label: float) -> float:
    """-log p(label | logit), computed stably from the logit."""
    logit = min(max(logit, -MAX_LOGIT), MAX_LOGIT)
    margin = logit if label > 0.5 else -logit
    if margin > 0:
        return math.log1p(math.exp(-margin))
    return -margin + math.log1p(math.exp(margin))


@numba.njit(cache=True, inline="always")
def ftrl_weight(z: float, root_n: float, alpha: float, beta: float, l1: float, l2: float) -> float:
    """The lazy FTRL-Proximal weight of a coordinate, from z and sqrt(n)."""
    if abs(z) <= l1:
        return 0.0
    return -(z - math.copysign(l1, z)) / ((beta + root_n) / alpha + l2)


@numba.njit(cache=True, inline="always")
def ftrl_update(state: np.ndarray, j: int, grad: float, weight: float, alpha: float) -> None:
    """One FTRL-Proximal step on coordinate j, given its gradient and current weight.

    `state[j]` holds z and sqrt(n): keeping the root costs one sqrt per step instead of the
    three that n alone would (two for sigma, one for the next weight)."""
    root_old = np.float64(state[j, 1])
    root_new = np.float32(math.sqrt(root_old * root_old + grad * grad))
    sigma = (root_new - root_old) / alpha
    state[j, 0] += grad - sigma * weight
    state[j, 1] = root_new


@numba.njit(cache=True, inline="always")
def loss_and_gradient_scale(logit: float, label: float) -> tuple[float, float]:
    """(-log p(label | logit), p - label), with one exp and one log1p."""
    logit = min(max(logit, -MAX_LOGIT), MAX_LOGIT)
    e = math.exp(-abs(logit))
    prob = 1.0 / (1.0 + e) if logit >= 0 else e / (1.0 + e)
    margin = logit if label > 0.5 else -logit
    loss = math.log1p(e) - min(margin, 0.0)
    return loss, prob - label


@numba.njit(**KERNEL_OPTIONS)
def _ftrl_train(
    indices, indptr, values, labels, sample_weight, state, alpha, beta, l1, l2
) -> tuple[float, float]:
    """One pass over the rows; returns (weighted progressive log loss sum, weight sum)."""
    has_values = values.shape[0] > 0
    n_rows = indptr.shape[0] - 1
    max_len = 0
    for r in range(n_rows):
        max_len = max(max_len, indptr[r + 1] - indptr[r])
    weights = np.empty(max_len, dtype=np.float64)
    loss_sum = 0.0
    weight_sum = 0.0
    for r in range(n_rows):
        start, end = indptr[r], indptr[r + 1]
        if r + 1 < n_rows:
            for p in range(end, indptr[r + 2]):
                prefetch(state, indices[p])
        logit = 0.0
        for p in range(start, end):
            j = np.uintp(indices[p])  # unsigned: no negative-index wraparound code
            w = ftrl_weight(state[j, 0], state[j, 1], alpha, beta, l1, l2)
            weights[p - start] = w
            logit += w * (values[p] if has_values else 1.0)
        sw = sample_weight[r]
        loss, scale = loss_and_gradient_scale(logit, labels[r])
        loss_sum += sw * loss
        weight_sum += sw
        g = scale * sw
        if g == 0.0:
            continue
        for p in range(start, end):
            x = values[p] if has_values else 1.0
            ftrl_update(state, np.uintp(indices[p]), g * x, weights[p - start], alpha)
    return loss_sum, weight_sum


@numba.njit(**KERNEL_OPTIONS)
def _ftrl_weights(state, alpha, beta, l1, l2) -> np.ndarray:
    out = np.empty(state.shape[0], dtype=np.float32)
    for j in range(state.shape[0]):
        out[j] = ftrl_weight(state[j, 0], state[j, 1], alpha, beta, l1, l2)
    return out


@numba.njit(cache=True, error_model="numpy")
def linear_logits(indices, indptr, values, weights) -> np.ndarray:
    """Logit of each row under dense weights."""
    has_values = values.shape[0] > 0
    out = np.empty(indptr.shape[0] - 1, dtype=np.float64)
    for r in range(indptr.shape[0] - 1):
        acc = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            acc += weights[np.uintp(indices[p])] * (values[p] if has_values else 1.0)
        out[r] = acc
    return out


@numba.njit(cache=True)
def lr_loss_and_gradient(indices, indptr, values, labels, sample_weight, weights):
    """Weighted log loss sum and its gradient w.r.t. dense weights (the rule FTRL follows)."""
    has_values = values.shape[0] > 0
    grad = np.zeros(weights.shape[0], dtype=np.float64)
    logits = linear_logits(indices, indptr, values, weights)
    loss = 0.0
    for r in range(indptr.shape[0] - 1):
        loss += sample_weight[r] * logistic_loss(logits[r], labels[r])
        g = (sigmoid(logits[r]) - labels[r]) * sample_weight[r]
        for p in range(indptr[r], indptr[r + 1]):
            grad[indices[p]] += g * (values[p] if has_values else 1.0)
    return loss, grad


class OnlineModel(ABC):
    """What the online learners share: FTRL-Proximal state for the linear weights, `fit` as
    `n_passes` passes of `partial_fit`, the progressive log loss of each pass, the dense
    weights computed when asked, the state artifacts save. A learner names its
    hyper-parameters (`_PARAMS`, also its `__init__` arguments), checks them
    (`_check_params`), adds its own state (`_reset`), trains one pass (`_train`) and scores
    (`decision_function`)."""

    _PARAMS: tuple[str, ...] = ()
    n_features: int
    alpha: float
    beta: float
    l1: float
    l2: float
    n_passes: int

    def get_params(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self._PARAMS}

    @abstractmethod
    def _check_params(self) -> None:
        """Raises `TrainingDataError` naming the hyper-parameters out of range."""

    @abstractmethod
    def _train(
        self, rows: HashedRows, labels: np.ndarray, weights: np.ndarray
    ) -> tuple[float, float]:
        """One pass over `rows`: the weighted sum of progressive log losses and of weights."""

    @abstractmethod
    def decision_function(self, X) -> np.ndarray:
        """The logit of each row."""

    def _reset(self) -> None:
        self.state_ = np.zeros((self.n_features, 2), dtype=np.float32)
        self.progressive_logloss_: list[float] = []
        self.n_seen_ = 0
        self._coef: np.ndarray | None = None

    def fit(self, X, y, sample_weight=None) -> Self:
        """Train from scratch for `n_passes` passes over the rows, in order."""
        self._check_params()
        self._reset()
        for _ in range(self.n_passes):
            self.partial_fit(X, y, sample_weight)
        return self

    def start_at(self, index: int, logit: float) -> Self:
        """Start from scratch with coordinate `index` (a feature on in every row: the bias)
        at weight `logit`, e.g. the logit of the base rate; then train with `partial_fit`.

        FTRL-Proximal keeps a weight where it is while gradients are zero, so the bias stays
        at the prior until the data moves it; from 0 instead, the first rows (predicted at
        0.5) push every feature they hold down, and features seen early or often end up
        carrying part of the base rate that unseen ones lack."""
        self._check_params()
        self._reset()
        if not 0 <= index < self.n_features or not math.isfinite(logit):
            raise TrainingDataError(
                f"start_at needs an index in [0, {self.n_features}) and a finite logit"
            )
        pull = self.beta / self.alpha + self.l2
        self.state_[index, 0] = -logit * pull - math.copysign(self.l1, logit)
        return self

    def partial_fit(self, X, y, sample_weight=None) -> Self:
        """One pass over the rows, continuing from the current state (streaming)."""
        if not hasattr(self, "state_"):
            self._check_params()
            self._reset()
        rows = as_rows(X, self.n_features)
        labels = as_labels(y, len(rows))
        weights = as_weights(sample_weight, len(rows))
        loss_sum, weight_sum = self._train(rows, labels, weights)
        self.progressive_logloss_.append(loss_sum / weight_sum if weight_sum else math.nan)
        self.n_seen_ += len(rows)
        self._coef = None
        return self

    @property
    def coef_(self) -> np.ndarray:
        """Dense linear weights (float32, `n_features`), computed from the FTRL state."""
        if not hasattr(self, "state_"):
            raise TrainingDataError("the model is not fitted yet: call fit or partial_fit")
        if self._coef is None:
            self._coef = _ftrl_weights(self.state_, self.alpha, self.beta, self.l1, self.l2)
        return self._coef

    def predict_proba(self, X) -> np.ndarray:
        """`(n, 2)` probabilities of class 0 and 1, like scikit-learn."""
        return _two_columns(self.decision_function(X))

    def z_and_n(self) -> tuple[np.ndarray, np.ndarray]:
        """The linear weights' FTRL state as artifacts save it: z and n (the sum of squared
        gradients)."""
        return _z_and_n(self.state_)


class FTRLLogisticRegression(OnlineModel):
    """Logistic regression trained online with FTRL-Proximal, on hashed features.

    Parameters: `n_features` (the hash space, `2**hash_bits`), `alpha` and `beta` (the
    per-coordinate learning rate is `alpha / (beta + sqrt(sum of squared gradients))`),
    `l1` and `l2` (regularization strengths, in units of summed sample weight), `n_passes`
    (epochs run by `fit`).

    Fitted state: `state_` (float32 array `(n_features, 2)` of z and sqrt(n); `z_and_n()`
    gives z and n), `coef_` (the dense weights), `progressive_logloss_` (one weighted mean
    per pass), `n_seen_` (rows learned).
    """

    kind = "ftrl_lr"
    _PARAMS = ("n_features", "alpha", "beta", "l1", "l2", "n_passes")

    def __init__(
        self,
        n_features: int = 1 << 20,
        alpha: float = 0.05,
        beta: float = 1.0,
        l1: float = 0.0,
        l2: float = 1.0,
        n_passes: int = 1,
    ) -> None:
        self.n_features = n_features
        self.alpha = alpha
        self.beta = beta
        self.l1 = l1
        self.l2 = l2
        self.n_passes = n_passes

    def _check_params(self) -> None:
        if self.n_features < 1 or self.alpha <= 0 or self.beta < 0 or self.l1 < 0 or self.l2 < 0:
            raise TrainingDataError(
                f"need n_features >= 1, alpha > 0 and beta, l1, l2 >= 0; got {self.get_params()}"
            )
        if self.n_passes < 1:
            raise TrainingDataError(f"n_passes must be >= 1, got {self.n_passes}")

    def _train(
        self, rows: HashedRows, labels: np.ndarray, weights: np.ndarray
    ) -> tuple[float, float]:
        return _ftrl_train(
            rows.indices, rows.indptr, rows.kernel_values(), labels, weights, self.state_,
            self.alpha, self.beta, self.l1, self.l2,
        )  # fmt: skip

    def decision_function(self, X) -> np.ndarray:
        """The logit of each row."""
        rows = as_rows(X, self.n_features)
        return linear_logits(rows.indices, rows.indptr, rows.kernel_values(), self.coef_)

    @classmethod
    def from_state(cls, state: np.ndarray, **params) -> FTRLLogisticRegression:
        """A model ready for more `partial_fit`, from a saved `(n_features, 2)` array of z
        and n (as `z_and_n()` gives them)."""
        model = cls(n_features=state.shape[0], **params)
        model._check_params()
        model._reset()
        _set_z_and_n(model.state_, state)
        return model


def _z_and_n(state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    root_n = state[:, 1].astype(np.float32)
    return state[:, 0].copy(), root_n * root_n


def _set_z_and_n(state: np.ndarray, z_and_n: np.ndarray) -> None:
    z_and_n = np.asarray(z_and_n)
    if z_and_n.shape != state.shape:
        raise TrainingDataError(f"FTRL state must be {state.shape} (z, n), got {z_and_n.shape}")
    n = z_and_n[:, 1]
    if not np.all(np.isfinite(z_and_n)) or np.any(n < 0):
        raise TrainingDataError("FTRL state must be finite, with n (squared gradients) >= 0")
    state[:, 0] = z_and_n[:, 0]
    state[:, 1] = np.sqrt(n.astype(np.float64))


def _two_columns(logits: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-np.clip(logits, -MAX_LOGIT, MAX_LOGIT)))
    return np.stack([1.0 - p, p], axis=1)


__all__ = ["FTRLLogisticRegression", "HashedRows", "OnlineModel", "lr_loss_and_gradient"]
