"""Building a training set: plan its windows on the one clock, read its events, run its
transformation on an engine, write Parquet and a manifest through fsspec.

Windows and late events: a row is emitted only once its window has closed and the wait for
late events has passed by the clock's time (`openbid.clock`): an impression at `t` goes into
the click set once `now > t + click_window_s + late_wait_s`, labelled with what came by
then. Rows whose window is still open are left for a later run (`closed_until_micros` in the
manifest says where that starts), never emitted as negatives.

Layout of the output (`out_url` may be a directory or any fsspec URL):

    <out_url>/<set>/<since>_<until>/rows.parquet       one row per training example
    <out_url>/<set>/<since>_<until>/auctions.parquet   shaping only: each auction's features
    <out_url>/<set>/<since>_<until>/manifest.json      written last: a set without one is
                                                       incomplete
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openbid import clock
from openbid.config import EtlConfig
from openbid.errors import OpenbidError
from openbid.events import SCHEMA_VERSION
from openbid.pipeline.engines import Engine
from openbid.pipeline.source import EventSource, Progress, entries_to_map
from openbid.pipeline.transforms import (
    CARRIED,
    INPUTS,
    OUTPUT_SCHEMAS,
    SETS,
    SQL,
    TABLE_KINDS,
    render,
)

log = logging.getLogger(__name__)

MICROS = 1_000_000
MANIFEST_NAME = "manifest.json"
TRAINING_SET_VERSION = 1
"""Version of the training sets' layout and columns (in every manifest)."""


class PipelineError(OpenbidError):
    """A training set could not be built or read (the message says which and why)."""


@dataclass(frozen=True, slots=True)
class Windows:
    """The join windows and the wait for late events, in (market) seconds."""

    click_window_s: float = 3600.0
    post_click_window_s: float = 7 * 86400.0
    post_view_window_s: float = 86400.0
    late_wait_s: float = 300.0
    lookback_s: float = 86400.0

    @classmethod
    def from_config(cls, etl: EtlConfig) -> Windows:
        return cls(
            click_window_s=etl.click_window_s,
            post_click_window_s=etl.post_click_window_s,
            post_view_window_s=etl.post_view_window_s,
            late_wait_s=etl.late_wait_s,
            lookback_s=etl.lookback_s,
        )


@dataclass(slots=True)
class Plan:
    """What one build reads and binds: its SQL parameters and each table's time range."""

    set_name: str
    since_micros: int
    until_micros: int
    now_micros: int
    closed_until_micros: int
    """Rows from here to `until_micros` wait for their window to close."""
    parameters: dict[str, int]
    load_since_micros: int
    load_until_micros: int


def plan(
    set_name: str,
    windows: Windows,
    *,
    since_micros: int | None,
    until_micros: int | None,
    now_micros: int | None = None,
) -> Plan:
    """The windows of one build of `set_name`, by the clock's `now` (default: `clock.now_micros()`).

    >>> p = plan("click", Windows(click_window_s=60, late_wait_s=10),
    ...          since_micros=0, until_micros=1_000_000_000, now_micros=100_000_000)
    >>> p.closed_until_micros  # 100 s now - 60 s window - 10 s wait
    30000000
    """
    if set_name not in SETS:
        raise PipelineError(f"unknown training set {set_name!r}; expected one of {list(SETS)}")
    now = clock.now_micros() if now_micros is None else int(now_micros)
    since = 0 if since_micros is None else int(since_micros)
    until = now if until_micros is None else int(until_micros)
    if until <= since:
        raise PipelineError(f"empty window: --until ({until}) must be after --since ({since})")
    wait = _micros(windows.late_wait_s)

    def closed(window_s: float) -> int:
        return max(since, min(until, now - _micros(window_s) - wait))

    lookback = _micros(windows.lookback_s)
    if set_name == "shaping":
        closed_until = closed(0.0)
        parameters = {"since_micros": since, "until_micros": closed_until}
        load = (since, closed_until)
    elif set_name == "click":
        closed_until = closed(windows.click_window_s)
        parameters = {
            "since_micros": since,
            "closed_until_micros": closed_until,
            "click_window_micros": _micros(windows.click_window_s),
        }
        # the clicks of the last impressions come up to a window later
        load = (since - lookback, min(now - wait, closed_until + _micros(windows.click_window_s)))
    else:
        click_closed = closed(windows.post_click_window_s)
        view_closed = closed(windows.post_view_window_s)
        closed_until = min(click_closed, view_closed)
        parameters = {
            "since_micros": since,
            "click_closed_until_micros": click_closed,
            "view_closed_until_micros": view_closed,
            "post_click_window_micros": _micros(windows.post_click_window_s),
            "post_view_window_micros": _micros(windows.post_view_window_s),
        }
        reach = max(
            click_closed + _micros(windows.post_click_window_s),
            view_closed + _micros(windows.post_view_window_s),
        )
        load = (since - lookback, min(now - wait, reach))
    return Plan(
        set_name=set_name,
        since_micros=since,
        until_micros=until,
        now_micros=now,
        closed_until_micros=closed_until,
        parameters=parameters,
        load_since_micros=max(load[0], 0),
        load_until_micros=max(load[1], load[0] + 1),
    )


@dataclass(slots=True)
class Manifest:
    """What a training set holds and where it came from (`manifest.json`)."""

    set: str
    rows: int
    positives: int
    window: dict[str, Any]
    windows: dict[str, float]
    engine: str
    engine_version: str
    source: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    events_in: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    sql_sha256: str = ""
    created_at_micros: int = 0
    event_schema_version: int = SCHEMA_VERSION
    version: int = TRAINING_SET_VERSION
    path: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


@dataclass(slots=True)
class Built:
    """A training set in memory (`tables["rows"]`, and for shaping `tables["auctions"]`),
    with its manifest."""

    tables: dict[str, pa.Table]
    manifest: Manifest

    @property
    def rows(self) -> pa.Table:
        return self.tables["rows"]


def run(
    set_name: str,
    source: EventSource,
    engine: Engine,
    windows: Windows,
    *,
    since_micros: int | None = None,
    until_micros: int | None = None,
    now_micros: int | None = None,
    progress: Progress | None = None,
) -> Built:
    """Builds `set_name`'s rows on `engine` (nothing is written)."""
    the_plan = plan(
        set_name,
        windows,
        since_micros=since_micros,
        until_micros=until_micros,
        now_micros=now_micros,
    )
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    tables: dict[str, pa.Table] = {}
    for table_name, columns in INPUTS[set_name].items():
        tables[table_name] = source.load(
            TABLE_KINDS[table_name],
            columns,
            the_plan.load_since_micros,
            the_plan.load_until_micros,
            progress,
        )
    seconds["read"] = time.perf_counter() - started
    events_in = sum(t.num_rows for t in tables.values())
    if progress is not None:
        progress(f"join {set_name} on {engine.name}", 0, 1)
    started = time.perf_counter()
    outputs = join(set_name, engine, tables, the_plan.parameters)
    rows = outputs["rows"]
    seconds["join"] = time.perf_counter() - started
    if progress is not None:
        progress(f"join {set_name} on {engine.name}", 1, 1)
    manifest = Manifest(
        set=set_name,
        rows=rows.num_rows,
        positives=int(pc.sum(rows["label"]).as_py() or 0),
        window={
            "since_micros": the_plan.since_micros,
            "until_micros": the_plan.until_micros,
            "closed_until_micros": the_plan.closed_until_micros,
            "now_micros": the_plan.now_micros,
            "since": _iso(the_plan.since_micros),
            "until": _iso(the_plan.until_micros),
            "closed_until": _iso(the_plan.closed_until_micros),
        },
        windows=asdict(windows),
        engine=engine.name,
        engine_version=engine.version(),
        source={
            "events_dir": str(source.directory),
            "segments_url": source.segments_url,
            "read_since_micros": the_plan.load_since_micros,
            "read_until_micros": the_plan.load_until_micros,
            "events": {TABLE_KINDS[name]: table.num_rows for name, table in tables.items()},
            "segments": {
                TABLE_KINDS[name]: source.reads[TABLE_KINDS[name]].segments for name in tables
            },
            "bad_records": source.bad_records,
        },
        events_in=events_in,
        seconds=seconds,
        sql_sha256=hashlib.sha256(
            "".join(SQL[set_name][name] for name in sorted(SQL[set_name])).encode()
        ).hexdigest(),
        created_at_micros=the_plan.now_micros,
    )
    return Built(outputs, manifest)


def join(
    set_name: str, engine: Engine, tables: dict[str, pa.Table], parameters: dict[str, int]
) -> dict[str, pa.Table]:
    """Runs `set_name`'s transformation on `engine` over `tables` (named as in its SQL);
    each output comes back with its columns and types (`OUTPUT_SCHEMAS`)."""
    carried: dict[str, tuple[str, pa.ChunkedArray]] = {}  # index column -> (map's name, map)
    for name, table in tables.items():
        if name in CARRIED and CARRIED[name][0] in table.column_names:
            column, index = CARRIED[name]
            carried[index] = (column, table[column])
            positions = pa.array(np.arange(table.num_rows, dtype=np.int64))
            table = table.drop_columns([column]).append_column(index, positions)
        engine.register(name, table)
    outputs = {}
    for output in OUTPUT_SCHEMAS[set_name]:
        table = engine.query(render(set_name, engine.dialect, parameters, output))
        for index, (column, values) in carried.items():
            if index in table.column_names:
                at = table.column_names.index(index)
                table = table.set_column(at, column, entries_to_map(values.take(table[index])))
        outputs[output] = table
    if "auctions" in outputs:
        # rows point at their auction's position in `auctions` (both in time order)
        rows, auctions = outputs["rows"], outputs["auctions"]
        auction_row = pc.index_in(rows["auction_id"], value_set=auctions["auction_id"])
        outputs["rows"] = rows.add_column(2, "auction_row", auction_row.cast(pa.int64()))
    for output, schema in OUTPUT_SCHEMAS[set_name].items():
        table = outputs[output]
        if table.column_names != schema.names:
            raise PipelineError(
                f"{engine.name} returned the columns {table.column_names} for "
                f"{set_name!r} ({output}); expected {schema.names}"
            )
        outputs[output] = table.cast(schema)
    return outputs


def build_training_set(
    set_name: str,
    source: EventSource,
    engine: Engine,
    windows: Windows,
    out_url: str,
    *,
    since_micros: int | None = None,
    until_micros: int | None = None,
    now_micros: int | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Builds `set_name` and writes it under `out_url`; returns its manifest."""
    built = run(
        set_name,
        source,
        engine,
        windows,
        since_micros=since_micros,
        until_micros=until_micros,
        now_micros=now_micros,
        progress=progress,
    )
    started = time.perf_counter()
    path = write_training_set(built, out_url, progress=progress)
    built.manifest.seconds["write"] = time.perf_counter() - started
    _write_manifest(built.manifest, path)
    log.info(
        "training set built",
        extra={
            "set": set_name,
            "rows": built.manifest.rows,
            "positives": built.manifest.positives,
            "engine": engine.name,
            "path": path,
        },
    )
    return built.manifest


def set_directory(out_url: str, set_name: str, since_micros: int, until_micros: int) -> str:
    """`<out_url>/<set>/<since>_<until>` with compact UTC times (`20261122T210000Z`)."""
    return f"{out_url.rstrip('/')}/{set_name}/{_label(since_micros)}_{_label(until_micros)}"


def write_training_set(built: Built, out_url: str, progress: Progress | None = None) -> str:
    """Writes the rows of `built` (not yet its manifest); returns the set's directory."""
    window = built.manifest.window
    path = set_directory(
        out_url, built.manifest.set, window["since_micros"], window["until_micros"]
    )
    fs, root = fsspec.core.url_to_fs(path)
    if fs.exists(f"{root}/{MANIFEST_NAME}"):
        fs.rm(f"{root}/{MANIFEST_NAME}")  # incomplete until the new manifest is written
    fs.makedirs(root, exist_ok=True)
    total = sum(t.num_rows for t in built.tables.values())
    done = 0
    for output, table in built.tables.items():
        if progress is not None:
            progress(f"write {built.manifest.set}", done, total)
        name = f"{output}.parquet"
        with fs.open(f"{root}/{name}", "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
        built.manifest.files[output] = name
        done += table.num_rows
    if progress is not None:
        progress(f"write {built.manifest.set}", total, total)
    built.manifest.path = path
    return path


def _write_manifest(manifest: Manifest, path: str) -> None:
    fs, root = fsspec.core.url_to_fs(path)
    text = manifest.to_json().encode()
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        # a local directory: write aside, then rename (a reader never sees half a manifest)
        tmp = f"{root}/.{MANIFEST_NAME}.tmp"
        with fs.open(tmp, "wb") as handle:
            handle.write(text)
        fs.mv(tmp, f"{root}/{MANIFEST_NAME}")
    else:  # object stores publish an object whole when its upload completes
        with fs.open(f"{root}/{MANIFEST_NAME}", "wb") as handle:
            handle.write(text)


def read_training_set(path: str) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """A written training set's tables (`rows`, shaping's `auctions`) and manifest
    (refused while its manifest is missing)."""
    fs, root = fsspec.core.url_to_fs(path)
    try:
        with fs.open(f"{root}/{MANIFEST_NAME}", "rb") as handle:
            manifest = json.loads(handle.read())
    except FileNotFoundError:
        raise PipelineError(f"{path}: no {MANIFEST_NAME}: the training set is incomplete") from None
    tables = {}
    for output, name in manifest["files"].items():
        with fs.open(f"{root}/{name}", "rb") as handle:
            tables[output] = pq.read_table(handle)
    return tables, manifest


def latest_training_set(out_url: str, set_name: str) -> str | None:
    """The directory of the complete training set of `set_name` under `out_url` whose window
    ends last (then: built last); None when there is none."""
    fs, root = fsspec.core.url_to_fs(f"{out_url.rstrip('/')}/{set_name}")
    best: tuple[int, int, str] | None = None
    for manifest_path in fs.glob(f"{root}/*/{MANIFEST_NAME}"):
        with fs.open(manifest_path, "rb") as handle:
            manifest = json.loads(handle.read())
        key = (
            manifest["window"]["closed_until_micros"],
            manifest["created_at_micros"],
            manifest["path"],
        )
        if best is None or key > best:
            best = key
    return None if best is None else best[2]


def _micros(seconds: float) -> int:
    return int(round(seconds * MICROS))


def _label(micros: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(micros // MICROS))


def _iso(micros: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(micros // MICROS))
