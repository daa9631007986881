"""The model artifact: a directory with `.npy` weights (memory-mappable) and `model.json`.

`model.json` holds the kind, format version, the feature spec and its hash, the
hyper-parameters, the training window, metrics, the calibration table, the creation time
and, for every `.npy` file, its dtype, shape and SHA-256. `load_model` checks all of it
and refuses a missing, truncated, corrupt or mismatched artifact with `ModelArtifactError`
naming the file or field, so a server keeps the model it has.

Files: `weights.npy` (linear weights, float32 `(n_features,)`), for FMs `factors.npy`
(`(n_features, k)`); optional training state for continued training: `z.npy` and `n.npy`
(FTRL), `factor_sq_grad.npy` (FM AdaGrad).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np

from openbid.ml.calibration import CalibrationTable, validate_table
from openbid.ml.errors import ModelArtifactError, TrainingDataError
from openbid.ml.features import FeatureSpec, Featurizer, spec_hash, validate_spec
from openbid.ml.fm import FactorizationMachine
from openbid.ml.ftrl import FTRLLogisticRegression
from openbid.ml.sampling import served_table
from openbid.ml.scoring import ScoringModel

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "model.json"
_REQUIRED = {"ftrl_lr": ("weights",), "fm": ("weights", "factors")}
_STATE = {"ftrl_lr": ("z", "n"), "fm": ("z", "n", "factor_sq_grad")}


class ArrayInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    file: str
    dtype: str
    shape: list[int]
    sha256: str


class TrainingWindow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which data trained the model: event times (µs since epoch, UTC) and row count."""

    start_micros: int = 0
    end_micros: int = 0
    rows: int = 0


class ModelMeta(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: Literal["ftrl_lr", "fm"]
    format_version: int
    spec: FeatureSpec
    spec_hash: str
    hyper_parameters: dict[str, float | int | str | bool]
    training_window: TrainingWindow
    metrics: dict[str, float]
    created_at: str
    arrays: dict[str, ArrayInfo]
    calibration: CalibrationTable | None = None
    """The map from raw score to served probability, negative sampling correction included."""
    name: str = ""
    negative_keep_rate: float = 1.0
    """The probability each negative training row was kept with (1: not sampled); already
    folded into `calibration`."""


class ModelArtifact:
    """A loaded model: its metadata and arrays (read-only memory maps)."""

    def __init__(self, path: Path, meta: ModelMeta, arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.meta = meta
        self.arrays = arrays

    @property
    def weights(self) -> np.ndarray:
        return self.arrays["weights"]

    @property
    def factors(self) -> np.ndarray | None:
        return self.arrays.get("factors")

    def featurizer(self) -> Featurizer:
        return Featurizer(self.meta.spec)

    def scoring_model(self, name: str | None = None) -> ScoringModel:
        return ScoringModel(
            name or self.meta.name or self.path.name,
            self.weights,
            self.factors,
            self.meta.calibration,
            self.meta.spec_hash,
        )

    def learner(self) -> FTRLLogisticRegression | FactorizationMachine:
        """The learner with its training state restored, for more `partial_fit`."""
        missing = [name for name in _STATE[self.meta.kind] if name not in self.arrays]
        if missing:
            raise ModelArtifactError(
                f"{self.path}: saved without training state ({', '.join(missing)}.npy); "
                "it can serve but not continue training"
            )
        params = {k: v for k, v in self.meta.hyper_parameters.items() if k != "n_features"}
        state = np.stack([self.arrays["z"], self.arrays["n"]], axis=1)
        if self.meta.kind == "ftrl_lr":
            return FTRLLogisticRegression.from_state(state, **params)
        params.pop("n_factors", None)
        return FactorizationMachine.from_state(
            state, self.arrays["factors"], self.arrays["factor_sq_grad"], **params
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(
    learner: FTRLLogisticRegression | FactorizationMachine,
    path: str | Path,
    spec: FeatureSpec,
    *,
    name: str = "",
    training_window: TrainingWindow | None = None,
    metrics: dict[str, float] | None = None,
    calibration: CalibrationTable | None = None,
    negative_keep_rate: float = 1.0,
    include_state: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write `learner` as a model directory at `path`, atomically (all or nothing).

    `calibration` maps raw scores to probabilities on data sampled like the training rows;
    with `negative_keep_rate` < 1 (negatives kept with that probability) the stored table
    also maps them back to the full traffic (`served_table`), so served probabilities are
    unbiased."""
    path = Path(path)
    validate_spec(spec)
    if learner.n_features != spec.n_features:
        raise ModelArtifactError(
            f"learner has {learner.n_features} features but the spec hashes into "
            f"{spec.n_features} (hash_bits={spec.hash_bits})"
        )
    try:
        calibration = served_table(calibration, negative_keep_rate)
    except TrainingDataError as exc:
        raise ModelArtifactError(f"negative_keep_rate: {exc}") from exc
    if calibration is not None:
        validate_table(calibration)
    if path.exists() and not overwrite:
        raise ModelArtifactError(f"{path} already exists; pass overwrite=True to replace it")
    arrays = {"weights": learner.coef_}
    if learner.kind == "fm":
        arrays["factors"] = learner.factors_
    if include_state:
        arrays["z"], arrays["n"] = learner.z_and_n()
        if learner.kind == "fm":
            arrays["factor_sq_grad"] = learner.factor_sq_grad_
    if not all(np.all(np.isfinite(a)) for a in arrays.values()):
        raise ModelArtifactError("refusing to save a model with NaN or infinite weights")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        infos = {}
        for key, array in arrays.items():
            file = staging / f"{key}.npy"
            np.save(file, np.ascontiguousarray(array, dtype=np.float32))
            infos[key] = ArrayInfo(f"{key}.npy", "float32", list(array.shape), _sha256(file))
        meta = ModelMeta(
            kind=learner.kind,
            format_version=FORMAT_VERSION,
            spec=spec,
            spec_hash=spec_hash(spec),
            hyper_parameters=learner.get_params(),
            training_window=training_window or TrainingWindow(rows=learner.n_seen_),
            metrics=metrics or {},
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            arrays=infos,
            calibration=calibration,
            name=name,
            negative_keep_rate=float(negative_keep_rate),
        )
        (staging / META_FILE).write_bytes(msgspec.json.format(msgspec.json.encode(meta)))
        for file in staging.iterdir():
            with file.open("rb") as f:
                os.fsync(f.fileno())
        publish_directory(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("model saved", extra={"path": str(path), "kind": learner.kind})
    return path


def publish_directory(staging: Path, path: Path) -> None:
    """Puts a fully written (and fsync'd) `staging` directory in place of `path`: readers see
    the old directory or the new one, never a half-written one."""
    if path.exists():
        retired = path.with_name(f".{path.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        path.rename(retired)
        staging.rename(path)
        shutil.rmtree(retired)
    else:
        staging.rename(path)


def load_model(
    path: str | Path, expected_spec_hash: str | None = None, verify_checksums: bool = True
) -> ModelArtifact:
    """Load and validate a model directory; arrays are read-only memory maps.

    Raises `ModelArtifactError` if anything is missing, truncated, corrupt, or if the
    artifact's spec hash differs from `expected_spec_hash`.
    """
    path = Path(path)
    meta_path = path / META_FILE
    try:
        raw = meta_path.read_bytes()
    except OSError as exc:
        raise ModelArtifactError(f"{meta_path}: cannot read ({exc.strerror})") from exc
    try:
        meta = msgspec.json.decode(raw, type=ModelMeta)
    except msgspec.DecodeError as exc:
        raise ModelArtifactError(f"{meta_path}: invalid model metadata: {exc}") from exc
    if meta.format_version != FORMAT_VERSION:
        raise ModelArtifactError(
            f"{meta_path}: format_version {meta.format_version} is not supported "
            f"(this openbid reads {FORMAT_VERSION})"
        )
    if not 0.0 < meta.negative_keep_rate <= 1.0:
        raise ModelArtifactError(
            f"{meta_path}: field negative_keep_rate: {meta.negative_keep_rate} not in (0, 1]"
        )
    try:
        validate_spec(meta.spec)
        if meta.calibration is not None:
            validate_table(meta.calibration)
    except TrainingDataError as exc:
        raise ModelArtifactError(f"{meta_path}: field calibration: {exc}") from exc
    except ValueError as exc:
        raise ModelArtifactError(f"{meta_path}: field spec: {exc}") from exc
    actual_hash = spec_hash(meta.spec)
    if meta.spec_hash != actual_hash:
        raise ModelArtifactError(
            f"{meta_path}: field spec_hash is {meta.spec_hash} but the stored spec hashes to "
            f"{actual_hash}; the metadata was edited or damaged"
        )
    if expected_spec_hash is not None and meta.spec_hash != expected_spec_hash:
        raise ModelArtifactError(
            f"{path}: trained with feature spec {meta.spec_hash}, "
            f"but this server featurizes with {expected_spec_hash}"
        )
    missing = [key for key in _REQUIRED[meta.kind] if key not in meta.arrays]
    if missing:
        raise ModelArtifactError(f"{meta_path}: field arrays lacks {missing} for a {meta.kind}")
    n_features = meta.spec.n_features
    k = int(meta.hyper_parameters.get("n_factors", 0))
    expected_shapes = {
        "weights": [n_features],
        "z": [n_features],
        "n": [n_features],
        "factors": [n_features, k],
        "factor_sq_grad": [n_features, k],
    }
    arrays = {}
    for key, info in meta.arrays.items():
        if key not in expected_shapes or info.file != f"{key}.npy":
            raise ModelArtifactError(f"{meta_path}: field arrays has unknown entry {key!r}")
        if info.shape != expected_shapes[key] or info.dtype != "float32":
            raise ModelArtifactError(
                f"{meta_path}: field arrays.{key} says {info.dtype}{info.shape}, "
                f"expected float32{expected_shapes[key]} for this spec"
            )
        file = path / info.file
        if verify_checksums:
            try:
                digest = _sha256(file)
            except OSError as exc:
                raise ModelArtifactError(f"{file}: cannot read ({exc.strerror})") from exc
            if digest != info.sha256:
                raise ModelArtifactError(f"{file}: checksum mismatch (corrupt or truncated)")
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelArtifactError(f"{file}: not a readable .npy file ({exc})") from exc
        if list(array.shape) != info.shape or array.dtype != np.float32:
            raise ModelArtifactError(
                f"{file}: holds {array.dtype}{list(array.shape)}, "
                f"model.json says {info.dtype}{info.shape}"
            )
        arrays[key] = array
    return ModelArtifact(path, meta, arrays)
