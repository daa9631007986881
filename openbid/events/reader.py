"""The reader (`EventReader`): the events of the log as Arrow tables, rolled or not.

The segments are read from the segment store, then the tail: the log files not rolled yet.
While a log file exists it is the whole truth and any segments rolled from it (maybe partial:
the roll was cut short) are ignored. A damaged record is skipped with a warning and counted
(`bad_records`), never raised. `snapshot()` gives the same view to readers of their own (the
ETL's DuckDB or Spark): the segments' paths and URLs, and the tail as tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from openbid.events.columns import records_to_tables
from openbid.events.framing import WAL_SUFFIX, Record, read_log_file
from openbid.events.schema import EVENT_TYPES, arrow_schema
from openbid.events.segments import (
    SegmentStore,
    open_segment_store,
    segment_stem,
    segments_url_for,
)


@dataclass(frozen=True)
class Snapshot:
    """The events of one kind the log held at one moment, each exactly once: those in the
    segments at `segment_paths` (in `store.fs`; `segment_urls` for DuckDB or Spark) and
    those not rolled yet, `tail` (one table per hour, in hour order)."""

    kind: str
    store: SegmentStore
    segment_paths: tuple[str, ...]
    tail: tuple[pa.Table, ...]

    @property
    def segment_urls(self) -> list[str]:
        return [self.store.url_of(path) for path in self.segment_paths]

    def tail_table(self) -> pa.Table:
        """The tail in one table (empty, with the kind's schema, when there is none)."""
        if not self.tail:
            return arrow_schema(EVENT_TYPES[self.kind]).empty_table()
        return pa.concat_tables(self.tail, promote_options="default")


class EventReader:
    """Reads events back: the immutable segments, then the not-yet-rolled log files."""

    def __init__(self, directory: str | os.PathLike[str], *, segments_url: str = "") -> None:
        self.directory = Path(directory)
        self.segments = open_segment_store(segments_url_for(self.directory, segments_url))
        self.bad_records = 0

    def snapshot(
        self,
        kind: str,
        *,
        start_hour: int | None = None,
        end_hour: int | None = None,
        include_tail: bool = True,
    ) -> Snapshot:
        """The events of `kind` now (of hours in [start_hour, end_hour), hours since the
        epoch, when given): the segments to read and the tail, read now."""
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {sorted(EVENT_TYPES)}")
        wal_dir = self.directory / "wal"
        live_stems: set[str] = set()
        tail_records: list[Record] = []
        if include_tail and wal_dir.is_dir():
            # A log file is deleted only after its segments are durable, so while it exists
            # it is the whole truth and its (maybe partial) segments are ignored. The log
            # files are read before the segments are listed: a file rolled in between is
            # then read once, from the file.
            for path in sorted(wal_dir.glob(f"*{WAL_SUFFIX}")):
                try:
                    records, bad = read_log_file(path, kind)
                except FileNotFoundError:
                    continue  # rolled meanwhile: its segments are listed below
                self.bad_records += bad
                live_stems.add(path.stem)
                tail_records.extend(r for r in records if r.kind == kind)
        paths = tuple(
            path
            for path in self.segments.list(kind, start_hour=start_hour, end_hour=end_hour)
            if segment_stem(path) not in live_stems
        )
        tail = tuple(
            table
            for (_, hour), table in sorted(records_to_tables(tail_records).items())
            if (start_hour is None or hour >= start_hour) and (end_hour is None or hour < end_hour)
        )
        return Snapshot(kind, self.segments, paths, tail)

    def tables(
        self,
        kind: str,
        *,
        include_tail: bool = True,
        start_hour: int | None = None,
        end_hour: int | None = None,
    ) -> Iterator[pa.Table]:
        """Yields tables of events of `kind`, one per segment and one per hour of the tail."""
        snapshot = self.snapshot(
            kind, start_hour=start_hour, end_hour=end_hour, include_tail=include_tail
        )
        for path in snapshot.segment_paths:
            yield self.segments.read(path)
        yield from snapshot.tail

    def read_table(
        self,
        kind: str,
        *,
        include_tail: bool = True,
        start_hour: int | None = None,
        end_hour: int | None = None,
    ) -> pa.Table:
        """All events of `kind` in one table (empty with the right schema when there are none)."""
        tables = list(
            self.tables(kind, include_tail=include_tail, start_hour=start_hour, end_hour=end_hour)
        )
        if not tables:
            return arrow_schema(EVENT_TYPES[kind]).empty_table()
        return pa.concat_tables(tables, promote_options="default")
