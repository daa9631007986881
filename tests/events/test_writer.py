"""The writer: `emit` never blocks, records are written whole, a kill -9 loses only the last
write interval, a full disk or a failed fsync loses nothing that `flush()` reported."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import openbid.events.writer as writer_module
from openbid.events import AuctionEvent, BidEvent, EventLog, EventLogError, EventReader
from openbid.events.framing import read_log_file
from openbid.events.writer import ENCODE_BATCH, WRITE_INTERVAL_S
from openbid.obs import REGISTRY

from .conftest import T0, bids, poll, rows, seqs


def test_full_buffer_drops_and_counts_instead_of_blocking(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=60, buffer_max_events=3)
    for event in bids(5):
        log.emit(event)
    assert log.dropped == 2
    log.close()
    assert EventReader(tmp_path).read_table("bid").num_rows == 3


def test_records_hold_at_most_encode_batch_events(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=60)
    for event in bids(2 * ENCODE_BATCH + 5):
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
    ] == [event.auction_id for event in bids(2 * ENCODE_BATCH + 5)]


def test_an_event_nested_past_the_stack_is_refused_at_emit_and_its_neighbours_kept(tmp_path):
    deep: dict = {}
    for _ in range(5000):
        deep = {"x": deep}
    with EventLog(tmp_path, flush_interval_s=0.05) as log:
        for event in bids(3):
            log.emit(event)
        log.emit(AuctionEvent(T0, "a-deep", "req", features=deep))  # not raised to the caller
        log.emit(BidEvent(T0, "a-deep", "dsp-a", error=deep))
        for event in bids(3, start=3):
            log.emit(event)
        assert log.dropped == 2
    assert sorted(seqs(tmp_path)) == list(range(6))
    assert EventReader(tmp_path).read_table("auction").num_rows == 0


def test_an_event_that_cannot_be_encoded_is_dropped_and_the_rest_written(tmp_path):
    dropped = REGISTRY.get_sample_value("openbid_events_dropped_total") or 0.0
    with EventLog(tmp_path, flush_interval_s=0.05) as log:
        events = bids(4)
        events.insert(2, BidEvent(T0, "a-huge", "dsp-a", price_micros=2**70))
        for event in events:
            log.emit(event)
        # Refused as it is emitted, on the caller's thread: it never reaches a record.
        assert log.dropped == 1 and log.buffered == 4
        log.flush()
        for event in bids(2, start=4):
            log.emit(event)
    assert sorted(seqs(tmp_path)) == list(range(6))
    assert REGISTRY.get_sample_value("openbid_events_dropped_total") == dropped + 1


def test_events_written_while_close_rolls_are_kept_for_the_next_start(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    for event in bids(3):
        log.emit(event)
    real_roll = log.roll

    def roll_then_more(timeout_s=60.0):
        real_roll(timeout_s)
        for event in bids(2, start=3):  # billing notices still arriving, say
            log.emit(event)
        log.flush()  # reported durable: must not be deleted by close()

    log.roll = roll_then_more
    log.close()
    assert sorted(seqs(tmp_path)) == list(range(5))
    with EventLog(tmp_path, flush_interval_s=0.05):
        pass  # the next writer rolls the file left behind
    assert not list((tmp_path / "wal").glob("*.log"))
    assert sorted(seqs(tmp_path)) == list(range(5))


def test_written_events_are_fsynced_without_a_flush_call(tmp_path):
    """The power-loss bound: what the flusher writes is fsync'd every flush interval."""
    log = EventLog(tmp_path, flush_interval_s=0.2)
    for event in bids(10):
        log.emit(event)
    poll(lambda: log._synced_bytes > 0, "the written events were never fsync'd")
    assert log._synced_bytes == log._wal_bytes == log._wal_path.stat().st_size
    log.close()


# --- kill -9


def _kill_writer_mid_stream(
    directory: Path, run_s: float, *, flush_s: float, roll_s: float, grace_s: float
) -> int:
    """Runs a writer, SIGKILLs it, returns the last seq handed over more than `grace_s`
    before the kill (which must then be in the log)."""
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("writer_child.py")),
            str(directory),
            str(flush_s),
            str(roll_s),
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
    durable = [seq for seq, at in reports if at < killed_at - grace_s]
    assert durable, "the writer reported no progress"
    return max(durable)


@pytest.mark.parametrize("run_s", [0.6, 0.9, 1.3])
def test_sigkill_mid_stream_and_mid_roll_loses_only_the_last_write_interval(tmp_path, run_s):
    # Rolling every 0.15 s: the kill also lands in rolls, which must leave no bad segment.
    must_have = _kill_writer_mid_stream(
        tmp_path, run_s, flush_s=0.1, roll_s=0.15, grace_s=WRITE_INTERVAL_S + 0.15
    )
    for segment in tmp_path.glob("segments/**/*.parquet"):
        if not segment.name.startswith(".tmp-"):  # a roll cut short: never read, removed later
            pq.read_table(segment)  # no corrupt segment: every one reads whole
    kept = set(seqs(tmp_path))
    missing = [s for s in range(must_have + 1) if s not in kept]
    assert not missing, f"{len(missing)} events older than the write interval were lost"

    # A restarted writer recovers the dead one's log into segments, without duplicates.
    with EventLog(tmp_path, flush_interval_s=0.05) as successor:
        successor.roll()
    recovered = seqs(tmp_path)
    assert len(recovered) == len(set(recovered))
    assert set(recovered) >= set(range(must_have + 1))
    assert not list(tmp_path.glob("segments/**/.tmp-*"))


def test_sigkill_loses_the_last_write_interval_not_the_last_flush_interval(tmp_path):
    """What was written reaches the file before it is fsync'd: with a flush (fsync) interval
    of a minute, a kill -9 still loses only what was emitted in the last write interval
    (0.1 s, plus the time the flusher takes to get the CPU on this busy machine)."""
    must_have = _kill_writer_mid_stream(
        tmp_path, 1.5, flush_s=60.0, roll_s=3600.0, grace_s=WRITE_INTERVAL_S + 0.4
    )
    assert must_have > 0
    kept = set(seqs(tmp_path))
    missing = [s for s in range(must_have + 1) if s not in kept]
    assert not missing, f"{len(missing)} events older than the write interval were lost"


# --- a failing disk


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


def test_short_write_on_a_full_disk_loses_nothing_and_flush_says_so(tmp_path, monkeypatch):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    disk = _FailingDisk(monkeypatch, log)
    for event in bids(1000):
        log.emit(event)
    log.flush()
    disk.full, disk.short_writes = True, 1  # half a record lands, then ENOSPC
    for event in bids(1000, start=1000):
        log.emit(event)
    with pytest.raises(EventLogError, match="did not finish"):
        log.flush(timeout_s=0.3)
    # The torn half was cut off: the file holds whole records only.
    records, bad = read_log_file(log._wal_path)
    assert bad == 0 and sum(rows(records)) == 1000
    disk.full = False
    for event in bids(1000, start=2000):
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
    monkeypatch.setattr(writer_module, "WRITE_MAX_BYTES", 8 * 1024)
    log = EventLog(tmp_path, flush_interval_s=0.05)
    disk = _FailingDisk(monkeypatch, log)
    disk.full = True
    for event in bids(20_000):
        log.emit(event)
    poll(lambda: log._pending, "the flusher did not try to write")
    time.sleep(0.2)  # a few more failed attempts
    # One write's worth (and at most one record more) is held; the rest waits in the buffer.
    assert 0 < len(log._pending) < 8 * 1024 + 8 * 1024
    assert log.buffered > 15_000
    disk.full = False
    log.close()
    assert seqs(tmp_path) == list(range(20_000))  # in order, none lost


def test_a_log_file_at_its_size_limit_is_rotated_and_the_retry_goes_to_the_new_one(
    tmp_path, monkeypatch
):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    disk = _FailingDisk(monkeypatch, log)
    for event in bids(100):
        log.emit(event)
    log.flush()
    first = log._wal_path
    disk.max_file_bytes = 2 * first.stat().st_size - 100  # the next 100 events do not fit
    for event in bids(100, start=100):
        log.emit(event)
    log.flush(timeout_s=10)  # succeeds: the retry went to a new file
    assert log._wal_path != first
    disk.max_file_bytes = None
    log.close()
    assert sorted(seqs(tmp_path)) == list(range(200))


def test_full_disk_drops_and_counts_with_bounded_memory(tmp_path, monkeypatch):
    log = EventLog(tmp_path, flush_interval_s=0.05, buffer_max_events=1000)
    disk = _FailingDisk(monkeypatch, log)
    disk.full = True
    for event in bids(27_000):
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
    assert len(seqs(tmp_path)) == 27_000 - log.dropped


def test_failed_fsync_rewrites_what_was_not_durable(tmp_path, monkeypatch):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    disk = _FailingDisk(monkeypatch, log)
    for event in bids(100):
        log.emit(event)
    log.flush()
    first_file = log._wal_path
    disk.lose_unsynced_from = first_file.stat().st_size
    disk.fsync_failures = 1
    for event in bids(100, start=100):
        log.emit(event)
    log.flush()  # succeeds only once the lost records are durable in a new file
    assert log._wal_path != first_file
    log.close()
    reader = EventReader(tmp_path)
    assert sorted(reader.read_table("bid").column("price_micros").to_pylist()) == list(range(200))
    assert reader.bad_records == 0
