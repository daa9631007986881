"""The shaping model directory: learners, thresholds and what they were made from.

```
<dir>/shaping.json        version, layout, DSPs, feature spec hash, thresholds, target,
                          exploration share, training window, metrics, frontier
<dir>/models/<dsp>/       one `openbid.ml` artifact per DSP (layout per_dsp)
<dir>/models/shared/      or one for all DSPs (layout shared)
```

`save_shaping_model` writes it atomically (a staging directory renamed into place);
`load_shaping_model` checks every part (each learner with `openbid.ml.load_model`, the
spec hash, one threshold in [0, 1] per DSP with a model) and raises `ShapingModelError`
naming what is wrong, so a server refuses a bad directory and keeps the model it has.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec

from openbid.ml import ModelArtifact, ModelArtifactError, TrainingWindow, load_model, save_model
from openbid.ml.artifacts import publish_directory
from openbid.ml.features import spec_hash
from openbid.shaping.errors import ShapingModelError
from openbid.shaping.features import LAYOUTS, shaping_spec
from openbid.shaping.thresholds import FrontierPoint
from openbid.shaping.training import TrainedShaping

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "shaping.json"
MODELS_DIR = "models"
SHARED = "shared"


class ShapingMeta(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format_version: int
    version: str
    layout: Literal["per_dsp", "shared"]
    dsps: list[str]
    """Every DSP seen in training; those without a threshold are always called."""
    spec_hash: str
    thresholds: dict[str, float]
    target_kind: Literal["recall", "value"]
    target: float
    exploration_share: float
    training_window: TrainingWindow
    created_at: str
    metrics: dict[str, dict[str, float]] = {}
    frontier: list[FrontierPoint] = []


class ShapingModel:
    """A loaded, validated shaping model: its metadata and one ml artifact per learner."""

    def __init__(self, path: Path, meta: ShapingMeta, artifacts: dict[str, ModelArtifact]):
        self.path = path
        self.meta = meta
        self.artifacts = artifacts

    @property
    def version(self) -> str:
        return self.meta.version


def new_version(created: datetime) -> str:
    """A version name that sorts by time and does not repeat: `20240310T120000-3fa9c1`."""
    return f"{created:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def save_shaping_model(
    trained: TrainedShaping, path: str | Path, *, version: str = "", overwrite: bool = False
) -> Path:
    """Write `trained` as a shaping model directory at `path`, all or nothing."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ShapingModelError(f"{path} already exists; pass overwrite=True to replace it")
    if not trained.learners:
        raise ShapingModelError("refusing to save a shaping model without any learner")
    created = datetime.now(UTC)
    window = TrainingWindow(trained.window_start_micros, trained.window_end_micros, trained.rows)
    meta = ShapingMeta(
        format_version=FORMAT_VERSION,
        version=version or new_version(created),
        layout=trained.layout,
        dsps=list(trained.dsps),
        spec_hash=spec_hash(trained.spec),
        thresholds=dict(trained.thresholds),
        target_kind=trained.target_kind,
        target=trained.target,
        exploration_share=trained.exploration_share,
        training_window=window,
        created_at=created.isoformat(timespec="seconds"),
        metrics=trained.metrics,
        frontier=trained.frontier,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, learner in trained.learners.items():
            save_model(
                learner,
                staging / MODELS_DIR / name,
                trained.spec,
                name=name,
                training_window=window,
                metrics=trained.metrics.get(name, {}),
                include_state=True,
            )
        meta_path = staging / META_FILE
        meta_path.write_bytes(msgspec.json.format(msgspec.json.encode(meta)))
        with meta_path.open("rb") as f:
            os.fsync(f.fileno())
        publish_directory(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("shaping model saved", extra={"path": str(path), "version": meta.version})
    return path


def load_shaping_model(path: str | Path) -> ShapingModel:
    """Load and validate a shaping model directory (see the module doc)."""
    path = Path(path)
    meta_path = path / META_FILE
    try:
        raw = meta_path.read_bytes()
    except OSError as exc:
        raise ShapingModelError(f"{meta_path}: cannot read ({exc.strerror})") from exc
    try:
        meta = msgspec.json.decode(raw, type=ShapingMeta)
    except msgspec.DecodeError as exc:
        raise ShapingModelError(f"{meta_path}: invalid shaping metadata: {exc}") from exc
    if meta.format_version != FORMAT_VERSION:
        raise ShapingModelError(
            f"{meta_path}: format_version {meta.format_version} is not supported "
            f"(this openbid reads {FORMAT_VERSION})"
        )
    if meta.layout not in LAYOUTS:
        raise ShapingModelError(f"{meta_path}: field layout: unknown {meta.layout!r}")
    for dsp, threshold in meta.thresholds.items():
        if dsp not in meta.dsps:
            raise ShapingModelError(f"{meta_path}: field thresholds.{dsp}: not in dsps")
        if not 0.0 <= threshold <= 1.0:
            raise ShapingModelError(
                f"{meta_path}: field thresholds.{dsp}: {threshold} is not a probability"
            )
    if not 0.0 < meta.exploration_share <= 1.0:
        raise ShapingModelError(
            f"{meta_path}: field exploration_share: {meta.exploration_share} not in (0, 1]"
        )
    names = [SHARED] if meta.layout == "shared" else list(meta.thresholds)
    if not names:
        raise ShapingModelError(f"{meta_path}: field thresholds: no DSP has a model")
    artifacts = {}
    for name in names:
        try:
            artifact = load_model(path / MODELS_DIR / name, expected_spec_hash=meta.spec_hash)
        except ModelArtifactError as exc:
            raise ShapingModelError(f"{path}: model {name!r}: {exc}") from exc
        if artifact.meta.kind != "ftrl_lr":
            raise ShapingModelError(
                f"{path}: model {name!r} is a {artifact.meta.kind}, not ftrl_lr"
            )
        artifacts[name] = artifact
    expected = spec_hash(
        shaping_spec(meta.layout, next(iter(artifacts.values())).meta.spec.hash_bits)
    )
    if meta.spec_hash != expected:
        raise ShapingModelError(
            f"{meta_path}: field spec_hash {meta.spec_hash} is not the {meta.layout} shaping "
            f"spec of this openbid ({expected}); retrain with `openbid train shaping`"
        )
    return ShapingModel(path, meta, artifacts)
