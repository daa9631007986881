"""The periodic monitoring job over the event log (`openbid monitor run`, or the scheduler):
for a recent window, per purpose whose model the store serves,

| figure | shaping (bids) | ctr (clicks), cvr (conversions) |
| --- | --- | --- |
| expected / actual by slice (publisher, DSP, country, device, hour) | the scores logged with each sent call | the serving model replayed on the window's impressions |
| calibration curve | the same | the same |
| mean prediction drift | mean score of every (auction, DSP) in the window against the model's own scores on its training window | the model's mean on the window against its training window |
| feature drift | per field of the model's spec: the share of the window's auctions with a value never seen in the training window | the same |
| model age | market seconds since the end of the training window | the same |

Calibration outside the band raises the `calibration` alert (`alerts`); everything is
written to a JSON report and a Prometheus text file (for node_exporter's textfile
collector), with at most `max_slice_values` values per slice.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openbid import clock
from openbid.config import Config
from openbid.ml import calibration_curve
from openbid.monitoring.alerts import Alerter
from openbid.monitoring.rules import calibration_verdict

log = logging.getLogger(__name__)

HOUR_MICROS = 3_600_000_000
SLICES = {"publisher": "publisher_id", "dsp": "dsp", "country": "country",
          "device": "device_type", "hour": "hour"}  # fmt: skip
NOT_SENT = ("circuit_open", "consent_blocked", "no_time", "qps_capped")


class SliceFigure(msgspec.Struct, frozen=True):
    dimension: str
    value: str
    expected: float
    actual: float
    predictions: int
    state: str


class PurposeReport(msgspec.Struct, kw_only=True):
    purpose: str
    model: str = ""
    rows: int = 0
    expected: float = 0.0
    actual: float = 0.0
    slices: list[SliceFigure] = []
    curve: list[list[float]] = []
    mean_prediction: float = math.nan
    training_mean_prediction: float = math.nan
    mean_prediction_drift: float = math.nan
    """window mean / training window mean - 1."""
    unseen_share: dict[str, float] = {}
    """Per field: share of the window's auctions whose value the training window never had."""
    model_age_s: float = math.nan
    note: str = ""


class JobReport(msgspec.Struct, kw_only=True):
    since_micros: int
    until_micros: int
    purposes: list[PurposeReport]


def _read(reader: Any, kind: str, since: int, until: int) -> pa.Table:
    table = reader.read_table(
        kind, start_hour=since // HOUR_MICROS, end_hour=until // HOUR_MICROS + 1
    )
    if table.num_rows == 0:
        return table
    return table.filter(pc.and_(pc.greater_equal(table["ts_micros"], since),
                                pc.less(table["ts_micros"], until)))  # fmt: skip


def _lookup(auctions: pa.Table, ids: pa.Array, field: str) -> np.ndarray:
    at = pc.index_in(ids, value_set=auctions["auction_id"].combine_chunks())
    if field == "publisher_id":
        values = auctions["publisher_id"].combine_chunks().take(at)
    else:
        values = pc.map_lookup(
            auctions["features"].combine_chunks(), pa.scalar(field), "first"
        ).take(at)
    return np.asarray(["" if v is None else v for v in values.to_pylist()], dtype=object)


def _by_slice(
    dims: dict[str, np.ndarray], p: np.ndarray, y: np.ndarray, settings: Any
) -> list[SliceFigure]:
    out = [_figure("all", "all", p, y, settings)]
    for dimension, values in dims.items():
        keys, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        expected = np.bincount(inverse, weights=p, minlength=keys.size)
        actual = np.bincount(inverse, weights=y, minlength=keys.size)
        for i in np.argsort(-counts, kind="stable")[: settings.max_slice_values]:
            verdict = calibration_verdict(expected=float(expected[i]), actual=float(actual[i]),
                                          band=settings.calibration_band, z=settings.z,
                                          min_expected=settings.min_expected)  # fmt: skip
            out.append(SliceFigure(dimension, str(keys[i]) or "(none)", float(expected[i]),
                                   float(actual[i]), int(counts[i]), verdict.state))  # fmt: skip
    return out


def _figure(dimension: str, value: str, p: np.ndarray, y: np.ndarray, settings: Any) -> SliceFigure:
    verdict = calibration_verdict(expected=float(p.sum()), actual=float(y.sum()),
                                  band=settings.calibration_band, z=settings.z,
                                  min_expected=settings.min_expected)  # fmt: skip
    return SliceFigure(dimension, value, float(p.sum()), float(y.sum()), int(p.size), verdict.state)


def _unseen(auctions: pa.Table, training: pa.Table, fields: list[str]) -> dict[str, float]:
    out = {}
    if auctions.num_rows == 0 or training.num_rows == 0:
        return out
    live_map = auctions["features"].combine_chunks()
    train_map = training["features"].combine_chunks()
    for field in fields:
        seen = pc.unique(pc.map_lookup(train_map, pa.scalar(field), "first"))
        values = pc.map_lookup(live_map, pa.scalar(field), "first")
        unseen = pc.invert(pc.is_in(values, value_set=seen, skip_nulls=False))
        out[field] = float(pc.sum(pc.cast(unseen, pa.int64())).as_py() or 0) / auctions.num_rows
    return out


def _shaping_scores(model: Any, auctions: pa.Table, bids: pa.Table) -> np.ndarray:
    """The shaping model's score of each (auction, DSP) bid event; NaN for unknown DSPs."""
    from openbid.ml import MultiModelScorer

    scores = np.full(bids.num_rows, np.nan)
    if bids.num_rows == 0:
        return scores
    at = pc.index_in(bids["auction_id"], value_set=auctions["auction_id"].combine_chunks())
    feature_map = auctions["features"].combine_chunks().take(at)
    dsp = np.asarray(bids["dsp"].to_pylist(), dtype=object)
    for name, artifact in model.artifacts.items():
        featurizer = artifact.featurizer()
        rows = np.flatnonzero(dsp == name) if name != "shared" else np.arange(bids.num_rows)
        if rows.size == 0:
            continue
        columns = {f: pc.map_lookup(feature_map.take(rows), pa.scalar(f), "first")
                   for f in featurizer.spec.field_names if f != "dsp"}  # fmt: skip
        if "dsp" in featurizer.spec.field_names:
            columns["dsp"] = pa.array(dsp[rows].tolist(), pa.string())
        hashed = featurizer.transform_columns(columns, n_rows=rows.size)
        scores[rows] = MultiModelScorer([artifact.scoring_model()]).score_batch(hashed)[:, 0]
    return scores


def _shaping(
    reader: Any, settings: Any, since: int, until: int, model: Any, pointer: Any
) -> PurposeReport:
    report = PurposeReport(purpose="shaping", model=pointer.version if pointer else "")
    auctions = _read(reader, "auction", since, until)
    bids = _read(reader, "bid", since, until)
    if bids.num_rows == 0:
        report.note = "no bid events in the window"
        return report
    sent = pc.and_(pc.not_equal(bids["decision"], "filtered"),
                   pc.invert(pc.is_in(bids["error"], pa.array(NOT_SENT))))  # fmt: skip
    scored = pc.and_(sent, pc.greater_equal(bids["shaping_score"], 0.0))
    calls = bids.filter(scored)
    p = calls["shaping_score"].to_numpy()
    y = np.asarray(calls["bid"].to_numpy(zero_copy_only=False), dtype=float)
    ids = calls["auction_id"].combine_chunks()
    dims = {name: (np.asarray(calls["dsp"].to_pylist(), dtype=object) if field == "dsp"
                   else _lookup(auctions, ids, field)) for name, field in SLICES.items()}  # fmt: skip
    report.rows = int(p.size)
    report.expected, report.actual = float(p.sum()), float(y.sum())
    report.slices = _by_slice(dims, p, y, settings)
    if p.size and 0 < y.sum() < y.size:
        curve = calibration_curve(y, p, 10)
        report.curve = [list(c) for c in zip(curve.mean_predicted, curve.observed_rate,
                                             curve.rows, strict=True)]  # fmt: skip
    all_scores = bids["shaping_score"].to_numpy()
    report.mean_prediction = (
        float(all_scores[all_scores >= 0].mean()) if (all_scores >= 0).any() else math.nan
    )
    if model is not None:
        window = model.meta.training_window
        train_auctions = _read(reader, "auction", window.start_micros, window.end_micros + 1)
        train_bids = _read(reader, "bid", window.start_micros, window.end_micros + 1)
        replayed = _shaping_scores(model, train_auctions, train_bids)
        if np.isfinite(replayed).any():
            report.training_mean_prediction = float(np.nanmean(replayed))
            report.mean_prediction_drift = (
                report.mean_prediction / report.training_mean_prediction - 1
            )
        fields = next(iter(model.artifacts.values())).meta.spec.categorical
        report.unseen_share = _unseen(auctions, train_auctions, [f for f in fields if f != "dsp"])
    return report


def _pricing(reader: Any, settings: Any, purpose: str, since: int, until: int, artifact: Any,
             pointer: Any) -> PurposeReport:  # fmt: skip
    """Click (`ctr`) or conversion (`cvr`) model replayed on the window's impressions."""
    from openbid.ml import MultiModelScorer

    report = PurposeReport(purpose=purpose, model=pointer.version)
    impressions = _read(reader, "impression", since, until)
    if impressions.num_rows == 0:
        report.note = "no impressions in the window"
        return report
    auctions = _read(reader, "auction", since - HOUR_MICROS, until)
    kind = "click" if purpose == "ctr" else "conversion"
    outcomes = _read(reader, kind, since, until + 7 * 24 * HOUR_MICROS)
    if kind == "conversion" and outcomes.num_rows:
        outcomes = outcomes.filter(pc.not_equal(outcomes["attribution"], "none"))
    key = pc.binary_join_element_wise(impressions["auction_id"], impressions["bid_id"], "\x1f")
    hit = (
        pc.binary_join_element_wise(outcomes["auction_id"], outcomes["bid_id"], "\x1f")
        if outcomes.num_rows
        else pa.array([], pa.string())
    )
    y = np.asarray(pc.is_in(key, value_set=hit).to_numpy(zero_copy_only=False), dtype=float)
    ids = impressions["auction_id"].combine_chunks()
    featurizer = artifact.featurizer()
    columns = {f: _lookup(auctions, ids, f) for f in featurizer.spec.field_names}
    columns = {
        k: pa.array([v or None for v in vals.tolist()], pa.string()) for k, vals in columns.items()
    }
    hashed = featurizer.transform_columns(columns, n_rows=impressions.num_rows)
    p = MultiModelScorer([artifact.scoring_model()]).score_batch(hashed)[:, 0]
    dims = {name: (np.asarray(impressions["dsp"].to_pylist(), dtype=object) if field == "dsp"
                   else _lookup(auctions, ids, field)) for name, field in SLICES.items()}  # fmt: skip
    report.rows = int(p.size)
    report.expected, report.actual = float(p.sum()), float(y.sum())
    report.slices = _by_slice(dims, p, y, settings)
    report.mean_prediction = float(p.mean())
    window = artifact.meta.training_window
    train_auctions = _read(reader, "auction", window.start_micros, window.end_micros + 1)
    report.unseen_share = _unseen(auctions, train_auctions, list(featurizer.spec.categorical))
    return report


def run_monitor_job(config: Config, *, window_s: float = 3600.0, now_micros: int | None = None,
                    alerter: Alerter | None = None) -> JobReport:  # fmt: skip
    """One run of the job (module doc) over the last `window_s` market seconds."""
    from openbid.events import EventReader
    from openbid.ml import load_model
    from openbid.pipeline.modelstore import ModelStore, ModelStoreError
    from openbid.shaping.model import load_shaping_model

    settings = config.monitoring
    until = clock.now_micros() if now_micros is None else now_micros
    since = until - int(window_s * 1e6)
    reader = EventReader(config.events.dir, segments_url=config.events.segments_url)
    store = ModelStore(config.models.store_url)
    cache = Path(config.models.cache_dir) / "monitor"
    reports = []
    for purpose in ("shaping", "ctr", "cvr"):
        try:
            pointer = store.read_pointer(purpose, config.models.alias)
            path = store.fetch(pointer, cache) if pointer is not None else None
        except ModelStoreError as exc:
            reports.append(PurposeReport(purpose=purpose, note=f"model store: {exc}"))
            continue
        if purpose == "shaping":
            model = load_shaping_model(path) if path is not None else None
            report = _shaping(reader, settings, since, until, model, pointer)
        elif path is None:
            continue
        else:
            report = _pricing(reader, settings, purpose, since, until, load_model(path), pointer)
        if pointer is not None and pointer.trained_end_micros:
            report.model_age_s = (until - pointer.trained_end_micros) / 1e6
        reports.append(report)
    job = JobReport(since_micros=since, until_micros=until, purposes=reports)
    if alerter is not None:
        for report in reports:
            for figure in report.slices:
                labels = {"purpose": report.purpose, "arm": "job",
                          "slice": "all" if figure.dimension == "all" else f"{figure.dimension}={figure.value}"}  # fmt: skip
                if figure.state == "off":
                    alerter.fire("calibration", labels,
                                 f"{report.purpose} model {report.model}: expected {figure.expected:.1f}, "
                                 f"actual {figure.actual:.0f} over the last {window_s:.0f} s",
                                 figure.expected / figure.actual if figure.actual else math.inf)  # fmt: skip
                elif figure.state == "ok":
                    alerter.resolve("calibration", labels)
    return job


def write_outputs(job: JobReport, directory: str | Path) -> tuple[Path, Path]:
    """`report.json` and `openbid.prom` (Prometheus text format) under `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    report = directory / "report.json"
    report.write_bytes(msgspec.json.format(msgspec.json.encode(job)))
    lines = []

    def gauge(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            if not math.isfinite(value):
                continue
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {value:.10g}")

    rows = [(p, s) for p in job.purposes for s in p.slices]
    gauge("openbid_monitor_expected", "Positives the serving model expected in the job's window",
          [({"purpose": p.purpose, "dimension": s.dimension, "value": s.value}, s.expected) for p, s in rows])  # fmt: skip
    gauge("openbid_monitor_actual", "Positives observed in the job's window",
          [({"purpose": p.purpose, "dimension": s.dimension, "value": s.value}, s.actual) for p, s in rows])  # fmt: skip
    gauge("openbid_monitor_mean_prediction_drift", "Mean prediction in the window / on the training window - 1",
          [({"purpose": p.purpose}, p.mean_prediction_drift) for p in job.purposes])  # fmt: skip
    gauge("openbid_monitor_unseen_share", "Share of the window's auctions with a value the training window never had",
          [({"purpose": p.purpose, "field": f}, v) for p in job.purposes for f, v in p.unseen_share.items()])  # fmt: skip
    gauge("openbid_monitor_model_age_seconds", "Market seconds since the serving model's training window ended",
          [({"purpose": p.purpose}, p.model_age_s) for p in job.purposes])  # fmt: skip
    prom = directory / "openbid.prom"
    tmp = directory / ".openbid.prom.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(prom)
    return report, prom


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
