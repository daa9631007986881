"""The durable event log: round trips, rolling, damaged tails, crash safety, fsspec URLs."""

import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest

import openbid.events.log as log_module
from openbid.events import (
    AuctionEvent,
    BidEvent,
    ClickEvent,
    EventLog,
    EventLogError,
    EventReader,
    NoticeEvent,
    arrow_schema,
)
from openbid.events.log import (
    ENCODE_BATCH,
    _encode_record,
    _SegmentStore,
    hour_label,
    parse_log,
    read_log_file,
    roll_log_file,
)
from openbid.events.schema import SCHEMA_VERSION
from openbid.obs import REGISTRY

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


class _FailingDisk:
    """Stands in for a disk that fills up under one writer's log file (other files unharmed)."""

    def __init__(self, monkeypatch, log):
        self.log = log
        self.full = False
        self.short_writes = 0
        self.fsync_failures = 0
        self.lose_unsynced_from = None  # the file offset from which a failed fsync loses pages
        self.max_file_bytes = None  # a file size limit (RLIMIT_FSIZE): EFBIG past it
        real_write, real_fsync = os.write, os.fsync

        def write(fd, data):
            if (
                self.max_file_bytes is not None
                and os.fstat(fd).st_size + len(data) > self.max_file_bytes
            ):
                raise OSError(errno.EFBIG, "File too large")
            if fd != log._fd or not self.full:
                return real_write(fd, data)
            if self.short_writes:
                self.short_writes -= 1
                return real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def fsync(fd):
            if fd == log._fd and self.fsync_failures:
                self.fsync_failures -= 1
                if self.lose_unsynced_from is not None:
                    # The kernel dropped the dirty pages: what is on disk is not what was written.
                    end = os.fstat(fd).st_size
                    os.pwrite(fd, bytes(end - self.lose_unsynced_from), self.lose_unsynced_from)
                raise OSError(errno.EIO, "Input/output error")
            return real_fsync(fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)


def _seqs(directory):
    return EventReader(directory).read_table("bid").column("price_micros").to_pylist()


def test_short_write_on_a_full_disk_loses_nothing_and_flush_says_so(tmp_path, monkeypatch):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    disk = _FailingDisk(monkeypatch, log)
    for event in _bids(1000):
        log.emit(event)
    log.flush()
    disk.full, disk.short_writes = True, 1  # half a record lands, then ENOSPC
    for event in _bids(1000, start=1000):
        log.emit(event)
    with pytest.raises(EventLogError, match="did not finish"):
        log.flush(timeout_s=0.3)
    # The torn half was cut off: the file holds whole records only.
    records, bad = read_log_file(log._wal_path)
    assert bad == 0 and sum(r.batch.num_rows for r in records) == 1000
    disk.full = False
    for event in _bids(1000, start=2000):
        log.emit(event)
    log.flush()
    log.close()
    reader = EventReader(tmp_path)
    assert sorted(reader.read_table("bid").column("price_micros").to_pylist()) == list(range(3000))
    assert reader.bad_records == 0


def test_file_size_limit_mid_record_loses_nothing(tmp_path):
    """The same with the kernel's own short write (RLIMIT_FSIZE), in a child process."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("fsize_child.py")), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split("\n")[:2] == ["flush_failed True", "emitted 3000"]
    reader = EventReader(tmp_path)
    assert reader.read_table("click").num_rows == 3000
    assert reader.bad_records == 0


def test_a_write_outage_holds_a_bounded_write_for_the_retry_and_loses_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(log_module, "WRITE_MAX_BYTES", 8 * 1024)
    log = EventLog(tmp_path, flush_interval_s=0.05)
    disk = _FailingDisk(monkeypatch, log)
    disk.full = True
    for event in _bids(20_000):
        log.emit(event)
    _poll(lambda: log._pending, "the flusher did not try to write")
    time.sleep(0.2)  # a few more failed attempts
    # One write's worth (and at most one record more) is held; the rest waits in the buffer.
    assert 0 < len(log._pending) < 8 * 1024 + 8 * 1024
    assert log.buffered > 15_000
    disk.full = False
    log.close()
    assert _seqs(tmp_path) == list(range(20_000))  # in order, none lost


def test_a_log_file_at_its_size_limit_is_rotated_and_the_retry_goes_to_the_new_one(
    tmp_path, monkeypatch
):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    disk = _FailingDisk(monkeypatch, log)
    for event in _bids(100):
        log.emit(event)
    log.flush()
    first = log._wal_path
    disk.max_file_bytes = 2 * first.stat().st_size - 100  # the next 100 events do not fit
    for event in _bids(100, start=100):
        log.emit(event)
    log.flush(timeout_s=10)  # succeeds: the retry went to a new file
    assert log._wal_path != first
    disk.max_file_bytes = None
    log.close()
    assert sorted(_seqs(tmp_path)) == list(range(200))


def test_full_disk_drops_and_counts_with_bounded_memory(tmp_path, monkeypatch):
    log = EventLog(tmp_path, flush_interval_s=0.05, buffer_max_events=1000)
    disk = _FailingDisk(monkeypatch, log)
    disk.full = True
    for event in _bids(27_000):
        log.emit(event)
        if log.buffered >= 1000:  # let the flusher take the buffer and fail on it
            deadline = time.monotonic() + 10
            while log.buffered and not log._pending and time.monotonic() < deadline:
                time.sleep(0.005)
    # At most the buffer and what the flusher took are held; the rest was dropped and counted.
    assert log.buffered <= 1000
    assert log.dropped >= 27_000 - 2000
    assert len(log._pending) < 1_000_000
    disk.full = False
    log.close()
    assert len(_seqs(tmp_path)) == 27_000 - log.dropped


def test_reader_resyncs_past_a_damaged_record_mid_file(tmp_path, caplog):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    offsets = []
    for i in range(3):
        for event in _bids(10, start=10 * i):
            log.emit(event)
        log.flush()
        offsets.append(log._wal_path.stat().st_size)
    wal = log._wal_path
    data = bytearray(wal.read_bytes())
    middle = (offsets[0] + offsets[1]) // 2
    data[middle : middle + 8] = b"\xff" * 8  # bad sectors inside the second record
    records, bad = parse_log(bytes(data), "damaged")
    assert bad == 1
    assert [r.batch.num_rows for r in records] == [10, 10]
    assert "skipped damaged event log records" in caplog.text
    # A record torn in two, with later records appended after it, is skipped alone too.
    torn = (
        bytes(data[: offsets[0]])
        + bytes(data[offsets[0] : offsets[0] + 30])
        + bytes(data[offsets[1] :])
    )
    records, bad = parse_log(torn)
    got = [r.batch.column("price_micros").to_pylist() for r in records]
    assert (got, bad) == ([list(range(10)), list(range(20, 30))], 1)
    log.close()


def test_failed_fsync_rewrites_what_was_not_durable(tmp_path, monkeypatch):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    disk = _FailingDisk(monkeypatch, log)
    for event in _bids(100):
        log.emit(event)
    log.flush()
    first_file = log._wal_path
    disk.lose_unsynced_from = first_file.stat().st_size
    disk.fsync_failures = 1
    for event in _bids(100, start=100):
        log.emit(event)
    log.flush()  # succeeds only once the lost records are durable in a new file
    assert log._wal_path != first_file
    log.close()
    reader = EventReader(tmp_path)
    assert sorted(reader.read_table("bid").column("price_micros").to_pylist()) == list(range(200))
    assert reader.bad_records == 0


def _write_dead_logs(directory, files, rows_per_file):
    """Log files of writers that died before rolling: `files` of them, numbered events."""
    wal = directory / "wal"
    wal.mkdir(parents=True)
    for i in range(files):
        events = _bids(rows_per_file, start=i * rows_per_file)
        (wal / f"dead-{i:03d}-abcdef-00000001.log").write_bytes(_encode_record("bid", events))


def test_a_log_file_locked_by_another_roller_is_left_to_it(tmp_path):
    _write_dead_logs(tmp_path, 1, 5)
    path = next((tmp_path / "wal").glob("*.log"))
    segments = _SegmentStore(str(tmp_path / "segments"))
    other = os.open(path, os.O_RDONLY)  # another process is rolling it
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert roll_log_file(path, segments) is None
        assert path.exists() and not list(tmp_path.glob("segments/**/*.parquet"))
    finally:
        os.close(other)
    assert roll_log_file(path, segments) == 5
    assert not path.exists()
    assert roll_log_file(path, segments) == 0  # already rolled: nothing to do


def test_an_interrupted_rolls_temp_files_are_removed_and_names_never_collide(tmp_path, monkeypatch):
    _write_dead_logs(tmp_path, 1, 5)
    path = next((tmp_path / "wal").glob("*.log"))
    hour_dir = tmp_path / "segments" / "bid" / f"hour={hour_label(T0 // HOUR_MICROS)}"
    hour_dir.mkdir(parents=True)
    leftover = hour_dir / f".tmp-{path.stem}-123-abcd.parquet"  # a roller that crashed
    leftover.write_bytes(b"partial")
    unrelated = hour_dir / ".tmp-another-writer-00000001-5-ab.parquet"
    unrelated.write_bytes(b"partial")
    temp_names = []
    real_write_table = pq.write_table

    def write_table(table, where, **kwargs):
        temp_names.append(os.path.basename(where))
        return real_write_table(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_table)
    segments = _SegmentStore(str(tmp_path / "segments"))
    assert roll_log_file(path, segments) == 5
    assert not leftover.exists() and unrelated.exists()
    _write_dead_logs(tmp_path / "again", 1, 5)
    again = next((tmp_path / "again" / "wal").glob("*.log"))
    roll_log_file(again, _SegmentStore(str(tmp_path / "again" / "segments")))
    assert len(temp_names) == 2 and temp_names[0] != temp_names[1]
    assert all(name.startswith(f".tmp-{path.stem}-{os.getpid()}-") for name in temp_names)


def test_two_writers_starting_together_roll_each_dead_log_once(tmp_path):
    _write_dead_logs(tmp_path, 40, 50)
    script = (
        "import sys; from openbid.events import EventLog;"
        "log = EventLog(sys.argv[1], flush_interval_s=0.05); log.close()"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert "failed" not in err and "Traceback" not in err, err
    for segment in tmp_path.glob("segments/**/*.parquet"):
        assert not segment.name.startswith(".tmp-")
        pq.read_table(segment)
    assert not list((tmp_path / "wal").iterdir())
    assert sorted(_seqs(tmp_path)) == list(range(40 * 50))


class _FailingSegments:
    """Segment writes fail (object store down, disk full) until `failing` is cleared."""

    def __init__(self, monkeypatch):
        self.failing = True
        self.attempts = 0
        real_write = _SegmentStore.write

        def write(store, table, path):
            self.attempts += 1
            if self.failing:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(store, table, path)

        monkeypatch.setattr(_SegmentStore, "write", write)
        _fast_retries(monkeypatch)


def _waiting_gauge():
    return REGISTRY.get_sample_value("openbid_events_logs_waiting") or 0.0


def _poll(condition, what):
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_failed_roll_is_retried_in_process_and_counted_while_it_waits(tmp_path, monkeypatch):
    segments = _FailingSegments(monkeypatch)
    gauge_before = _waiting_gauge()
    log = EventLog(tmp_path, flush_interval_s=0.05)
    for event in _bids(20):
        log.emit(event)
    log.roll()  # the roll fails: the file waits for a retry
    assert log.logs_waiting == 1 and _waiting_gauge() == gauge_before + 1
    _poll(lambda: segments.attempts >= 3, "the failed roll was not retried")
    assert log.logs_waiting == 1 and len(list((tmp_path / "wal").glob("*.log"))) == 2
    segments.failing = False  # the store is back: the next retry rolls it, no restart needed
    _poll(lambda: log.logs_waiting == 0, "the log file was never rolled")
    assert _waiting_gauge() == gauge_before
    assert len(list(tmp_path.glob("segments/bid/*/*.parquet"))) == 1
    assert len(list((tmp_path / "wal").glob("*.log"))) == 1  # only the current one
    log.close()
    assert sorted(_seqs(tmp_path)) == list(range(20))


def test_close_during_an_outage_leaves_the_file_for_the_next_start(tmp_path, monkeypatch):
    segments = _FailingSegments(monkeypatch)
    gauge_before = _waiting_gauge()
    log = EventLog(tmp_path, flush_interval_s=0.05)
    for event in _bids(20):
        log.emit(event)
    log.close()  # returns: a shutdown is not held up by the outage
    assert len(list((tmp_path / "wal").glob("*.log"))) == 1
    assert _waiting_gauge() == gauge_before
    assert sorted(_seqs(tmp_path)) == list(range(20))  # still readable from the tail
    segments.failing = False
    with EventLog(tmp_path, flush_interval_s=0.05):
        pass
    assert not list((tmp_path / "wal").glob("*.log"))
    assert sorted(_seqs(tmp_path)) == list(range(20))


def _arrow_record(kind, events):
    """A record as logs written before MessagePack records hold it: an Arrow IPC stream."""
    import zlib

    import pyarrow as pa

    sink = pa.BufferOutputStream()
    batch = log_module._to_batch(kind, events)
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    payload = sink.getvalue().to_pybytes()
    header = log_module._HEADER.pack(
        log_module._MAGIC, 1, log_module._KIND_CODES[kind], len(payload), zlib.crc32(payload)
    )
    return header + payload


def test_records_are_messagepack_and_older_arrow_records_still_read(tmp_path):
    new = _encode_record("bid", _bids(3))
    assert new[:2] == log_module._MAGIC_MSGPACK
    old = _arrow_record("bid", _bids(2, start=3))
    records, bad = parse_log(old + new + b"torn tail" + old)
    assert bad == 1
    assert [r.batch.num_rows for r in records] == [2, 3, 2]
    prices = [p for r in records for p in r.batch.column("price_micros").to_pylist()]
    assert prices == [3, 4, 0, 1, 2, 3, 4]
    # A damaged MessagePack payload with a matching CRC is skipped, not raised.
    payload = b"\x91\x92\x01"
    header = log_module._HEADER.pack(
        log_module._MAGIC_MSGPACK,
        1,
        log_module._KIND_CODES["bid"],
        len(payload),
        __import__("zlib").crc32(payload),
    )
    assert parse_log(header + payload + new)[0][0].batch.num_rows == 3


class _SlowRollProcess:
    """Holds each roll process just before it rolls (after its priority and signals are set)
    until `release()`, and tells when one is waiting there."""

    def __init__(self, tmp_path, monkeypatch):
        self.gate = tmp_path / "roll-gate"
        self.gate.touch()
        self.started = tmp_path / "roll-started"
        hold = (
            "import os, time\n"
            f"open({str(self.started)!r}, 'w').close()\n"
            f"while os.path.exists({str(self.gate)!r}):\n"
            "    time.sleep(0.02)\n"
        )
        monkeypatch.setattr(log_module, "_ROLL_CHILD_MAIN", hold + log_module._ROLL_CHILD_MAIN)

    def wait_started(self, log):
        _poll(self.started.exists, "the roll process did not start")
        self.started.unlink()
        child = log._roll_child
        assert child is not None and child.poll() is None
        return child

    def release(self):
        self.gate.unlink(missing_ok=True)


def _fast_retries(monkeypatch):
    monkeypatch.setattr(log_module, "ROLL_RETRY_S", 0.01)
    monkeypatch.setattr(log_module, "ROLL_RETRY_MAX_S", 0.05)


def _child_rolling_log(tmp_path, events):
    """A log that rolls in a roll process, holding `events` bids."""
    log = EventLog(tmp_path, flush_interval_s=0.05, roll_in_subprocess=True)
    for event in _bids(events):
        log.emit(event)
    return log


def _roll_in_background(log):
    import threading

    thread = threading.Thread(target=log.roll, kwargs={"timeout_s": 60}, daemon=True)
    thread.start()
    return thread


def test_rolls_in_a_low_priority_child_process_and_a_dead_one_is_retried(tmp_path, monkeypatch):
    _fast_retries(monkeypatch)
    slow = _SlowRollProcess(tmp_path, monkeypatch)
    log = _child_rolling_log(tmp_path, 10)
    rolling = _roll_in_background(log)
    child = slow.wait_started(log)
    assert child.pid != os.getpid()
    parent_nice = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, parent_nice + 10)
    assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE  # only CPU the server leaves
    # ... from its first instruction: it was started by a roller thread at SCHED_IDLE, and
    # the server's other threads keep their priority.
    assert os.sched_getscheduler(log._roller.native_id) == os.SCHED_IDLE
    assert os.sched_getscheduler(log._flusher.native_id) == os.sched_getscheduler(0)
    assert os.sched_getscheduler(0) != os.SCHED_IDLE
    os.kill(child.pid, signal.SIGKILL)  # the roll process dies (OOM killer, say)
    rolling.join(30)
    assert log.logs_waiting == 1 and log._child_failures == 1
    slow.release()  # the retry gets a new process, which rolls the file
    _poll(lambda: log.logs_waiting == 0, "the roll was not retried in a new process")
    assert log._child_failures == 0 and log._roll_child is None
    for event in _bids(10, start=10):
        log.emit(event)
    log.close()
    assert sorted(_seqs(tmp_path)) == list(range(20))
    assert len(list(tmp_path.glob("segments/bid/*/*.parquet"))) == 2


def test_a_stuck_roll_process_is_killed_and_the_roll_retried(tmp_path, monkeypatch):
    # Stuck most likely means starved (SCHED_IDLE on saturated cores): the roll is retried
    # in a new roll process, never moved into the server, whose CPU it would then take.
    _fast_retries(monkeypatch)
    monkeypatch.setattr(log_module, "ROLL_TIMEOUT_S", 1.0)
    monkeypatch.setattr(log_module, "ROLL_CHILD_MAX_FAILURES", 1)
    slow = _SlowRollProcess(tmp_path, monkeypatch)
    log = _child_rolling_log(tmp_path, 10)
    rolling = _roll_in_background(log)
    child = slow.wait_started(log)
    rolling.join(30)  # the first attempt times out: the child is killed, not left stuck
    assert child.returncode == -signal.SIGKILL
    assert log.logs_waiting == 1 and log._child_failures == 0
    slow.release()
    _poll(lambda: log.logs_waiting == 0, "the roll was not retried after the stuck process")
    assert not log._child_given_up  # the retry ran in a roll process too
    log.close()
    assert sorted(_seqs(tmp_path)) == list(range(10))


def test_damage_met_by_the_roll_process_is_counted_by_the_server(tmp_path):
    _write_dead_logs(tmp_path, 1, 5)
    path = next((tmp_path / "wal").glob("*.log"))
    path.write_bytes(path.read_bytes() + b"OM torn by a crash")
    before = REGISTRY.get_sample_value("openbid_events_bad_records_total") or 0.0
    with EventLog(tmp_path, flush_interval_s=0.05, roll_in_subprocess=True) as log:
        log.roll()
    assert REGISTRY.get_sample_value("openbid_events_bad_records_total") == before + 1
    assert sorted(_seqs(tmp_path)) == list(range(5))


def test_the_roll_process_leaves_stopping_to_the_server(tmp_path, monkeypatch):
    # Ctrl-C in a terminal signals the terminal's foreground process group: the roll process
    # is in a group of its own, out of its reach, and ignores SIGINT and SIGTERM sent to it
    # (a service manager signals every process): the server finishes its rolls, then stops.
    # It stays in the server's session: with autogroup scheduling, a session of its own
    # would be a scheduling group as strong as the server's, whatever its priority.
    slow = _SlowRollProcess(tmp_path, monkeypatch)
    log = _child_rolling_log(tmp_path, 5)
    rolling = _roll_in_background(log)
    child = slow.wait_started(log)
    assert os.getpgid(child.pid) == child.pid != os.getpgrp()
    assert os.getsid(child.pid) == os.getsid(0)
    os.kill(child.pid, signal.SIGINT)
    os.kill(child.pid, signal.SIGTERM)
    time.sleep(0.2)
    assert child.poll() is None
    slow.release()
    rolling.join(30)
    assert child.returncode == 0 and log.logs_waiting == 0 and log._child_failures == 0
    log.close()
    assert sorted(_seqs(tmp_path)) == list(range(5))


def test_close_does_not_leave_a_roll_process_running(tmp_path, monkeypatch):
    slow = _SlowRollProcess(tmp_path, monkeypatch)
    log = _child_rolling_log(tmp_path, 5)
    log.flush()
    with pytest.raises(EventLogError, match="did not finish"):
        log.close(timeout_s=1.0)  # the roll takes longer than the shutdown may
    child = log._roll_child or None
    assert child is None or child.poll() is not None
    slow.release()
    assert sorted(_seqs(tmp_path)) == list(range(5))  # the file stays for the next start
    with EventLog(tmp_path, flush_interval_s=0.05):
        pass
    assert sorted(_seqs(tmp_path)) == list(range(5))


def test_a_roll_process_whose_server_died_stops(tmp_path):
    """A server killed mid-roll (kill -9) leaves no roll process behind for long."""
    script = (
        "import os, sys, time\n"
        "import openbid.events.log as m\n"
        "m._ROLL_CHILD_MAIN = (\n"
        "    'import time\\nfrom openbid.events import rollproc\\n'\n"
        "    'rollproc.roll = lambda *args: time.sleep(60)\\nrollproc.main()\\n'\n"
        ")\n"
        "from openbid.events import EventLog, ClickEvent\n"
        "log = EventLog(sys.argv[1], flush_interval_s=0.05, roll_in_subprocess=True)\n"
        "log.emit(ClickEvent(1, 'a', 'b'))\n"
        "log.flush()\n"
        "log._rotate_requested = True\n"
        "while log._roll_child is None:\n"
        "    time.sleep(0.01)\n"
        "print(log._roll_child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        child_pid = int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
    _poll(lambda: not _running(child_pid), "the roll process outlived its server")


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_value_that_does_not_fit_its_column_costs_only_its_event(tmp_path):
    good = _encode_record("bid", _bids(3))
    # MessagePack holds up to 2**64 - 1, an Arrow int64 column only up to 2**63 - 1.
    huge = BidEvent(T0, "a-huge", "dsp-a", price_micros=2**63 + 5)
    mixed = _encode_record("bid", [*_bids(2, start=10), huge, *_bids(2, start=20)])
    records, damaged = parse_log(good + mixed + good)
    assert damaged == 0  # it decodes; only the column cannot hold it
    bad_events = REGISTRY.get_sample_value("openbid_events_bad_events_total") or 0.0
    tables = log_module._records_to_tables(records)
    ids = sorted(i for t in tables.values() for i in t["auction_id"].to_pylist())
    assert ids == sorted(["a0", "a1", "a2"] * 2 + ["a10", "a11", "a20", "a21"])
    assert REGISTRY.get_sample_value("openbid_events_bad_events_total") == bad_events + 1


def test_an_event_nested_past_the_stack_is_refused_at_emit_and_its_neighbours_kept(tmp_path):
    deep: dict = {}
    for _ in range(5000):
        deep = {"x": deep}
    with EventLog(tmp_path, flush_interval_s=0.05) as log:
        for event in _bids(3):
            log.emit(event)
        log.emit(AuctionEvent(T0, "a-deep", "req", features=deep))  # not raised to the caller
        log.emit(BidEvent(T0, "a-deep", "dsp-a", error=deep))
        for event in _bids(3, start=3):
            log.emit(event)
        assert log.dropped == 2
    assert sorted(_seqs(tmp_path)) == list(range(6))
    assert EventReader(tmp_path).read_table("auction").num_rows == 0


def test_a_record_nested_past_the_stack_is_damaged_not_a_crash(tmp_path):
    nested = b"\x91" * 100_000 + b"\xc0"  # [[[...[nil]...]]]: no writer of ours makes it
    payload = b"\x91" + nested
    header = log_module._HEADER.pack(
        b"OM", SCHEMA_VERSION, log_module._KIND_CODES["bid"], len(payload), zlib.crc32(payload)
    )
    good = _encode_record("bid", _bids(2))
    records, damaged = parse_log(good + header + payload + good)
    assert damaged == 1
    assert sum(len(log_module._decode_events("bid", r.payload)) for r in records) == 4


def test_an_event_that_cannot_be_encoded_is_dropped_and_the_rest_written(tmp_path):
    dropped = REGISTRY.get_sample_value("openbid_events_dropped_total") or 0.0
    with EventLog(tmp_path, flush_interval_s=0.05) as log:
        events = _bids(4)
        events.insert(2, BidEvent(T0, "a-huge", "dsp-a", price_micros=2**70))
        for event in events:
            log.emit(event)
        # Refused as it is emitted, on the caller's thread: it never reaches a record.
        assert log.dropped == 1 and log.buffered == 4
        log.flush()
        for event in _bids(2, start=4):
            log.emit(event)
    assert sorted(_seqs(tmp_path)) == list(range(6))
    assert REGISTRY.get_sample_value("openbid_events_dropped_total") == dropped + 1


@pytest.mark.parametrize("count", [1, 15, 16, 128, 70_000])
def test_events_encoded_one_by_one_frame_the_same_bytes_as_the_list_encoded_at_once(count):
    events = _bids(count)
    payload = msgspec.msgpack.encode(events)
    header = log_module._HEADER.pack(
        b"OM", SCHEMA_VERSION, log_module._KIND_CODES["bid"], len(payload), zlib.crc32(payload)
    )
    assert _encode_record("bid", events) == header + payload
    records, damaged = parse_log(_encode_record("bid", events))
    assert damaged == 0 and records[0].events == events


def test_records_hold_at_most_encode_batch_events(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=60)
    for event in _bids(2 * ENCODE_BATCH + 5):
        log.emit(event)
    log.emit(AuctionEvent(T0, "a1", "req-1"))
    log.flush()
    records, damaged = read_log_file(log._wal_path)
    log.close()
    sizes = sorted((record.kind, len(record.events)) for record in records)
    assert damaged == 0
    assert sizes == [("auction", 1), ("bid", 5), ("bid", ENCODE_BATCH), ("bid", ENCODE_BATCH)]
    assert [
        event.auction_id for record in records if record.kind == "bid" for event in record.events
    ] == [event.auction_id for event in _bids(2 * ENCODE_BATCH + 5)]


def test_events_written_while_close_rolls_are_kept_for_the_next_start(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    for event in _bids(3):
        log.emit(event)
    real_roll = log.roll

    def roll_then_more(timeout_s=60.0):
        real_roll(timeout_s)
        for event in _bids(2, start=3):  # billing notices still arriving, say
            log.emit(event)
        log.flush()  # reported durable: must not be deleted by close()

    log.roll = roll_then_more
    log.close()
    assert sorted(_seqs(tmp_path)) == list(range(5))
    with EventLog(tmp_path, flush_interval_s=0.05):
        pass  # the next writer rolls the file left behind
    assert not list((tmp_path / "wal").glob("*.log"))
    assert sorted(_seqs(tmp_path)) == list(range(5))


def test_a_kind_whose_every_record_is_skipped_does_not_stop_the_roll():
    bad = _encode_record("bid", [BidEvent(T0, "a-huge", "dsp-a", price_micros=2**63 + 5)])
    auction = _encode_record("auction", [AuctionEvent(T0, "a1", "req-1")])
    records, _ = parse_log(bad + auction)
    tables = log_module._records_to_tables(records)
    assert [kind for kind, _ in tables] == ["auction"]


def test_after_repeated_roll_process_failures_the_writer_rolls_itself(tmp_path, monkeypatch):
    _fast_retries(monkeypatch)
    # Every roll process dies at once (it cannot import, say).
    monkeypatch.setattr(log_module, "_ROLL_CHILD_MAIN", "os._exit(3)\n")
    log = _child_rolling_log(tmp_path, 4)
    log.roll()
    _poll(lambda: log.logs_waiting == 0, "the writer did not roll in its own process")
    assert log._child_given_up and log._child_failures == log_module.ROLL_CHILD_MAX_FAILURES
    log.close()
    assert sorted(_seqs(tmp_path)) == list(range(4))


def test_reading_one_kind_decodes_only_its_records():
    data = _encode_record("bid", _bids(3)) + _encode_record("auction", [AuctionEvent(T0, "a", "r")])
    records, bad = parse_log(data, kind="auction")
    assert bad == 0 and [r.kind for r in records] == ["bid", "auction"]
    assert records[0].events is None and records[1].batch.num_rows == 1


def test_rolling_holds_a_bounded_number_of_decoded_events(tmp_path, monkeypatch):
    """The roll decodes and converts a bounded number of events at a time: the Python memory
    it needs is about the file's bytes, not ten times them (every event decoded at once)."""
    import tracemalloc

    monkeypatch.setattr(log_module, "ROLL_CHUNK_EVENTS", 2048, raising=False)
    data = b"".join(
        _encode_record("bid", _bids(ENCODE_BATCH, start=i)) for i in range(0, 40_000, ENCODE_BATCH)
    )
    (tmp_path / "wal").mkdir()
    path = tmp_path / "wal" / "dead-000-abcdef-00000001.log"
    path.write_bytes(data)
    segments = _SegmentStore(str(tmp_path / "segments"))
    tracemalloc.start()
    try:
        rows = roll_log_file(path, segments)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 40_064
    # The file's bytes once, plus one chunk of decoded events and what Arrow copies from them.
    assert peak < 2 * len(data), f"peak {peak} for a {len(data)} byte log"
    assert sorted(_seqs(tmp_path)) == list(range(40_064))


def _bad_events_count():
    return REGISTRY.get_sample_value("openbid_events_bad_events_total") or 0.0


def test_a_wrongly_typed_value_costs_only_its_event(tmp_path, caplog):
    events = _bids(5)
    # msgspec encodes anything; only the typed decoder refuses a str where an int belongs.
    events[2] = BidEvent(T0, "a-bad", "dsp-a", price_micros="not an int")
    data = _encode_record("bid", events) + _encode_record("bid", _bids(2, start=5))
    before = _bad_events_count()
    records, damaged = parse_log(data)
    assert damaged == 0 and len(records) == 2
    tables = log_module._records_to_tables(records)
    prices = sorted(p for t in tables.values() for p in t.column("price_micros").to_pylist())
    assert prices == [0, 1, 3, 4, 5, 6]
    assert _bad_events_count() == before + 1
    assert caplog.text.count("whose values do not have their types") == 1
    # The roll process counts them for the server too.
    (tmp_path / "wal").mkdir()
    (tmp_path / "wal" / "dead-000-abcdef-00000001.log").write_bytes(data)
    with EventLog(tmp_path, flush_interval_s=0.05, roll_in_subprocess=True) as log:
        log.roll()
    assert _bad_events_count() == before + 2
    assert sorted(_seqs(tmp_path)) == [0, 1, 3, 4, 5, 6]
