"""The reader: segments then the tail, each event once; damage skipped and counted; the
snapshot the ETL reads with DuckDB (segment URLs) and Arrow (the tail)."""

import os

import pytest

from openbid.events import (
    AuctionEvent,
    ClickEvent,
    EventLog,
    EventReader,
    NoticeEvent,
    arrow_schema,
)
from openbid.events.framing import read_log_file
from openbid.events.roller import roll_log_file
from openbid.events.segments import LocalSegmentStore

from .conftest import HOUR_MICROS, T0, bids, seqs, write_dead_logs

HOUR = T0 // HOUR_MICROS


def test_events_round_trip_through_tail_and_segments(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    auction = AuctionEvent(
        T0, "a1", "req-1", publisher_id="pub-1", features={"country": "DE", "os": "iOS"}
    )
    log.emit(auction)
    for event in bids(10):
        log.emit(event)
    log.emit(NoticeEvent(T0 + 5, "a1", "bid-1", "billing", dsp="dsp-a", price_micros=1_250_000))
    log.flush()

    tail = EventReader(tmp_path)
    assert tail.read_table("bid").column("price_micros").to_pylist() == list(range(10))
    assert tail.read_table("auction").to_pylist()[0]["features"] == [
        ("country", "DE"),
        ("os", "iOS"),
    ]

    log.close()
    assert not list((tmp_path / "wal").glob("*.log"))
    reader = EventReader(tmp_path)
    assert reader.read_table("bid").column("auction_id").to_pylist() == [f"a{i}" for i in range(10)]
    notice = reader.read_table("notice").to_pylist()
    assert notice[0]["notice"] == "billing" and notice[0]["price_micros"] == 1_250_000
    assert reader.read_table("click").num_rows == 0
    assert reader.read_table("click").schema.equals(arrow_schema(ClickEvent))


def test_truncated_tail_is_skipped_and_counted(tmp_path, caplog):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    for event in bids(4):
        log.emit(event)
    log.flush()
    for event in bids(4, start=4):
        log.emit(event)
    log.flush()
    wal = next((tmp_path / "wal").glob("*.log"))
    size = wal.stat().st_size
    with open(wal, "r+b") as handle:  # tear the second record as a crash mid-write would
        handle.truncate(size - 7)
    reader = EventReader(tmp_path)
    table = reader.read_table("bid")
    assert table.column("auction_id").to_pylist() == [f"a{i}" for i in range(4)]
    assert reader.bad_records == 1
    assert "skipped damaged event log records" in caplog.text
    records, bad = read_log_file(wal)
    assert (len(records), bad) == (1, 1)
    log.close()


def test_garbage_log_file_never_crashes_the_reader(tmp_path):
    (tmp_path / "wal").mkdir()
    (tmp_path / "wal" / "dead-writer-00000001.log").write_bytes(os.urandom(4096))
    reader = EventReader(tmp_path)
    assert reader.read_table("bid").num_rows == 0
    assert reader.bad_records == 1


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown event kind 'bids'"):
        list(EventReader(tmp_path).tables("bids"))


def _partial_segment_of(path, segments):
    """What a roll cut short leaves: a segment of the log file holding some of its events."""
    segments.write(
        EventReader(path.parents[1]).read_table("bid").slice(0, 2),
        segments.path("bid", HOUR, path.stem),
    )


def test_a_log_file_shadows_the_segments_rolled_from_it(tmp_path):
    write_dead_logs(tmp_path, 1, 5)
    path = next((tmp_path / "wal").glob("*.log"))
    segments = LocalSegmentStore(str(tmp_path / "segments"))
    _partial_segment_of(path, segments)
    snapshot = EventReader(tmp_path).snapshot("bid")
    assert snapshot.segment_paths == ()  # the file is still the whole truth
    assert snapshot.tail_table().column("price_micros").to_pylist() == list(range(5))
    assert roll_log_file(path, segments) == 5
    snapshot = EventReader(tmp_path).snapshot("bid")
    assert len(snapshot.segment_paths) == 1 and snapshot.tail == ()
    assert sorted(seqs(tmp_path)) == list(range(5))


def test_a_file_rolled_while_the_snapshot_is_taken_is_read_once(tmp_path):
    write_dead_logs(tmp_path, 2, 5)
    first = sorted((tmp_path / "wal").glob("*.log"))[0]
    reader = EventReader(tmp_path)
    real_list = reader.segments.list

    def roll_then_list(kind, **hours):  # a roller finishes between the two steps
        roll_log_file(first, reader.segments)
        return real_list(kind, **hours)

    reader.segments.list = roll_then_list
    assert sorted(reader.read_table("bid").column("price_micros").to_pylist()) == list(range(10))
    assert not first.exists()


def test_a_snapshot_keeps_only_the_hours_asked_for(tmp_path):
    with EventLog(tmp_path, flush_interval_s=0.05) as log:  # rolled: hours HOUR and HOUR + 1
        for event in bids(3) + bids(2, start=3, ts=T0 + HOUR_MICROS):
            log.emit(event)
        log.roll()
        for event in bids(1, start=5) + bids(2, start=6, ts=T0 + 2 * HOUR_MICROS):
            log.emit(event)  # the tail: hours HOUR and HOUR + 2
        log.flush()
        reader = EventReader(tmp_path)
        hour_1_on = reader.read_table("bid", start_hour=HOUR + 1)
        assert sorted(hour_1_on.column("price_micros").to_pylist()) == [3, 4, 6, 7]
        first_hour = reader.snapshot("bid", end_hour=HOUR + 1)
        assert len(first_hour.segment_paths) == 1
        assert first_hour.tail_table().column("price_micros").to_pylist() == [5]
        assert reader.read_table("bid", start_hour=HOUR + 3).num_rows == 0


def test_the_etl_reads_a_snapshot_with_duckdb_each_event_once(tmp_path):
    """Segments by URL from the store (its filesystem registered), the tail as Arrow."""
    import duckdb

    url = f"memory://openbid-test/{tmp_path.name}/events"
    with EventLog(tmp_path, segments_url=url, flush_interval_s=0.05) as log:
        for event in bids(6):
            log.emit(event)
        log.roll()
        for event in bids(4, start=6):
            log.emit(event)
        log.flush()
        snapshot = EventReader(tmp_path, segments_url=url).snapshot("bid")
        assert all(u.startswith("memory://") for u in snapshot.segment_urls)
        connection = duckdb.connect()
        connection.register_filesystem(snapshot.store.fs)
        tail = snapshot.tail_table()  # noqa: F841 (DuckDB finds it by its name)
        prices = connection.execute(
            "select price_micros from read_parquet(?) union all"
            " select price_micros from tail order by 1",
            [snapshot.segment_urls],
        ).fetchall()
    assert [p for (p,) in prices] == list(range(10))
