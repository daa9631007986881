"""A training job, the one `openbid train {shaping,ctr,cvr}` and the scheduler run: ETL ->
train -> gate -> register -> promote.

1. **Data**: the purpose's training set (shaping, click, conversion) of the last
   `train.history_s` of market time, built by the ETL (`build_training_set`; reused when a
   complete set of exactly that window exists) or read from a given set directory.
2. **Train** on every row but the latest window held out (`train_models.train_candidate`;
   the window is a share of the rows, widened to a minimum of rows and positives: minutes
   of data in the demo, days in production). Too little data is a `skipped` job, not an error.
3. **Gate** (`openbid.ml.gate_model`) on the held-out window: enough rows and positives,
   no NaN or infinite prediction, expected / actual near 1, log loss below the window's base
   rate's and not above the production model's (same rows) by more than a margin. A refusal
   is logged with its numbers; nothing is registered.
4. **Register** the model that passed, as `challenger`, with the gate's numbers as metrics
   and the held-out calibration curves as the plot.
5. **Promote** by policy (`train.promote`): `better` (the default) makes it production when
   its held-out log loss is below production's on the same rows, or when there is no
   production model yet; `gate` always; `never` leaves it to a person.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import fsspec
import msgspec
import numpy as np

from openbid import clock
from openbid.config import Config
from openbid.errors import OpenbidError
from openbid.ml import AutoSettings, GateSettings, GateVerdict, TrainingDataError, gate_model
from openbid.pipeline.modelstore import ModelStore
from openbid.pipeline.train_data import NotEnoughData, effective_weights
from openbid.pipeline.train_models import SET_OF, Candidate, train_candidate
from openbid.shaping.errors import ShapingDataError

log = logging.getLogger(__name__)

Status = Literal["promoted", "registered", "passed", "refused", "skipped", "failed"]
"""`passed`: the gate passed and the job was told not to register."""
MICROS = 1_000_000


class JobResult(msgspec.Struct, kw_only=True):
    """What one job did, as the run table and `openbid train` report it."""

    purpose: str
    status: Status
    reason: str = ""
    """Why it was refused, skipped or failed; for a registered model, why it was or was not
    promoted."""
    rows: int = 0
    """Rows of the training set read (before the held-out cut)."""
    positives: float = 0.0
    set_path: str = ""
    window_since_micros: int = 0
    window_until_micros: int = 0
    """The training set's closed window (rows after it wait for their window to close)."""
    trained_end_micros: int = 0
    """The last event the model trained on (its age counts from here)."""
    metrics: dict[str, float] = {}
    version: str = ""
    """The registered version ("" when nothing was registered)."""
    production_version: str = ""
    """The version serving when the job started ("" for none)."""
    promoted: bool = False
    seconds: dict[str, float] = {}
    """Real seconds of each step: etl, train, gate, register, promote."""


def gate_settings(config: Config, purpose: str = "ctr") -> GateSettings:
    train = config.train
    band = train.shaping_calibration_band if purpose == "shaping" else train.calibration_band
    return GateSettings(
        min_rows=train.min_eval_rows,
        min_positives=train.min_eval_positives,
        calibration_band=band,
        production_margin=train.production_margin,
    )


def verdict_metrics(verdict: GateVerdict, candidate: Candidate) -> dict[str, float]:
    """The gate's numbers (and the production model's on the same rows) as metrics."""
    metrics = {
        "heldout_rows": float(verdict.rows),
        "heldout_positives": verdict.positives,  # effective (see `effective_weights`)
        "heldout_positive_rows": float(np.count_nonzero(candidate.labels > 0)),
        "heldout_base_rate": verdict.base_rate,
        "heldout_mean_prediction": verdict.mean_prediction,
        "heldout_calibration_ratio": verdict.calibration_ratio,
        "heldout_logloss": verdict.logloss,
        "heldout_base_logloss": verdict.base_logloss,
        "heldout_normalized_entropy": verdict.normalized_entropy,
    }
    if candidate.production is not None and verdict.production_logloss is not None:
        weights, labels = candidate.weights, candidate.labels
        clicks = float((weights * labels).sum())
        expected = float((weights * candidate.production).sum())
        metrics["production_logloss"] = verdict.production_logloss
        metrics["production_calibration_ratio"] = expected / clicks if clicks > 0 else math.inf
    return metrics


def should_promote(policy: str, verdict: GateVerdict, has_production: bool) -> tuple[bool, str]:
    """Whether a model that passed the gate becomes production, and why (a pure function).

    >>> v = GateVerdict(True, [], 1000, 30.0, 0.03, 0.03, 1.0, 0.1, 0.12, 0.13, 0.92, 0.125)
    >>> should_promote("better", v, True)
    (True, 'held-out log loss 0.12000 below production 0.12500')
    >>> should_promote("better", v, False)[0], should_promote("never", v, False)[0]
    (True, False)
    """
    if policy == "never":
        return False, "train.promote = never: left as challenger"
    if not has_production:
        return True, "first model to pass the gate"
    if policy == "gate":
        return True, "train.promote = gate: every model that passes is promoted"
    production = verdict.production_logloss
    if production is None or verdict.logloss < production:
        return True, f"held-out log loss {verdict.logloss:.5f} below production {production:.5f}"
    return False, (
        f"held-out log loss {verdict.logloss:.5f} not below production's {production:.5f}: "
        "left as challenger"
    )


def run_job(
    purpose: str,
    config: Config,
    *,
    since_micros: int | None = None,
    until_micros: int | None = None,
    set_path: str | None = None,
    promote: str | None = None,
    register: bool = True,
    out_dir: Path | None = None,
    registry: Any = None,
    progress: Any = None,
) -> JobResult:
    """Runs one training job (module doc) and returns what it did. Too little data is a
    `skipped` result; a registry, store or ETL failure raises (the scheduler retries it).
    `register=False` stops after the gate; `out_dir` also writes the model that passed
    there (a directory `exchange.shaping_model` can name)."""
    if purpose not in SET_OF:
        raise OpenbidError(f"unknown purpose {purpose!r}; expected shaping, ctr or cvr")
    policy = promote or config.train.promote
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    tables, manifest = _training_set(
        purpose, config, since_micros, until_micros, set_path, progress
    )
    seconds["etl"] = time.perf_counter() - started
    result = JobResult(
        purpose=purpose,
        status="skipped",
        rows=int(manifest["rows"]),
        positives=float(manifest["positives"]),
        set_path=str(manifest.get("path", set_path or "")),
        window_since_micros=int(manifest["window"]["since_micros"]),
        window_until_micros=int(manifest["window"]["closed_until_micros"]),
        seconds=seconds,
    )
    # the store, not MLflow (seconds to import): a job skipped for want of data never loads it
    store = registry.store if registry is not None else ModelStore(config.models.store_url)
    pointer = store.read_pointer(purpose, "production")
    result.production_version = pointer.version if pointer is not None else ""
    with tempfile.TemporaryDirectory(prefix=f"openbid-train-{purpose}-") as tmp:
        production_dir = None
        if pointer is not None:
            production_dir = store.fetch(pointer, Path(tmp) / "production")
        started = time.perf_counter()
        try:
            candidate = train_candidate(
                purpose,
                tables,
                config.train,
                production_dir,
                auto=AutoSettings(kind=config.train.learner),
            )
        except (NotEnoughData, TrainingDataError, ShapingDataError) as exc:
            result.reason = f"not enough data yet: {exc}"
            seconds["train"] = time.perf_counter() - started
            log.info("training job skipped", extra={"purpose": purpose, "reason": result.reason})
            return result
        seconds["train"] = time.perf_counter() - started
        result.trained_end_micros = candidate.window.end_micros
        started = time.perf_counter()
        candidate.weights = effective_weights(candidate.labels, candidate.weights)
        verdict = gate_model(
            candidate.labels,
            candidate.predictions,
            candidate.weights,
            production=candidate.production,
            settings=gate_settings(config, purpose),
        )
        seconds["gate"] = time.perf_counter() - started
        result.metrics = {**candidate.metrics, **verdict_metrics(verdict, candidate)}
        if not verdict.passed:
            result.status = "refused"
            result.reason = "; ".join(verdict.reasons)
            log.warning(
                "model refused by the gate; nothing registered",
                extra={"purpose": purpose, "reasons": verdict.reasons, **_figures(result)},
            )
            return result
        started = time.perf_counter()
        artifact = candidate.save(Path(tmp) / "candidate")
        if out_dir is not None:
            _replace_directory(artifact, Path(out_dir))
        if not register:
            result.status = "passed"
            result.reason = "the gate passed; not registered (--no-register)"
            return result
        if registry is None:
            from openbid.pipeline.registry import Registry

            registry = Registry(config.models)
        info = registry.register(
            purpose,
            artifact,
            params={**candidate.params, "training_set": result.set_path},
            metrics={k: v for k, v in result.metrics.items() if math.isfinite(v)},
            calibration_curves=candidate.curves(),
            alias="challenger",
            tags={
                "openbid.heldout_since_micros": str(candidate.heldout_since_micros),
                "openbid.heldout_until_micros": str(candidate.heldout_until_micros),
            },
        )
        seconds["register"] = time.perf_counter() - started
    result.version = info.version
    result.status = "registered"
    promote_it, why = should_promote(policy, verdict, pointer is not None)
    result.reason = why
    if promote_it:
        started = time.perf_counter()
        registry.promote(purpose, info.version, "production", reason=why)
        seconds["promote"] = time.perf_counter() - started
        result.status = "promoted"
        result.promoted = True
    log.info(
        "training job done",
        extra={
            "purpose": purpose,
            "status": result.status,
            "version": result.version,
            "reason": why,
            **_figures(result),
        },
    )
    return result


def _figures(result: JobResult) -> dict[str, float]:
    keys = ("heldout_rows", "heldout_positives", "heldout_calibration_ratio", "heldout_logloss")
    keys += ("heldout_base_logloss", "production_logloss")
    return {key: round(result.metrics[key], 6) for key in keys if key in result.metrics}


def _training_set(
    purpose: str,
    config: Config,
    since_micros: int | None,
    until_micros: int | None,
    set_path: str | None,
    progress: Any,
) -> tuple[dict, dict]:
    """The purpose's training set: the one at `set_path`, else a complete one of exactly
    this window when the ETL built it before, else built now (then older sets pruned)."""
    from openbid.pipeline.build import (
        MANIFEST_NAME,
        Windows,
        build_training_set,
        read_training_set,
        set_directory,
    )

    if set_path is not None:
        return read_training_set(set_path)
    set_name = SET_OF[purpose]
    etl = config.etl
    out_url = etl.out_url
    if since_micros is None and config.train.history_s > 0:
        end = clock.now_micros() if until_micros is None else until_micros
        since_micros = max(0, end - int(config.train.history_s * MICROS))
    if until_micros is not None and since_micros is not None:
        path = set_directory(out_url, set_name, since_micros, until_micros)
        fs, root = fsspec.core.url_to_fs(path)
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            manifest = json.loads(fs.cat_file(f"{root}/{MANIFEST_NAME}"))
            if manifest["window"]["closed_until_micros"] >= until_micros:  # every row closed
                return read_training_set(path)
    from openbid.pipeline.engines import open_engine
    from openbid.pipeline.source import EventSource

    source = EventSource(config.events.dir, segments_url=config.events.segments_url)
    engine = open_engine(
        etl.engine, duckdb_threads=etl.duckdb_threads, spark_master=etl.spark_master
    )
    try:
        manifest = build_training_set(
            set_name,
            source,
            engine,
            Windows.from_config(etl),
            out_url,
            since_micros=since_micros,
            until_micros=until_micros,
            progress=progress,
        )
    finally:
        engine.close()
    prune_training_sets(out_url, set_name, keep=config.train.keep_sets, keep_path=manifest.path)
    return read_training_set(manifest.path)


def _replace_directory(source: Path, target: Path) -> None:
    """Copies the model directory `source` to `target`, replacing it whole (readers see the
    old directory or the new one)."""
    import shutil

    from openbid.ml.artifacts import publish_directory

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    shutil.rmtree(staging)
    shutil.copytree(source, staging)
    publish_directory(staging, target)


def prune_training_sets(
    out_url: str, set_name: str, *, keep: int, keep_path: str = ""
) -> list[str]:
    """Deletes the complete training sets of `set_name` under `out_url` beyond the `keep`
    built last (never `keep_path`); returns the directories deleted."""
    fs, root = fsspec.core.url_to_fs(f"{out_url.rstrip('/')}/{set_name}")
    found = []
    for manifest_path in fs.glob(f"{root}/*/manifest.json"):
        try:
            manifest = json.loads(fs.cat_file(manifest_path))
        except (OSError, ValueError):
            continue
        found.append((int(manifest.get("created_at_micros", 0)), manifest_path.rsplit("/", 1)[0]))
    found.sort(reverse=True)
    deleted = []
    keep_root = fsspec.core.url_to_fs(keep_path)[1].rstrip("/") if keep_path else ""
    for _, directory in found[keep:]:
        if directory.rstrip("/") == keep_root:
            continue
        with contextlib.suppress(FileNotFoundError):
            fs.rm(directory, recursive=True)
            deleted.append(directory)
    return deleted
