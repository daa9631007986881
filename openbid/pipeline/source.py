"""The ETL's input: event tables read from the event log (its Parquet segments on any fsspec
URL, then the not-yet-rolled tail) by `EventReader`, cut to a time range and the columns a
transformation needs.

Segments written before a field was appended lack its column: it is filled with the
field's default, as the schema promises (`openbid/events/schema.py`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from openbid.events import EVENT_TYPES, EventReader, arrow_schema

HOUR_MICROS = 3_600_000_000

ENTRIES = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
"""How a map column (`features`) enters an engine: as its list of (key, value) entries, the
same buffers (a zero-copy cast). DuckDB checks every key of an Arrow map it scans (measured:
4 s for 300k auctions of 12 features, 0.3 s as a list), and the transformations only carry
maps, never look into them. `entries_to_map` turns the column back."""

Progress = Callable[[str, int, int], None]
"""`progress(step, done, total)`: what a long run reports (the CLI draws it as bars)."""


def hour_label(hour: int) -> str:
    """The segment layout's partition label of an hour since the epoch (`2026-11-22T21`)."""
    return time.strftime("%Y-%m-%dT%H", time.gmtime(hour * 3600))


@dataclass(slots=True)
class KindRead:
    """What was read of one kind: the events kept, and the segments they came from."""

    events_read: int = 0
    events_kept: int = 0
    segments: list[str] = field(default_factory=list)


class EventSource:
    """The event log at `directory` (its `wal/` tail) with segments at `segments_url`
    (default `<directory>/segments`), read through `EventReader`."""

    def __init__(self, directory: str | os.PathLike[str], *, segments_url: str = "") -> None:
        self.directory = Path(directory)
        self.segments_url = (segments_url or str(self.directory / "segments")).rstrip("/")
        self.reader = EventReader(self.directory, segments_url=segments_url)
        self.reads: dict[str, KindRead] = {}

    @property
    def bad_records(self) -> int:
        return self.reader.bad_records

    def load(
        self,
        kind: str,
        columns: Sequence[str],
        since_micros: int,
        until_micros: int,
        progress: Progress | None = None,
    ) -> pa.Table:
        """The events of `kind` with `since_micros <= ts_micros < until_micros`, with
        `columns` (in that order)."""
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {sorted(EVENT_TYPES)}")
        schema = arrow_schema(EVENT_TYPES[kind])
        target = pa.schema([schema.field(name) for name in columns])
        defaults = _defaults(kind)
        parts: list[pa.Table] = []
        read = self.reads.setdefault(kind, KindRead())
        for table in self.reader.tables(kind):
            read.events_read += table.num_rows
            ts = table["ts_micros"]
            keep = pc.and_(
                pc.greater_equal(ts, pa.scalar(since_micros, pa.int64())),
                pc.less(ts, pa.scalar(until_micros, pa.int64())),
            )
            table = table.filter(keep)
            if progress is not None:
                progress(f"read {kind}", read.events_read, 0)
            if table.num_rows == 0:
                continue
            arrays = []
            for name in columns:
                if name in table.column_names:
                    column = table[name].cast(target.field(name).type)
                else:  # a segment older than the field
                    column = _constant(defaults[name], target.field(name).type, table.num_rows)
                if pa.types.is_map(column.type):
                    column = column.cast(ENTRIES)
                arrays.append(column)
            parts.append(pa.Table.from_arrays(arrays, names=list(columns)))
        result = pa.concat_tables(parts) if parts else _engine_schema(target).empty_table()
        read.events_kept += result.num_rows
        read.segments = self.segment_paths(kind, since_micros, until_micros)
        return result

    def segment_paths(self, kind: str, since_micros: int, until_micros: int) -> list[str]:
        """The rolled segments of `kind` whose hour overlaps the range (the segment layout:
        `<segments>/<kind>/hour=<YYYY-MM-DDTHH>/<log file>.parquet`), less those whose log
        file is still in the tail (the reader reads that file instead)."""
        fs, root = fsspec.core.url_to_fs(self.segments_url)
        live = {p.name.removesuffix(".log") for p in (self.directory / "wal").glob("*.log")}
        first = hour_label(since_micros // HOUR_MICROS) if since_micros > 0 else ""
        last = hour_label(max(until_micros - 1, 0) // HOUR_MICROS)
        paths = []
        for path in sorted(fs.glob(f"{root}/{kind}/hour=*/*.parquet")):
            name = path.rsplit("/", 1)[-1]
            hour = path.rsplit("/", 2)[-2].removeprefix("hour=")
            if name.startswith(".tmp-") or name.removesuffix(".parquet") in live:
                continue
            if first <= hour <= last:
                paths.append(path)
        return paths


def _engine_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, ENTRIES) if pa.types.is_map(f.type) else f for f in schema])


def entries_to_map(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A list of (key, value) structs (as `ENTRIES`, or as an engine returns it) as a map."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], ENTRIES)
    if pa.types.is_map(column.type):
        return column.cast(pa.map_(pa.string(), pa.string()))
    if column.offset:  # a slice: its offsets would point into the parent's entries
        column = pa.concat_arrays([column])
    entries = column.values
    return pa.MapArray.from_arrays(
        column.offsets,
        entries.field(0).cast(pa.string()),
        entries.field(1).cast(pa.string()),
        mask=column.is_null() if column.null_count else None,
    )


def _defaults(kind: str) -> dict[str, object]:
    info = msgspec.inspect.type_info(EVENT_TYPES[kind])
    return {
        f.name: (f.default if f.default is not msgspec.NODEFAULT else f.default_factory())
        for f in info.fields
        if not f.required
    }


def _constant(value: object, type_: pa.DataType, length: int) -> pa.Array:
    if isinstance(value, dict):
        return pa.array([list(value.items())] * length, type=type_)
    return pa.array([value] * length, type=type_)
