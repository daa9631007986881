"""The durable event log: round trips, rolling, damaged tails, crash safety, fsspec URLs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from openbid.events import (
    AuctionEvent,
    BidEvent,
    ClickEvent,
    EventLog,
    EventReader,
    NoticeEvent,
    arrow_schema,
)
from openbid.events.log import read_log_file

HOUR_MICROS = 3_600_000_000
T0 = 1_795_000_000 * 1_000_000  # an hour boundary in 2026


def _bids(n, start=0, ts=T0):
    return [BidEvent(ts + i, f"a{start + i}", "dsp-a", price_micros=start + i) for i in range(n)]


def test_events_round_trip_through_tail_and_segments(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    auction = AuctionEvent(
        T0, "a1", "req-1", publisher_id="pub-1", features={"country": "DE", "os": "iOS"}
    )
    log.emit(auction)
    for event in _bids(10):
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


def test_segments_are_partitioned_by_kind_and_hour(tmp_path):
    with EventLog(tmp_path, flush_interval_s=0.05) as log:
        for event in _bids(3, ts=T0) + _bids(2, start=3, ts=T0 + HOUR_MICROS):
            log.emit(event)
    segments = sorted(p.relative_to(tmp_path) for p in tmp_path.glob("segments/**/*.parquet"))
    hours = [p.parts[2] for p in segments]
    assert [p.parts[1] for p in segments] == ["bid", "bid"]
    assert len(set(hours)) == 2 and all(h.startswith("hour=") for h in hours)
    counts = sorted(pq.read_table(tmp_path / p).num_rows for p in segments)
    assert counts == [2, 3]


def test_log_rolls_on_interval_while_running(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=0.02, roll_interval_s=0.05)
    for event in _bids(5):
        log.emit(event)
    deadline = time.monotonic() + 10
    while not list(tmp_path.glob("segments/bid/*/*.parquet")):
        assert time.monotonic() < deadline, "no segment was rolled"
        time.sleep(0.02)
    log.close()
    assert EventReader(tmp_path).read_table("bid").num_rows == 5


def test_truncated_tail_is_skipped_and_counted(tmp_path, caplog):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    for event in _bids(4):
        log.emit(event)
    log.flush()
    for event in _bids(4, start=4):
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


def test_garbage_log_file_never_crashes_the_reader(tmp_path):
    (tmp_path / "wal").mkdir()
    (tmp_path / "wal" / "dead-writer-00000001.log").write_bytes(os.urandom(4096))
    reader = EventReader(tmp_path)
    assert reader.read_table("bid").num_rows == 0
    assert reader.bad_records == 1


def test_new_writer_rolls_the_log_of_a_dead_one(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    for event in _bids(6):
        log.emit(event)
    log.flush()
    # Simulate a crash: close the file (its lock goes with it) without rolling.
    os.close(log._fd)
    log._fd = None
    log._stopping = True
    log._wake.set()
    log._flusher.join()

    with EventLog(tmp_path, flush_interval_s=0.05) as successor:
        successor.roll()
    reader = EventReader(tmp_path)
    assert reader.read_table("bid").num_rows == 6
    assert len(list(tmp_path.glob("segments/bid/*/*.parquet"))) == 1


def test_full_buffer_drops_and_counts_instead_of_blocking(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=60, buffer_max_events=3)
    for event in _bids(5):
        log.emit(event)
    assert log.dropped == 2
    log.close()
    assert EventReader(tmp_path).read_table("bid").num_rows == 3


def test_segments_go_to_any_fsspec_url(tmp_path):
    url = f"memory://openbid-test-{os.getpid()}/events"
    with EventLog(tmp_path, segments_url=url, flush_interval_s=0.05) as log:
        for event in _bids(7):
            log.emit(event)
    assert not list(tmp_path.glob("segments/**/*.parquet"))
    reader = EventReader(tmp_path, segments_url=url)
    assert reader.read_table("bid").num_rows == 7


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown event kind 'bids'"):
        list(EventReader(tmp_path).tables("bids"))


FLUSH_S = 0.1


def _kill_writer_mid_stream(directory: Path, run_s: float) -> tuple[int, float]:
    """Runs a writer, SIGKILLs it, returns the last seq that must be durable and the kill time."""
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("writer_child.py")),
            str(directory),
            str(FLUSH_S),
            "0.15",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    reports: list[tuple[int, float]] = []
    assert child.stdout is not None
    first = child.stdout.readline()  # the writer is up (imports can take a while)
    seq, at = first.split()
    reports.append((int(seq), float(at)))
    started = time.monotonic()
    while time.monotonic() - started < run_s:
        line = child.stdout.readline()
        if not line:
            break
        seq, at = line.split()
        reports.append((int(seq), float(at)))
    killed_at = time.monotonic()
    child.send_signal(signal.SIGKILL)
    child.wait()
    # Every event handed over more than a flush interval (plus the fsync's own time)
    # before the kill must be on disk.
    durable = [seq for seq, at in reports if at < killed_at - FLUSH_S - 0.15]
    assert durable, "the writer reported no progress"
    return max(durable), killed_at


@pytest.mark.parametrize("run_s", [0.6, 0.9, 1.3])
def test_sigkill_mid_stream_loses_only_the_last_flush_interval(tmp_path, run_s):
    must_have, _ = _kill_writer_mid_stream(tmp_path, run_s)
    for segment in tmp_path.glob("segments/**/*.parquet"):
        if not segment.name.startswith(".tmp-"):  # a roll cut short: never read, removed later
            pq.read_table(segment)  # no corrupt segment: every one reads whole
    reader = EventReader(tmp_path)
    seqs = set(reader.read_table("bid").column("price_micros").to_pylist())
    missing = [s for s in range(must_have + 1) if s not in seqs]
    assert not missing, f"{len(missing)} events older than the flush interval were lost"

    # A restarted writer recovers the dead one's log into segments, without duplicates.
    with EventLog(tmp_path, flush_interval_s=0.05) as successor:
        successor.roll()
    recovered = EventReader(tmp_path).read_table("bid").column("price_micros").to_pylist()
    assert len(recovered) == len(set(recovered))
    assert set(recovered) >= set(range(must_have + 1))
    assert not list(tmp_path.glob("segments/**/.tmp-*"))
