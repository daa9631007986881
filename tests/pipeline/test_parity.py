"""DuckDB and Spark (real PySpark, local) build the same rows from the same segments and
tail, row for row, for every training set."""

from __future__ import annotations

import pytest

from openbid.events import AuctionEvent, BidEvent, ClickEvent, EventLog, ImpressionEvent
from openbid.pipeline import SETS, DuckDBEngine, EventSource, Windows, run
from openbid.pipeline.synthetic import synthetic_tables, write_segments

from .conftest import T0_MICROS as T0
from .conftest import S

WINDOWS = Windows(
    click_window_s=600,
    post_click_window_s=6 * 3600,
    post_view_window_s=3600,
    late_wait_s=60,
    lookback_s=3600,
)


@pytest.fixture(scope="module")
def event_log(tmp_path_factory):
    """Segments of a synthetic log (2,000 auctions of 2 imps over 2 h, with every kind, repeated
    tracker hits among them) plus a tail
    of events still in the log file, with a map of features the synthetic log lacks."""
    directory = tmp_path_factory.mktemp("parity")
    tables = synthetic_tables(
        2_000, seed=11, start_micros=T0, span_s=2 * 3600.0, imps_per_auction=2
    )
    write_segments(tables, str(directory / "segments"))
    log = EventLog(directory, roll_interval_s=3600)
    ts = T0 + 2 * 3600 * S
    log.emit(AuctionEvent(ts, "tail-a", "r", features={"os": "ios", "ü": "ß"}))
    log.emit(BidEvent(ts, "tail-a", "dsp0", bid=True, bid_id="tb", price_micros=10))
    log.emit(ImpressionEvent(ts + S, "tail-a", "tb", dsp="dsp0"))
    log.emit(ClickEvent(ts + 5 * S, "tail-a", "tb", dsp="dsp0"))
    log.flush()
    yield directory
    log.close()


@pytest.mark.slow
@pytest.mark.parametrize("set_name", SETS)
def test_spark_builds_the_same_rows_as_duckdb(event_log, spark, set_name):
    now = T0 + 12 * 3600 * S
    duck = run(set_name, EventSource(event_log), DuckDBEngine(), WINDOWS, now_micros=now)
    sparked = run(set_name, EventSource(event_log), spark, WINDOWS, now_micros=now)
    assert duck.rows.num_rows > 100 and duck.manifest.positives > 0
    for output, table in duck.tables.items():
        other = sparked.tables[output]
        assert other.schema.equals(table.schema), output
        assert other.num_rows == table.num_rows, output
        # row for row, in the order the SQL gives (ORDER BY is total over the rows)
        for column in table.column_names:
            assert other[column].to_pylist() == table[column].to_pylist(), (output, column)
    assert (sparked.manifest.rows, sparked.manifest.positives) == (
        duck.manifest.rows,
        duck.manifest.positives,
    )
    assert sparked.manifest.engine == "spark"
    if set_name == "click":
        assert "tb" in duck.rows["bid_id"].to_pylist()  # the tail took part
