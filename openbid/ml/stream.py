"""Streaming training input: read Parquet segments or CSV files batch by batch, hash each
batch, and train in passes, so a training set larger than memory never has to fit in it.

>>> import tempfile, pathlib
>>> from openbid.ml.features import FeatureSpec, Featurizer
>>> from openbid.ml.ftrl import FTRLLogisticRegression
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "day1.csv").write_text("click,site\\n1,a\\n0,b\\n1,a\\n0,b\\n")
>>> stream = TrainingStream([folder / "day1.csv"], Featurizer(FeatureSpec(["site"], hash_bits=18)),
...                         label="click", batch_rows=3)
>>> [len(batch.rows) for batch in stream]
[3, 1]
>>> model = train_on_stream(FTRLLogisticRegression(n_features=1 << 18, alpha=0.5), stream, n_passes=2)
>>> model.n_seen_, len(model.progressive_logloss_)
(8, 2)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from openbid.ml.errors import TrainingDataError
from openbid.ml.features import Featurizer
from openbid.ml.rows import HashedRows

log = logging.getLogger(__name__)


class TrainingBatch(NamedTuple):
    rows: HashedRows
    labels: np.ndarray
    sample_weight: np.ndarray | None


def _files(sources: Sequence[str | Path]) -> list[Path]:
    """Files in the given order; a directory contributes its .parquet and .csv files sorted
    by name (segment names sort by time)."""
    files: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files.extend(sorted(p for p in source.iterdir() if p.suffix in (".parquet", ".csv")))
        elif source.exists():
            files.append(source)
        else:
            raise TrainingDataError(f"{source}: no such file or directory")
    if not files:
        raise TrainingDataError(f"no .parquet or .csv files in {list(map(str, sources))}")
    return files


def iter_record_batches(
    path: Path, columns: Sequence[str], batch_rows: int, string_columns: Sequence[str] = ()
) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `batch_rows` rows of `columns` (which must all exist)."""
    try:
        if path.suffix == ".parquet":
            parquet = pq.ParquetFile(path)
            present = set(parquet.schema_arrow.names)
            yield from parquet.iter_batches(
                batch_size=batch_rows, columns=[c for c in columns if c in present]
            )
        else:
            # categorical CSV columns stay strings ("007" must not become 7)
            convert = pcsv.ConvertOptions(
                include_columns=list(columns),
                include_missing_columns=True,
                column_types={name: pa.string() for name in string_columns},
                strings_can_be_null=False,
            )
            reader = pcsv.open_csv(path, convert_options=convert)
            pending: list[pa.RecordBatch] = []
            pending_rows = 0
            for batch in reader:
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= batch_rows:
                    table = pa.Table.from_batches(pending).combine_chunks()
                    yield table.slice(0, batch_rows).to_batches()[0]
                    rest = table.slice(batch_rows)
                    pending = rest.to_batches() if rest.num_rows else []
                    pending_rows = rest.num_rows
            if pending_rows:
                yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
    except (pa.ArrowInvalid, OSError) as exc:
        raise TrainingDataError(f"{path}: cannot read training data ({exc})") from exc


class TrainingStream:
    """Re-iterable batches of (hashed rows, labels, weights) from files, in file order."""

    def __init__(
        self,
        sources: Sequence[str | Path],
        featurizer: Featurizer,
        label: str,
        weight_column: str | None = None,
        batch_rows: int = 65_536,
    ) -> None:
        self.files = _files(sources)
        self.featurizer = featurizer
        self.label = label
        self.weight_column = weight_column
        self.batch_rows = batch_rows

    def __iter__(self) -> Iterator[TrainingBatch]:
        spec = self.featurizer.spec
        columns = [self.label, *spec.field_names]
        if self.weight_column:
            columns.append(self.weight_column)
        for path in self.files:
            for batch in iter_record_batches(path, columns, self.batch_rows, spec.categorical):
                yield self._to_training_batch(path, batch)

    def _to_training_batch(self, path: Path, batch: pa.RecordBatch) -> TrainingBatch:
        names = batch.schema.names
        if self.label not in names or batch.column(self.label).null_count == batch.num_rows:
            raise TrainingDataError(f"{path}: no label column {self.label!r}")
        try:
            labels = pc.cast(batch.column(self.label), pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise TrainingDataError(f"{path}: label {self.label!r} is not 0/1 ({exc})") from exc
        weights = None
        if self.weight_column:
            weights = pc.cast(batch.column(self.weight_column), pa.float64()).to_numpy(
                zero_copy_only=False
            )
        return TrainingBatch(self.featurizer.transform_columns(batch), labels, weights)


def train_on_stream(learner, stream: TrainingStream, n_passes: int = 1):
    """Run `n_passes` passes of `partial_fit` over the stream; record one progressive log
    loss per pass (weighted over the whole pass) in `learner.progressive_logloss_`."""
    for pass_number in range(n_passes):
        loss_sum = 0.0
        weight_sum = 0.0
        for batch in stream:
            learner.partial_fit(batch.rows, batch.labels, batch.sample_weight)
            batch_weight = (
                len(batch.rows) if batch.sample_weight is None else float(batch.sample_weight.sum())
            )
            loss_sum += learner.progressive_logloss_.pop() * batch_weight
            weight_sum += batch_weight
        learner.progressive_logloss_.append(loss_sum / weight_sum if weight_sum else math.nan)
        log.info(
            "training pass done",
            extra={
                "pass": pass_number + 1,
                "progressive_logloss": learner.progressive_logloss_[-1],
            },
        )
    return learner
