"""One request, every DSP, one numba call: the shaping hot path.

`openbid.ml.Featurizer.transform_one` followed by `MultiModelScorer.score_one` costs two
numba calls plus a numpy write per field, about twice the 20 µs a request may spend in
shaping. `RequestScorer` hashes each raw field value once (cached per field), then one
kernel forms the crosses and sums every DSP's weights in the same pass.

It reproduces the featurizer's field hashing (MurmurHash3 of the canonical value seeded by
the field name) and forms the crosses and the bias index with the featurizer's own kernel
(`openbid.ml.features._assemble_one`). `RequestScorer.check` compares its indices with
`Featurizer.transform_one` and the serving shaper refuses to use it (falling back to the
featurizer) if they ever differ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import mmh3
import numba
import numpy as np

from openbid.ml import FeatureSpec, Featurizer
from openbid.ml.features import _assemble_one, canonical_value, remember
from openbid.ml.ftrl import MAX_LOGIT

_MISSING_TOKEN = "\x00missing"
_BIAS_TOKEN = "\x00bias"


@numba.njit(cache=True)
def _score_request(
    field_hashes, cross_fields, cross_seeds, bias_index, mask, linear, indices, out
) -> None:
    """Bid probability of one request under every model (columns of `linear`)."""
    _assemble_one(field_hashes, cross_fields, cross_seeds, bias_index, mask, indices)
    n_models = linear.shape[1]
    for m in range(n_models):
        total = 0.0
        for p in range(indices.shape[0]):
            total += linear[indices[p], m]
        logit = min(max(total, -MAX_LOGIT), MAX_LOGIT)
        out[m] = 1.0 / (1.0 + math.exp(-logit))


class RequestScorer:
    """Scores one request's raw features against stacked linear models sharing `spec`.

    Not thread-safe (it reuses its buffers); each serving thread or event loop holds its
    own through the shaper.
    """

    def __init__(self, spec: FeatureSpec, weights: Sequence[np.ndarray]) -> None:
        if spec.numeric:
            raise ValueError("the shaping fast path hashes categorical fields only")
        self.spec = spec
        self.names = list(spec.categorical)
        self._seeds = [mmh3.hash(name, spec.seed, signed=False) for name in self.names]
        self._caches: list[dict] = [{} for _ in self.names]
        self._cache_bytes: list[int] = [0] * len(self.names)
        position = {name: i for i, name in enumerate(self.names)}
        width = max((len(c) for c in spec.crosses), default=1)
        self._cross_fields = np.full((len(spec.crosses), width), -1, dtype=np.int64)
        for c, cross in enumerate(spec.crosses):
            self._cross_fields[c, : len(cross)] = [position[name] for name in cross]
        self._cross_seeds = np.array(
            [mmh3.hash("\x1f".join(cross), spec.seed, signed=False) for cross in spec.crosses],
            dtype=np.uint64,
        )
        self._mask = spec.n_features - 1
        self._bias = (
            mmh3.hash(_BIAS_TOKEN, spec.seed, signed=False) & self._mask if spec.bias else -1
        )
        self.width = len(self.names) + len(spec.crosses) + (1 if spec.bias else 0)
        self.n_models = len(weights)
        # writeable and C-contiguous: numba reads read-only arrays through a slow path
        self._linear = np.ascontiguousarray(np.stack(weights, axis=1), dtype=np.float32)
        if self._linear.shape[0] != spec.n_features:
            raise ValueError(
                f"weights have {self._linear.shape[0]} features, the spec {spec.n_features}"
            )
        self._hashes = np.empty(len(self.names), dtype=np.uint32)
        self._indices = np.empty(self.width, dtype=np.int32)

    def _field_hash(self, f: int, value: object) -> int:
        cache = self._caches[f]
        try:
            return cache[value]
        except KeyError:
            pass
        except TypeError:
            token = canonical_value(value)
            return mmh3.hash(
                _MISSING_TOKEN if token is None else token, self._seeds[f], signed=False
            )
        token = canonical_value(value)
        h = mmh3.hash(_MISSING_TOKEN if token is None else token, self._seeds[f], signed=False)
        remember(cache, self._cache_bytes, f, value, h)  # bounded by entries and bytes
        return h

    def _fill(self, features: Mapping[str, object]) -> None:
        get = features.get
        values = [get(name) for name in self.names]
        try:
            hashes = [cache[value] for cache, value in zip(self._caches, values)]  # noqa: B905
        except (KeyError, TypeError):  # a value not seen yet (or unhashable): hash it
            hashes = [self._field_hash(f, value) for f, value in enumerate(values)]
        self._hashes[:] = hashes

    def indices(self, features: Mapping[str, object]) -> np.ndarray:
        """The hashed indices (a copy), for checking against the featurizer."""
        self._fill(features)
        _assemble_one(
            self._hashes, self._cross_fields, self._cross_seeds, self._bias, self._mask,
            self._indices,
        )  # fmt: skip
        return self._indices.copy()

    def score(self, features: Mapping[str, object], out: np.ndarray) -> None:
        """Bid probability under every model, written into `out` (float64, n_models)."""
        self._fill(features)
        _score_request(
            self._hashes, self._cross_fields, self._cross_seeds, self._bias, self._mask,
            self._linear, self._indices, out,
        )  # fmt: skip

    def check(self, rows: Sequence[Mapping[str, object]]) -> bool:
        """Whether this scorer hashes `rows` exactly as the featurizer does."""
        featurizer = Featurizer(self.spec)
        return all(np.array_equal(self.indices(row), featurizer.transform_one(row)) for row in rows)
