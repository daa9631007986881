"""The model registry: MLflow tracking and model registry behind the calls the training
jobs, the scheduler and `openbid models` make (register, promote, rollback, list, show).

- **register** validates the artifact (a shaping model directory, or an `openbid.ml` model
  for `ctr`/`cvr`), then logs one MLflow run: parameters, metrics, the calibration plot and
  the artifact; and creates a version of the registered model `<prefix><purpose>`.
- **promote** points an alias (`production`, `challenger`, ...) at a version: MLflow's
  alias (never the deprecated stages), the alias's history (a registered-model tag, so
  `rollback` can go back), and the model store the servers read (`modelstore`): the
  artifact first, then the pointer, so servers never see a pointer before its files.
- **rollback** points the alias back at the version it named before the current one.

Writes are serialised: a thread lock and an `flock` on `models.lock_file` make one writer
per machine, and SQLite gets a busy timeout, so concurrent writers wait instead of failing
with "database is locked". Serving processes never import this module (MLflow takes
seconds to import, and a registry that is down must not stop serving): they read the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import msgspec
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from openbid import clock
from openbid.config import ModelsConfig
from openbid.errors import OpenbidError
from openbid.ml import CalibrationCurve
from openbid.pipeline.modelinfo import (
    ArtifactInvalid,
    ArtifactSummary,
    describe_artifact,
    mlflow_key,
    write_calibration_plot,
)
from openbid.pipeline.modelstore import (
    PURPOSES,
    ModelStore,
    ModelStoreError,
    Pointer,
    checksum_of,
    manifest_of,
)

log = logging.getLogger(__name__)

MODEL_PATH = "model"
"""Where a run keeps the artifact, among its MLflow artifacts."""
PLOTS_PATH = "plots"
HISTORY_MAX = 20
"""Entries of an alias's history kept (the versions it named, newest last)."""
TAG = "openbid."


class RegistryError(OpenbidError):
    """A registry call cannot be done as asked; the message says why and what to do."""


class RegistryUnavailable(RegistryError):
    """The tracking server or its database cannot be reached (serving is not affected)."""


class HistoryEntry(msgspec.Struct, frozen=True):
    version: str
    at: str
    """When the alias was pointed at it (ISO-8601 UTC, openbid's clock)."""
    reason: str = ""


class ModelVersionInfo(msgspec.Struct, frozen=True):
    """One registered version, as `openbid models list|show` prints it."""

    purpose: str
    version: str
    aliases: list[str]
    registered_at: str
    run_id: str
    model_version: str
    spec_hash: str
    trained_end_micros: int
    rows: int
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


class Promotion(msgspec.Struct, frozen=True):
    """An alias moved: from which version to which, and the pointer the servers now read."""

    purpose: str
    alias: str
    version: str
    previous: str
    pointer: Pointer


def _describe(purpose: str, path: str | Path) -> ArtifactSummary:
    try:
        return describe_artifact(purpose, path)
    except ArtifactInvalid as exc:
        raise RegistryError(str(exc)) from None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


class Registry:
    """The registry of `settings` (a `[models]` config section)."""

    def __init__(self, settings: ModelsConfig | None = None) -> None:
        self.settings = settings or ModelsConfig()
        self.tracking_uri = self._tracking_uri()
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self.store = ModelStore(self.settings.store_url)
        self._lock = threading.Lock()
        self._experiments: dict[str, str] = {}

    def _tracking_uri(self) -> str:
        uri = self.settings.tracking_uri
        scheme = urlparse(uri).scheme
        if scheme == "sqlite" and "timeout=" not in uri:
            # pysqlite's busy timeout: a second writer waits for the first, not "locked"
            separator = "&" if "?" in uri else "?"
            uri = f"{uri}{separator}timeout={self.settings.busy_timeout_s:g}"
        if scheme in ("http", "https"):
            # MLflow's defaults retry for minutes; a command should say "unreachable" soon.
            # Only defaults: a variable the user set wins.
            os.environ.setdefault(
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(self.settings.request_retries)
            )
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault(
                "MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(self.settings.request_timeout_s)))
            )
        return uri

    def name(self, purpose: str) -> str:
        """The registered model (and experiment) name of `purpose`."""
        if purpose not in PURPOSES:
            raise RegistryError(f"purpose {purpose!r}: expected one of {', '.join(PURPOSES)}")
        return f"{self.settings.name_prefix}{purpose}"

    # --- MLflow errors as ours
    @contextlib.contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        try:
            yield
        except MlflowException as exc:
            text = str(exc)
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(f"{what}: {text}") from None
            unreachable = (
                "API request to" in text or "Max retries" in text or "unable to open" in text
            )
            if unreachable:
                raise RegistryUnavailable(
                    f"{what}: the registry at {self.settings.tracking_uri} is unreachable "
                    f"({text.splitlines()[0][:300]}); serving is not affected"
                ) from None
            raise RegistryError(f"{what}: {text.splitlines()[0][:500]}") from None
        except OSError as exc:
            raise RegistryUnavailable(
                f"{what}: the registry at {self.settings.tracking_uri} is unreachable ({exc})"
            ) from None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One writer at a time: this process's threads (a lock), then this machine's
        processes (an flock on `models.lock_file`), waiting up to `busy_timeout_s`."""
        timeout_s = self.settings.busy_timeout_s
        if not self._lock.acquire(timeout=timeout_s):
            raise RegistryError(
                f"another registry write in this process held on for {timeout_s:g} s"
            )
        try:
            lock_path = Path(self.settings.lock_file)
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with lock_path.open("a") as handle:
                deadline = time.monotonic() + timeout_s
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise RegistryError(
                                f"{lock_path}: another registry writer held it for "
                                f"{timeout_s:g} s (models.busy_timeout_s)"
                            ) from None
                        time.sleep(0.05)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def _experiment(self, purpose: str) -> str:
        name = self.name(purpose)
        if name in self._experiments:
            return self._experiments[name]
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            location = self.settings.artifact_location
            if location and not urlparse(location).scheme:
                location = Path(location).resolve().as_uri()
            experiment_id = self.client.create_experiment(name, artifact_location=location or None)
        self._experiments[name] = experiment_id
        return experiment_id

    def _ensure_registered_model(self, name: str, purpose: str) -> None:
        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.client.create_registered_model(
                name, tags={f"{TAG}purpose": purpose}, description=f"openbid {purpose} models"
            )

    # --- writes
    def register(
        self,
        purpose: str,
        artifact_dir: str | Path,
        *,
        params: Mapping[str, object] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        calibration_curves: Mapping[str, CalibrationCurve] | None = None,
        alias: str | None = None,
        run_name: str | None = None,
    ) -> ModelVersionInfo:
        """Logs a run with the artifact at `artifact_dir` and registers it as a new version
        of `purpose`; `params`/`metrics` add the training job's own (held-out log loss...),
        `calibration_curves` its held-out reliability curves for the plot. With `alias`
        the version is promoted to it at once (e.g. `challenger`)."""
        name = self.name(purpose)
        summary = _describe(purpose, artifact_dir)
        all_params = {
            **summary.params,
            **{mlflow_key(k): str(v) for k, v in (params or {}).items()},
        }
        all_metrics = {
            **summary.metrics,
            **{mlflow_key(k): float(v) for k, v in (metrics or {}).items()},
        }
        skipped = sorted(k for k, v in all_metrics.items() if not math.isfinite(v))
        if skipped:
            log.warning("metrics not logged: not finite", extra={"metrics": skipped})
        now_s = clock.now()
        version_tags = {
            f"{TAG}purpose": purpose,
            f"{TAG}checksum": checksum_of(manifest_of(artifact_dir)[1]),
            f"{TAG}model_version": summary.model_version,
            f"{TAG}kind": summary.kind,
            f"{TAG}spec_hash": summary.spec_hash,
            f"{TAG}trained_start_micros": str(summary.trained_start_micros),
            f"{TAG}trained_end_micros": str(summary.trained_end_micros),
            f"{TAG}rows": str(summary.rows),
            f"{TAG}registered_at": _iso(now_s),
            **dict(tags or {}),
        }
        with self._writing(), self._calls(f"register {purpose} model {artifact_dir}"):
            experiment_id = self._experiment(purpose)
            run = self.client.create_run(
                experiment_id, run_name=run_name or summary.model_version or None
            )
            run_id = run.info.run_id
            try:
                timestamp_ms = int(now_s * 1000)
                self.client.log_batch(
                    run_id,
                    metrics=[
                        Metric(k, v, timestamp_ms, 0)
                        for k, v in sorted(all_metrics.items())
                        if math.isfinite(v)
                    ],
                    params=[Param(k, v[:6000]) for k, v in sorted(all_params.items())],
                    tags=[RunTag(k, v) for k, v in version_tags.items()],
                )
                with tempfile.TemporaryDirectory(prefix="openbid-plot-") as tmp:
                    plot = write_calibration_plot(summary, calibration_curves, Path(tmp))
                    if plot is not None:
                        self.client.log_artifact(run_id, str(plot), PLOTS_PATH)
                self.client.log_artifacts(run_id, str(artifact_dir), MODEL_PATH)
            except BaseException:
                self.client.set_terminated(run_id, "FAILED")
                raise
            self.client.set_terminated(run_id, "FINISHED")
            self._ensure_registered_model(name, purpose)
            created = self.client.create_model_version(
                name,
                source=f"{run.info.artifact_uri}/{MODEL_PATH}",
                run_id=run_id,
                tags=version_tags,
                description=f"{summary.kind} {summary.model_version}",
            )
            version = str(created.version)
            log.info(
                "model registered",
                extra={"purpose": purpose, "version": version, "run_id": run_id},
            )
            if alias:
                self._promote_locked(purpose, version, alias, "registered as " + alias)
        return self.version(purpose, version)

    def promote(
        self, purpose: str, version: str | int, alias: str = "production", *, reason: str = ""
    ) -> Promotion:
        """Points `alias` at `version` and publishes it for the servers (module doc)."""
        with self._writing(), self._calls(f"promote {purpose} version {version} to @{alias}"):
            return self._promote_locked(purpose, str(version), alias, reason)

    def rollback(self, purpose: str, alias: str = "production", *, reason: str = "") -> Promotion:
        """Points `alias` back at the version it named before the current one."""
        name = self.name(purpose)
        with self._writing(), self._calls(f"roll back {purpose}@{alias}"):
            history = self._history(name, alias)
            current = self._alias(name, alias)
            if current is not None and (not history or history[-1].version != current):
                history.append(HistoryEntry(current, ""))  # moved outside openbid
            if len(history) < 2:
                raise RegistryError(
                    f"{purpose}@{alias}: no earlier version to roll back to "
                    f"(history: {', '.join(h.version for h in history) or 'empty'})"
                )
            rolled_back = history.pop()
            target = history[-1].version
            self.client.set_model_version_tag(
                name, rolled_back.version, f"{TAG}rolled_back.{alias}", _iso(clock.now())
            )
            return self._promote_locked(
                purpose, target, alias, reason or f"rollback from {rolled_back.version}",
                history=history,
            )  # fmt: skip

    def prune(self, purpose: str, keep: int = 50) -> list[str]:
        """Deletes the versions beyond the `keep` newest that no alias names now or in its
        history (listing thousands of versions is slow in MLflow), their runs (MLflow's
        soft delete) and their copies in the store; returns the versions deleted."""
        name = self.name(purpose)
        with self._writing(), self._calls(f"prune {purpose} models"):
            model = self.client.get_registered_model(name)
            protected = {str(v) for v in model.aliases.values()}
            for key, raw in model.tags.items():
                if key.startswith(f"{TAG}history."):
                    try:
                        history = msgspec.json.decode(raw, type=list[HistoryEntry])
                    except msgspec.DecodeError:
                        continue
                    protected.update(entry.version for entry in history)
            found = self.client.search_model_versions(f"name = '{name}'", max_results=10_000)
            newest_first = sorted(found, key=lambda mv: int(mv.version), reverse=True)
            deleted = []
            for mv in newest_first[keep:]:
                version = str(mv.version)
                if version in protected:
                    continue
                self.client.delete_model_version(name, version)
                if mv.run_id:
                    self.client.delete_run(mv.run_id)
                try:
                    self.store.remove_version(purpose, version)
                except ModelStoreError as exc:
                    log.warning("store copy not removed", extra={"error": str(exc)})
                deleted.append(version)
        log.info("models pruned", extra={"purpose": purpose, "deleted": deleted})
        return deleted

    def _promote_locked(
        self,
        purpose: str,
        version: str,
        alias: str,
        reason: str,
        history: list[HistoryEntry] | None = None,
    ) -> Promotion:
        name = self.name(purpose)
        if alias == "latest" or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", alias):
            raise RegistryError(f"alias {alias!r}: letters, digits, '_', '.', '-' (not 'latest')")
        found = self.client.get_model_version(name, version)
        tags = dict(found.tags or {})
        previous = self._alias(name, alias) or ""
        checksum = self._publish(purpose, version, found.run_id, tags.get(f"{TAG}checksum", ""))
        now_s = clock.now()
        pointer = Pointer(
            purpose=purpose,
            alias=alias,
            version=version,
            artifact=ModelStore.version_dir(purpose, version),
            checksum=checksum,
            model_version=tags.get(f"{TAG}model_version", ""),
            promoted_at=_iso(now_s),
            promoted_at_micros=int(now_s * 1_000_000),
            trained_end_micros=int(tags.get(f"{TAG}trained_end_micros", "0") or 0),
            registry_name=name,
        )
        if history is None:
            history = self._history(name, alias)
            if not history or history[-1].version != version:
                history.append(HistoryEntry(version, pointer.promoted_at, reason))
        self.client.set_registered_model_alias(name, alias, version)
        self.client.set_registered_model_tag(
            name, f"{TAG}history.{alias}", msgspec.json.encode(history[-HISTORY_MAX:]).decode()
        )
        self.client.set_model_version_tag(
            name, version, f"{TAG}promoted.{alias}", pointer.promoted_at
        )
        try:
            self.store.write_pointer(pointer)
        except ModelStoreError as exc:
            raise RegistryError(
                f"{purpose}@{alias} is version {version} in the registry but the servers' "
                f"pointer could not be written ({exc}): promote it again"
            ) from exc
        log.info(
            "model promoted",
            extra={
                "purpose": purpose, "alias": alias, "version": version, "previous": previous,
                "store": self.store.url, "reason": reason,
            },
        )  # fmt: skip
        return Promotion(purpose, alias, version, previous, pointer)

    def _alias(self, name: str, alias: str) -> str | None:
        version = self.client.get_registered_model(name).aliases.get(alias)
        return None if version is None else str(version)

    def _publish(self, purpose: str, version: str, run_id: str, registered: str) -> str:
        """Publishes a version to the store unless it is there with the checksum it was
        registered with (a rollback, a challenger made production): then nothing moves."""
        try:
            if registered and self.store.published_checksum(purpose, version) == registered:
                return registered
            with tempfile.TemporaryDirectory(prefix="openbid-promote-") as tmp:
                local = self.client.download_artifacts(run_id, MODEL_PATH, tmp)
                _describe(purpose, local)  # the registry's copy is still intact
                checksum = self.store.publish(purpose, version, local)
        except ModelStoreError as exc:
            raise RegistryError(f"cannot publish {purpose} version {version}: {exc}") from exc
        if registered and checksum != registered:
            raise RegistryError(
                f"{purpose} version {version}: the artifact in MLflow is not the one registered "
                f"(checksum {checksum[:12]}, registered {registered[:12]})"
            )
        return checksum

    def _history(self, name: str, alias: str) -> list[HistoryEntry]:
        raw = self.client.get_registered_model(name).tags.get(f"{TAG}history.{alias}")
        if not raw:
            return []
        try:
            return msgspec.json.decode(raw, type=list[HistoryEntry])
        except msgspec.DecodeError:
            log.warning("alias history unreadable; starting it again", extra={"model": name})
            return []

    # --- reads
    def history(self, purpose: str, alias: str = "production") -> list[HistoryEntry]:
        """The versions `alias` named, oldest first (the last one is the current)."""
        with self._calls(f"history of {purpose}@{alias}"):
            return self._history(self.name(purpose), alias)

    def versions(self, purpose: str) -> list[ModelVersionInfo]:
        """Every registered version of `purpose`, newest first."""
        name = self.name(purpose)
        with self._calls(f"list {purpose} models"):
            try:
                aliases = self._aliases_by_version(name)
            except RegistryError:
                return []
            found = self.client.search_model_versions(f"name = '{name}'", max_results=1000)
            infos = [self._info(purpose, mv, aliases) for mv in found]
        return sorted(infos, key=lambda info: int(info.version), reverse=True)

    def version(self, purpose: str, ref: str | int) -> ModelVersionInfo:
        """One version: a number, or `@alias` (`@production`)."""
        name = self.name(purpose)
        with self._calls(f"show {purpose} {ref}"):
            ref = str(ref)
            if ref.startswith("@"):
                found = self.client.get_model_version_by_alias(name, ref[1:])
            else:
                found = self.client.get_model_version(name, ref)
            return self._info(purpose, found, self._aliases_by_version(name))

    def artifact(self, purpose: str, ref: str | int, destination: str | Path) -> Path:
        """Downloads the artifact of a version (or `@alias`) into `destination` (for a gate
        that compares a new model with production's on the same window)."""
        info = self.version(purpose, ref)
        with self._calls(f"download {purpose} version {info.version}"):
            return Path(self.client.download_artifacts(info.run_id, MODEL_PATH, str(destination)))

    def pointer(self, purpose: str, alias: str = "production") -> Pointer | None:
        """What the servers read for (purpose, alias) in the store."""
        return self.store.read_pointer(purpose, alias)

    def _aliases_by_version(self, name: str) -> dict[str, list[str]]:
        try:
            model = self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(f"no {name} model is registered") from None
            raise
        by_version: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        return by_version

    def _info(self, purpose: str, mv, aliases: dict[str, list[str]]) -> ModelVersionInfo:
        run = self.client.get_run(mv.run_id) if mv.run_id else None
        tags = dict(mv.tags or {})
        return ModelVersionInfo(
            purpose=purpose,
            version=str(mv.version),
            aliases=sorted(aliases.get(str(mv.version), [])),
            registered_at=tags.get(f"{TAG}registered_at", ""),
            run_id=mv.run_id or "",
            model_version=tags.get(f"{TAG}model_version", ""),
            spec_hash=tags.get(f"{TAG}spec_hash", ""),
            trained_end_micros=int(tags.get(f"{TAG}trained_end_micros", "0") or 0),
            rows=int(tags.get(f"{TAG}rows", "0") or 0),
            metrics=dict(run.data.metrics) if run else {},
            params=dict(run.data.params) if run else {},
            tags=tags,
        )
