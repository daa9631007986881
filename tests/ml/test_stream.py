"""Training from files batch by batch gives the same model as training in memory."""

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from openbid.ml.errors import TrainingDataError
from openbid.ml.features import FeatureSpec, Featurizer, NumericField
from openbid.ml.fm import FactorizationMachine
from openbid.ml.ftrl import FTRLLogisticRegression
from openbid.ml.stream import TrainingStream, train_on_stream

SPEC = FeatureSpec(categorical=["site", "zip"], numeric=[NumericField("age_s")], hash_bits=18)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    n = 5_000
    site = rng.choice(["a", "b", "c", "d"], n)
    return pa.table(
        {
            "site": site,
            "zip": rng.choice(["007", "7", "10115", ""], n),  # "007" must stay a string
            "age_s": rng.exponential(100, n).round(),
            "click": (rng.random(n) < np.where(site == "a", 0.4, 0.1)).astype(int),
            "weight": rng.uniform(0.5, 2, n),
        }
    )


def write_parts(table, folder, fmt):
    folder.mkdir()
    for i, start in enumerate(range(0, table.num_rows, 2_000)):
        part = table.slice(start, 2_000)
        if fmt == "parquet":
            pq.write_table(part, folder / f"part-{i:03d}.parquet")
        else:
            pcsv.write_csv(part, folder / f"part-{i:03d}.csv")
    return folder


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("learner", [FTRLLogisticRegression, FactorizationMachine])
def test_stream_training_equals_in_memory_training(table, tmp_path, fmt, learner):
    folder = write_parts(table, tmp_path / "segments", fmt)
    featurizer = Featurizer(SPEC)
    stream = TrainingStream(
        [folder], featurizer, label="click", weight_column="weight", batch_rows=700
    )
    assert sum(len(b.rows) for b in stream) == table.num_rows
    streamed = train_on_stream(learner(n_features=SPEC.n_features), stream, n_passes=2)
    rows = featurizer.transform_columns(table)
    y = table.column("click").to_numpy()
    weights = table.column("weight").to_numpy()
    in_memory = learner(n_features=SPEC.n_features, n_passes=2).fit(rows, y, sample_weight=weights)
    np.testing.assert_allclose(streamed.coef_, in_memory.coef_, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        streamed.progressive_logloss_, in_memory.progressive_logloss_, rtol=1e-9
    )
    assert streamed.n_seen_ == 2 * table.num_rows


def test_csv_keeps_categorical_strings_as_written(table, tmp_path):
    folder = write_parts(table, tmp_path / "csv", "csv")
    featurizer = Featurizer(SPEC)
    batch = next(iter(TrainingStream([folder], featurizer, label="click", batch_rows=10)))
    expected = featurizer.transform_rows(table.slice(0, 10).to_pylist())
    np.testing.assert_array_equal(batch.rows.indices, expected.indices)


def test_missing_inputs_are_named(table, tmp_path):
    with pytest.raises(TrainingDataError, match="no such file"):
        TrainingStream([tmp_path / "absent.parquet"], Featurizer(SPEC), label="click")
    pq.write_table(table.drop_columns(["click"]), tmp_path / "nolabel.parquet")
    stream = TrainingStream([tmp_path / "nolabel.parquet"], Featurizer(SPEC), label="click")
    with pytest.raises(TrainingDataError, match="no label column 'click'"):
        next(iter(stream))
