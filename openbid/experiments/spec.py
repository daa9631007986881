"""An experiment: one YAML file saying what to train and how to test it (a backtest).

```yaml
name: ctr-country-os            # default: the file's name
purpose: click                  # shaping | click | conversion
data:
  events: var/events            # the event log (default: the config's); or:
  # training_set: var/training/click/20261122T000000Z_20261123T000000Z
train: {since: "-7d", until: "-1d"}   # relative to the end of the data, or ISO-8601 UTC
test: {since: "-1d"}                  # `until` defaults to the end of the data
features:                       # an `openbid.ml.FeatureSpec`: raw logged values, any field
  categorical: [country, os, site_id, dsp]
  crosses: [[country, os]]
  hash_bits: 20
learner:
  kind: ftrl_lr                 # ftrl_lr | fm | auto (openbid.ml.fit_auto)
  params: {alpha: 0.1, l2: 1.0, n_passes: 2}
  calibration: none             # none | platt | isotonic: fit on the training window's tail
sampling: {negative_keep_rate: 1.0, max_train_rows: 0, seed: 0}
slices: [country, device_type]  # expected / actual by these fields
shaping: {layout: per_dsp, target_kind: recall, target: 0.99}
```

Loading is strict: an unknown key anywhere (`learner.params` included, checked against
the learner's own hyper-parameters) is refused with its dotted path, as is a value of the
wrong type or out of range.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta

from openbid.errors import OpenbidError
from openbid.ml import FeatureSpec, FeatureSpecError
from openbid.ml.auto import AutoSettings
from openbid.ml.features import validate_spec

Purpose = Literal["shaping", "click", "conversion"]
SET_OF = {"shaping": "shaping", "click": "click", "conversion": "conversion"}
DEFAULT_SLICES = ("publisher_id", "dsp", "country", "device_type", "hour")


class ExperimentError(OpenbidError):
    """An experiment file cannot be used; the message names the file and the key."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Window(_Strict):
    since: str = ""
    """ISO-8601 UTC (`2026-11-22T21:00`) or relative to the end of the data (`-6h`, `-7d`,
    `-90m`, `-30s`, `end`); empty: the start of the data."""
    until: str = ""
    """The same; empty: the end of the data."""


class Data(_Strict):
    events: str = ""
    """The event log directory; empty: the config's `events.dir` (and `segments_url`)."""
    segments_url: str = ""
    training_set: str = ""
    """An ETL output directory (`openbid etl build`) instead of the event log."""


class FtrlParams(_Strict):
    alpha: Annotated[float, Meta(gt=0)] = 0.1
    beta: Annotated[float, Meta(ge=0)] = 1.0
    l1: Annotated[float, Meta(ge=0)] = 0.0
    l2: Annotated[float, Meta(ge=0)] = 1.0
    n_passes: Annotated[int, Meta(ge=1, le=50)] = 2


class FmParams(FtrlParams):
    n_factors: Annotated[int, Meta(ge=1, le=64)] = 8
    factor_learning_rate: Annotated[float, Meta(gt=0)] = 0.01
    factor_l2: Annotated[float, Meta(ge=0)] = 1e-4
    init_std: Annotated[float, Meta(gt=0)] = 0.01
    random_state: int = 0


PARAMS = {"ftrl_lr": FtrlParams, "fm": FmParams, "auto": AutoSettings}


class Learner(_Strict):
    kind: Literal["ftrl_lr", "fm", "auto"] = "ftrl_lr"
    params: dict[str, Any] = {}
    """The learner's hyper-parameters (`FtrlParams`, `FmParams`, `openbid.ml.AutoSettings`)."""
    calibration: Literal["none", "platt", "isotonic"] = "none"
    validation_share: Annotated[float, Meta(gt=0.0, lt=0.5)] = 0.2
    """The training window's last share (in time) that fits the calibration (and, for
    shaping, chooses the thresholds): the test window is never used to tune."""


class Sampling(_Strict):
    negative_keep_rate: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0
    """Negatives of the training window kept with this probability (weighted back up)."""
    max_train_rows: Annotated[int, Meta(ge=0)] = 0
    """Train on at most the last this many rows (0: all)."""
    seed: int = 0


class Shaping(_Strict):
    layout: Literal["per_dsp", "shared"] = "per_dsp"
    target_kind: Literal["recall", "value"] = "recall"
    target: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.99


class Experiment(_Strict, kw_only=True):
    purpose: Purpose
    name: str = ""
    data: Data = msgspec.field(default_factory=Data)
    train: Window = msgspec.field(default_factory=Window)
    test: Window = msgspec.field(default_factory=lambda: Window(since="-1d"))
    features: FeatureSpec
    learner: Learner = msgspec.field(default_factory=Learner)
    sampling: Sampling = msgspec.field(default_factory=Sampling)
    slices: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_SLICES))
    shaping: Shaping = msgspec.field(default_factory=Shaping)
    path: str = ""
    """Where it was loaded from (set by the loader)."""

    def learner_params(self) -> Any:
        """The learner's hyper-parameters as their typed struct."""
        return msgspec.convert(self.learner.params, PARAMS[self.learner.kind])


_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")


def _key_and_reason(error: msgspec.ValidationError, prefix: str = "") -> tuple[str, str]:
    text = str(error)
    match = _PATH_RE.search(text)
    path = match.group("path").lstrip(".") if match else ""
    reason = text[: match.start()] if match else text
    unknown = _UNKNOWN_RE.match(reason)
    if unknown:
        path = f"{path}.{unknown.group('field')}" if path else unknown.group("field")
        reason = "unknown key"
    path = ".".join(p for p in (prefix, path) if p)
    return path or "(root)", reason.replace("`", "")


def parse_experiment(data: Any, source: str = "<experiment>") -> Experiment:
    """An `Experiment` from parsed YAML, or `ExperimentError` naming `source` and the key."""
    if not isinstance(data, dict):
        raise ExperimentError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    try:
        experiment = msgspec.convert(data, Experiment)
    except msgspec.ValidationError as exc:
        key, reason = _key_and_reason(exc)
        raise ExperimentError(f"{source}: {key}: {reason}") from None
    try:
        experiment.learner_params()
    except msgspec.ValidationError as exc:
        key, reason = _key_and_reason(exc, "learner.params")
        raise ExperimentError(
            f"{source}: {key}: {reason} (for learner {experiment.learner.kind})"
        ) from None
    try:
        validate_spec(experiment.features)
    except FeatureSpecError as exc:
        raise ExperimentError(f"{source}: features: {exc}") from None
    if experiment.purpose == "shaping" and experiment.learner.kind != "ftrl_lr":
        raise ExperimentError(f"{source}: learner.kind: shaping trains ftrl_lr only")
    for key in ("since", "until"):
        for window in ("train", "test"):
            value = getattr(getattr(experiment, window), key)
            try:
                parse_time(value, end_micros=0)
            except ValueError as exc:
                raise ExperimentError(f"{source}: {window}.{key}: {exc}") from None
    return experiment


def load_experiment(path: str | Path) -> Experiment:
    """Reads and checks one experiment file (see the module doc)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExperimentError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path}: not valid YAML: {exc}") from None
    experiment = parse_experiment(data, str(path))
    return msgspec.structs.replace(experiment, name=experiment.name or path.stem, path=str(path))


_RELATIVE_RE = re.compile(r"^-(?P<n>\d+(\.\d+)?)(?P<unit>[smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: str, *, end_micros: int) -> int | None:
    """A window bound in micros: None for empty, `end` or `-6h` relative to `end_micros`,
    else ISO-8601 (UTC unless it says otherwise). Raises ValueError saying what it expects.

    >>> parse_time("-2h", end_micros=10_000_000_000), parse_time("", end_micros=0)
    (2800000000, None)
    >>> parse_time("1970-01-01T00:00:10", end_micros=0)
    10000000
    """
    value = value.strip()
    if not value:
        return None
    if value == "end":
        return end_micros
    match = _RELATIVE_RE.match(value)
    if match:
        return end_micros - int(float(match.group("n")) * _UNIT_S[match.group("unit")] * 1e6)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{value!r} is neither ISO-8601 (2026-11-22T21:00) nor relative (-6h, -7d, end)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)
