"""The default way to train a click (or bid) model: hyper-parameters chosen from the data,
then a calibration chosen by held-out loss, then a refit on every row.

`fit_auto(rows, labels, sample_weight=None, keep_rate=1.0)` takes hashed rows **in time
order** and:

1. holds out the last `validation_share` of them (for small data, several rolling windows:
   train on everything before each, score it), never a random split: the model will
   serve rows later than any it trained on;
2. searches FTRL-LR (alpha, then L2, then L1, then alpha again around the best) and, for
   `kind="fm"` or `"auto"`, the factorization machine (its factor learning rate, k and
   factor L2), one hyper-parameter at a time around the best so far; each trial trains
   pass after pass and stops when held-out loss has not improved for `patience` passes
   (early stopping picks the number of passes). The bias starts at the logit of the base
   rate, so features only learn how a row differs from it;
3. keeps the kind with the lowest held-out loss (the FM must beat LR by `fm_margin`);
4. chooses the calibration (Platt, isotonic, the raw scores, or the base rate itself) by
   held-out loss on the held-out predictions (`choose_calibration`);
5. refits the chosen learner on all rows for the chosen number of passes.

Budget: the search trains on at most `budget_passes` (60) passes' worth of the rows, or 20
million rows if more (small data sets), an FM pass counting `1 + k/3` LR passes (what it
costs on this hardware); trials that would start past it are skipped. The refit adds its
own passes (1 to `max_passes`).

`keep_rate` < 1 declares that negatives were kept with that probability: the model learns
the sampled rate, the calibration is fitted on sampled rows, and the artifact serves
`recalibrate(q, keep_rate)` (folded into its calibration table). Nothing in the rows can
reveal an undeclared rate: such a model serves the sampled rate (`report.training_base_rate`
says what it learned; the registry gate, on a window sampled like serving, refuses it).

>>> rng = np.random.default_rng(0)
>>> n = 40_000
>>> site = rng.integers(0, 200, n)
>>> site_logit = rng.normal(-3.0, 1.0, 200)
>>> y = (rng.random(n) < 1 / (1 + np.exp(-site_logit[site]))).astype(float)
>>> rows = HashedRows.from_matrix(np.stack([site, np.full(n, 300)], axis=1), n_features=1024)
>>> model = fit_auto(rows, y, settings=AutoSettings(kind="ftrl_lr"))
>>> model.report.kind, model.report.calibration in ("platt", "isotonic", "none")
('ftrl_lr', True)
>>> model.report.validation_logloss < model.report.validation_base_logloss
True
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np

from openbid.ml.calibration import CalibrationTable, choose_calibration
from openbid.ml.errors import TrainingDataError
from openbid.ml.fm import FactorizationMachine
from openbid.ml.ftrl import FTRLLogisticRegression, OnlineModel
from openbid.ml.metrics import log_loss
from openbid.ml.rows import HashedRows, as_labels, as_rows, as_weights
from openbid.ml.sampling import served_table
from openbid.ml.scoring import MultiModelScorer, ScoringModel

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


class AutoReport(msgspec.Struct, frozen=True):
    """What `fit_auto` tried and chose, with the held-out figures behind each choice."""

    kind: str
    params: dict[str, float | int]
    """The chosen hyper-parameters (n_passes included), as the refit learner has them."""
    calibration: str
    """"platt", "isotonic", "none" or "constant" (no model beat the base rate held out)."""
    rows: int
    positives: float
    training_base_rate: float
    """The (weighted) positive rate of the rows as given: what the model serves on average
    unless `keep_rate` says the negatives were sampled."""
    keep_rate: float
    validation_windows: list[list[int]]
    """[first training row excluded, end] of each held-out window (row offsets)."""
    validation_rows: int
    validation_positives: float
    validation_logloss: float
    """The chosen trial's held-out log loss, raw scores."""
    validation_criterion: float
    """The chosen trial's held-out value of the search criterion (its log loss by default)."""
    validation_base_logloss: float
    """The log loss of the training rows' base rate on the same held-out rows."""
    calibration_logloss: dict[str, float]
    """Per calibration method: held-out loss (fit on one half of the held-out predictions,
    scored on the other, both ways)."""
    trials: list[Trial]
    search_passes: float
    """What the search trained, in LR passes over all the rows."""
    budget_passes: float
    search_seconds: float
    refit_seconds: float

    def metrics(self) -> dict[str, float]:
        """The figures an artifact stores in its `metrics`."""
        return {
            "validation_logloss": self.validation_logloss,
            "validation_base_logloss": self.validation_base_logloss,
            "validation_rows": float(self.validation_rows),
            "validation_positives": self.validation_positives,
            "training_base_rate": self.training_base_rate,
            "search_passes": self.search_passes,
            **{f"calibration_logloss_{m}": v for m, v in self.calibration_logloss.items()},
        }


class AutoModel:
    """A learner refit on every row, its calibration and the report of how it was chosen.

    `calibration` maps raw scores to probabilities on data sampled like the training rows;
    `served_calibration` adds the negative sampling correction: what scoring applies."""

    def __init__(
        self,
        learner: OnlineModel,
        calibration: CalibrationTable | None,
        keep_rate: float,
        report: AutoReport,
    ) -> None:
        self.learner = learner
        self.calibration = calibration
        self.keep_rate = keep_rate
        self.report = report
        self.served_calibration = served_table(calibration, keep_rate)
        self._scorer: MultiModelScorer | None = None

    def predict_proba(self, X) -> np.ndarray:
        """`(n, 2)` served probabilities (calibrated, corrected for negative sampling), from
        the scorer servers use, so they are exactly what a server would serve."""
        if self._scorer is None:
            self._scorer = MultiModelScorer([self.scoring_model("auto")])
        p = self._scorer.score_batch(as_rows(X, self.learner.n_features))[:, 0]
        return np.stack([1.0 - p, p], axis=1)

    def scoring_model(self, name: str = "", spec_hash: str = "") -> ScoringModel:
        """The model for `MultiModelScorer`, calibration included."""
        return ScoringModel.from_learner(name, self.learner, self.served_calibration, spec_hash)

    def save(self, path: str | Path, spec, **kwargs) -> Path:
        """`save_model` with the calibration, the keep rate and the report's figures."""
        from openbid.ml.artifacts import save_model

        metrics = {**self.report.metrics(), **kwargs.pop("metrics", {})}
        return save_model(
            self.learner,
            path,
            spec,
            calibration=self.calibration,
            negative_keep_rate=self.keep_rate,
            metrics=metrics,
            **kwargs,
        )


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


def _learner(kind: str, n_features: int, params: dict[str, float | int], seed: int) -> OnlineModel:
    if kind == "fm":
        return FactorizationMachine(n_features=n_features, random_state=seed, **params)  # type: ignore[arg-type]
    return FTRLLogisticRegression(n_features=n_features, **params)  # type: ignore[arg-type]


def _pass_cost(kind: str, params: dict[str, float | int]) -> float:
    """One pass of this learner, in LR passes (measured: an FM with k=8 trains about 3.5x
    slower than LR per row, k=4 about 2.3x)."""
    return 1.0 + float(params["n_factors"]) / 3.0 if kind == "fm" else 1.0


class _Search:
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
            learner = _learner(kind, self.n_features, params, self.settings.random_state)
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


def _best(trials: list[Trial | None]) -> Trial | None:
    """The lowest held-out loss; among trials within tolerance of it, the cheapest."""
    done = [t for t in trials if t is not None]
    if not done:
        return None
    lowest = min(t.best_loss for t in done)
    tied = [t for t in done if t.best_loss <= lowest * (1.0 + t.tolerance)]
    return min(tied, key=lambda t: (t.cost, t.best_loss))


def _line_search(
    search: _Search,
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
        best = _best(list(tried.values()))
        if best is None:
            break
        value = best.params[name]
        direction = -1 if value == grid[0] else (1 if value == grid[-1] else 0)
        new = extend(value, direction) if direction else None
        if new is None or new in tried:
            break
        tried[new] = search.run(kind, {**base, name: new})
        grid = sorted(tried)
    best = _best(list(tried.values()))
    return dict(best.params) if best is not None else dict(base)


def _extend_alpha(value: float, direction: int) -> float | None:
    new = value * 3.0 if direction > 0 else value / 3.0
    return new if 1e-3 <= new <= 3.0 else None


def _extend_l2(value: float, direction: int) -> float | None:
    if direction > 0:
        return value * 10.0 if value < 1e4 else None
    return value / 10.0 if value >= 0.1 else None


def fit_auto(
    rows,
    labels,
    sample_weight=None,
    *,
    keep_rate: float = 1.0,
    settings: AutoSettings | None = None,
    criterion: Callable[[np.ndarray, np.ndarray, np.ndarray], float] | None = None,
) -> AutoModel:
    """Choose hyper-parameters and calibration on held-out rows in time order, then refit
    on all rows (see the module doc). `rows`: `HashedRows` (or scipy.sparse) in time order;
    `keep_rate`: the probability each negative was kept with, when they were sampled;
    `criterion(y, p, w)`: what the search minimizes on held-out rows instead of log loss
    (shaping ranks calls, so it minimizes the calls its thresholds keep)."""
    settings = settings or AutoSettings()
    settings.check()
    if not 0.0 < keep_rate <= 1.0:
        raise TrainingDataError(f"keep_rate must be in (0, 1], got {keep_rate}")
    rows = as_rows(rows)
    y = as_labels(labels, len(rows))
    w = as_weights(sample_weight, len(rows))
    positives = float(np.sum(w * y))
    total = float(np.sum(w))
    if positives <= 0 or positives >= total:
        raise TrainingDataError(
            f"fit_auto needs both positives and negatives; got {positives:g} positive of "
            f"{total:g} (weighted)"
        )
    started = time.process_time()
    base_rate = positives / total
    bias = prior_index(rows)
    prior = None if bias is None else (bias, math.log(base_rate / (1.0 - base_rate)))
    windows = validation_windows(len(rows), y * (w > 0), settings)
    if not windows:
        raise TrainingDataError(f"too few rows ({len(rows)}) to hold any out")
    search = _Search(rows, y, w, windows, settings, prior, criterion)

    # LR first, whatever the kind: the FM's linear part starts from LR's best settings
    lr = {"alpha": settings.alphas[len(settings.alphas) // 2], "beta": settings.beta}
    lr |= {"l1": settings.l1s[0], "l2": settings.l2s[0], "n_passes": 1}
    lr = _line_search(search, "ftrl_lr", lr, "alpha", settings.alphas, _extend_alpha)
    first = dict(lr)
    lr = _line_search(search, "ftrl_lr", lr, "l2", settings.l2s, _extend_l2)
    lr = _line_search(search, "ftrl_lr", lr, "l1", settings.l1s)
    if lr != first:  # the best learning rate depends on the regularization: once more
        alphas = tuple(lr["alpha"] * f for f in (1 / 3, 1.0, 3.0))
        lr = _line_search(search, "ftrl_lr", lr, "alpha", alphas, _extend_alpha)
    candidates = [search.run("ftrl_lr", lr)] if settings.kind != "fm" else []
    if settings.kind in ("fm", "auto"):
        fm = {**lr, "n_factors": settings.fm_factors[0]}
        fm |= {"factor_learning_rate": settings.fm_factor_learning_rates[0]}
        fm |= {"factor_l2": settings.fm_factor_l2s[0]}
        fm = _line_search(
            search, "fm", fm, "factor_learning_rate", settings.fm_factor_learning_rates
        )
        fm = _line_search(search, "fm", fm, "n_factors", settings.fm_factors)
        fm = _line_search(search, "fm", fm, "factor_l2", settings.fm_factor_l2s)
        fm_trial = search.run("fm", fm)
        if fm_trial is not None:
            lr_trial = candidates[0] if candidates else None
            if lr_trial is None or fm_trial.best_loss < lr_trial.best_loss * (
                1.0 - settings.fm_margin
            ):
                candidates = [fm_trial]
    chosen = _best(candidates)
    if chosen is None:
        raise TrainingDataError("the search budget allowed no trial at all")
    key = (chosen.kind, tuple(sorted(chosen.params.items())))
    heldout_p = search.heldout[key]
    heldout_y = np.concatenate([part[4] for part in search.parts])
    heldout_w = np.concatenate([part[5] for part in search.parts])
    train_rate = [float(np.average(part[1], weights=part[2])) for part in search.parts]
    base_heldout = np.concatenate(
        [np.full(len(part[4]), rate) for part, rate in zip(search.parts, train_rate, strict=True)]
    )
    validation_base = log_loss(heldout_y, base_heldout, heldout_w)
    search_s = time.process_time() - started

    calibration, method, calibration_losses = None, "none", {}
    if settings.calibration:
        try:
            choice = choose_calibration(heldout_p, heldout_y, heldout_w, settings.calibration)
        except TrainingDataError as exc:
            log.warning("calibration skipped: %s", exc)
        else:
            calibration, method, calibration_losses = (
                choice.table,
                choice.method,
                choice.heldout_logloss,
            )

    started = time.process_time()
    params = {**chosen.params, "n_passes": chosen.best_pass}
    learner = _learner(chosen.kind, rows.n_features, params, settings.random_state)
    if prior is not None:
        learner.start_at(*prior)
    for _ in range(chosen.best_pass):
        learner.partial_fit(rows, y, w)
    refit_s = time.process_time() - started
    report = AutoReport(
        kind=chosen.kind,
        params=params,
        calibration=method,
        rows=len(rows),
        positives=positives,
        training_base_rate=base_rate,
        keep_rate=keep_rate,
        validation_windows=[[a, b] for a, b in windows],
        validation_rows=int(heldout_y.shape[0]),
        validation_positives=float(np.sum(heldout_w * heldout_y)),
        validation_logloss=log_loss(heldout_y, heldout_p, heldout_w),
        validation_criterion=chosen.best_loss,
        validation_base_logloss=validation_base,
        calibration_logloss=calibration_losses,
        trials=list(search.trials.values()),
        search_passes=search.spent,
        budget_passes=search.budget,
        search_seconds=search_s,
        refit_seconds=refit_s,
    )
    log.info(
        "auto fit",
        extra={
            "kind": report.kind,
            **params,
            "calibration": method,
            "validation_logloss": report.validation_logloss,
            "validation_base_logloss": validation_base,
            "search_passes": round(search.spent, 1),
        },
    )
    return AutoModel(learner, calibration, keep_rate, report)


__all__ = ["AutoModel", "AutoReport", "AutoSettings", "Trial", "fit_auto", "prior_index"]
