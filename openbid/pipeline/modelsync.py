"""Model sync: every serving process follows the store's pointer of each purpose it serves
(`models.serve`) and hot-swaps a newly promoted version in, without a restart.

A `ModelSync` reads `<store>/<purpose>/<alias>.json` every `poll_interval_s`, in a thread
(never on the event loop). When the pointer names another version it fetches the artifact
into the local cache (checked file by file against the manifest) and hands the copy to the
purpose's `ModelSlot`, which validates it completely (shapes, feature spec hash, a smoke
prediction in [0, 1]) and then replaces one reference: the old model serves every request
until then. A bad artifact is refused, logged and counted, the old model stays, and that
pointer is not tried again until it changes (or SIGHUP). Besides its alias, a purpose can
have more models followed the same way, each into a slot of its own (`follow`: the A/B
arms of `openbid.experiments.armsync`, an extension the sync calls after each poll). A
store that cannot be read is counted and the current model serves on: neither the store
nor the registry being down ever stops serving. MLflow is never imported here (its import
alone takes seconds).

Metrics: `openbid_model_info{purpose,version,artifact_version}` (1 for the serving one),
`openbid_model_age_seconds{purpose,since}` (on openbid's clock, since the end of the
training window and since the promotion), `openbid_model_swaps_total{purpose,result}`
(`ok`, `refused`) and `openbid_model_sync_errors_total{purpose}` (store unreadable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from openbid import clock
from openbid.config import ModelsConfig
from openbid.errors import ConfigError
from openbid.ml import ModelArtifactError, MultiModelScorer, load_model
from openbid.obs import REGISTRY
from openbid.pipeline.modelstore import (
    PURPOSES,
    ArtifactDamaged,
    ModelStore,
    Pointer,
    prune_cache,
)


class SyncExtension(Protocol):
    """Polled by the sync after its own pointers, in the poll's thread and under its lock."""

    def poll(self, sync: ModelSync, force: bool) -> None: ...


log = logging.getLogger(__name__)

PROBE_ROWS: tuple[dict[str, str], ...] = (
    {},
    {"country": "USA", "media": "banner", "size": "300x250", "hour": "20", "floor": "0"},
    {"site_id": "s1", "os": "iOS", "device_type": "phone", "placement": "", "gdpr": "1"},
)
"""Requests a new pricing model must score (finite, in [0, 1]) before it serves."""


class ModelSlot(Protocol):
    """What a purpose's consumer reads: one reference, replaced whole by `load`."""

    purpose: str

    def load(self, path: Path) -> str:
        """Validates the artifact at `path` completely, then serves it; returns its own
        version name. Raises on any problem, and the current model serves on."""
        ...


class ShaperSlot:
    """The `shaping` slot: the exchange's `ModelShaper`, through its public `load` (which
    validates, smoke-scores and swaps one reference) and `model_version`."""

    purpose = "shaping"

    def __init__(self, shaper: Any) -> None:
        self.shaper = shaper

    def load(self, path: Path) -> str:
        return self.shaper.load(path)

    @property
    def model_version(self) -> str:
        return self.shaper.model_version


class ProbabilityModel:
    """One loaded probability model (click, conversion): featurizer and scorer, immutable."""

    __slots__ = ("version", "artifact", "featurizer", "scorer")

    def __init__(self, path: Path) -> None:
        self.artifact = load_model(path)
        meta = self.artifact.meta
        self.version = meta.name or meta.created_at
        self.featurizer = self.artifact.featurizer()
        self.scorer = MultiModelScorer([self.artifact.scoring_model()])
        for row in PROBE_ROWS:
            probability = self.predict(row)
            if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
                raise ModelArtifactError(f"{path}: scores {probability} outside [0, 1]")

    def predict(self, features: Mapping[str, object]) -> float:
        return float(self.scorer.score_one(self.featurizer.transform_one(features))[0])


class ScoringSlot:
    """The slot of a pricing model (`ctr`, `cvr`): `current` is the model serving (None
    before the first); a reader takes the reference once per request and uses that."""

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose
        self.current: ProbabilityModel | None = None

    def load(self, path: Path) -> str:
        model = ProbabilityModel(path)  # raises before anything changes
        self.current = model
        return model.version

    @property
    def model_version(self) -> str:
        current = self.current
        return current.version if current is not None else ""

    def predict(self, features: Mapping[str, object]) -> float | None:
        """The model's probability for one request's features; None with no model."""
        current = self.current
        return current.predict(features) if current is not None else None


def slots_for(purposes: list[str], shaper: Any = None) -> dict[str, ModelSlot]:
    """The slots of `models.serve`; `shaping` needs the in-process shaper."""
    slots: dict[str, ModelSlot] = {}
    for purpose in purposes:
        if purpose == "shaping":
            if not hasattr(shaper, "load"):
                raise ConfigError(
                    "models.serve: 'shaping' needs an in-process shaping model; "
                    "exchange.shaping_url asks a shaping service instead"
                )
            slots[purpose] = ShaperSlot(shaper)
        elif purpose in PURPOSES:
            slots[purpose] = ScoringSlot(purpose)
        else:
            raise ConfigError(f"models.serve: unknown purpose {purpose!r}")
    return slots


class _Followed:
    """What the sync knows of one purpose."""

    __slots__ = (
        "slot", "pointer", "artifact_version", "path", "refused", "swaps_ok", "swaps_refused",
        "errors", "failing",
    )  # fmt: skip

    def __init__(self, slot: ModelSlot) -> None:
        self.slot = slot
        self.pointer: Pointer | None = None
        self.artifact_version = ""
        self.path: Path | None = None
        self.refused = ""  # checksum of the last pointer refused, not tried again
        self.swaps_ok = 0
        self.swaps_refused = 0
        self.errors = 0
        self.failing = False


class ModelSync:
    """Follows `alias` of each purpose in `slots` in one model store (see the module doc)."""

    def __init__(
        self,
        store: ModelStore | str,
        slots: Mapping[str, ModelSlot],
        *,
        cache_dir: str | Path,
        alias: str = "production",
        poll_interval_s: float = 5.0,
    ) -> None:
        self.store = store if isinstance(store, ModelStore) else ModelStore(store)
        self.cache_dir = Path(cache_dir)
        self.alias = alias
        self.poll_interval_s = poll_interval_s
        self.followed = {purpose: _Followed(slot) for purpose, slot in slots.items()}
        self.extra: dict[tuple[str, str], _Followed] = {}
        """Models followed besides the alias, by (purpose, ref): `follow`."""
        self.extensions: list[SyncExtension] = []
        self._lock = threading.Lock()  # one poll at a time (the loop's and a SIGHUP's)
        self._force = False
        self._wake: asyncio.Event | None = None
        _SYNCS.add(self)

    @classmethod
    def from_config(cls, settings: ModelsConfig, slots: Mapping[str, ModelSlot]) -> ModelSync:
        return cls(
            settings.store_url,
            slots,
            cache_dir=settings.cache_dir,
            alias=settings.alias,
            poll_interval_s=settings.poll_interval_s,
        )

    def serving(self, purpose: str) -> str:
        """The registry version serving `purpose` from the store ('' if none yet)."""
        followed = self.followed.get(purpose)
        return followed.pointer.version if followed and followed.pointer else ""

    def poll_once(self, force: bool = False) -> dict[str, str]:
        """Reads every pointer once and swaps what changed (blocking: run it in a thread).
        Returns each purpose's outcome: unchanged, absent, swapped, refused or error."""
        with self._lock:
            outcomes = {purpose: self._poll(purpose, force) for purpose in self.followed}
            for extension in self.extensions:
                extension.poll(self, force)
            return outcomes

    def follow(self, purpose: str, ref: str, slot: ModelSlot) -> None:
        """Also follow `ref` of `purpose` (a version, "7", or an alias, "@challenger") into
        `slot`; `poll_extra` swaps it like the alias's model. From an extension's `poll`."""
        if (purpose, ref) not in self.extra:
            self.extra[(purpose, ref)] = _Followed(slot)

    def unfollow(self, purpose: str, ref: str) -> None:
        self.extra.pop((purpose, ref), None)

    def poll_extra(self, purpose: str, ref: str, force: bool = False) -> str:
        """Reads the pointer of a followed `ref` and swaps its slot's model if it changed."""
        return self._poll_pointer(self.extra[(purpose, ref)], purpose, ref, force)

    def _pointer(self, purpose: str, ref: str) -> Pointer | None:
        if ref.startswith("@"):
            return self.store.read_pointer(purpose, ref[1:])
        checksum = self.store.published_checksum(purpose, ref)
        if checksum is None:
            return None
        artifact = ModelStore.version_dir(purpose, ref)
        return Pointer(
            purpose=purpose, alias=ref, version=ref, artifact=artifact, checksum=checksum
        )

    def _poll(self, purpose: str, force: bool) -> str:
        return self._poll_pointer(self.followed[purpose], purpose, f"@{self.alias}", force)

    def _poll_pointer(self, followed: _Followed, purpose: str, ref: str, force: bool) -> str:
        try:
            pointer = self._pointer(purpose, ref)
        except Exception as exc:  # any backend's error: the model serving stays
            return self._error(followed, purpose, "cannot read the model pointer", exc)
        if pointer is None:
            return "absent"
        current = followed.pointer
        same = current is not None and (current.version, current.checksum) == (
            pointer.version,
            pointer.checksum,
        )
        if same and not force:
            return "unchanged"
        if pointer.checksum == followed.refused and not force:
            return "unchanged"
        started = time.perf_counter()
        try:
            path = self.store.fetch(pointer, self.cache_dir)
        except ArtifactDamaged as exc:
            return self._refuse(followed, purpose, pointer, exc)
        except Exception as exc:  # unreachable store: tried again at the next poll
            return self._error(followed, purpose, "cannot fetch the model", exc)
        try:
            artifact_version = followed.slot.load(path)
        except Exception as exc:  # the slot refused it: the old model keeps serving
            return self._refuse(followed, purpose, pointer, exc)
        previous = current.version if current is not None else ""
        followed.pointer, followed.path = pointer, path
        followed.artifact_version = artifact_version
        followed.refused = ""
        followed.swaps_ok += 1
        followed.failing = False
        log.info(
            "model swapped in",
            extra={
                "purpose": purpose,
                "ref": ref,
                "version": pointer.version,
                "artifact_version": artifact_version,
                "previous": previous,
                "load_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        try:
            prune_cache(self.cache_dir, purpose, keep=path)
        except OSError as exc:
            log.warning("model cache not pruned", extra={"error": str(exc)})
        return "swapped"

    def _refuse(self, followed: _Followed, purpose: str, pointer: Pointer, exc: Exception) -> str:
        followed.refused = pointer.checksum
        followed.swaps_refused += 1
        log.error(
            "model refused; the current one keeps serving",
            extra={
                "purpose": purpose,
                "version": pointer.version,
                "serving": followed.pointer.version if followed.pointer else "",
                "error": str(exc),
            },
        )
        return "refused"

    def _error(self, followed: _Followed, purpose: str, what: str, exc: Exception) -> str:
        followed.errors += 1
        if not followed.failing:  # once per outage, not every poll
            followed.failing = True
            log.error(
                f"{what}; the current model keeps serving",
                extra={"purpose": purpose, "store": self.store.url, "error": str(exc)},
            )
        return "error"

    def request_reload(self) -> None:
        """Read the pointers now and load them again even if unchanged (SIGHUP)."""
        self._force = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Polls until cancelled; each poll runs in a thread."""
        self._wake = asyncio.Event()
        while True:
            force, self._force = self._force, False
            await asyncio.to_thread(self.poll_once, force)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
            self._wake.clear()

    def close(self) -> None:
        """Stop exporting this sync's metrics."""
        _SYNCS.discard(self)


_SYNCS: weakref.WeakSet[ModelSync] = weakref.WeakSet()


def model_age_s(pointer: Pointer, now_s: float) -> dict[str, float]:
    """Seconds on the clock since the training window ended and since the promotion.

    >>> p = Pointer(purpose="ctr", alias="production", version="1", artifact="ctr/versions/1",
    ...             checksum="x", promoted_at_micros=900_000_000, trained_end_micros=600_000_000)
    >>> model_age_s(p, 1000.0)
    {'training_end': 400.0, 'promotion': 100.0}
    """
    ages = {}
    if pointer.trained_end_micros > 0:
        ages["training_end"] = now_s - pointer.trained_end_micros / 1e6
    if pointer.promoted_at_micros > 0:
        ages["promotion"] = now_s - pointer.promoted_at_micros / 1e6
    return ages


class _ModelSyncCollector:
    """Exports every live `ModelSync`'s state at scrape time."""

    def collect(self):
        info = GaugeMetricFamily(
            "openbid_model_info",
            "The model serving each purpose (1): registry version and the artifact's own",
            labels=["purpose", "version", "artifact_version"],
        )
        age = GaugeMetricFamily(
            "openbid_model_age_seconds",
            "Age of the model serving, on openbid's clock, since its training window ended "
            "and since its promotion",
            labels=["purpose", "since"],
        )
        swaps = CounterMetricFamily(
            "openbid_model_swaps",
            "Models swapped in (ok) or refused (the old one kept serving)",
            labels=["purpose", "result"],
        )
        errors = CounterMetricFamily(
            "openbid_model_sync_errors",
            "Polls of the model store that failed (the current model kept serving)",
            labels=["purpose"],
        )
        now_s = clock.now()
        for sync in list(_SYNCS):
            for purpose, followed in list(sync.followed.items()):
                pointer = followed.pointer
                if pointer is not None:
                    info.add_metric([purpose, pointer.version, followed.artifact_version], 1.0)
                    for since, seconds in model_age_s(pointer, now_s).items():
                        age.add_metric([purpose, since], seconds)
                swaps.add_metric([purpose, "ok"], followed.swaps_ok)
                swaps.add_metric([purpose, "refused"], followed.swaps_refused)
                errors.add_metric([purpose], followed.errors)
        yield from (info, age, swaps, errors)


REGISTRY.register(_ModelSyncCollector())
