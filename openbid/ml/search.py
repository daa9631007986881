"""The hyper-parameter search of `fit_auto`: held-out windows in time order, trials trained
pass after pass with early stopping, line searches one hyper-parameter at a time, all
within a budget counted in passes over the rows. `AutoSettings` is its search space."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Literal

import msgspec
import numpy as np

from openbid.ml.errors import TrainingDataError
from openbid.ml.fm import FactorizationMachine
from openbid.ml.ftrl import FTRLLogisticRegression, OnlineModel
from openbid.ml.metrics import log_loss
from openbid.ml.rows import HashedRows

log = logging.getLogger(__name__)

Kind = Literal["auto", "ftrl_lr", "fm"]


class AutoSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The search space and budget of `fit_auto`; the defaults are what `docs/models.md`
    measured."""

    kind: Kind = "auto"
    """"ftrl_lr", "fm", or "auto": both, and the better on held-out loss."""
    validation_share: float = 0.2
    """The last share of the rows (in time order) held out to choose hyper-parameters."""
    small_data_positives: int = 300
    """Fewer positive rows than this in the held-out share and three rolling windows are
    held out instead of one (each trained on everything before it), so that the choice is
    not made on a handful of clicks."""
    max_passes: int = 8
    patience: int = 1
    """A trial stops after this many passes without a better held-out loss."""
    tolerance: float = 5e-4
    """Held-out losses within this share of each other are a tie: a pass must improve the
    loss by more to count, and among tied trials the cheapest (fewest passes) wins."""
    alphas: tuple[float, ...] = (0.03, 0.1, 0.3)
    """Tried first; when the best is at an end, the grid is extended by 3x that way (twice
    at most)."""
    l2s: tuple[float, ...] = (1.0, 10.0, 100.0)
    l1s: tuple[float, ...] = (0.0, 1.0)
    beta: float = 1.0
    fm_factors: tuple[int, ...] = (8, 4)
    fm_factor_learning_rates: tuple[float, ...] = (0.01, 0.03)
    fm_factor_l2s: tuple[float, ...] = (1e-4, 1e-3)
    fm_margin: float = 0.001
    """The FM is kept only when its held-out loss is below LR's by this share (it costs more
    to train and to serve)."""
    budget_passes: float = 60.0
    """The most the search may train, in passes over all the rows (an FM pass counts
    `1 + k/3`) ..."""
    min_budget_rows: int = 20_000_000
    """... or this many rows, if more (a few CPU seconds): on small data sets the passes
    are cheap and rolling windows train each trial about twice."""
    calibration: tuple[str, ...] = ("platt", "isotonic", "none", "constant")
    """Methods `choose_calibration` chooses from; () serves the raw scores."""
    random_state: int = 0

    def check(self) -> None:
        problems = []
        if not 0.0 < self.validation_share < 0.5:
            problems.append(f"validation_share must be in (0, 0.5), got {self.validation_share}")
        if self.max_passes < 1 or self.patience < 1:
            problems.append("max_passes and patience must be >= 1")
        if not self.alphas or min(self.alphas) <= 0:
            problems.append("alphas must be non-empty and > 0")
        if not self.l2s or min(self.l2s) < 0 or not self.l1s or min(self.l1s) < 0:
            problems.append("l2s and l1s must be non-empty and >= 0")
        if self.kind != "ftrl_lr" and (
            not self.fm_factors
            or min(self.fm_factors) < 1
            or not self.fm_factor_learning_rates
            or min(self.fm_factor_learning_rates) <= 0
            or not self.fm_factor_l2s
            or min(self.fm_factor_l2s) < 0
        ):
            problems.append("fm_factors >= 1, fm_factor_learning_rates > 0, fm_factor_l2s >= 0")
        if self.budget_passes <= 0:
            problems.append("budget_passes must be > 0")
        if problems:
            raise TrainingDataError("auto settings: " + "; ".join(problems))


class Trial(msgspec.Struct, frozen=True):
    """One hyper-parameter setting tried: its held-out loss (the search criterion, log loss
    unless `fit_auto` was given another) after each pass."""

    kind: str
    params: dict[str, float | int]
    loss_by_pass: list[float]
    pass_cost: float = 1.0
    """One pass, in LR passes."""
    tolerance: float = 0.0

    @property
    def best_pass(self) -> int:
        """The first pass within `tolerance` of the lowest loss (later passes that improve
        on it by less are not worth their cost)."""
        best = min(self.loss_by_pass)
        return next(
            i + 1 for i, v in enumerate(self.loss_by_pass) if v <= best * (1 + self.tolerance)
        )

    @property
    def best_loss(self) -> float:
        return float(self.loss_by_pass[self.best_pass - 1])

    @property
    def cost(self) -> float:
        return self.best_pass * self.pass_cost


def prior_index(rows: HashedRows) -> int | None:
    """A feature index present in every row (the spec's bias), or None."""
    if len(rows) == 0:
        return None
    counts = np.bincount(rows.indices, minlength=rows.n_features)
    always = [int(j) for j in rows.row(0) if counts[j] >= len(rows)]
    # one index per row: a feature on twice in some row could be on zero times in another
    for j in always:
        present = np.zeros(len(rows), dtype=bool)
        present[np.searchsorted(rows.indptr, np.flatnonzero(rows.indices == j), "right") - 1] = True
        if present.all():
            return j
    return None


def validation_windows(
    n_rows: int, positives_per_row: np.ndarray, settings: AutoSettings
) -> list[tuple[int, int]]:
    """[(train_end, validation_end)] row offsets: the last share, or three rolling windows
    when it holds fewer than `small_data_positives` positive rows."""
    share = settings.validation_share
    cut = int(round(n_rows * (1.0 - share)))
    if int(np.count_nonzero(positives_per_row[cut:])) >= settings.small_data_positives:
        return [(cut, n_rows)]
    ends = [int(round(n_rows * (1.0 - k * share))) for k in (2, 1, 0)]
    starts = [int(round(n_rows * (1.0 - k * share))) for k in (3, 2, 1)]
    return [(s, e) for s, e in zip(starts, ends, strict=True) if 0 < s < e]


def learner_for(
    kind: str, n_features: int, params: dict[str, float | int], seed: int
) -> OnlineModel:
    if kind == "fm":
        return FactorizationMachine(n_features=n_features, random_state=seed, **params)  # type: ignore[arg-type]
    return FTRLLogisticRegression(n_features=n_features, **params)  # type: ignore[arg-type]


def _pass_cost(kind: str, params: dict[str, float | int]) -> float:
    """One pass of this learner, in LR passes (measured: an FM with k=8 trains about 3.5x
    slower than LR per row, k=4 about 2.3x)."""
    return 1.0 + float(params["n_factors"]) / 3.0 if kind == "fm" else 1.0


class Search:
    """Runs trials on fixed held-out windows, within a budget, remembering every result."""

    def __init__(self, rows, labels, weights, windows, settings, prior, criterion=None) -> None:
        self.criterion = criterion
        self.n_rows = len(rows)
        self.n_features = rows.n_features
        self.settings = settings
        self.prior = prior
        self.windows = windows
        self.parts = [
            (
                rows.slice(0, train_end),
                labels[:train_end],
                weights[:train_end],
                rows.slice(train_end, end),
                labels[train_end:end],
                weights[train_end:end],
            )
            for train_end, end in windows
        ]
        self.trials: dict[tuple, Trial] = {}
        self.heldout: dict[tuple, np.ndarray] = {}
        """Per trial: held-out predictions of every window (concatenated) at its best pass."""
        self.spent = 0.0
        self.budget = max(settings.budget_passes, settings.min_budget_rows / self.n_rows)

    def run(self, kind: str, params: dict[str, float | int]) -> Trial | None:
        key = (kind, tuple(sorted(params.items())))
        if key in self.trials:
            return self.trials[key]
        if self.spent >= self.budget:
            log.info("auto search budget spent; trial skipped", extra={"kind": kind, **params})
            return None
        cost = _pass_cost(kind, params)
        curves: list[list[float]] = []
        best_predictions: list[np.ndarray] = []
        for train, y_train, w_train, valid, y_valid, w_valid in self.parts:
            learner = learner_for(kind, self.n_features, params, self.settings.random_state)
            if self.prior is not None:
                learner.start_at(*self.prior)
            else:
                learner._check_params()
                learner._reset()
            curve: list[float] = []
            best_p = None
            since_best = 0
            for _ in range(self.settings.max_passes):
                learner.partial_fit(train, y_train, w_train)
                self.spent += cost * len(train) / self.n_rows
                p = learner.predict_proba(valid)[:, 1]
                criterion = self.criterion or log_loss
                loss = criterion(y_valid, p, w_valid) * float(w_valid.sum())
                if not math.isfinite(loss):
                    loss = math.inf
                if not curve or loss < min(curve) * (1.0 - self.settings.tolerance):
                    best_p, since_best = p, 0
                else:
                    since_best += 1
                curve.append(loss)
                if since_best >= self.settings.patience:
                    break
            curves.append(curve)
            best_predictions.append(best_p if best_p is not None else p)
        common = min(len(c) for c in curves)
        total_weight = sum(float(part[5].sum()) for part in self.parts)
        combined = [sum(c[i] for c in curves) / total_weight for i in range(common)]
        trial = Trial(kind, dict(params), combined, cost, self.settings.tolerance)
        self.trials[key] = trial
        # held-out predictions at the combined best pass would need every pass kept; the
        # per-window best is within a pass of it and is what calibration sees
        self.heldout[key] = np.concatenate(best_predictions)
        log.info(
            "auto trial",
            extra={
                "kind": kind,
                **params,
                "passes": trial.best_pass,
                "logloss": trial.best_loss,
            },
        )
        return trial


def best_trial(trials: list[Trial | None]) -> Trial | None:
    """The lowest held-out loss; among trials within tolerance of it, the cheapest."""
    done = [t for t in trials if t is not None]
    if not done:
        return None
    lowest = min(t.best_loss for t in done)
    tied = [t for t in done if t.best_loss <= lowest * (1.0 + t.tolerance)]
    return min(tied, key=lambda t: (t.cost, t.best_loss))


def line_search(
    search: Search,
    kind: str,
    base: dict[str, float | int],
    name: str,
    values: tuple,
    extend: Callable[[float, int], float | None] | None = None,
) -> dict[str, float | int]:
    """Try `values` of one hyper-parameter around `base`; extend the grid past an end that
    wins (twice at most); return `base` with the best value."""
    grid = sorted(set(values))
    tried = {v: search.run(kind, {**base, name: v}) for v in grid}
    for _ in range(2 if extend else 0):
        best = best_trial(list(tried.values()))
        if best is None:
            break
        value = best.params[name]
        direction = -1 if value == grid[0] else (1 if value == grid[-1] else 0)
        new = extend(value, direction) if direction else None
        if new is None or new in tried:
            break
        tried[new] = search.run(kind, {**base, name: new})
        grid = sorted(tried)
    best = best_trial(list(tried.values()))
    return dict(best.params) if best is not None else dict(base)


def extend_alpha(value: float, direction: int) -> float | None:
    new = round(value * 3.0 if direction > 0 else value / 3.0, 6)
    return new if 1e-3 <= new <= 3.0 else None


def extend_l2(value: float, direction: int) -> float | None:
    if direction > 0:
        return value * 10.0 if value < 1e4 else None
    return value / 10.0 if value >= 0.1 else None


__all__ = [
    "AutoSettings",
    "Search",
    "Trial",
    "best_trial",
    "extend_alpha",
    "extend_l2",
    "learner_for",
    "line_search",
    "prior_index",
    "validation_windows",
]
