"""What the registry records of a model directory: it is validated as a server would load
it (every file, shape and hash) and summarised (parameters, metrics, training window,
calibration) for MLflow, with the calibration plot as a PNG."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import msgspec

from openbid.errors import OpenbidError
from openbid.ml import CalibrationCurve, CalibrationTable, plot_calibration
from openbid.pipeline.modelstore import PURPOSES


class ArtifactInvalid(OpenbidError):
    """A model directory that must not be registered; the message names the problem."""


class ArtifactSummary(msgspec.Struct, frozen=True):
    """What the registry records of an artifact, read from its own metadata."""

    kind: str
    model_version: str
    spec_hash: str
    trained_start_micros: int
    trained_end_micros: int
    rows: int
    params: dict[str, str]
    metrics: dict[str, float]
    calibration: dict[str, CalibrationTable]


_KEY_RE = re.compile(r"[^A-Za-z0-9_\-. /]")


def mlflow_key(name: str) -> str:
    """A name MLflow accepts as a param or metric key."""
    return _KEY_RE.sub("_", name)[:250] or "_"


def describe_artifact(purpose: str, path: str | Path) -> ArtifactSummary:
    """Validates the artifact at `path` as the servers will (every file, shape and hash) and
    summarises it; `RegistryError` names what is wrong."""
    from openbid.ml import ModelArtifactError, load_model
    from openbid.shaping import ShapingModelError, load_shaping_model
    from openbid.shaping.model import META_FILE as SHAPING_META

    path = Path(path)
    if purpose not in PURPOSES:
        raise ArtifactInvalid(f"purpose {purpose!r}: expected one of {', '.join(PURPOSES)}")
    if not path.is_dir():
        raise ArtifactInvalid(f"{path}: not a model directory")
    if (path / SHAPING_META).exists() != (purpose == "shaping"):
        expected = "a shaping model directory" if purpose == "shaping" else "an openbid.ml model"
        raise ArtifactInvalid(f"{path}: a {purpose} model must be {expected}")
    if purpose == "shaping":
        try:
            shaping = load_shaping_model(path)
        except ShapingModelError as exc:
            raise ArtifactInvalid(f"refusing to register: {exc}") from exc
        meta = shaping.meta
        first = next(iter(shaping.artifacts.values())).meta
        params = {
            "layout": meta.layout,
            "target_kind": meta.target_kind,
            "target": str(meta.target),
            "exploration_share": str(meta.exploration_share),
            "dsps": str(len(meta.dsps)),
            "hash_bits": str(first.spec.hash_bits),
            **{f"learner.{k}": str(v) for k, v in first.hyper_parameters.items()},
        }
        metrics = {
            mlflow_key(f"{dsp}.{name}"): value
            for dsp, values in meta.metrics.items()
            for name, value in values.items()
        }
        metrics.update({mlflow_key(f"{dsp}.threshold"): t for dsp, t in meta.thresholds.items()})
        calibration = {
            name: artifact.meta.calibration
            for name, artifact in shaping.artifacts.items()
            if artifact.meta.calibration is not None
        }
        window = meta.training_window
        return ArtifactSummary(
            "shaping", meta.version, meta.spec_hash, window.start_micros, window.end_micros,
            window.rows, params, metrics, calibration,
        )  # fmt: skip
    try:
        artifact = load_model(path)
    except ModelArtifactError as exc:
        raise ArtifactInvalid(f"refusing to register: {exc}") from exc
    meta = artifact.meta
    params = {"kind": meta.kind, "hash_bits": str(meta.spec.hash_bits)}
    params.update({mlflow_key(k): str(v) for k, v in meta.hyper_parameters.items()})
    keep_rate = getattr(meta, "negative_keep_rate", None)
    if keep_rate is not None:
        params["negative_keep_rate"] = str(keep_rate)
    window = meta.training_window
    return ArtifactSummary(
        meta.kind, meta.name or meta.created_at, meta.spec_hash, window.start_micros,
        window.end_micros, window.rows, params, dict(meta.metrics),
        {purpose: meta.calibration} if meta.calibration is not None else {},
    )  # fmt: skip


def write_calibration_plot(
    summary: ArtifactSummary,
    curves: Mapping[str, CalibrationCurve] | None,
    directory: Path,
) -> Path | None:
    """A PNG of the held-out calibration curves the training job measured, else of the
    artifact's calibration tables (raw score -> served probability); None without either."""
    path = directory / "calibration.png"
    if curves:
        return plot_calibration(dict(curves), path, title="Calibration (held-out window)")
    if summary.calibration:
        as_curves = {
            name: CalibrationCurve(list(table.x), list(table.y), [0] * len(table.x))
            for name, table in summary.calibration.items()
        }
        return plot_calibration(as_curves, path, title="Calibration map (raw -> served)")
    return None
