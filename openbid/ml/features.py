"""The hashing featurizer: a declarative spec turns raw values into hashed feature indices.

The same `Featurizer` runs in training (whole columns at once) and in serving (one request
as a dict), and both paths give identical indices. A spec lists categorical fields, numeric
fields (bucketed on a log scale or by explicit edges) and crosses of fields. Each field's
value is hashed once with MurmurHash3 (seeded by the spec seed and the field name); a
cross is MurmurHash3 over its fields' value hashes; the index is the hash modulo
`2**hash_bits`. Every row gets exactly one index per field, per cross and for the bias, so
a missing value is a feature of its own ("field is missing").

The spec's `spec_hash` is stored with every model; a model is only served with the spec
it was trained with.

>>> spec = FeatureSpec(categorical=["site", "os"], crosses=[["site", "os"]], hash_bits=18)
>>> featurizer = Featurizer(spec)
>>> featurizer.width
4
>>> featurizer.transform_one({"site": "news.example", "os": "iOS"}).tolist()
[130732, 137665, 143930, 150927]
>>> featurizer.transform_columns({"site": ["news.example"], "os": ["iOS"]}).row(0).tolist()
[130732, 137665, 143930, 150927]
>>> spec_hash(spec)
'91bfe367064d410c'
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import mmh3
import msgspec
import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openbid.ml.errors import FeatureSpecError
from openbid.ml.rows import HashedRows

MIN_HASH_BITS = 18
MAX_HASH_BITS = 26
_MISSING = "\x00missing"
_BIAS = "\x00bias"
# a serving process sees an unbounded stream of values, some chosen by whoever sends the
# request: each field's hash cache is capped by entries and by bytes (a cache full of 8 KiB
# strings would hold 1.6 GB), and a value longer than `MAX_CACHED_CHARS` is hashed uncached
_MAX_CACHE_ENTRIES = 200_000
MAX_CACHE_BYTES = 32 << 20
"""Per field: the cache is cleared when the strings it holds (plus `CACHE_ENTRY_BYTES`
each) pass this."""
MAX_CACHED_CHARS = 256
CACHE_ENTRY_BYTES = 160
"""What a dict entry and its int cost beside the key's characters (CPython 3.11)."""


def cache_cost(value: object) -> int:
    """The bytes a hash cache entry for `value` is counted as; 0: do not cache it.

    >>> cache_cost("example.com"), cache_cost("x" * 300), cache_cost(3)
    (171, 0, 160)
    """
    if isinstance(value, str):
        n = len(value)
        return 0 if n > MAX_CACHED_CHARS else n + CACHE_ENTRY_BYTES
    return CACHE_ENTRY_BYTES


def remember(cache: dict, sizes: list[int], i: int, value: object, h: int) -> None:
    """Keeps `value -> h` in `cache` (the `i`-th of a set whose byte counts are `sizes`),
    clearing it first when an entry more would pass its entry or byte bound; a value
    `cache_cost` says not to cache is not kept. Called on misses only."""
    cost = cache_cost(value)
    if not cost:
        return
    if len(cache) >= _MAX_CACHE_ENTRIES or sizes[i] + cost > MAX_CACHE_BYTES:
        cache.clear()
        sizes[i] = 0
    cache[value] = h
    sizes[i] += cost


class NumericField(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A number turned into a bucket, and the bucket hashed like a category.

    `buckets="log"`: bucket = sign(x) * floor(log_scale * log2(1 + |x|)), so `log_scale=2`
    gives two buckets per doubling. `buckets="edges"`: bucket = the number of `edges` <= x.
    """

    name: str
    buckets: Literal["log", "edges"] = "log"
    log_scale: float = 2.0
    edges: list[float] = []


class FeatureSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What to hash: fields, numeric bucketing, crosses, the hash space and seed."""

    categorical: list[str] = []
    numeric: list[NumericField] = []
    crosses: list[list[str]] = []
    hash_bits: int = 20
    seed: int = 0
    bias: bool = True
    version: int = 1

    @property
    def n_features(self) -> int:
        return 1 << self.hash_bits

    @property
    def field_names(self) -> list[str]:
        return list(self.categorical) + [f.name for f in self.numeric]


def validate_spec(spec: FeatureSpec) -> None:
    """Raise `FeatureSpecError` naming the problem if `spec` cannot be used."""
    if not MIN_HASH_BITS <= spec.hash_bits <= MAX_HASH_BITS:
        raise FeatureSpecError(
            f"hash_bits must be in [{MIN_HASH_BITS}, {MAX_HASH_BITS}], got {spec.hash_bits}"
        )
    if not 0 <= spec.seed < 2**32:
        raise FeatureSpecError(f"seed must be in [0, 2**32), got {spec.seed}")
    names = spec.field_names
    if not names and not spec.bias:
        raise FeatureSpecError("a spec needs at least one field or the bias")
    seen: set[str] = set()
    for name in names:
        if not name or name in seen:
            raise FeatureSpecError(f"field names must be unique and non-empty: {name!r}")
        seen.add(name)
    for field in spec.numeric:
        if field.buckets == "log" and not field.log_scale > 0:
            raise FeatureSpecError(f"numeric field {field.name!r}: log_scale must be > 0")
        if field.buckets == "edges" and (
            not field.edges
            or any(b <= a for a, b in zip(field.edges, field.edges[1:], strict=False))
        ):
            raise FeatureSpecError(
                f"numeric field {field.name!r}: edges must be non-empty and increasing"
            )
    for cross in spec.crosses:
        if len(cross) < 2 or len(set(cross)) != len(cross):
            raise FeatureSpecError(f"cross {cross!r} needs two or more distinct fields")
        unknown = [name for name in cross if name not in seen]
        if unknown:
            raise FeatureSpecError(f"cross {cross!r} names unknown fields {unknown}")


def spec_hash(spec: FeatureSpec) -> str:
    """A short stable digest of the spec (its canonical JSON), stored with every model."""
    canonical = msgspec.json.encode(msgspec.to_builtins(spec, order="sorted"), order="sorted")
    return hashlib.sha256(canonical).hexdigest()[:16]


def canonical_value(value: object) -> str | None:
    """The string a raw value is hashed as; None for missing (None, "", NaN).

    Numbers that compare equal hash the same (1, 1.0 and True are all "1"), so a value's
    hash does not depend on whether it arrived as JSON, a Parquet int or a CSV string.

    >>> canonical_value(3.0), canonical_value(2.5), canonical_value(""), canonical_value(True)
    ('3', '2.5', None, '1')
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    return str(value)


def _to_float(field: str, value: object) -> float:
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FeatureSpecError(
            f"numeric field {field!r}: cannot read {value!r} as a number"
        ) from None


def bucketize(field: NumericField, x: np.ndarray) -> np.ndarray:
    """Bucket ids (int64) of float values; NaN gets the sentinel `-(2**62)` (missing); an
    infinity buckets like the largest finite float of its sign (the outermost bucket).

    >>> bucketize(NumericField("n"), np.array([0.0, 1.0, 3.0, 1000.0, -3.0, np.nan])).tolist()
    [0, 2, 4, 19, -4, -4611686018427387904]
    """
    x = np.asarray(x, dtype=np.float64)
    missing = np.isnan(x)
    safe = np.clip(np.where(missing, 0.0, x), -_FLOAT_MAX, _FLOAT_MAX)
    if field.buckets == "log":
        buckets = np.sign(safe) * np.floor(field.log_scale * np.log2(1.0 + np.abs(safe)))
    else:
        buckets = np.searchsorted(np.asarray(field.edges, dtype=np.float64), safe, side="right")
    out = buckets.astype(np.int64)
    out[missing] = _MISSING_BUCKET
    return out


_MISSING_BUCKET = -(2**62)
_FLOAT_MAX = float(np.finfo(np.float64).max)


def bucket_of(field: NumericField, x: float) -> int:
    """`bucketize` of one value, through the same numpy operations on a numpy scalar (so
    serving buckets exactly as training did) at a fraction of a 1-element array's cost.

    >>> [bucket_of(NumericField("n"), x) for x in (0.0, 3.0, 1000.0, -3.0, math.nan)]
    [0, 4, 19, -4, -4611686018427387904]
    """
    if math.isnan(x):
        return _MISSING_BUCKET
    if math.isinf(x):
        x = math.copysign(_FLOAT_MAX, x)  # as the column path clips it
    if field.buckets == "log":
        safe = np.float64(x)
        return int(np.sign(safe) * np.floor(field.log_scale * np.log2(1.0 + np.abs(safe))))
    return bisect.bisect_right(field.edges, x)  # np.searchsorted(edges, x, side="right")


# MurmurHash3_x86_32 over 4-byte little-endian words: identical to mmh3.hash on those bytes,
# written here so numba can hash crosses of already-hashed values without building strings.
@numba.njit(cache=True, inline="always")
def _rotl32(x: np.uint64, r: int) -> np.uint64:
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & np.uint64(0xFFFFFFFF)


@numba.njit(cache=True)
def murmur3_words(words: np.ndarray, seed: np.uint64) -> np.uint64:
    mask = np.uint64(0xFFFFFFFF)
    h = seed & mask
    for i in range(words.shape[0]):
        k = (np.uint64(words[i]) * np.uint64(0xCC9E2D51)) & mask
        k = _rotl32(k, 15)
        k = (k * np.uint64(0x1B873593)) & mask
        h ^= k
        h = _rotl32(h, 13)
        h = (h * np.uint64(5) + np.uint64(0xE6546B64)) & mask
    h ^= np.uint64(4 * words.shape[0])
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & mask
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & mask
    h ^= h >> np.uint64(16)
    return h


@numba.njit(cache=True, error_model="numpy")
def _assemble_one(
    field_hashes: np.ndarray,  # uint32 (n_fields,)
    cross_fields: np.ndarray,  # int64 (n_crosses, max_cross_len), -1 padded
    cross_seeds: np.ndarray,  # uint64 (n_crosses,)
    bias_index: int,  # -1 when the spec has no bias
    mask: int,
    out: np.ndarray,  # int32 (width,), allocated by the caller (cheaper than in numba)
) -> None:
    n_fields = field_hashes.shape[0]
    words = np.empty(cross_fields.shape[1], dtype=np.uint32)
    for f in range(n_fields):
        out[f] = np.int32(field_hashes[f] & mask)
    for c in range(cross_fields.shape[0]):
        length = 0
        for m in range(cross_fields.shape[1]):
            f = cross_fields[c, m]
            if f < 0:
                break
            words[length] = field_hashes[f]
            length += 1
        out[n_fields + c] = np.int32(murmur3_words(words[:length], cross_seeds[c]) & mask)
    if bias_index >= 0:
        out[out.shape[0] - 1] = bias_index


@numba.njit(cache=True)
def _assemble(
    field_hashes: np.ndarray,  # uint32 (n_rows, n_fields)
    cross_fields: np.ndarray,  # int64 (n_crosses, max_cross_len), -1 padded
    cross_seeds: np.ndarray,  # uint64 (n_crosses,)
    bias_index: int,  # -1 when the spec has no bias
    mask: int,
) -> np.ndarray:
    n_rows, n_fields = field_hashes.shape
    n_crosses = cross_fields.shape[0]
    width = n_fields + n_crosses + (1 if bias_index >= 0 else 0)
    out = np.empty((n_rows, width), dtype=np.int32)
    words = np.empty(cross_fields.shape[1], dtype=np.uint32)
    for r in range(n_rows):
        for f in range(n_fields):
            out[r, f] = np.int32(field_hashes[r, f] & mask)
        for c in range(n_crosses):
            length = 0
            for m in range(cross_fields.shape[1]):
                f = cross_fields[c, m]
                if f < 0:
                    break
                words[length] = field_hashes[r, f]
                length += 1
            out[r, n_fields + c] = np.int32(murmur3_words(words[:length], cross_seeds[c]) & mask)
        if bias_index >= 0:
            out[r, width - 1] = bias_index
    return out


class Featurizer:
    """Hashes raw rows into `HashedRows` according to a `FeatureSpec`.

    `transform_columns` (whole columns: dict of lists, numpy arrays, pyarrow arrays, or a
    pyarrow Table/RecordBatch) hashes each distinct value of a column once, which is what
    lets training featurize millions of rows per second. `transform_one` hashes a single
    request (a dict) with a per-field cache, for serving.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        validate_spec(spec)
        self.spec = spec
        self.spec_hash = spec_hash(spec)
        self.n_features = spec.n_features
        self._mask = spec.n_features - 1
        self._names = spec.field_names
        self._field_seeds = [mmh3.hash(name, spec.seed, signed=False) for name in self._names]
        self._caches: list[dict] = [{} for _ in self._names]
        self._cache_bytes: list[int] = [0] * len(self._names)
        self._number_caches: list[dict] = [{} for _ in spec.numeric]
        self._number_bytes: list[int] = [0] * len(spec.numeric)
        position = {name: i for i, name in enumerate(self._names)}
        max_len = max((len(c) for c in spec.crosses), default=1)
        self._cross_fields = np.full((len(spec.crosses), max_len), -1, dtype=np.int64)
        for c, cross in enumerate(spec.crosses):
            self._cross_fields[c, : len(cross)] = [position[name] for name in cross]
        self._cross_seeds = np.array(
            [mmh3.hash("\x1f".join(cross), spec.seed, signed=False) for cross in spec.crosses],
            dtype=np.uint64,
        )
        self._bias_index = (
            mmh3.hash(_BIAS, spec.seed, signed=False) & self._mask if spec.bias else -1
        )
        self._n_categorical = len(spec.categorical)
        self.width = len(self._names) + len(spec.crosses) + (1 if spec.bias else 0)
        # serving: each field's raw value -> hash cache, in field order
        self._request_caches = list(
            zip(self._names, self._caches[: self._n_categorical] + self._number_caches, strict=True)
        )

    @property
    def bias_index(self) -> int:
        """The index of the always-on bias feature (-1 when the spec has none)."""
        return self._bias_index

    def _hash_token(self, f: int, token: str | None) -> int:
        return mmh3.hash(_MISSING if token is None else token, self._field_seeds[f], signed=False)

    def _hash_value(self, f: int, value: object) -> int:
        cache = self._caches[f]
        try:
            h = cache.get(value)  # .get: a raised KeyError costs more than hashing
        except TypeError:  # unhashable raw value (a list, a dict): hash its text, uncached
            return self._hash_token(f, canonical_value(value))
        if h is not None:
            return h
        h = self._hash_token(f, canonical_value(value))
        remember(cache, self._cache_bytes, f, value, h)
        return h

    def _hash_bucket(self, f: int, bucket: int) -> int:
        cache = self._caches[f]
        h = cache.get(bucket)
        if h is None:
            if len(cache) >= _MAX_CACHE_ENTRIES:
                cache.clear()
            token = None if bucket == _MISSING_BUCKET else f"#{bucket}"
            h = cache[bucket] = self._hash_token(f, token)
        return h

    def _assemble(self, field_hashes: np.ndarray) -> np.ndarray:
        return _assemble(
            field_hashes, self._cross_fields, self._cross_seeds, self._bias_index, self._mask
        )

    def transform_one(self, row: Mapping[str, object]) -> np.ndarray:
        """The hashed indices (int32, length `width`) of one raw row, e.g. one request.

        Values seen before cost one dict lookup per field (all fields in one list
        comprehension); the crosses, the mask and the bias are one numba call."""
        get = row.get
        try:
            hashes = [cache[get(name)] for name, cache in self._request_caches]
        except (KeyError, TypeError):  # a value not seen yet, or unhashable: hash it
            hashes = self._hash_request(row)
        out = np.empty(self.width, dtype=np.int32)
        _assemble_one(
            np.array(hashes, dtype=np.uint32), self._cross_fields, self._cross_seeds,
            self._bias_index, self._mask, out,
        )  # fmt: skip
        return out

    def _hash_request(self, row: Mapping[str, object]) -> list[int]:
        """The field hashes of a request with values not in the caches (hashing only those)."""
        n_cat = self._n_categorical
        hashes = [self._hash_value(f, row.get(self._names[f])) for f in range(n_cat)]
        for j, field in enumerate(self.spec.numeric):
            hashes.append(self._hash_number(n_cat + j, field, row.get(field.name)))
        return hashes

    def _hash_number(self, f: int, field: NumericField, value: object) -> int:
        """A numeric value's hash, cached by raw value (bucketing costs a few µs)."""
        cache = self._number_caches[f - self._n_categorical]
        try:
            h = cache.get(value)
            hashable = True
        except TypeError:
            h, hashable = None, False
        if h is not None:
            return h
        bucket = bucket_of(field, _to_float(field.name, value))
        h = self._hash_bucket(f, bucket)
        if hashable:
            remember(cache, self._number_bytes, f - self._n_categorical, value, h)
        return h

    # One request, many candidates (pricing): the request's fields hashed once, the fields
    # that differ by candidate (the ad) as columns of precomputed hashes.

    def field_position(self, name: str) -> int:
        """The column of field `name` in `field_hashes` (ValueError for a field not in the spec)."""
        return self._names.index(name)

    def field_hashes(self, row: Mapping[str, object]) -> np.ndarray:
        """One row's field hashes (uint32, one per field, before crosses), for `assemble`."""
        get = row.get
        try:
            hashes = [cache[get(name)] for name, cache in self._request_caches]
        except (KeyError, TypeError):
            hashes = self._hash_request(row)
        return np.array(hashes, dtype=np.uint32)

    def value_hashes(self, name: str, values: Sequence[object]) -> np.ndarray:
        """The hashes of a categorical field's values (uint32), to put in `field_hashes`
        columns: compute them once per catalog, not per request."""
        f = self.field_position(name)
        if f >= self._n_categorical:
            raise FeatureSpecError(f"value_hashes: {name!r} is not a categorical field")
        return np.fromiter((self._hash_value(f, v) for v in values), np.uint32, len(values))

    def assemble(self, field_hashes: np.ndarray) -> HashedRows:
        """Rows from a `(n_rows, n_fields)` uint32 matrix of field hashes: crosses, mask
        and bias in one numba call (what `transform_columns` ends with)."""
        return HashedRows.from_matrix(self._assemble(field_hashes), self.n_features)

    def transform_rows(self, rows: Sequence[Mapping[str, object]]) -> HashedRows:
        """Hash a list of raw rows (dicts), through the column path."""
        columns = {name: [row.get(name) for row in rows] for name in self._names}
        return self.transform_columns(columns, n_rows=len(rows))

    def transform_columns(self, columns, n_rows: int | None = None) -> HashedRows:
        """Hash whole columns: a mapping of field name to values, or a pyarrow Table/Batch.

        A field absent from `columns` is missing in every row.
        """
        if isinstance(columns, pa.Table | pa.RecordBatch):
            n_rows = columns.num_rows
            columns = {name: columns.column(name) for name in columns.column_names}
        if n_rows is None:
            lengths = {len(columns[name]) for name in self._names if name in columns}
            if len(lengths) != 1:
                raise FeatureSpecError(
                    "columns must be given for at least one field and have equal lengths"
                )
            n_rows = lengths.pop()
        hashes = np.empty((n_rows, len(self._names)), dtype=np.uint32)
        for f, name in enumerate(self._names):
            column = columns.get(name)
            if column is not None and len(column) != n_rows:
                raise FeatureSpecError(f"column {name!r} has {len(column)} rows, expected {n_rows}")
            if f < self._n_categorical:
                hashes[:, f] = self._hash_categorical_column(f, column, n_rows)
            else:
                field = self.spec.numeric[f - self._n_categorical]
                hashes[:, f] = self._hash_numeric_column(f, field, column, n_rows)
        return HashedRows.from_matrix(self._assemble(hashes), self.n_features)

    def _hash_categorical_column(self, f: int, column, n_rows: int) -> np.ndarray:
        if column is None:
            return np.full(n_rows, self._hash_token(f, None), dtype=np.uint32)
        try:
            array = column if isinstance(column, pa.Array | pa.ChunkedArray) else pa.array(column)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # mixed Python types: hash value by value (still cached)
            return np.fromiter((self._hash_value(f, v) for v in column), np.uint32, n_rows)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        encoded = pc.dictionary_encode(array)
        distinct = np.fromiter(
            (self._hash_value(f, v) for v in encoded.dictionary.to_pylist()),
            np.uint32,
            len(encoded.dictionary),
        )
        missing = np.uint32(self._hash_token(f, None))
        codes = encoded.indices
        if codes.null_count:
            codes = codes.fill_null(len(distinct))
        lookup = np.append(distinct, missing)
        return lookup[codes.to_numpy(zero_copy_only=False)]

    def _hash_numeric_column(self, f: int, field: NumericField, column, n_rows: int) -> np.ndarray:
        if column is None:
            x = np.full(n_rows, np.nan)
        elif isinstance(column, pa.Array | pa.ChunkedArray):
            try:
                x = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                x = np.array([_to_float(field.name, v) for v in column.to_pylist()])
            x = np.asarray(x, dtype=np.float64)
        else:
            try:
                x = np.asarray(column, dtype=np.float64)
            except (TypeError, ValueError):
                x = np.array([_to_float(field.name, v) for v in column])
        buckets = bucketize(field, x)
        distinct, inverse = np.unique(buckets, return_inverse=True)
        table = np.array([self._hash_bucket(f, int(b)) for b in distinct], dtype=np.uint32)
        return table[inverse.reshape(-1)]
