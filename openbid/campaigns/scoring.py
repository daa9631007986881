"""Click and conversion probabilities of every candidate of a request, one batch call per
model: the request's features hashed once, each candidate's ad fields (`dsp`,
`campaign_id`, `creative_id`, the fields the pipeline's click and conversion models read)
gathered from hashes computed once per (index, model) pair, crosses and scoring in numba.

The models come from slots the model sync fills and hot-swaps (`openbid.pipeline.modelsync.
ScoringSlot`: `current` is the model serving, or None): a request reads each slot's
reference once, so a swap in the middle of a request never mixes two models. The served
probabilities are the artifact's calibrated ones (`fit_auto` chooses the calibration on
held-out rows and the registry gate refuses a model whose expected / actual is off).

| model | missing (no slot, or nothing promoted yet) |
| --- | --- |
| click (`ctr`) | `p_click` is None: CPC and CPA candidates are not priced (no bid); CPM bids as usual |
| conversion (`cvr`) | `p_conversion` is None: CPA candidates are not priced |
| either fails to score | logged and counted (`openbid_house_scoring_errors_total`), treated as missing |
| a probability not in [0, 1] (NaN) | counted the same; that candidate alone is unpriced (NaN), the others priced |
| an A/B arm's model (`ctr`/`cvr` arm) not loaded, or failing to score | the production model prices instead (and its version is logged); counted (`openbid_house_arm_fallbacks_total`) |
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from prometheus_client import Counter

from openbid.obs import REGISTRY

log = logging.getLogger(__name__)

HOUSE_DSP = "openbid"
"""The `dsp` of house bids: in the event log, and as the click model's `dsp` feature."""

SCORING_ERRORS = Counter(
    "openbid_house_scoring_errors",
    "House candidates' probabilities that could not be computed (the model failed): "
    "those candidates were priced as if the model were missing",
    ("purpose",),
    registry=REGISTRY,
)
ARM_FALLBACKS = Counter(
    "openbid_house_arm_fallbacks",
    "Requests in a click or conversion A/B arm that the production model priced instead "
    "(the arm's model was not loaded, or failed to score)",
    ("purpose",),
    registry=REGISTRY,
)
_CACHED_HASHES = 8
"""Ad hashes kept per scorer: (purpose, model) pairs, the production models and the arms'."""


class ModelSlot(Protocol):
    """A hot-swapped probability model (`ScoringSlot`): `current` has `featurizer`,
    `scorer` (a `MultiModelScorer`) and `version`, or is None."""

    current: Any


class _AdHashes:
    """The hashes of the ad fields of every pair of one index under one model."""

    __slots__ = ("index", "model", "columns", "hashes")

    def __init__(self, index: Any, model: Any) -> None:
        featurizer = model.featurizer
        pairs = len(index)
        campaign_ids = [c.id for c in index.campaigns]
        creative_ids = [c.id for c in index.creatives]
        campaign_of_pair = index.line_item_campaign[index.pair_line_item]
        columns, hashes = [], []
        for name, values, of_pair in (
            ("campaign_id", campaign_ids, campaign_of_pair),
            ("creative_id", creative_ids, index.pair_creative),
            ("dsp", [HOUSE_DSP], np.zeros(pairs, np.int64)),
        ):
            try:
                position = featurizer.field_position(name)
            except ValueError:
                continue  # a model that does not read this field
            columns.append(position)
            value_hashes = featurizer.value_hashes(name, values)
            hashes.append(value_hashes[of_pair] if pairs else np.empty(0, np.uint32))
        self.index = index
        self.model = model
        self.columns = np.asarray(columns, np.int64)
        self.hashes = np.stack(hashes, axis=1) if hashes else np.empty((pairs, 0), np.uint32)


class CandidateScorer:
    """pCTR and pCVR of candidate pairs (see the module docstring)."""

    def __init__(self, click: ModelSlot | None = None, conversion: ModelSlot | None = None) -> None:
        self.click = click
        self.conversion = conversion
        self._cache: dict[tuple[str, int], _AdHashes] = {}

    def models(self) -> tuple[Any, Any]:
        """The models serving now (None for a missing one): read once per request."""
        click = self.click.current if self.click is not None else None
        conversion = self.conversion.current if self.conversion is not None else None
        return click, conversion

    def _ad_hashes(self, purpose: str, index: Any, model: Any) -> _AdHashes:
        # keyed by the model too: auctions in an A/B arm and in control alternate models
        # (an entry holds its model, so an id is not reused while it is cached)
        key = (purpose, id(model))
        cache = self._cache
        cached = cache.get(key)
        if cached is None or cached.index is not index or cached.model is not model:
            if cached is None and len(cache) >= _CACHED_HASHES:
                del cache[next(iter(cache))]  # the oldest: a model swapped out, or an old arm
            cached = cache[key] = _AdHashes(index, model)
        return cached

    def score_arm(
        self,
        purpose: str,
        arm_model: Any,
        model: Any,
        features: Mapping[str, str],
        index: Any,
        pairs: np.ndarray,
    ) -> tuple[np.ndarray | None, Any]:
        """`score` with the A/B arm's model, else (None, or it fails: counted) with the
        production `model`; returns the probabilities and the model that gave them."""
        if arm_model is not None:
            p = self.score(purpose, arm_model, features, index, pairs)
            if p is not None:
                return p, arm_model
            ARM_FALLBACKS.labels(purpose).inc()
        return self.score(purpose, model, features, index, pairs), model

    def score(
        self,
        purpose: str,
        model: Any,
        features: Mapping[str, str],
        index: Any,
        pairs: np.ndarray,
    ) -> np.ndarray | None:
        """The model's probability for each pair (into `index`) on this request: one
        featurization and one scoring call for all of them. None when `model` is None or
        fails."""
        if model is None:
            return None
        try:
            ads = self._ad_hashes(purpose, index, model)
            request = model.featurizer.field_hashes(features)
            matrix = np.empty((pairs.size, request.size), np.uint32)
            matrix[:] = request
            if ads.columns.size:
                matrix[:, ads.columns] = ads.hashes[pairs]
            rows = model.featurizer.assemble(matrix)
            p = np.asarray(model.scorer.score_batch(rows)[:, 0], np.float64)
        except Exception:  # a model must never take the auction down: price without it
            SCORING_ERRORS.labels(purpose).inc()
            log.exception("house candidates not scored", extra={"purpose": purpose})
            return None
        bad = ~((p >= 0.0) & (p <= 1.0))  # NaN fails both
        if bad.any():
            SCORING_ERRORS.labels(purpose).inc(int(bad.sum()))
            p = np.where(bad, np.nan, p)
        return p


def arm_model(models: Mapping[str, ModelSlot], purpose: str) -> Any:
    """The model of the request's A/B arm of `purpose` (`models`: the arms' slots by
    purpose, `Assignment.models`); None when the request is in no arm of it, or the arm's
    slot has no model loaded (counted: the production model prices)."""
    slot = models.get(purpose)
    if slot is None:
        return None
    current = slot.current
    if current is None:
        ARM_FALLBACKS.labels(purpose).inc()
    return current
