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

The search itself (windows, trials, line searches, budget) is `openbid.ml.search`.

Budget: the search trains on at most `budget_passes` (60) passes' worth of the rows, or 20
million rows if more (small data sets), an FM pass counting `1 + k/3` LR passes (what it
costs on this hardware); trials that would start past it are skipped. The refit adds its
own passes (1 to `max_passes`).

`keep_rate` < 1 declares that negatives were kept with that probability: the model learns
the sampled rate, the calibration is fitted on sampled rows, and the artifact serves
`recalibrate(q, keep_rate)` (folded into its calibration table). Nothing in the rows can
reveal an undeclared rate: such a model serves the sampled rate (`report.training_base_rate`
says what it learned; the registry gate, on a window sampled like serving, refuses it).

>>> from openbid.ml.rows import HashedRows
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

import msgspec
import numpy as np

from openbid.ml.calibration import CalibrationTable, choose_calibration
from openbid.ml.errors import TrainingDataError
from openbid.ml.ftrl import OnlineModel
from openbid.ml.metrics import log_loss
from openbid.ml.rows import as_labels, as_rows, as_weights
from openbid.ml.sampling import served_table
from openbid.ml.scoring import MultiModelScorer, ScoringModel
from openbid.ml.search import (
    AutoSettings,
    Search,
    Trial,
    best_trial,
    extend_alpha,
    extend_l2,
    learner_for,
    line_search,
    prior_index,
    validation_windows,
)

log = logging.getLogger(__name__)


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
    search = Search(rows, y, w, windows, settings, prior, criterion)

    # LR first, whatever the kind: the FM's linear part starts from LR's best settings
    lr = {"alpha": settings.alphas[len(settings.alphas) // 2], "beta": settings.beta}
    lr |= {"l1": settings.l1s[0], "l2": settings.l2s[0], "n_passes": 1}
    lr = line_search(search, "ftrl_lr", lr, "alpha", settings.alphas, extend_alpha)
    first = dict(lr)
    lr = line_search(search, "ftrl_lr", lr, "l2", settings.l2s, extend_l2)
    lr = line_search(search, "ftrl_lr", lr, "l1", settings.l1s)
    if lr != first:  # the best learning rate depends on the regularization: once more
        alphas = tuple(round(lr["alpha"] * f, 6) for f in (1 / 3, 1.0, 3.0))
        lr = line_search(search, "ftrl_lr", lr, "alpha", alphas, extend_alpha)
    candidates = [search.run("ftrl_lr", lr)] if settings.kind != "fm" else []
    if settings.kind in ("fm", "auto"):
        fm = {**lr, "n_factors": settings.fm_factors[0]}
        fm |= {"factor_learning_rate": settings.fm_factor_learning_rates[0]}
        fm |= {"factor_l2": settings.fm_factor_l2s[0]}
        fm = line_search(
            search, "fm", fm, "factor_learning_rate", settings.fm_factor_learning_rates
        )
        fm = line_search(search, "fm", fm, "n_factors", settings.fm_factors)
        fm = line_search(search, "fm", fm, "factor_l2", settings.fm_factor_l2s)
        fm_trial = search.run("fm", fm)
        if fm_trial is not None:
            lr_trial = candidates[0] if candidates else None
            if lr_trial is None or fm_trial.best_loss < lr_trial.best_loss * (
                1.0 - settings.fm_margin
            ):
                candidates = [fm_trial]
    chosen = best_trial(candidates)
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
    learner = learner_for(chosen.kind, rows.n_features, params, settings.random_state)
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
