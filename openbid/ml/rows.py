"""Hashed examples as CSR-like arrays: the one input format of every learner and scorer.

A batch of `n` rows is `indices` (int32, the hashed feature index of each non-zero),
`indptr` (int64, `n + 1` row offsets into `indices`) and optional `values` (float32, one per
index; absent means every present feature has value 1). Numba kernels loop over these
arrays directly, so nothing is copied between featurizing, training and scoring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from openbid.ml.errors import TrainingDataError

_NO_VALUES = np.empty(0, dtype=np.float32)


class HashedRows:
    """A batch of hashed rows; treat it as immutable (attributes cannot be rebound).

    The arrays are left writeable on purpose: numba types read-only arrays through a slow
    fallback (about 1 µs per argument per call), which would dominate small-batch scoring.

    >>> rows = HashedRows.from_matrix(np.array([[3, 7], [1, 7]]), n_features=8)
    >>> len(rows), rows.row(1).tolist(), rows.indptr.tolist()
    (2, [1, 7], [0, 2, 4])
    >>> rows.take(np.array([1])).indices.tolist()
    [1, 7]
    """

    __slots__ = ("indices", "indptr", "values", "n_features")

    def __init__(
        self,
        indices: np.ndarray,
        indptr: np.ndarray,
        n_features: int,
        values: np.ndarray | None = None,
    ) -> None:
        indices = np.ascontiguousarray(indices, dtype=np.int32)
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        if indptr.ndim != 1 or indptr.shape[0] < 1 or indptr[0] != 0:
            raise TrainingDataError("indptr must be a 1-D array of row offsets starting at 0")
        if indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
            raise TrainingDataError(
                f"indptr must be non-decreasing and end at len(indices)={indices.shape[0]}"
            )
        if indices.shape[0] and (indices.min() < 0 or indices.max() >= n_features):
            raise TrainingDataError(
                f"feature indices must lie in [0, {n_features}); "
                f"got [{indices.min()}, {indices.max()}]"
            )
        if values is not None:
            values = np.ascontiguousarray(values, dtype=np.float32)
            if values.shape != indices.shape:
                raise TrainingDataError("values must have one entry per index")
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "n_features", int(n_features))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("HashedRows is immutable")

    @classmethod
    def from_matrix(cls, index_matrix: np.ndarray, n_features: int) -> HashedRows:
        """Rows that all have the same number of features, given as an `(n, width)` matrix."""
        matrix = np.asarray(index_matrix)
        if matrix.ndim != 2:
            raise TrainingDataError("index matrix must be 2-D (rows, features per row)")
        n_rows, width = matrix.shape
        indptr = np.arange(n_rows + 1, dtype=np.int64) * width
        return cls(matrix.reshape(-1), indptr, n_features)

    @classmethod
    def from_scipy(cls, matrix) -> HashedRows:
        """From a scipy.sparse matrix (any format; converted to CSR)."""
        csr = matrix.tocsr()
        return cls(csr.indices, csr.indptr, csr.shape[1], csr.data)

    @classmethod
    def concat(cls, parts: Sequence[HashedRows]) -> HashedRows:
        """One batch from several with the same `n_features`, rows in order."""
        if not parts:
            raise TrainingDataError("nothing to concatenate")
        n_features = parts[0].n_features
        if any(p.n_features != n_features for p in parts):
            raise TrainingDataError("cannot concatenate rows hashed into different spaces")
        offsets = np.cumsum([0] + [p.indices.shape[0] for p in parts[:-1]])
        indptr = np.concatenate(
            [parts[0].indptr[:1]]
            + [p.indptr[1:] + off for p, off in zip(parts, offsets, strict=True)]
        )
        has_values = any(p.values is not None for p in parts)
        values = np.concatenate([p.values_or_ones() for p in parts]) if has_values else None
        return cls(np.concatenate([p.indices for p in parts]), indptr, n_features, values)

    def __len__(self) -> int:
        return self.indptr.shape[0] - 1

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def row(self, i: int) -> np.ndarray:
        """The feature indices of row `i` (a view)."""
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def values_or_ones(self) -> np.ndarray:
        if self.values is not None:
            return self.values
        return np.ones(self.indices.shape[0], dtype=np.float32)

    def kernel_values(self) -> np.ndarray:
        """The values array for numba kernels: empty means "all ones" (no allocation)."""
        return _NO_VALUES if self.values is None else self.values

    def slice(self, start: int, stop: int) -> HashedRows:
        """Rows `start:stop`, in order."""
        start, stop, _ = slice(start, stop).indices(len(self))
        lo, hi = self.indptr[start], self.indptr[max(start, stop)]
        values = None if self.values is None else self.values[lo:hi]
        return HashedRows(
            self.indices[lo:hi],
            self.indptr[start : max(start, stop) + 1] - lo,
            self.n_features,
            values,
        )

    def take(self, rows: np.ndarray) -> HashedRows:
        """The given rows (an index or boolean array), in the given order."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # positions of every kept non-zero: start of its row plus its offset inside the row
        within = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths)
        positions = np.repeat(starts, lengths) + within
        values = None if self.values is None else self.values[positions]
        return HashedRows(self.indices[positions], indptr, self.n_features, values)

    def to_scipy(self):
        """As a `scipy.sparse.csr_matrix` (for scikit-learn baselines)."""
        from scipy.sparse import csr_matrix

        return csr_matrix(
            (self.values_or_ones(), self.indices, self.indptr), shape=(len(self), self.n_features)
        )


def as_rows(X, n_features: int | None = None) -> HashedRows:
    """Accept `HashedRows` or a scipy.sparse matrix; check the feature space matches."""
    rows = X if isinstance(X, HashedRows) else None
    if rows is None:
        if hasattr(X, "tocsr"):
            rows = HashedRows.from_scipy(X)
        else:
            raise TrainingDataError(
                f"expected HashedRows or a scipy.sparse matrix, got {type(X).__name__}"
            )
    if n_features is not None and rows.n_features > n_features:
        raise TrainingDataError(
            f"rows are hashed into {rows.n_features} features but the model has {n_features}"
        )
    return rows


def as_labels(y, n_rows: int) -> np.ndarray:
    """Labels as float64 in {0, 1}, one per row."""
    labels = np.asarray(y, dtype=np.float64).reshape(-1)
    if labels.shape[0] != n_rows:
        raise TrainingDataError(f"got {labels.shape[0]} labels for {n_rows} rows")
    if labels.size and not np.all((labels == 0.0) | (labels == 1.0)):
        raise TrainingDataError("labels must be 0 or 1")
    return labels


def as_weights(sample_weight, n_rows: int) -> np.ndarray:
    """Sample weights as float64 (ones when None); must be finite and non-negative."""
    if sample_weight is None:
        return np.ones(n_rows, dtype=np.float64)
    weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if weights.shape[0] != n_rows:
        raise TrainingDataError(f"got {weights.shape[0]} sample weights for {n_rows} rows")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise TrainingDataError("sample weights must be finite and >= 0")
    return weights
