"""What an audience refresh reads from the event log: the segments (Parquet files) not read
by an earlier run, as two Arrow tables: behaviours of users (`hits`: impressions, clicks,
conversions with a user id) and the context of the auctions they came from (`facts`: site,
domain, app, publisher, categories).

The watermark is the set of segment files already read, not a time: a worker's log file can
roll after another's, publishing events of an older hour later, and a time watermark would
skip them. Files still being rolled (their log file is alive) wait for the next run: their
segments may be partial. Files older than the longest window the spec can look back are
neither read nor remembered.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from openbid.events.segments import open_segment_store, segment_stem, segments_url_for
from openbid.events.segments.base import hour_of_label

HIT_KINDS: dict[str, str] = {"impression": "visited", "click": "clicked", "conversion": "converted"}
"""Event kind -> the behaviour it records."""
HITS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("ts_micros", pa.int64()),
        ("behaviour", pa.string()),
        ("auction_id", pa.string()),
        ("campaign_id", pa.string()),
        ("creative_id", pa.string()),
        ("advertiser", pa.string()),
        ("dedup_key", pa.string()),
    ]
)
FACTS_SCHEMA = pa.schema(
    [
        ("auction_id", pa.string()),
        ("ts_micros", pa.int64()),
        ("site_id", pa.string()),
        ("domain", pa.string()),
        ("app_bundle", pa.string()),
        ("publisher_id", pa.string()),
        ("categories", pa.string()),
    ]
)
"""`categories`: the page's and the content's, as `,IAB17,IAB17-44,` (commas around each)."""


def hour_of_path(path: str) -> int | None:
    """The hour (since the epoch) of a segment from its partition directory."""
    return hour_of_label(posixpath.basename(posixpath.dirname(path)).removeprefix("hour="))


@dataclass(slots=True)
class NewFiles:
    """Segment files not read yet, by kind; and those skipped (too old to matter)."""

    by_kind: dict[str, list[str]] = field(default_factory=dict)
    too_old: int = 0
    still_rolling: int = 0

    def all(self) -> list[str]:
        return [p for paths in self.by_kind.values() for p in paths]


class LogFiles:
    """The event log's segment store, listed for what a refresh has not read yet."""

    def __init__(self, events_dir: str | Path, segments_url: str = "") -> None:
        self.events_dir = Path(events_dir)
        self.store = open_segment_store(segments_url_for(self.events_dir, segments_url))

    def new_files(self, kinds: Iterable[str], consumed: set[str], *, since_hour: int) -> NewFiles:
        live = {p.stem for p in (self.events_dir / "wal").glob("*.log")}
        found = NewFiles()
        for kind in kinds:
            paths = []
            for path in self.store.list(kind):
                if path in consumed:
                    continue
                hour = hour_of_path(path)
                if hour is not None and hour < since_hour:
                    found.too_old += 1
                    continue
                if segment_stem(path) in live:
                    found.still_rolling += 1
                    continue
                paths.append(path)
            found.by_kind[kind] = paths
        return found

    def read(self, path: str) -> pa.Table:
        return self.store.read(path)


def _column(table: pa.Table, name: str) -> pa.Array:
    """A string column, '' where missing (a segment older than the field has none)."""
    if name not in table.column_names:
        return pa.array([""] * table.num_rows, pa.string())
    return pc.fill_null(table[name].cast(pa.string()), "").combine_chunks()


def hits_of(kind: str, table: pa.Table) -> pa.Table:
    """The behaviours in a segment of `kind` (impression, click, conversion) with a user id."""
    behaviour = HIT_KINDS[kind]
    if kind == "conversion":
        dedup = _column(table, "conversion_id")
    else:  # a tracker may fire twice: one behaviour per (auction, bid)
        dedup = pc.binary_join_element_wise(
            _column(table, "auction_id"), _column(table, "bid_id"), "\x1f"
        )
    hits = pa.table(
        {
            "user_id": _column(table, "user_id"),
            "ts_micros": table["ts_micros"].cast(pa.int64()).combine_chunks(),
            "behaviour": pa.array([behaviour] * table.num_rows, pa.string()),
            "auction_id": _column(table, "auction_id"),
            "campaign_id": _column(table, "campaign_id"),
            "creative_id": _column(table, "creative_id"),
            "advertiser": pc.utf8_lower(_column(table, "advertiser")),
            "dedup_key": pc.binary_join_element_wise(
                pa.array([behaviour] * table.num_rows, pa.string()), dedup, "\x1f"
            ),
        },
        schema=HITS_SCHEMA,
    )
    return hits.filter(pc.not_equal(hits["user_id"], ""))


def _feature(features: pa.ChunkedArray | pa.Array, key: str) -> pa.Array:
    if isinstance(features, pa.ChunkedArray):
        features = features.combine_chunks()
    if len(features) == 0:
        return pa.array([], pa.string())
    values = pc.map_lookup(features, pa.scalar(key, pa.string()), "first")
    return pc.fill_null(values.cast(pa.string()), "")


def facts_of(table: pa.Table) -> pa.Table:
    """The context of the won auctions in a segment of auctions (only those have impressions,
    so only those can be joined to a behaviour)."""
    if "outcome" in table.column_names:
        table = table.filter(pc.equal(table["outcome"], "won"))
    features = table["features"]
    page = _feature(features, "categories")
    content = _feature(features, "content_categories")
    joined = pc.binary_join_element_wise(page, content, ",")
    categories = pc.binary_join_element_wise(pa.scalar(""), joined, pa.scalar(""), ",")
    publisher = _column(table, "publisher_id")
    from_features = _feature(features, "publisher_id")
    publisher = pc.if_else(pc.equal(publisher, ""), from_features, publisher)
    return pa.table(
        {
            "auction_id": _column(table, "auction_id"),
            "ts_micros": table["ts_micros"].cast(pa.int64()).combine_chunks(),
            "site_id": _feature(features, "site_id"),
            "domain": _feature(features, "domain"),
            "app_bundle": _feature(features, "app_bundle"),
            "publisher_id": publisher,
            "categories": categories,
        },
        schema=FACTS_SCHEMA,
    )
