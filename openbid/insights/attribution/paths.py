"""Aggregated journeys: one row per distinct path of channels, with its conversions, their
value and the journeys on that path that did not convert (null paths). Every attribution
model reads this one columnar form (channel ids as int32 touches in CSR layout).

>>> p = Paths.from_strings(["a > b", " b>a ", "a>b"], conversions=[1, 2, 3])
>>> p.channels, p.n_paths, p.conversions.tolist()
(('a', 'b'), 2, [4.0, 2.0])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from openbid.insights.errors import InsightsError


@dataclass(frozen=True, slots=True)
class Paths:
    """Distinct paths: path `i` is `touches[offsets[i]:offsets[i + 1]]` (indices into
    `channels`), seen converting `conversions[i]` times with total `value[i]`, and not
    converting `nulls[i]` times. `has_nulls` says whether non-converting journeys were given
    (Markov and Shapley models differ with and without them)."""

    channels: tuple[str, ...]
    offsets: np.ndarray
    touches: np.ndarray
    conversions: np.ndarray
    value: np.ndarray
    nulls: np.ndarray
    has_nulls: bool = False
    has_value: bool = False

    @property
    def n_paths(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def total_conversions(self) -> float:
        return float(self.conversions.sum())

    @property
    def total_value(self) -> float:
        return float(self.value.sum())

    def path(self, i: int) -> tuple[str, ...]:
        """Path `i` as channel names."""
        return tuple(self.channels[c] for c in self.touches[self.offsets[i] : self.offsets[i + 1]])

    @classmethod
    def from_strings(
        cls,
        paths: Sequence[str] | pa.Array | pa.ChunkedArray,
        conversions: Sequence[float] | np.ndarray | pa.Array | pa.ChunkedArray,
        value: Sequence[float] | np.ndarray | pa.Array | pa.ChunkedArray | None = None,
        nulls: Sequence[float] | np.ndarray | pa.Array | pa.ChunkedArray | None = None,
        *,
        sep: str = ">",
    ) -> Paths:
        """Paths written as channel names separated by `sep` (spaces around a name are
        ignored; empty names dropped). Rows that name the same path are summed; a row whose
        path has no channel is dropped (nothing to credit)."""
        if not sep:
            raise InsightsError("the path separator must not be empty")
        path_array = _as_array(paths, pa.string(), "path")
        n = len(path_array)
        conv = _counts(conversions, n, "conversions")
        val = _counts(value, n, "value", allow_negative=True) if value is not None else None
        null = _counts(nulls, n, "nulls") if nulls is not None else None
        if path_array.null_count:
            path_array = pc.fill_null(path_array, "")
        parts = pc.split_pattern(path_array, pattern=sep)
        names = pc.utf8_trim_whitespace(parts.flatten())
        row_of_name = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
        keep = pc.not_equal(names, "").to_numpy(zero_copy_only=False)
        names = names.filter(pa.array(keep))
        row_of_name = row_of_name[keep]
        if len(names) == 0:
            raise InsightsError("no path names a channel: check the path column and separator")
        encoded = pc.dictionary_encode(names)
        dictionary = encoded.dictionary.to_pylist()
        # channel ids in sorted order, so results list channels the same way for any input
        order = np.argsort(np.array(dictionary, dtype=object), kind="stable")
        rank = np.empty(len(order), dtype=np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        touches = rank[encoded.indices.to_numpy(zero_copy_only=False)]
        channels = tuple(dictionary[i] for i in order)
        lengths = np.bincount(row_of_name, minlength=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        raw = cls(
            channels=channels,
            offsets=offsets,
            touches=touches.astype(np.int32, copy=False),
            conversions=conv,
            value=val if val is not None else np.zeros(n),
            nulls=null if null is not None else np.zeros(n),
            has_nulls=null is not None,
            has_value=val is not None,
        )
        return raw.aggregated()

    def aggregated(self) -> Paths:
        """The same journeys with one row per distinct, non-empty path (rows summed), in
        the order of each path's first row."""
        lengths = self.lengths
        n = self.n_paths
        # a path's identity: the bytes of its touches (int32 each, so lengths differ in bytes)
        first: dict[bytes, int] = {}
        group = np.full(n, -1, dtype=np.int64)
        for i in range(n):
            if lengths[i]:
                key = self.touches[self.offsets[i] : self.offsets[i + 1]].tobytes()
                group[i] = first.setdefault(key, len(first))
        kept = group >= 0
        n_groups = len(first)
        if n_groups == n and kept.all():
            return self
        rows = _first_rows(group, n_groups)
        sums = {
            name: np.bincount(group[kept], weights=getattr(self, name)[kept], minlength=n_groups)
            for name in ("conversions", "value", "nulls")
        }
        new_lengths = lengths[rows]
        offsets = np.zeros(n_groups + 1, dtype=np.int64)
        np.cumsum(new_lengths, out=offsets[1:])
        touches = (
            np.concatenate([self.touches[self.offsets[r] : self.offsets[r + 1]] for r in rows])
            if n_groups
            else np.zeros(0, dtype=np.int32)
        )
        return Paths(
            channels=self.channels,
            offsets=offsets,
            touches=touches.astype(np.int32, copy=False),
            conversions=sums["conversions"],
            value=sums["value"],
            nulls=sums["nulls"],
            has_nulls=self.has_nulls,
            has_value=self.has_value,
        )

    def to_table(self, sep: str = " > ") -> pa.Table:
        """The paths as a table (`path`, `conversions`, `value`, `nulls`)."""
        return pa.table(
            {
                "path": [sep.join(self.path(i)) for i in range(self.n_paths)],
                "conversions": self.conversions,
                "value": self.value,
                "nulls": self.nulls,
            }
        )


def read_paths_csv(
    path: str | os.PathLike[str],
    *,
    sep: str = ";",
    path_sep: str = ">",
    path_col: str = "path",
    conv_col: str = "total_conversions",
    value_col: str | None = None,
    null_col: str | None = None,
) -> Paths:
    """Aggregated paths from a CSV file (ChannelAttribution's layout by default: `path`,
    `total_conversions`, `total_conversion_value`, `total_null`, separated by `;`)."""
    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(column_types={path_col: pa.string()}),
        )
    except (OSError, pa.ArrowInvalid) as exc:
        raise InsightsError(f"cannot read paths from {path}: {exc}") from None
    return paths_from_table(
        table,
        path_col=path_col,
        conv_col=conv_col,
        value_col=value_col,
        null_col=null_col,
        path_sep=path_sep,
    )


def paths_from_table(
    table: pa.Table,
    *,
    path_col: str = "path",
    conv_col: str = "total_conversions",
    value_col: str | None = None,
    null_col: str | None = None,
    path_sep: str = ">",
) -> Paths:
    """Aggregated paths from the named columns of `table`."""
    for option, column in (
        ("path column", path_col),
        ("conversions column", conv_col),
        ("value column", value_col),
        ("null column", null_col),
    ):
        if column is not None and column not in table.column_names:
            raise InsightsError(
                f"{option} {column!r} is not in the table; columns: {table.column_names}"
            )
    return Paths.from_strings(
        table[path_col],
        table[conv_col],
        table[value_col] if value_col else None,
        table[null_col] if null_col else None,
        sep=path_sep,
    )


def _first_rows(group: np.ndarray, n_groups: int) -> np.ndarray:
    rows = np.full(n_groups, -1, dtype=np.int64)
    kept = np.flatnonzero(group >= 0)
    # the first row of each group: reversed assignment leaves the smallest index
    rows[group[kept[::-1]]] = kept[::-1]
    return rows


def _as_array(values: object, type_: pa.DataType, field: str) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], type_)
    if not isinstance(values, pa.Array):
        values = pa.array(list(values) if not isinstance(values, np.ndarray) else values)
    try:
        return values.cast(type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InsightsError(f"{field}: expected {type_} values ({exc})") from None


def _counts(values: object, n: int, field: str, *, allow_negative: bool = False) -> np.ndarray:
    array = _as_array(values, pa.float64(), field)
    if len(array) != n:
        raise InsightsError(f"{field}: {len(array)} values for {n} paths")
    if array.null_count:
        array = pc.fill_null(array, 0.0)
    counts = array.to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
    if not np.isfinite(counts).all():
        raise InsightsError(f"{field}: values must be finite numbers")
    if not allow_negative and (counts < 0).any():
        raise InsightsError(
            f"{field}: values must not be negative (row {int(np.argmax(counts < 0))})"
        )
    return counts
