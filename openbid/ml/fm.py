"""Factorization machine (Rendle 2010) for click prediction, on the same hashed indices as LR.

logit(x) = sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j, computed in O(k * nnz) as
`0.5 * sum_f ((sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2)`. So every pair of features gets
an interaction weight without listing crosses in the spec: an interaction the spec does not
cross (site x ad size, say) can still be learned. The linear part is trained with
FTRL-Proximal (like `FTRLLogisticRegression`), the factors with AdaGrad and L2.

>>> rng = np.random.default_rng(1)
>>> n = 30_000
>>> a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
>>> y = (rng.random(n) < np.where(a == b, 0.8, 0.2)).astype(float)  # XOR: no linear signal
>>> rows = HashedRows.from_matrix(np.stack([a, 2 + b, np.full(n, 4)], axis=1), n_features=8)
>>> fm = FactorizationMachine(n_features=8, n_factors=4, factor_learning_rate=0.05).fit(rows, y)
>>> pairs = HashedRows.from_matrix(np.array([[0, 2, 4], [0, 3, 4]]), n_features=8)
>>> np.round(fm.predict_proba(pairs)[:, 1], 2).tolist()  # true: 0.8 and 0.2
[0.78, 0.21]
"""

from __future__ import annotations

import numba
import numpy as np

from openbid.ml._kernels import KERNEL_OPTIONS, prefetch
from openbid.ml.errors import TrainingDataError
from openbid.ml.ftrl import (
    OnlineModel,
    _set_z_and_n,
    ftrl_update,
    ftrl_weight,
    logistic_loss,
    loss_and_gradient_scale,
    sigmoid,
)
from openbid.ml.rows import HashedRows, as_rows


@numba.njit(cache=True, inline="always")
def fm_forward(indices, values, start, end, linear, factors, sums) -> float:
    """The logit of one row; leaves `sum_i v_if x_i` in `sums` (the backward pass needs it)."""
    has_values = values.shape[0] > 0
    k = factors.shape[1]
    logit = 0.0
    for f in range(k):
        sums[f] = 0.0
    square_sum = 0.0
    for p in range(start, end):
        j = indices[p]
        x = values[p] if has_values else 1.0
        logit += linear[j] * x
        for f in range(k):
            v = factors[j, f] * x
            sums[f] += v
            square_sum += v * v
    interaction = 0.0
    for f in range(k):
        interaction += sums[f] * sums[f]
    return logit + 0.5 * (interaction - square_sum)


@numba.njit(**KERNEL_OPTIONS)
def _fm_train(
    indices, indptr, values, labels, sample_weight,
    state, factors, factor_sq_grad,
    alpha, beta, l1, l2, factor_learning_rate, factor_l2,
) -> tuple[float, float]:  # fmt: skip
    """One pass; the factor arithmetic stays in float32 (the factors' own type) so the loops
    over the k factors vectorize, while the logit and the linear part use float64."""
    has_values = values.shape[0] > 0
    k = factors.shape[1]
    n_rows = indptr.shape[0] - 1
    max_len = 0
    for r in range(n_rows):
        max_len = max(max_len, indptr[r + 1] - indptr[r])
    linear_row = np.empty(max_len, dtype=np.float64)
    sums = np.empty(k, dtype=np.float32)
    learning_rate = np.float32(factor_learning_rate)
    l2_factors = np.float32(factor_l2)
    one = np.float32(1.0)
    loss_sum = 0.0
    weight_sum = 0.0
    for r in range(n_rows):
        start, end = indptr[r], indptr[r + 1]
        if r + 1 < n_rows:
            for p in range(end, indptr[r + 2]):
                j = indices[p]
                prefetch(state, j)
                prefetch(factors, j)
                prefetch(factor_sq_grad, j)
        logit = 0.0
        for f in range(k):
            sums[f] = 0.0
        square_sum = np.float32(0.0)
        for p in range(start, end):
            j = np.uintp(indices[p])
            x = values[p] if has_values else one
            w = ftrl_weight(state[j, 0], state[j, 1], alpha, beta, l1, l2)
            linear_row[p - start] = w
            logit += w * x
            for f in range(k):
                v = factors[j, f] * x
                sums[f] += v
                square_sum += v * v
        interaction = np.float32(0.0)
        for f in range(k):
            interaction += sums[f] * sums[f]
        logit += 0.5 * (interaction - square_sum)
        sw = sample_weight[r]
        loss, scale = loss_and_gradient_scale(logit, labels[r])
        loss_sum += sw * loss
        weight_sum += sw
        g = scale * sw
        if g == 0.0:
            continue
        for p in range(start, end):
            j = np.uintp(indices[p])
            x = values[p] if has_values else one
            ftrl_update(state, j, g * x, linear_row[p - start], alpha)
            gx = np.float32(g * x)
            for f in range(k):
                v = factors[j, f]
                grad = gx * (sums[f] - v * x) + l2_factors * v
                acc = factor_sq_grad[j, f] + grad * grad
                factor_sq_grad[j, f] = acc
                factors[j, f] = v - learning_rate * grad / np.sqrt(acc)
    return loss_sum, weight_sum


@numba.njit(cache=True)
def fm_logits(indices, indptr, values, linear, factors) -> np.ndarray:
    """Logit of each row under dense linear weights and factors."""
    out = np.empty(indptr.shape[0] - 1, dtype=np.float64)
    sums = np.empty(factors.shape[1], dtype=np.float64)
    for r in range(indptr.shape[0] - 1):
        out[r] = fm_forward(indices, values, indptr[r], indptr[r + 1], linear, factors, sums)
    return out


@numba.njit(cache=True)
def fm_loss_and_gradient(indices, indptr, values, labels, sample_weight, linear, factors):
    """Weighted log loss sum and its gradients w.r.t. the linear weights and the factors
    (the rule the training kernel follows, before regularization)."""
    has_values = values.shape[0] > 0
    k = factors.shape[1]
    grad_linear = np.zeros(linear.shape[0], dtype=np.float64)
    grad_factors = np.zeros(factors.shape, dtype=np.float64)
    sums = np.empty(k, dtype=np.float64)
    loss = 0.0
    for r in range(indptr.shape[0] - 1):
        logit = fm_forward(indices, values, indptr[r], indptr[r + 1], linear, factors, sums)
        loss += sample_weight[r] * logistic_loss(logit, labels[r])
        g = (sigmoid(logit) - labels[r]) * sample_weight[r]
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            x = values[p] if has_values else 1.0
            grad_linear[j] += g * x
            for f in range(k):
                grad_factors[j, f] += g * x * (sums[f] - factors[j, f] * x)
    return loss, grad_linear, grad_factors


class FactorizationMachine(OnlineModel):
    """A factorization machine trained online (FTRL for linear weights, AdaGrad for factors).

    Parameters: `n_features` (hash space), `n_factors` (k), `alpha`, `beta`, `l1`, `l2` (the
    linear part's FTRL settings), `factor_learning_rate` and `factor_l2` (AdaGrad step and L2
    on the factors), `init_std` (factors start as N(0, init_std)), `n_passes`, `random_state`.

    Fitted state: `state_` (FTRL z and sqrt(n); `z_and_n()` gives z and n), `factors_` (`(n_features, n_factors)` float32),
    `factor_sq_grad_` (AdaGrad accumulators), `coef_` (dense linear weights),
    `progressive_logloss_`, `n_seen_`.
    """

    kind = "fm"
    _PARAMS = (
        "n_features",
        "n_factors",
        "alpha",
        "beta",
        "l1",
        "l2",
        "factor_learning_rate",
        "factor_l2",
        "init_std",
        "n_passes",
        "random_state",
    )

    def __init__(
        self,
        n_features: int = 1 << 20,
        n_factors: int = 8,
        alpha: float = 0.05,
        beta: float = 1.0,
        l1: float = 0.0,
        l2: float = 1.0,
        factor_learning_rate: float = 0.01,
        factor_l2: float = 1e-4,
        init_std: float = 0.01,
        n_passes: int = 1,
        random_state: int = 0,
    ) -> None:
        self.n_features = n_features
        self.n_factors = n_factors
        self.alpha = alpha
        self.beta = beta
        self.l1 = l1
        self.l2 = l2
        self.factor_learning_rate = factor_learning_rate
        self.factor_l2 = factor_l2
        self.init_std = init_std
        self.n_passes = n_passes
        self.random_state = random_state

    def _check_params(self) -> None:
        bad = (
            self.n_features < 1
            or self.n_factors < 1
            or self.alpha <= 0
            or min(self.beta, self.l1, self.l2, self.factor_l2, self.init_std) < 0
            or self.factor_learning_rate <= 0
            or self.n_passes < 1
        )
        if bad:
            raise TrainingDataError(
                "need n_features, n_factors, n_passes >= 1, alpha and factor_learning_rate > 0, "
                f"the rest >= 0; got {self.get_params()}"
            )

    def _reset(self) -> None:
        super()._reset()
        rng = np.random.default_rng(self.random_state)
        self.factors_ = rng.standard_normal(
            (self.n_features, self.n_factors), dtype=np.float32
        ) * np.float32(self.init_std)
        # starting AdaGrad's sum at a small positive value keeps the first steps bounded
        self.factor_sq_grad_ = np.full((self.n_features, self.n_factors), 1e-6, dtype=np.float32)

    def _train(
        self, rows: HashedRows, labels: np.ndarray, weights: np.ndarray
    ) -> tuple[float, float]:
        return _fm_train(
            rows.indices, rows.indptr, rows.kernel_values(), labels, weights,
            self.state_, self.factors_, self.factor_sq_grad_,
            self.alpha, self.beta, self.l1, self.l2, self.factor_learning_rate, self.factor_l2,
        )  # fmt: skip

    def decision_function(self, X) -> np.ndarray:
        """The logit of each row."""
        rows = as_rows(X, self.n_features)
        return fm_logits(rows.indices, rows.indptr, rows.kernel_values(), self.coef_, self.factors_)

    @classmethod
    def from_state(
        cls, state: np.ndarray, factors: np.ndarray, factor_sq_grad: np.ndarray, **params
    ) -> FactorizationMachine:
        """A model ready for more `partial_fit`, from saved arrays."""
        model = cls(n_features=state.shape[0], n_factors=factors.shape[1], **params)
        model._check_params()
        model._reset()
        _set_z_and_n(model.state_, state)
        model.factors_[:] = factors
        model.factor_sq_grad_[:] = factor_sq_grad
        return model


__all__ = ["FactorizationMachine", "HashedRows", "fm_loss_and_gradient"]
