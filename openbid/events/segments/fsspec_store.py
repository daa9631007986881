"""Segments in any fsspec store (S3-compatible object stores, `memory://`), one put each."""

from __future__ import annotations

import posixpath

import pyarrow as pa
import pyarrow.parquet as pq

from openbid.events.segments.base import SegmentStore


class FsspecSegmentStore(SegmentStore):
    """Any fsspec URL (`s3://bucket/events`, with its library installed: s3fs for S3).

    A segment is encoded in memory, then put in one request: an encoding failure publishes
    nothing, and an object store publishes an object whole when its upload completes (on a
    file system reached this way a put is one write, not a rename: a directory belongs in
    `LocalSegmentStore`, which `open_segment_store` picks for paths and `file://` URLs).
    """

    def write(self, table: pa.Table, path: str) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self.fs.pipe_file(path, sink.getvalue().to_pybytes())
