"""One backtest: train an experiment's model on its training window of logged traffic and
score its test window, from the raw logged values (the ETL's output keeps each auction's
features as a map of strings), so any feature spec can be tried on old logs.

| purpose | rows (ETL set) | what is reported |
| --- | --- | --- |
| `click`, `conversion` | impressions (touches) and their label | log loss, NE, AUC, expected / actual, by slice, calibration curve |
| `shaping` | calls sent, one per (auction, DSP), weighted 1 / send probability | the same, plus callouts saved and bids and revenue kept at the target, with thresholds chosen on the training window's tail, and the frontier |

Nothing is tuned on the test window: calibration and thresholds are fitted on the last
`learner.validation_share` of the training window.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openbid.config import Config
from openbid.experiments.spec import SET_OF, Experiment, ExperimentError, parse_time
from openbid.ml import (
    FactorizationMachine,
    Featurizer,
    FTRLLogisticRegression,
    calibration_curve,
    evaluate,
    fit_calibration,
    recalibrate,
    spec_hash,
    subsample_negatives,
)
from openbid.ml.errors import MLError

log = logging.getLogger(__name__)

TOP_SLICE_VALUES = 12
"""Values per slice field kept in a result (the most rows first)."""


class SliceRow(msgspec.Struct, frozen=True):
    value: str
    rows: int
    expected: float
    actual: float

    @property
    def ratio(self) -> float:
        return self.expected / self.actual if self.actual else math.inf


class FrontierRow(msgspec.Struct, frozen=True):
    """All DSPs at one target, thresholds chosen on the training window's tail."""

    target: float
    callouts_saved: float
    bids_kept: float
    revenue_kept: float


class BacktestResult(msgspec.Struct, kw_only=True):
    """What one backtest measured (every figure on the test window)."""

    name: str
    purpose: str
    path: str = ""
    spec_hash: str = ""
    learner: str = ""
    params: dict[str, str] = {}
    train_rows: int = 0
    test_rows: int = 0
    test_positives: float = 0.0
    window: dict[str, int] = {}
    metrics: dict[str, float] = {}
    """logloss, normalized_entropy, auc, calibration_ratio, mean_prediction, base_rate."""
    slices: dict[str, list[SliceRow]] = {}
    curve: list[list[float]] = []
    """[mean predicted, observed rate, rows] per bin."""
    shaping: dict[str, float] = {}
    """callouts_saved, bids_kept, revenue_kept, target at the experiment's target."""
    frontier: list[FrontierRow] = []
    seconds: dict[str, float] = {}
    error: str = ""


# --- data: the ETL's rows, and the features the spec names
def load_tables(experiment: Experiment, config: Config) -> dict[str, pa.Table]:
    """The training set (`data.training_set`) or the ETL run on the event log now, over the
    experiment's windows when both are absolute, else over the whole log."""
    from openbid.pipeline.build import Windows, read_training_set, run
    from openbid.pipeline.engines import open_engine
    from openbid.pipeline.source import EventSource

    if experiment.data.training_set:
        tables, _ = read_training_set(experiment.data.training_set)
        return tables
    since = (
        parse_time(experiment.train.since, end_micros=0)
        if _absolute(experiment.train.since)
        else None
    )
    until = (
        parse_time(experiment.test.until, end_micros=0)
        if _absolute(experiment.test.until)
        else None
    )
    source = EventSource(
        experiment.data.events or config.events.dir,
        segments_url=experiment.data.segments_url
        or ("" if experiment.data.events else config.events.segments_url),
    )
    engine = open_engine("duckdb", duckdb_threads=1)
    try:
        built = run(
            SET_OF[experiment.purpose],
            source,
            engine,
            Windows.from_config(config.etl),
            since_micros=since,
            until_micros=until,
        )
    finally:
        engine.close()
    return built.tables


def _absolute(value: str) -> bool:
    return bool(value) and value != "end" and not value.startswith("-")


def _feature_columns(rows: pa.Table, names: list[str], features: pa.Array | None = None):
    """Each named field from the row's top-level column, else from its features map."""
    feature_map = rows["features"] if features is None else features
    if isinstance(feature_map, pa.ChunkedArray):
        feature_map = feature_map.combine_chunks()
    columns = {}
    for name in names:
        if features is None and name in rows.column_names and name != "features":
            columns[name] = rows[name]
        else:
            columns[name] = pc.map_lookup(feature_map, pa.scalar(name), "first")
    return columns


class Rows(msgspec.Struct):
    """Rows of one window: hashed features, labels, weights, times, slices, value."""

    hashed: Any
    labels: np.ndarray
    weights: np.ndarray
    ts: np.ndarray
    slices: dict[str, np.ndarray]
    dsp: np.ndarray | None = None
    value: np.ndarray | None = None

    def take(self, index: np.ndarray) -> Rows:
        return Rows(
            self.hashed.take(index),
            self.labels[index],
            self.weights[index],
            self.ts[index],
            {k: v[index] for k, v in self.slices.items()},
            None if self.dsp is None else self.dsp[index],
            None if self.value is None else self.value[index],
        )


def _strings(column) -> np.ndarray:
    values = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
    return np.asarray(["" if v is None else str(v) for v in values], dtype=object)


def prepare_rows(experiment: Experiment, tables: dict[str, pa.Table]) -> Rows:
    """Every row of the set, in time order, hashed with the experiment's spec."""
    featurizer = Featurizer(experiment.features)
    fields = featurizer.spec.field_names
    slices = list(experiment.slices)
    if experiment.purpose == "shaping":
        rows, auctions = tables["rows"], tables["auctions"]
        rows = rows.filter(pc.equal(rows["sent"], True))
        if rows.num_rows == 0:
            raise ExperimentError(f"{experiment.name}: no calls that were sent in the data")
        grouped = rows.group_by(["auction_row", "dsp"], use_threads=False).aggregate(
            [("label", "max"), ("price_micros", "max"), ("send_probability", "min"),
             ("ts_micros", "min")]
        )  # fmt: skip
        grouped = grouped.sort_by([("ts_micros_min", "ascending"), ("auction_row", "ascending"),
                                   ("dsp", "ascending")])  # fmt: skip
        feature_map = auctions["features"].combine_chunks().take(grouped["auction_row"])
        publisher = auctions["publisher_id"].combine_chunks().take(grouped["auction_row"])
        table = pa.table({"dsp": grouped["dsp"], "publisher_id": publisher})
        columns = _feature_columns(table, sorted(set(fields) | set(slices)), feature_map)
        labels = grouped["label_max"].to_numpy().astype(np.float64)
        weights = 1.0 / np.clip(grouped["send_probability_min"].to_numpy(), 1e-6, 1.0)
        ts = grouped["ts_micros_min"].to_numpy().astype(np.int64)
        dsp = _strings(grouped["dsp"])
        value = np.where(labels > 0, grouped["price_micros_max"].to_numpy(), 0).astype(np.float64)
        n = grouped.num_rows
    else:
        rows = tables["rows"].sort_by([("ts_micros", "ascending")])
        if experiment.purpose == "conversion" and "touch" in rows.column_names:
            rows = rows  # both touches are rows: a conversion model scores clicks and views
        columns = _feature_columns(rows, sorted(set(fields) | set(slices)))
        labels = rows["label"].to_numpy().astype(np.float64)
        weights = np.ones(rows.num_rows)
        ts = rows["ts_micros"].to_numpy().astype(np.int64)
        dsp = None
        value = None
        n = rows.num_rows
    hashed = featurizer.transform_columns({k: columns[k] for k in fields}, n_rows=n)
    return Rows(
        hashed,
        labels,
        weights,
        ts,
        {name: _strings(columns[name]) for name in slices},
        dsp,
        value,
    )


def split(experiment: Experiment, rows: Rows) -> tuple[Rows, Rows, dict[str, int]]:
    """The training and test windows (relative bounds from the end of the data)."""
    if rows.ts.size == 0:
        raise ExperimentError(f"{experiment.name}: no rows in the data")
    end = int(rows.ts.max()) + 1
    start = int(rows.ts.min())
    bounds = {
        "train_since": parse_time(experiment.train.since, end_micros=end) or start,
        "train_until": parse_time(experiment.train.until, end_micros=end),
        "test_since": parse_time(experiment.test.since, end_micros=end),
        "test_until": parse_time(experiment.test.until, end_micros=end) or end,
    }
    if bounds["test_since"] is None:
        raise ExperimentError(f"{experiment.name}: test.since: the test window needs a start")
    if bounds["train_until"] is None:
        bounds["train_until"] = bounds["test_since"]
    if bounds["train_until"] > bounds["test_since"]:
        raise ExperimentError(
            f"{experiment.name}: train.until is after test.since: the model would be tested "
            "on rows it trained on"
        )
    train = (rows.ts >= bounds["train_since"]) & (rows.ts < bounds["train_until"])
    test = (rows.ts >= bounds["test_since"]) & (rows.ts < bounds["test_until"])
    for name, mask in (("train", train), ("test", test)):
        positives = float(rows.labels[mask].sum())
        if not mask.any() or positives == 0 or positives == mask.sum():
            raise ExperimentError(
                f"{experiment.name}: the {name} window has {int(mask.sum())} rows and "
                f"{positives:g} positives: it needs both labels"
            )
    return rows.take(np.flatnonzero(train)), rows.take(np.flatnonzero(test)), bounds


# --- training
def _fit_scores(
    experiment: Experiment, train: Rows, test: Rows
) -> tuple[np.ndarray, np.ndarray, str]:
    """(test predictions, validation-tail predictions (shaping thresholds), learner name)."""
    from openbid.ml.auto import fit_auto

    sampling = experiment.sampling
    learner_spec = experiment.learner
    if sampling.max_train_rows and len(train.labels) > sampling.max_train_rows:
        train = train.take(
            np.arange(len(train.labels) - sampling.max_train_rows, len(train.labels))
        )
    keep_rate = sampling.negative_keep_rate
    if keep_rate < 1.0:
        kept, _ = subsample_negatives(train.labels, keep_rate, seed=sampling.seed)
        train = train.take(kept)
    params = experiment.learner_params()
    if learner_spec.kind == "auto":
        model = fit_auto(train.hashed, train.labels, train.weights, keep_rate=keep_rate,
                         settings=params)  # fmt: skip
        return model.predict_proba(test.hashed)[:, 1], np.array([]), model.report.kind
    n_features = experiment.features.n_features
    fields = msgspec.structs.asdict(params)

    def make() -> Any:
        if learner_spec.kind == "fm":
            return FactorizationMachine(n_features=n_features, **fields)
        return FTRLLogisticRegression(n_features=n_features, **fields)

    if learner_spec.calibration == "none":
        learner = make().fit(train.hashed, train.labels, train.weights)
        p = learner.predict_proba(test.hashed)[:, 1]
        return (
            (recalibrate(p, keep_rate) if keep_rate < 1.0 else p),
            np.array([]),
            learner_spec.kind,
        )
    cut = int(len(train.labels) * (1.0 - learner_spec.validation_share))
    head = train.take(np.arange(cut))
    tail = train.take(np.arange(cut, len(train.labels)))
    learner = make().fit(head.hashed, head.labels, head.weights)
    table = fit_calibration(learner.predict_proba(tail.hashed)[:, 1], tail.labels,
                            learner_spec.calibration, tail.weights)  # fmt: skip
    p = table.apply(learner.predict_proba(test.hashed)[:, 1])
    return (recalibrate(p, keep_rate) if keep_rate < 1.0 else p), np.array([]), learner_spec.kind


def _shaping(experiment: Experiment, train: Rows, test: Rows) -> tuple[np.ndarray, dict, list]:
    """Per-DSP (or shared) FTRL on the head of the training window, thresholds on its tail,
    scored on the test window: (test scores, figures at the target, frontier)."""
    from openbid.shaping.thresholds import RECALL_TARGETS, threshold_for_share

    params = experiment.learner_params()
    shaping = experiment.shaping
    cut = int(len(train.labels) * (1.0 - experiment.learner.validation_share))
    head = train.take(np.arange(cut))
    tail = train.take(np.arange(cut, len(train.labels)))

    def fit(rows: Rows) -> dict[str, FTRLLogisticRegression]:
        learners = {}
        groups = {"shared": np.arange(len(rows.labels))} if shaping.layout == "shared" else {
            dsp: np.flatnonzero(rows.dsp == dsp) for dsp in sorted(set(rows.dsp.tolist()))}  # fmt: skip
        for key, index in groups.items():
            if index.size < 50 or rows.labels[index].sum() == 0:
                continue
            sub = rows.take(index)
            learners[key] = FTRLLogisticRegression(
                n_features=experiment.features.n_features, **msgspec.structs.asdict(params)
            ).fit(sub.hashed, sub.labels, sub.weights)
        return learners

    def score(learners: dict, rows: Rows) -> np.ndarray:
        scores = np.full(len(rows.labels), np.nan)
        for key, learner in learners.items():
            index = (
                np.arange(len(rows.labels)) if key == "shared" else np.flatnonzero(rows.dsp == key)
            )
            if index.size:
                scores[index] = learner.predict_proba(rows.hashed.take(index))[:, 1]
        return scores

    learners = fit(head)
    tail_scores, test_scores = score(learners, tail), score(learners, test)

    def amounts(rows: Rows, mask: np.ndarray, kind: str) -> np.ndarray:
        bids = rows.weights[mask] * rows.labels[mask]
        if kind == "recall":
            return bids
        value = rows.weights[mask] * rows.value[mask]
        return value if value.sum() > 0 else bids

    def at(target: float, kind: str) -> tuple[float, float, float]:
        calls = kept_bids = kept_value = 0.0
        total_calls = float(test.weights.sum())
        total_bids = float((test.weights * test.labels).sum())
        total_value = float((test.weights * test.value).sum())
        for dsp in sorted(set(test.dsp.tolist())):
            tail_mask = (tail.dsp == dsp) & ~np.isnan(tail_scores)
            test_mask = test.dsp == dsp
            scored = test_mask & ~np.isnan(test_scores)
            threshold = (threshold_for_share(tail_scores[tail_mask], amounts(tail, tail_mask, kind),
                                             target) if tail_mask.any() else 0.0)  # fmt: skip
            send = test_mask & (~scored | (np.nan_to_num(test_scores, nan=1.0) >= threshold))
            calls += float(test.weights[send].sum())
            kept_bids += float((test.weights * test.labels)[send].sum())
            kept_value += float((test.weights * test.value)[send].sum())
        return (1.0 - calls / total_calls, kept_bids / total_bids if total_bids else 1.0,
                kept_value / total_value if total_value else 1.0)  # fmt: skip

    saved, bids_kept, value_kept = at(shaping.target, shaping.target_kind)
    figures = {"target": shaping.target, "callouts_saved": saved, "bids_kept": bids_kept,
               "revenue_kept": value_kept}  # fmt: skip
    frontier = [FrontierRow(t, *at(t, "recall")) for t in RECALL_TARGETS]
    return test_scores, figures, frontier


def _slices(experiment: Experiment, test: Rows, p: np.ndarray) -> dict[str, list[SliceRow]]:
    out = {}
    weighted_p, weighted_y = test.weights * p, test.weights * test.labels
    for name, values in test.slices.items():
        keys, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        expected = np.bincount(inverse, weights=weighted_p, minlength=keys.size)
        actual = np.bincount(inverse, weights=weighted_y, minlength=keys.size)
        order = np.argsort(-counts, kind="stable")[:TOP_SLICE_VALUES]
        out[name] = [SliceRow(str(keys[i]) or "(none)", int(counts[i]), float(expected[i]),
                              float(actual[i])) for i in order]  # fmt: skip
    return out


def run_backtest(experiment: Experiment, config: Config) -> BacktestResult:
    """Runs one experiment; a failure is reported in `error`, never raised."""
    result = BacktestResult(
        name=experiment.name, purpose=experiment.purpose, path=experiment.path,
        spec_hash=spec_hash(experiment.features), learner=experiment.learner.kind,
        params=flat_params(experiment),
    )  # fmt: skip
    try:
        started = time.perf_counter()
        tables = load_tables(experiment, config)
        rows = prepare_rows(experiment, tables)
        train, test, bounds = split(experiment, rows)
        result.seconds["load"] = time.perf_counter() - started
        result.window = bounds
        result.train_rows, result.test_rows = len(train.labels), len(test.labels)
        result.test_positives = float((test.weights * test.labels).sum())
        started = time.perf_counter()
        if experiment.purpose == "shaping":
            p, result.shaping, result.frontier = _shaping(experiment, train, test)
            scored = ~np.isnan(p)
            test = test.take(np.flatnonzero(scored))
            p = p[scored]
        else:
            p, _, result.learner = _fit_scores(experiment, train, test)
        result.seconds["train_and_score"] = time.perf_counter() - started
        quality = evaluate(test.labels, p, test.weights)
        result.metrics = {
            "logloss": quality.logloss, "normalized_entropy": quality.normalized_entropy,
            "auc": quality.auc, "calibration_ratio": quality.calibration_ratio,
            "mean_prediction": quality.mean_prediction, "base_rate": quality.base_rate,
        }  # fmt: skip
        curve = calibration_curve(test.labels, p, 10, test.weights)
        result.curve = [list(t) for t in zip(curve.mean_predicted, curve.observed_rate,
                                             curve.rows, strict=True)]  # fmt: skip
        result.slices = _slices(experiment, test, p)
    except (ExperimentError, MLError, ValueError, OSError) as exc:
        result.error = str(exc)
        log.error("backtest failed", extra={"experiment": experiment.name, "error": str(exc)})
    return result


def flat_params(experiment: Experiment) -> dict[str, str]:
    """The experiment as flat `key: value` strings (MLflow params)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            out[prefix] = str(value)

    data = msgspec.to_builtins(experiment)
    data.pop("path", None)
    data["learner"]["params"] = msgspec.to_builtins(experiment.learner_params())
    walk("", data)
    return out
