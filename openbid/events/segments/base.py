"""The segment store interface: where the immutable Parquet segments of the event log live.

One interface, one module per backend (Feast's pattern): `LocalSegmentStore` (a directory)
and `FsspecSegmentStore` (any fsspec URL: S3-compatible object stores, `memory://`). A
segment is published whole or not at all, at

    <root>/<kind>/hour=<YYYY-MM-DDTHH>/<log file stem>.parquet

(Hive-style partitions: DuckDB's and Spark's `hive_partitioning` read `hour` as a column).
Its name comes from the log file it was rolled from, so rolling that file again after a
crash overwrites the same segments. Readers outside openbid (the ETL's DuckDB or Spark)
take `urls(kind, start_hour=, end_hour=)` and, for stores DuckDB cannot open by itself,
the fsspec filesystem `fs`; `EventReader.snapshot` adds the events not yet rolled.
"""

from __future__ import annotations

import calendar
import posixpath
import time
from abc import ABC, abstractmethod

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

TEMP_PREFIX = ".tmp-"  # a segment being written (local directories): never listed
_HOUR_PREFIX = "hour="
_HOUR_FORMAT = "%Y-%m-%dT%H"


def hour_label(hour: int) -> str:
    """The partition label of an hour counted since the epoch (`2026-11-22T21`)."""
    return time.strftime(_HOUR_FORMAT, time.gmtime(hour * 3600))


def hour_of_label(label: str) -> int | None:
    """The hour since the epoch a partition label names, or None if it names none."""
    try:
        return calendar.timegm(time.strptime(label, _HOUR_FORMAT)) // 3600
    except ValueError:
        return None


def segment_stem(path: str) -> str:
    """The stem of the log file a segment was rolled from."""
    return posixpath.basename(path).removesuffix(".parquet")


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether an fsspec filesystem is this machine's own (where a rename is atomic)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


class SegmentStore(ABC):
    """Where segments live. `url` is the store as configured (a roll process reopens the
    store from it); `fs` and `root` are the fsspec filesystem and the root in its paths."""

    url: str
    fs: fsspec.AbstractFileSystem
    root: str

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def path(self, kind: str, hour: int, stem: str) -> str:
        """The path (in `fs`) of the segment of `kind` and `hour` rolled from log file `stem`."""
        return f"{self.root}/{kind}/{_HOUR_PREFIX}{hour_label(hour)}/{stem}.parquet"

    @abstractmethod
    def write(self, table: pa.Table, path: str) -> None:
        """Publishes `table` as the segment at `path`, whole or not at all (replacing one
        already there): readers never see a segment half written."""

    def list(
        self, kind: str, *, start_hour: int | None = None, end_hour: int | None = None
    ) -> list[str]:
        """The paths (in `fs`) of the published segments of `kind`, in hour order, those of
        hours in [start_hour, end_hour) when given (hours since the epoch)."""
        kind_root = f"{self.root}/{kind}/"
        # Another process (a roll process) may have written since: no listing from a cache
        # (s3fs keeps one per directory); one recursive listing (one request on S3).
        self.fs.invalidate_cache()
        paths = []
        for path in self.fs.find(kind_root):
            partition, _, name = path.removeprefix(kind_root).partition("/")
            if (
                not path.startswith(kind_root)
                or not partition.startswith(_HOUR_PREFIX)
                or "/" in name
                or not name.endswith(".parquet")
                or name.startswith(TEMP_PREFIX)
            ):
                continue
            if start_hour is not None or end_hour is not None:
                hour = hour_of_label(partition.removeprefix(_HOUR_PREFIX))
                if (
                    hour is None
                    or (start_hour is not None and hour < start_hour)
                    or (end_hour is not None and hour >= end_hour)
                ):
                    continue
            paths.append(path)
        return sorted(paths)

    def url_of(self, path: str) -> str:
        """A URL of the segment at `path` that readers outside openbid can open."""
        return self.fs.unstrip_protocol(path)

    def urls(
        self, kind: str, *, start_hour: int | None = None, end_hour: int | None = None
    ) -> list[str]:
        """`list()` as URLs (DuckDB's `read_parquet`, Spark's `spark.read.parquet`)."""
        return [
            self.url_of(path) for path in self.list(kind, start_hour=start_hour, end_hour=end_hour)
        ]

    def read(self, path: str) -> pa.Table:
        """The segment at `path` as one table."""
        with self.fs.open(path, "rb") as handle:
            return pq.read_table(handle)

    def remove_temp_files(self, stem: str) -> None:  # noqa: B027 (only some backends have any)
        """Removes what an interrupted write of log file `stem`'s segments left behind."""
