"""Off-policy evaluation: what a new policy would earn, estimated from choices logged under
another, before it serves.

Each logged choice has its context (segment index), action (creative index), reward (click
or not) and propensity (the logging policy's probability of that action). For a target
policy `pi[x, a]`:

| estimator | per-choice term | note |
| --- | --- | --- |
| IPS | `w * r`, `w = pi[x, a] / p` | unbiased when propensities are right; variance grows with `w` |
| SNIPS | `sum(w r) / sum(w)` | self-normalised: a little bias, less variance |
| DM | `sum_k pi[x, k] q[x, k]` | the reward model alone: biased when it is wrong |
| DR | `DM + w * (r - q[x, a])` | unbiased when either propensities or the model are right |

`q[x, k]` (the reward model) is the mean reward of (segment, creative) shrunk toward the
creative's mean, cross-fitted: fitted on one half of the log and applied to the other, so
its errors do not correlate with the rewards it corrects. Intervals are normal, 95%, from
the per-choice terms' standard error; `effective_sample_size` says how many on-policy
choices the weights are worth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from openbid.insights.errors import InsightsError

Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float
    stderr: float

    @property
    def lower(self) -> float:
        return self.value - Z95 * self.stderr

    @property
    def upper(self) -> float:
        return self.value + Z95 * self.stderr

    def covers(self, truth: float) -> bool:
        return self.lower <= truth <= self.upper


@dataclass(frozen=True, slots=True)
class Logged:
    """Logged choices as parallel arrays."""

    context: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.context)
        if not (len(self.action) == len(self.reward) == len(self.propensity) == n):
            raise InsightsError(
                "logged choices: context, action, reward, propensity differ in length"
            )
        if n and (np.any(self.propensity <= 0) or np.any(self.propensity > 1)):
            raise InsightsError("logged choices: every propensity must be in (0, 1]")

    def __len__(self) -> int:
        return len(self.context)

    def take(self, rows: np.ndarray) -> Logged:
        return Logged(
            self.context[rows], self.action[rows], self.reward[rows], self.propensity[rows]
        )


def _mean(terms: np.ndarray) -> Estimate:
    n = len(terms)
    if n == 0:
        raise InsightsError("no logged choices to evaluate")
    stderr = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
    return Estimate(float(terms.mean()), stderr)


def weights(logged: Logged, target: np.ndarray) -> np.ndarray:
    return target[logged.context, logged.action] / logged.propensity


def ips(logged: Logged, target: np.ndarray) -> Estimate:
    return _mean(weights(logged, target) * logged.reward)


def snips(logged: Logged, target: np.ndarray) -> Estimate:
    """Self-normalised IPS, its standard error by the delta method."""
    w = weights(logged, target)
    total = w.sum()
    if total <= 0:
        raise InsightsError("the target policy never takes a logged action: nothing to weigh")
    value = float((w * logged.reward).sum() / total)
    n = len(w)
    terms = w * (logged.reward - value) / (total / n)
    return Estimate(value, float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf"))


def reward_model(logged: Logged, shape: tuple[int, int], shrinkage: float = 20.0) -> np.ndarray:
    """Mean reward per (context, action), shrunk toward the action's mean by `shrinkage`
    pseudo-observations (and the action's mean toward the overall mean likewise)."""
    overall = float(logged.reward.mean()) if len(logged) else 0.0
    n = np.zeros(shape)
    s = np.zeros(shape)
    np.add.at(n, (logged.context, logged.action), 1.0)
    np.add.at(s, (logged.context, logged.action), logged.reward)
    action_n, action_s = n.sum(axis=0), s.sum(axis=0)
    action_mean = (action_s + shrinkage * overall) / (action_n + shrinkage)
    return (s + shrinkage * action_mean) / (n + shrinkage)


def _folds(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n) % 2


def dr_terms(logged: Logged, target: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-choice DR and DM terms, the reward model cross-fitted over two folds."""
    fold = _folds(len(logged), seed)
    dr = np.empty(len(logged))
    dm = np.empty(len(logged))
    for k in (0, 1):
        fit_rows, apply_rows = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        q = reward_model(logged.take(fit_rows), target.shape)
        part = logged.take(apply_rows)
        direct = (target[part.context] * q[part.context]).sum(axis=1)
        w = target[part.context, part.action] / part.propensity
        dm[apply_rows] = direct
        dr[apply_rows] = direct + w * (part.reward - q[part.context, part.action])
    return dr, dm


def dr(logged: Logged, target: np.ndarray, *, seed: int = 0) -> Estimate:
    return _mean(dr_terms(logged, target, seed=seed)[0])


def dm(logged: Logged, target: np.ndarray, *, seed: int = 0) -> Estimate:
    return _mean(dr_terms(logged, target, seed=seed)[1])


def effective_sample_size(logged: Logged, target: np.ndarray) -> float:
    w = weights(logged, target)
    return float(w.sum() ** 2 / (w**2).sum()) if np.any(w) else 0.0


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A candidate policy against the current one on the same log, and the decision."""

    candidate_ips: Estimate
    candidate_snips: Estimate
    candidate_dm: Estimate
    candidate_dr: Estimate
    current: Estimate
    """The current policy's value: DR under its table, or the logged mean reward (on-policy)."""
    difference: Estimate
    """Candidate minus current (DR), paired on the same choices when the current table is known."""
    effective_sample_size: float
    choices: int
    promote: bool
    reason: str

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"choices": float(self.choices), "ess": self.effective_sample_size}
        for name in ("candidate_ips", "candidate_snips", "candidate_dm", "candidate_dr", "current", "difference"):  # fmt: skip
            e: Estimate = getattr(self, name)
            out[name] = e.value
            out[f"{name}_lower"] = e.lower
            out[f"{name}_upper"] = e.upper
        out["promote"] = float(self.promote)
        return out


def evaluate_candidate(
    logged: Logged,
    candidate: np.ndarray,
    current: np.ndarray | None = None,
    *,
    tolerance: float = 0.05,
    min_choices: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Estimates `candidate` (a `[contexts, actions]` probability table) on the log, and
    decides whether it may serve: with enough choices, its DR estimate at least the current
    policy's, and not worse by more than `tolerance` (a share of the current value) at the
    95% lower bound of the difference."""
    if candidate.ndim != 2 or np.any(np.abs(candidate.sum(axis=1) - 1) > 1e-6):
        raise InsightsError("the candidate policy's rows must be probabilities summing to 1")
    dr_candidate, dm_candidate = dr_terms(logged, candidate, seed=seed)
    candidate_dr = _mean(dr_candidate)
    if current is not None:
        dr_current, _ = dr_terms(logged, current, seed=seed)
        current_value = _mean(dr_current)
        difference = _mean(dr_candidate - dr_current)
    else:
        current_value = _mean(logged.reward.astype(np.float64))
        difference = Estimate(
            candidate_dr.value - current_value.value,
            math.hypot(candidate_dr.stderr, current_value.stderr),
        )
    n = len(logged)
    if n < min_choices:
        promote, reason = False, f"{n} logged choices, fewer than the {min_choices} required"
    elif difference.value < 0:
        promote, reason = (
            False,
            (
                f"estimated worse than the current policy ({candidate_dr.value:.5f} against "
                f"{current_value.value:.5f})"
            ),
        )
    elif difference.lower < -tolerance * abs(current_value.value):
        promote, reason = (
            False,
            (
                f"too uncertain: it could be worse by {-difference.lower:.5f}, more than "
                f"{tolerance:.0%} of the current value"
            ),
        )
    else:
        promote, reason = (
            True,
            (
                f"DR {candidate_dr.value:.5f} [{candidate_dr.lower:.5f}, {candidate_dr.upper:.5f}] "
                f"against {current_value.value:.5f}"
            ),
        )
    return Evaluation(
        candidate_ips=ips(logged, candidate),
        candidate_snips=snips(logged, candidate),
        candidate_dm=_mean(dm_candidate),
        candidate_dr=candidate_dr,
        current=current_value,
        difference=difference,
        effective_sample_size=effective_sample_size(logged, candidate),
        choices=n,
        promote=promote,
        reason=reason,
    )
