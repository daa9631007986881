"""Incremental hourly rollups of the event log: for each hour, three small Parquet tables
(auction, bid and delivery grains: `sql.py`) written beside the segments, so a report over a
month reads 720 summaries instead of every event.

An hour is summarised from its segments (every kind, the hour's partition) plus the
auctions its trackers refer to (publisher, placement, country, device: the hour and the one
before, then further back up to `lookback_s` for the few trackers that fire later). The
state file (`_state.json`) keeps, per hour, a fingerprint of the segments it was summarised
from and whether the hour was final:

| hour | summarised |
| --- | --- |
| final (it ended `roll_interval_s + grace_s` ago, market time) and not yet summarised as final | once, and the watermark moves past it |
| final, but a segment appeared or changed since (a late roll) | again, once |
| not final yet (the current hour) | provisionally, whenever its segments changed |

Hours older than `RECHECK_HOURS` before the watermark are not listed again for late
segments (a roll that late is a repair: `Rollups.rebuild(hours)`).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import fsspec
import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openbid.console.reports.sql import GRAINS, render
from openbid.events import EVENT_TYPES, arrow_schema
from openbid.events.segments.base import TEMP_PREFIX, hour_label, hour_of_label
from openbid.pipeline.engines import Engine

log = logging.getLogger(__name__)

HOUR_MICROS = 3_600_000_000
RECHECK_HOURS = 48
"""Hours before the watermark whose partitions are listed again for late segments."""
STATE_FILE = "_state.json"
KINDS = ("auction", "bid", "impression", "click", "conversion")
COLUMNS: dict[str, tuple[str, ...]] = {
    "auction": (
        "ts_micros",
        "auction_id",
        "publisher_id",
        "features",
        "outcome",
        "clearing_price_micros",
    ),
    "bid": ("auction_id", "dsp", "decision", "bid", "won", "error"),
    "impression": (
        "ts_micros",
        "auction_id",
        "bid_id",
        "dsp",
        "advertiser",
        "campaign_id",
        "line_item_id",
        "creative_id",
        "price_micros",
    ),
    "click": ("auction_id", "dsp", "advertiser", "campaign_id", "line_item_id", "creative_id"),
    "conversion": (
        "ts_micros",
        "auction_id",
        "conversion_id",
        "dsp",
        "advertiser",
        "campaign_id",
        "line_item_id",
        "attribution",
        "value_micros",
    ),
}
"""What each kind contributes. A column an event kind does not have (yet: `line_item_id`
comes with the buy side) or an older segment lacks is read as its default, empty; the
rollups have the column from the start, so it fills in when the events carry it."""
DIM_COLUMNS = ("auction_id", "publisher_id", "placement", "country", "device_type")


class HourState(msgspec.Struct):
    fingerprint: str
    final: bool
    summarised_at_s: float = 0.0


class RollupState(msgspec.Struct):
    hours: dict[str, HourState] = msgspec.field(default_factory=dict)
    """By hour since the epoch (as text: JSON keys)."""
    watermark_hour: int = 0
    """Every hour before it is final and summarised."""


@dataclass
class UpdateResult:
    summarised: list[int] = field(default_factory=list)
    resummarised: list[int] = field(default_factory=list)
    provisional: list[int] = field(default_factory=list)
    watermark_hour: int = 0
    seconds: float = 0.0


def _default(kind: str, column: str) -> object:
    fields = {f.name: f for f in msgspec.inspect.type_info(EVENT_TYPES[kind]).fields}
    spec = fields.get(column)
    if spec is None:
        return ""
    return spec.default if spec.default is not msgspec.NODEFAULT else ""


def _target_type(kind: str, column: str) -> pa.DataType:
    schema = arrow_schema(EVENT_TYPES[kind])
    index = schema.get_field_index(column)
    return schema.field(index).type if index >= 0 else pa.string()


class Rollups:
    """The rollups of the segments at `segments_url`, written under `rollups_url` (default
    `<segments>/_rollups`), built with `engine` (DuckDB or Spark: `openbid.pipeline`)."""

    def __init__(
        self,
        segments_url: str,
        engine: Engine,
        *,
        rollups_url: str = "",
        roll_interval_s: float = 60.0,
        grace_s: float = 300.0,
        lookback_s: float = 86_400.0,
    ) -> None:
        self.segments_url = segments_url.rstrip("/")
        self.rollups_url = (rollups_url or f"{self.segments_url}/_rollups").rstrip("/")
        self.engine = engine
        self.roll_interval_s = roll_interval_s
        self.grace_s = grace_s
        self.lookback_hours = max(int(lookback_s // 3600), 1)
        self.seg_fs, self.seg_root = fsspec.core.url_to_fs(self.segments_url)
        self.fs, self.root = fsspec.core.url_to_fs(self.rollups_url)
        self.state = self._read_state()
        self._dims: dict[int, pa.Table] = {}
        self.version = 0
        """Bumped on every write: readers caching rollups reload when it moves."""

    # --- state
    def _read_state(self) -> RollupState:
        path = f"{self.root}/{STATE_FILE}"
        try:
            with self.fs.open(path, "rb") as handle:
                return msgspec.json.decode(handle.read(), type=RollupState)
        except FileNotFoundError:
            return RollupState()
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning(
                "rollup state unreadable: summarising every hour again", extra={"path": path}
            )
            return RollupState()

    def _write_state(self) -> None:
        self._put(f"{self.root}/{STATE_FILE}", msgspec.json.encode(self.state))

    def _put(self, path: str, data: bytes) -> None:
        """Writes `path` whole: a temp name then a rename on a local disk (atomic), one
        upload on an object store (published whole when it completes)."""
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if "file" in protocols or "local" in protocols:
            temp = f"{posixpath.dirname(path)}/{TEMP_PREFIX}{posixpath.basename(path)}"
            with self.fs.open(temp, "wb") as handle:
                handle.write(data)
            self.fs.mv(temp, path)
        else:
            self.fs.pipe_file(path, data)

    # --- segments
    def _partitions(self, kind: str) -> dict[int, str]:
        """The hour partitions of `kind`: hour -> directory."""
        root = f"{self.seg_root}/{kind}"
        self.seg_fs.invalidate_cache()
        try:
            entries = self.seg_fs.ls(root, detail=False)
        except FileNotFoundError:
            return {}
        hours = {}
        for entry in entries:
            name = posixpath.basename(entry.rstrip("/"))
            if name.startswith("hour="):
                hour = hour_of_label(name.removeprefix("hour="))
                if hour is not None:
                    hours[hour] = entry.rstrip("/")
        return hours

    def _segments(self, directory: str) -> list[tuple[str, int]]:
        try:
            entries = self.seg_fs.ls(directory, detail=True)
        except FileNotFoundError:
            return []
        return sorted(
            (e["name"], int(e.get("size") or 0))
            for e in entries
            if e["name"].endswith(".parquet")
            and not posixpath.basename(e["name"]).startswith(TEMP_PREFIX)
        )

    def _hour_segments(
        self, hour: int, partitions: dict[str, dict[int, str]]
    ) -> dict[str, list[str]]:
        found = {}
        for kind in KINDS:
            directory = partitions[kind].get(hour)
            found[kind] = [p for p, _ in self._segments(directory)] if directory else []
        return found

    def _fingerprint(self, hour: int, partitions: dict[str, dict[int, str]]) -> str:
        digest = hashlib.sha256()
        for kind in KINDS:
            directory = partitions[kind].get(hour)
            for path, size in self._segments(directory) if directory else ():
                digest.update(f"{kind}\0{posixpath.basename(path)}\0{size}\n".encode())
        return digest.hexdigest()

    # --- update
    def final_before_hour(self, now_micros: int) -> int:
        """Hours before this one are final at `now_micros` (market time)."""
        settled = now_micros - int((self.roll_interval_s + self.grace_s) * 1_000_000)
        return settled // HOUR_MICROS

    def update(self, now_micros: int, *, provisional: bool = True) -> UpdateResult:
        """Summarises what changed since the last update (see the module docstring)."""
        started = time.perf_counter()
        result = UpdateResult()
        partitions = {kind: self._partitions(kind) for kind in KINDS}
        hours = sorted(set().union(*(p.keys() for p in partitions.values())))
        final_before = self.final_before_hour(now_micros)
        recheck_from = self.state.watermark_hour - RECHECK_HOURS
        for hour in hours:
            known = self.state.hours.get(str(hour))
            final = hour < final_before
            if not final and not provisional:
                continue
            if known is not None and known.final and hour < recheck_from:
                continue
            fingerprint = self._fingerprint(hour, partitions)
            if (
                known is not None
                and known.fingerprint == fingerprint
                and (known.final or not final)
            ):
                continue
            self._summarise(hour, partitions)
            self.state.hours[str(hour)] = HourState(fingerprint, final, time.time())
            if not final:
                result.provisional.append(hour)
            elif known is not None and known.final:
                result.resummarised.append(hour)
            else:
                result.summarised.append(hour)
        watermark = self.state.watermark_hour or (hours[0] if hours else final_before)
        present = set(hours)
        while watermark < final_before:
            known = self.state.hours.get(str(watermark))
            if watermark in present and not (known and known.final):
                break
            watermark += 1
        self.state.watermark_hour = watermark
        result.watermark_hour = watermark
        if result.summarised or result.resummarised or result.provisional:
            self._write_state()
            self.version += 1
        self._dims = {h: t for h, t in self._dims.items() if h >= final_before - 2}
        result.seconds = time.perf_counter() - started
        if result.summarised or result.resummarised:
            log.info(
                "report rollups updated",
                extra={
                    "summarised": len(result.summarised),
                    "resummarised": result.resummarised[:20],
                    "watermark": hour_label(watermark),
                    "seconds": round(result.seconds, 3),
                },
            )
        return result

    def rebuild(self, hours: Iterable[int]) -> None:
        """Summarises `hours` again, whatever the state says."""
        partitions = {kind: self._partitions(kind) for kind in KINDS}
        for hour in hours:
            self._summarise(hour, partitions)
            self.state.hours[str(hour)] = HourState(
                self._fingerprint(hour, partitions), True, time.time()
            )
        self._write_state()
        self.version += 1

    # --- one hour
    def _read(self, kind: str, paths: list[str]) -> pa.Table:
        columns = COLUMNS[kind]
        parts = []
        for path in paths:
            with self.seg_fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                present = [c for c in columns if c in parquet.schema_arrow.names]
                table = parquet.read(columns=present)
            parts.append(self._complete(kind, table))
        if parts:
            return pa.concat_tables(parts)
        return self._complete(kind, None)

    def _complete(self, kind: str, table: pa.Table | None) -> pa.Table:
        """`table` with every column of `COLUMNS[kind]`, missing ones at their defaults."""
        arrays, names = [], []
        rows = table.num_rows if table is not None else 0
        for column in COLUMNS[kind]:
            target = _target_type(kind, column)
            if table is not None and column in table.column_names:
                arrays.append(table[column].cast(target))
            else:
                default = _default(kind, column)
                if isinstance(default, dict):
                    default = list(default.items())
                arrays.append(pa.chunked_array([pa.array([default] * rows, target)]))
            names.append(column)
        return pa.Table.from_arrays(arrays, names=names)

    def _auction_dims(self, auctions: pa.Table, hour: int) -> pa.Table:
        """Auctions with their publisher, placement, country and device (read out of the
        features map), their hour, outcome and clearing price."""
        features = auctions["features"]

        def feature(name: str) -> pa.ChunkedArray:
            return pc.fill_null(pc.map_lookup(features, pa.scalar(name), "first"), "")

        publisher = pc.if_else(
            pc.equal(auctions["publisher_id"], ""),
            feature("publisher_id"),
            auctions["publisher_id"],
        )
        return pa.table(
            {
                "hour": pa.chunked_array([pa.array([hour] * auctions.num_rows, pa.int64())]),
                "auction_id": auctions["auction_id"],
                "publisher_id": publisher,
                "placement": feature("placement"),
                "country": feature("country"),
                "device_type": feature("device_type"),
                "outcome": auctions["outcome"],
                "clearing_price_micros": auctions["clearing_price_micros"],
            }
        )

    def _dims_of_hour(self, hour: int, partitions: dict[str, dict[int, str]]) -> pa.Table:
        cached = self._dims.get(hour)
        if cached is not None:
            return cached
        directory = partitions["auction"].get(hour)
        paths = [p for p, _ in self._segments(directory)] if directory else []
        table = self._auction_dims(self._read("auction", paths), hour).select(list(DIM_COLUMNS))
        self._dims[hour] = table
        return table

    def _summarise(self, hour: int, partitions: dict[str, dict[int, str]]) -> None:
        segments = self._hour_segments(hour, partitions)
        tables = {kind: self._read(kind, segments[kind]) for kind in KINDS}
        auctions = self._auction_dims(tables["auction"], hour)
        self._dims[hour] = auctions.select(list(DIM_COLUMNS))
        dims = pa.concat_tables([self._dims[hour], self._dims_of_hour(hour - 1, partitions)])
        wanted = pa.concat_arrays(
            [
                pc.unique(tables[kind]["auction_id"].combine_chunks())
                if tables[kind].num_rows
                else pa.array([], pa.string())
                for kind in ("impression", "click", "conversion")
            ]
        )
        missing = pc.filter(
            wanted, pc.invert(pc.is_in(wanted, value_set=dims["auction_id"].combine_chunks()))
        )
        if len(missing):
            dims = pa.concat_tables([dims, self._older_dims(hour, missing, partitions)])
        engine = self.engine
        engine.register("auctions", auctions)
        engine.register("dims", dims)
        engine.register("bids", tables["bid"])
        engine.register("impressions", tables["impression"])
        engine.register("clicks", tables["click"])
        engine.register("conversions", tables["conversion"])
        for grain in GRAINS:
            result = engine.query(render(grain, engine.dialect, hour))
            sink = pa.BufferOutputStream()
            pq.write_table(result, sink, compression="zstd")
            self._put(self.path(grain, hour), sink.getvalue().to_pybytes())

    def _older_dims(
        self, hour: int, missing: pa.Array, partitions: dict[str, dict[int, str]]
    ) -> pa.Table:
        """The auctions of `missing` ids among the hours before the last two, newest first,
        up to the lookback; stops as soon as every one is found."""
        found = []
        left = pc.unique(missing)
        for earlier in range(hour - 2, hour - self.lookback_hours - 1, -1):
            if earlier not in partitions["auction"] or len(left) == 0:
                continue
            directory = partitions["auction"][earlier]
            table = self._auction_dims(
                self._read("auction", [p for p, _ in self._segments(directory)]), earlier
            ).select(list(DIM_COLUMNS))
            hit = table.filter(pc.is_in(table["auction_id"], value_set=left))
            if hit.num_rows:
                found.append(hit)
                left = pc.filter(
                    left, pc.invert(pc.is_in(left, value_set=hit["auction_id"].combine_chunks()))
                )
            if len(left) == 0:
                break
        if not found:
            return pa.table({c: pa.array([], pa.string()) for c in DIM_COLUMNS})
        return pa.concat_tables(found)

    # --- reading
    def path(self, grain: str, hour: int) -> str:
        return f"{self.root}/{grain}/hour={hour_label(hour)}/rollup.parquet"

    def read(self, grain: str, hour: int) -> pa.Table | None:
        """The rollup of `grain` for `hour`, None when the hour has none."""
        try:
            with self.fs.open(self.path(grain, hour), "rb") as handle:
                return pq.read_table(handle)
        except FileNotFoundError:
            return None

    def summarised_hours(self) -> list[int]:
        return sorted(int(h) for h in self.state.hours)
