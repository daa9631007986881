"""Segments in a local directory: written under a unique temp name, fsync'd, renamed."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from openbid.events.segments.base import TEMP_PREFIX, SegmentStore, is_local


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Makes a directory's entries (a rename, an unlink) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalSegmentStore(SegmentStore):
    """A directory (a path or a `file://` URL). A rename is atomic: a segment is visible
    whole or not at all, and durable (its file and directory fsync'd) once `write` returns."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        if not is_local(self.fs):
            raise ValueError(f"not a local directory: {url!r}")

    def write(self, table: pa.Table, path: str) -> None:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        # Unique per call: two rollers never write into each other's temp file.
        stem = os.path.basename(path).removesuffix(".parquet")
        tmp = os.path.join(
            directory, f"{TEMP_PREFIX}{stem}-{os.getpid()}-{secrets.token_hex(4)}.parquet"
        )
        pq.write_table(table, tmp, compression="zstd")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(directory)

    def url_of(self, path: str) -> str:
        """The plain path: what DuckDB, Spark and pyarrow open without a scheme."""
        return path

    def remove_temp_files(self, stem: str) -> None:
        own = re.compile(rf"{re.escape(TEMP_PREFIX)}{re.escape(stem)}(-\d+-[0-9a-f]+)?\.parquet")
        for tmp in Path(self.root).glob(f"*/hour=*/{TEMP_PREFIX}{stem}*.parquet"):
            if own.fullmatch(tmp.name):
                tmp.unlink(missing_ok=True)
