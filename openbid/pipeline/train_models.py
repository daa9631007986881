"""The candidates a training job makes: a model trained on the rows before the held-out
window, its predictions on that window, and the production model's predictions on the same
rows, for the gate (`openbid.ml.gate_model`) to judge.

- click (`ctr`) and conversion (`cvr`) models: `fit_auto` on the hashed rows in time order
  (hyper-parameters and calibration chosen on its own time-ordered validation split of the
  training part, negatives optionally sampled and declared);
- shaping: `openbid.shaping.train_shaping` on the training part, whose thresholds are chosen
  on the latest share of that part; the held-out window then says how many callouts the
  shipped thresholds save and how much bid value they keep on traffic they never saw.

The registered artifact is exactly the model the gate judged (no refit on the held-out
window): what serves is what was measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from openbid.config import TrainConfig
from openbid.ml import (
    AutoSettings,
    CalibrationCurve,
    Featurizer,
    MultiModelScorer,
    TrainingWindow,
    calibration_curve,
    evaluate,
    fit_auto,
    load_model,
    subsample_negatives,
)
from openbid.pipeline.shaping_rows import shaping_rows
from openbid.pipeline.train_data import (
    NotEnoughData,
    heldout_start,
    probability_columns,
    probability_spec,
)
from openbid.shaping import load_shaping_model, save_shaping_model, train_shaping
from openbid.shaping.training import ShapingRows, ShapingScorerOffline, target_amounts

log = logging.getLogger(__name__)

SET_OF: dict[str, str] = {"shaping": "shaping", "ctr": "click", "cvr": "conversion"}
"""The training set each purpose learns from."""


@dataclass(slots=True)
class Candidate:
    """A trained model and what the gate needs to judge it (held-out rows only)."""

    purpose: str
    labels: np.ndarray
    weights: np.ndarray
    predictions: np.ndarray
    production: np.ndarray | None
    """The production model's predictions on the same rows (None: no production model)."""
    save: Callable[[Path], Path]
    """Writes the artifact into a new directory at the path given."""
    window: TrainingWindow
    """The rows it was trained on (event times, count)."""
    heldout_since_micros: int
    heldout_until_micros: int
    params: dict[str, object] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    """Training-side and held-out figures beyond the gate's (callouts saved, AUC...)."""

    def curves(self) -> dict[str, CalibrationCurve]:
        """Held-out reliability curves (the registry's calibration plot)."""
        curves = {"candidate": calibration_curve(self.labels, self.predictions, 10, self.weights)}
        if self.production is not None:
            curves["production"] = calibration_curve(self.labels, self.production, 10, self.weights)
        return curves


def train_candidate(
    purpose: str,
    tables: dict[str, pa.Table],
    settings: TrainConfig,
    production_dir: Path | None = None,
    *,
    auto: AutoSettings | None = None,
) -> Candidate:
    """Trains `purpose` on a training set's tables (`read_training_set`); `production_dir`
    is the production model's artifact, scored on the same held-out rows."""
    if purpose == "shaping":
        return _shaping_candidate(tables, settings, production_dir)
    if purpose in ("ctr", "cvr"):
        return _probability_candidate(purpose, tables["rows"], settings, production_dir, auto)
    raise ValueError(f"unknown purpose {purpose!r}; expected shaping, ctr or cvr")


def _probability_candidate(
    purpose: str,
    rows: pa.Table,
    settings: TrainConfig,
    production_dir: Path | None,
    auto: AutoSettings | None,
) -> Candidate:
    rows = rows.sort_by([("ts_micros", "ascending")])  # stable: the ETL's order within ties
    ts = rows["ts_micros"].to_numpy()
    y = rows["label"].to_numpy().astype(np.float64)
    start = heldout_start(
        ts,
        y,
        share=settings.eval_share,
        min_rows=settings.min_eval_rows,
        min_positives=settings.min_eval_positives,
    )
    spec = probability_spec(SET_OF[purpose], settings.hash_bits)
    hashed = Featurizer(spec).transform_columns(
        probability_columns(rows, spec), n_rows=rows.num_rows
    )
    train, heldout = hashed.slice(0, start), hashed.slice(start, len(hashed))
    y_train, y_heldout = y[:start], y[start:]
    keep_rate = settings.negative_keep_rate
    if keep_rate < 1.0:  # the held-out window is never sampled: it is judged as served
        kept, _ = subsample_negatives(y_train, keep_rate, seed=0)
        train, y_train = train.take(kept), y_train[kept]
    model = fit_auto(train, y_train, keep_rate=keep_rate, settings=auto)
    predictions = model.predict_proba(heldout)[:, 1]
    production = None
    if production_dir is not None:
        artifact = load_model(production_dir)
        production_rows = artifact.featurizer().transform_columns(
            probability_columns(rows.slice(start), artifact.meta.spec), n_rows=len(y_heldout)
        )
        scorer = MultiModelScorer([artifact.scoring_model()])
        production = scorer.score_batch(production_rows)[:, 0]
    window = TrainingWindow(int(ts[0]), int(ts[start - 1]), int(start))
    report = model.report
    name = f"{purpose}-{window.end_micros // 1_000_000}"

    def save(path: Path) -> Path:
        return model.save(path, spec, name=name, training_window=window)

    heldout_metrics = evaluate(y_heldout, predictions)
    return Candidate(
        purpose=purpose,
        labels=y_heldout,
        weights=np.ones_like(y_heldout),
        predictions=predictions,
        production=production,
        save=save,
        window=window,
        heldout_since_micros=int(ts[start]),
        heldout_until_micros=int(ts[-1]),
        params={
            "learner": report.kind,
            "calibration": report.calibration,
            "negative_keep_rate": keep_rate,
            "hash_bits": settings.hash_bits,
            **{f"auto.{k}": v for k, v in report.params.items()},
        },
        metrics={
            "train_rows": float(start),
            "train_positives": float(y[:start].sum()),
            "heldout_auc": heldout_metrics.auc,
            **report.metrics(),
        },
    )


def _shaping_candidate(
    tables: dict[str, pa.Table], settings: TrainConfig, production_dir: Path | None
) -> Candidate:
    rows = shaping_rows(tables)
    ts = rows.row_ts_micros()  # the auctions are in time order, so are the rows
    minimum = {
        "share": settings.eval_share,
        "min_rows": settings.min_eval_rows,
        "min_positives": settings.min_eval_positives,
    }
    start = heldout_start(ts, rows.label, rows.weight, **minimum)
    before = ts < ts[start]
    train, heldout = rows.select(before), rows.select(~before)
    # the thresholds are chosen on the latest share of the training part, sized alike
    train_ts = train.row_ts_micros()
    threshold_start = heldout_start(train_ts, train.label, train.weight, **minimum)
    holdout_s = (int(train_ts[-1]) - int(train_ts[threshold_start]) + 1) / 1e6
    trained = train_shaping(train, holdout_s=holdout_s)
    if not trained.learners:
        raise NotEnoughData("no DSP has enough rows for a shaping model yet")
    scores = ShapingScorerOffline(trained.layout, trained.spec, trained.learners).score(heldout)
    production = None
    if production_dir is not None:
        production = _score_with_shaping_model(production_dir, heldout)
    judged = ~np.isnan(scores)
    if production is not None:
        judged &= ~np.isnan(production)
    saved, kept = _held_out_savings(heldout, scores, trained.thresholds, trained.target_kind)
    window = TrainingWindow(trained.window_start_micros, trained.window_end_micros, trained.rows)

    def save(path: Path) -> Path:
        return save_shaping_model(trained, path)

    labels = heldout.label[judged]
    weights = heldout.weight[judged]
    heldout_metrics = evaluate(labels, scores[judged], weights) if judged.any() else None
    return Candidate(
        purpose="shaping",
        labels=labels,
        weights=weights,
        predictions=scores[judged],
        production=production[judged] if production is not None else None,
        save=save,
        window=window,
        heldout_since_micros=int(ts[start]),
        heldout_until_micros=int(ts[-1]),
        params={
            "layout": trained.layout,
            "target_kind": trained.target_kind,
            "target": trained.target,
            "threshold_holdout_s": round(holdout_s, 3),
        },
        metrics={
            "train_rows": float(len(train)),
            "train_positives": float(np.sum(train.weight * train.label)),
            "heldout_callouts_saved": saved,
            f"heldout_{trained.target_kind}_kept": kept,
            "heldout_auc": heldout_metrics.auc if heldout_metrics else float("nan"),
            "dsps_with_model": float(len(trained.learners)),
        },
    )


def _score_with_shaping_model(path: Path, rows: ShapingRows) -> np.ndarray:
    """A shaping model directory's bid probabilities for `rows` (NaN: a DSP it has no
    learner for)."""
    model = load_shaping_model(path)
    learners = {name: artifact.learner() for name, artifact in model.artifacts.items()}
    spec = next(iter(model.artifacts.values())).meta.spec
    return ShapingScorerOffline(model.meta.layout, spec, learners).score(rows)


def _held_out_savings(
    rows: ShapingRows, scores: np.ndarray, thresholds: dict[str, float], kind: str
) -> tuple[float, float]:
    """With these thresholds on these (held-out, weighted) rows: the share of calls not
    sent, and the share of bids (or bid value) kept. A DSP without a threshold is always
    called."""
    weights = rows.weight
    filtered = np.zeros(len(rows), dtype=bool)
    for dsp, threshold in thresholds.items():
        filtered |= (rows.dsp == dsp) & ~np.isnan(scores) & (scores < threshold)
    total = float(weights.sum())
    amounts = target_amounts(rows, np.ones(len(rows), dtype=bool), kind)  # type: ignore[arg-type]
    amount_total = float(amounts.sum())
    saved = float(weights[filtered].sum()) / total if total > 0 else 0.0
    kept = float(amounts[~filtered].sum()) / amount_total if amount_total > 0 else 1.0
    return saved, kept
