"""The featurizer: hashing is MurmurHash3, and serving (one dict) matches training (columns)."""

import math
import warnings

import mmh3
import msgspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.ml.errors import FeatureSpecError
from openbid.ml.features import (
    FeatureSpec,
    Featurizer,
    NumericField,
    bucket_of,
    bucketize,
    canonical_value,
    murmur3_words,
    spec_hash,
)

SPEC = FeatureSpec(
    categorical=["site", "os", "size"],
    numeric=[NumericField("age_s"), NumericField("floor", buckets="edges", edges=[0.1, 1.0, 5.0])],
    crosses=[["site", "size"], ["os", "size", "floor"]],
    hash_bits=18,
    seed=7,
)


@settings(deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=6), st.integers(0, 2**32 - 1))
def test_cross_hash_is_murmur3_of_the_value_hashes(words, seed):
    array = np.array(words, dtype=np.uint32)
    assert murmur3_words(array, np.uint64(seed)) == mmh3.hash(array.tobytes(), seed, signed=False)


values = st.one_of(
    st.none(),
    st.text(max_size=5),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=False),
    st.booleans(),
)
rows = st.lists(
    st.fixed_dictionaries(
        {"site": values, "os": values, "size": values},
        optional={"age_s": st.floats(-1e9, 1e9) | st.none(), "floor": st.floats(0, 10)},
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(rows)
def test_one_row_path_equals_column_path(batch):
    featurizer = Featurizer(SPEC)
    by_columns = featurizer.transform_rows(batch)
    fresh = Featurizer(SPEC)  # an empty cache must not change anything
    for i, row in enumerate(batch):
        assert fresh.transform_one(row).tolist() == by_columns.row(i).tolist()


def test_arrow_columns_hash_like_python_values():
    featurizer = Featurizer(SPEC)
    table = pa.table(
        {
            "site": pa.array(["a", None, "c"]),
            "os": pa.array([1, 2, None], type=pa.int64()),
            "size": pa.array(["300x250"] * 3).dictionary_encode(),
            "age_s": pa.array([0.0, 3.5, None]),
        }
    )
    hashed = featurizer.transform_columns(table)
    for i, row in enumerate(table.to_pylist()):
        assert hashed.row(i).tolist() == featurizer.transform_one(row).tolist()


def test_every_row_has_one_index_per_field_cross_and_bias():
    featurizer = Featurizer(SPEC)
    hashed = featurizer.transform_rows([{"site": "a"}, {}])
    assert featurizer.width == 5 + 2 + 1
    assert np.diff(hashed.indptr).tolist() == [8, 8]
    assert hashed.row(0)[-1] == featurizer.bias_index
    assert hashed.indices.max() < SPEC.n_features
    # a missing field is a feature of its own, different from any present value
    assert hashed.row(0)[0] != hashed.row(1)[0]
    assert hashed.row(0)[1] == hashed.row(1)[1]


def test_equal_numbers_hash_alike_and_fields_are_separate_namespaces():
    featurizer = Featurizer(SPEC)
    one = featurizer.transform_one({"site": 1, "os": 1})
    assert featurizer.transform_one({"site": "1", "os": 1.0}).tolist() == one.tolist()
    assert featurizer.transform_one({"site": True, "os": "1"}).tolist() == one.tolist()
    assert one[0] != one[1]  # same value "1" in two fields
    assert canonical_value(float("nan")) is None


def test_numeric_buckets_group_close_values():
    featurizer = Featurizer(FeatureSpec(numeric=[NumericField("n")], bias=False, hash_bits=18))
    index = [featurizer.transform_one({"n": x})[0] for x in (100, 110, 1000, -100, None, "")]
    assert index[0] == index[1]
    assert len({index[0], index[2], index[3], index[4]}) == 4
    assert index[4] == index[5]


def test_spec_hash_is_stable_and_sensitive():
    assert spec_hash(SPEC) == spec_hash(
        msgspec.json.decode(msgspec.json.encode(SPEC), type=FeatureSpec)
    )
    assert spec_hash(SPEC) != spec_hash(msgspec.structs.replace(SPEC, seed=8))
    assert spec_hash(SPEC) != spec_hash(msgspec.structs.replace(SPEC, crosses=[]))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (FeatureSpec(categorical=["a"], hash_bits=12), "hash_bits"),
        (FeatureSpec(categorical=["a", "a"]), "unique"),
        (FeatureSpec(categorical=["a"], crosses=[["a", "b"]]), "unknown fields"),
        (FeatureSpec(categorical=["a"], crosses=[["a"]]), "two or more"),
        (FeatureSpec(numeric=[NumericField("n", buckets="edges", edges=[2.0, 1.0])]), "increasing"),
        (FeatureSpec(bias=False), "at least one field"),
    ],
)
def test_invalid_specs_are_refused_with_the_reason(spec, message):
    with pytest.raises(FeatureSpecError, match=message):
        Featurizer(spec)


def test_unreadable_number_names_the_field():
    featurizer = Featurizer(FeatureSpec(numeric=[NumericField("price")], hash_bits=18))
    with pytest.raises(FeatureSpecError, match="price"):
        featurizer.transform_one({"price": "cheap"})


@pytest.mark.parametrize(
    "field",
    [
        NumericField("n"),
        NumericField("n", log_scale=3.0),
        NumericField("n", "edges", edges=[-1, 0, 2.5]),
    ],
)
def test_one_value_buckets_like_the_column_path(field):
    rng = np.random.default_rng(9)
    # bucket borders of the log scale (2**(b / s) - 1), a hair either side, and random values
    borders = 2.0 ** (np.arange(-40, 80) / field.log_scale) - 1.0
    x = np.concatenate(
        [borders, np.nextafter(borders, np.inf), np.nextafter(borders, -np.inf), -borders,
         rng.normal(0, 1e3, 2_000), [0.0, -0.0, -1.0, 2.5, np.nan]]
    )  # fmt: skip
    assert [bucket_of(field, v) for v in x.tolist()] == bucketize(field, x).tolist()


@pytest.mark.parametrize(
    "field",
    [
        NumericField("n"),
        NumericField("n", log_scale=3.0),
        NumericField("n", "edges", edges=[-1, 0, 2.5]),
    ],
)
def test_infinities_take_the_outermost_buckets_not_an_overflowed_cast(field):
    big = np.finfo(np.float64).max
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in cast"
        buckets = bucketize(field, np.array([np.inf, -np.inf, big, -big]))
    assert buckets[0] == buckets[2] and buckets[1] == buckets[3]
    assert buckets[0] >= bucketize(field, np.array([1e6]))[0] >= 0
    assert buckets[1] != bucketize(field, np.array([np.nan]))[0]  # not "missing"
    assert bucket_of(field, math.inf) == buckets[0] and bucket_of(field, -math.inf) == buckets[1]


def test_hash_caches_are_bounded_by_bytes_and_skip_long_values(monkeypatch):
    """Values are chosen by whoever sends the request: 8 KiB strings are hashed uncached,
    and a field's cache is cleared before the strings it holds pass its byte budget,
    without changing any hash."""
    import openbid.ml.features as features

    monkeypatch.setattr(features, "MAX_CACHE_BYTES", 20_000)
    featurizer = Featurizer(SPEC)
    reference = Featurizer(SPEC)
    site = featurizer._names.index("site")
    long = {"site": "x" * 8192, "os": "linux", "size": "300x250"}
    assert (
        featurizer.transform_one(long).tolist() == reference.transform_rows([long]).row(0).tolist()
    )
    assert "x" * 8192 not in featurizer._caches[site]
    for i in range(500):  # ~200 bytes each: the 20 kB budget holds about 100
        row = {"site": f"site-{i:04d}.example", "os": "linux", "size": "300x250"}
        assert (
            featurizer.transform_one(row).tolist()
            == reference.transform_rows([row]).row(0).tolist()
        )
        assert featurizer._cache_bytes[site] <= 20_000
    assert 0 < len(featurizer._caches[site]) < 120
