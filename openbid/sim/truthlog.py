"""The ground truth of what simulated users saw and did, kept beside the event log.

One row per impression a simulated user saw: the ids that join it to the exchange's events
(auction id, our bid id, request id), the true click and conversion probabilities (the
oracle), the draws and what followed from them. Models are held against it: expected clicks
(the sum of `click_probability`) against actual clicks, per slice, per model version.

Rows go to Parquet files `truth-<run>-<n>.parquet` in one directory (the demo's: `truth/`
beside `events/`), every `flush_rows` rows and on close; each file is written under a
temporary name and renamed, so a reader never sees half of one. `read_truth(directory)`
reads them all back as one Arrow table.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TRUTH_SCHEMA = pa.schema(
    [
        ("ts_micros", pa.int64()),
        ("request_id", pa.string()),
        ("auction_id", pa.string()),
        ("bid_id", pa.string()),
        ("creative_id", pa.string()),
        ("advertiser", pa.string()),
        ("user_id", pa.string()),
        ("user_id_sent", pa.bool_()),
        ("click_probability", pa.float64()),
        ("click_draw", pa.float64()),
        ("clicked", pa.bool_()),
        ("click_delay_s", pa.float64()),
        ("conversion_probability", pa.float64()),
        ("conversion_draw", pa.float64()),
        ("converted", pa.bool_()),
        ("view_conversion_probability", pa.float64()),
        ("view_conversion_draw", pa.float64()),
        ("view_converted", pa.bool_()),
        ("conversion_delay_s", pa.float64()),
        ("postback", pa.bool_()),
        ("value_micros", pa.int64()),
    ]
)
"""`user_id` is the market's id of the user; `user_id_sent` whether the request carried one
(only then can the exchange log it). `clicked`, `converted` (after a click) and
`view_converted` (without one) are what the user does, drawn as `click_draw <
click_probability` and so on; delays are market seconds."""


class TruthLog:
    """Appends truth rows and writes them to Parquet in `directory`."""

    def __init__(self, directory: str | Path, flush_rows: int = 10_000) -> None:
        self.directory = Path(directory)
        self.flush_rows = flush_rows
        self._run = f"{int(time.time())}-{os.getpid()}"
        self._files = 0
        self._columns: dict[str, list[Any]] = {name: [] for name in TRUTH_SCHEMA.names}
        self.rows = 0
        self.expected_clicks = 0.0
        """Running sum of the true click probabilities of every row appended."""
        self.clicks = 0

    def append(self, row: dict[str, Any]) -> None:
        """One seen impression (every column of `TRUTH_SCHEMA`)."""
        for name, column in self._columns.items():
            column.append(row[name])
        self.rows += 1
        self.expected_clicks += row["click_probability"]
        self.clicks += bool(row["clicked"])

    @property
    def pending(self) -> int:
        """Rows not yet written."""
        return len(self._columns["ts_micros"])

    def full(self) -> bool:
        return self.pending >= self.flush_rows

    def take(self) -> pa.Table | None:
        """The rows not yet written, as a table (and forgets them); None when there are none."""
        if not self.pending:
            return None
        table = pa.table(self._columns, schema=TRUTH_SCHEMA)
        self._columns = {name: [] for name in TRUTH_SCHEMA.names}
        return table

    def write(self, table: pa.Table) -> Path:
        """Writes one file (blocking: run it off the event loop)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files += 1
        path = self.directory / f"truth-{self._run}-{self._files:05d}.parquet"
        temporary = path.with_suffix(".parquet.tmp")
        pq.write_table(table, temporary)
        temporary.replace(path)
        return path

    def flush(self) -> Path | None:
        """Writes what is pending (blocking)."""
        table = self.take()
        return self.write(table) if table is not None else None


def read_truth(directory: str | Path) -> pa.Table:
    """Every truth row written in `directory` (an empty table when there is none)."""
    paths = sorted(Path(directory).glob("truth-*.parquet"))
    if not paths:
        return TRUTH_SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(path, schema=TRUTH_SCHEMA) for path in paths)
