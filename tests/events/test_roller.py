"""The roller: closed log files become segments once each, failed rolls are retried with
backoff, and a server rolls in a low-priority process that dies, stalls or is signalled
without harm."""

import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest

import openbid.events.roller as roller_module
from openbid.events import BidEvent, ClickEvent, EventLog, EventLogError, EventReader
from openbid.events.framing import encode_record
from openbid.events.segments import LocalSegmentStore, hour_label
from openbid.obs import REGISTRY

from .conftest import HOUR_MICROS, T0, bids, poll, seqs, write_dead_logs


def test_segments_are_partitioned_by_kind_and_hour(tmp_path):
    with EventLog(tmp_path, flush_interval_s=0.05) as log:
        for event in bids(3, ts=T0) + bids(2, start=3, ts=T0 + HOUR_MICROS):
            log.emit(event)
    segments = sorted(p.relative_to(tmp_path) for p in tmp_path.glob("segments/**/*.parquet"))
    hours = [p.parts[2] for p in segments]
    assert [p.parts[1] for p in segments] == ["bid", "bid"]
    assert len(set(hours)) == 2 and all(h.startswith("hour=") for h in hours)
    counts = sorted(pq.read_table(tmp_path / p).num_rows for p in segments)
    assert counts == [2, 3]


def test_log_rolls_on_interval_while_running(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=0.02, roll_interval_s=0.05)
    for event in bids(5):
        log.emit(event)
    poll(lambda: list(tmp_path.glob("segments/bid/*/*.parquet")), "no segment was rolled")
    log.close()
    assert EventReader(tmp_path).read_table("bid").num_rows == 5


def test_new_writer_rolls_the_log_of_a_dead_one(tmp_path):
    log = EventLog(tmp_path, flush_interval_s=0.05)
    for event in bids(6):
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


def test_a_log_file_locked_by_another_roller_is_left_to_it(tmp_path):
    write_dead_logs(tmp_path, 1, 5)
    path = next((tmp_path / "wal").glob("*.log"))
    segments = LocalSegmentStore(str(tmp_path / "segments"))
    other = os.open(path, os.O_RDONLY)  # another process is rolling it
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert roller_module.roll_log_file(path, segments) is None
        assert path.exists() and not list(tmp_path.glob("segments/**/*.parquet"))
    finally:
        os.close(other)
    assert roller_module.roll_log_file(path, segments) == 5
    assert not path.exists()
    assert roller_module.roll_log_file(path, segments) == 0  # already rolled: nothing to do


def test_an_interrupted_rolls_temp_files_are_removed_and_names_never_collide(tmp_path, monkeypatch):
    write_dead_logs(tmp_path, 1, 5)
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
    segments = LocalSegmentStore(str(tmp_path / "segments"))
    assert roller_module.roll_log_file(path, segments) == 5
    assert not leftover.exists() and unrelated.exists()
    write_dead_logs(tmp_path / "again", 1, 5)
    again = next((tmp_path / "again" / "wal").glob("*.log"))
    roller_module.roll_log_file(again, LocalSegmentStore(str(tmp_path / "again" / "segments")))
    assert len(temp_names) == 2 and temp_names[0] != temp_names[1]
    assert all(name.startswith(f".tmp-{path.stem}-{os.getpid()}-") for name in temp_names)


def test_two_writers_starting_together_roll_each_dead_log_once(tmp_path):
    write_dead_logs(tmp_path, 40, 50)
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
    assert sorted(seqs(tmp_path)) == list(range(40 * 50))


def test_rolling_holds_a_bounded_number_of_decoded_events(tmp_path, monkeypatch):
    """The roll decodes and converts a bounded number of events at a time: the Python memory
    it needs is about the file's bytes, not ten times them (every event decoded at once)."""
    import tracemalloc

    import openbid.events.columns as columns_module

    monkeypatch.setattr(columns_module, "ROLL_CHUNK_EVENTS", 2048)
    data = b"".join(encode_record("bid", bids(128, start=i)) for i in range(0, 40_000, 128))
    (tmp_path / "wal").mkdir()
    path = tmp_path / "wal" / "dead-000-abcdef-00000001.log"
    path.write_bytes(data)
    segments = LocalSegmentStore(str(tmp_path / "segments"))
    tracemalloc.start()
    try:
        rows = roller_module.roll_log_file(path, segments)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 40_064
    # The file's bytes once, plus one chunk of decoded events and what Arrow copies from them.
    assert peak < 2 * len(data), f"peak {peak} for a {len(data)} byte log"
    assert sorted(seqs(tmp_path)) == list(range(40_064))


# --- retries


def _fast_retries(monkeypatch):
    monkeypatch.setattr(roller_module, "ROLL_RETRY_S", 0.01)
    monkeypatch.setattr(roller_module, "ROLL_RETRY_MAX_S", 0.05)


class _FailingSegments:
    """Segment writes fail (object store down, disk full) until `failing` is cleared."""

    def __init__(self, monkeypatch):
        self.failing = True
        self.attempts = 0
        real_write = LocalSegmentStore.write

        def write(store, table, path):
            self.attempts += 1
            if self.failing:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(store, table, path)

        monkeypatch.setattr(LocalSegmentStore, "write", write)
        _fast_retries(monkeypatch)


def _waiting_gauge():
    return REGISTRY.get_sample_value("openbid_events_logs_waiting") or 0.0


def test_a_failed_roll_is_retried_in_process_and_counted_while_it_waits(tmp_path, monkeypatch):
    segments = _FailingSegments(monkeypatch)
    gauge_before = _waiting_gauge()
    log = EventLog(tmp_path, flush_interval_s=0.05)
    for event in bids(20):
        log.emit(event)
    log.roll()  # the roll fails: the file waits for a retry
    assert log.logs_waiting == 1 and _waiting_gauge() == gauge_before + 1
    poll(lambda: segments.attempts >= 3, "the failed roll was not retried")
    assert log.logs_waiting == 1 and len(list((tmp_path / "wal").glob("*.log"))) == 2
    segments.failing = False  # the store is back: the next retry rolls it, no restart needed
    poll(lambda: log.logs_waiting == 0, "the log file was never rolled")
    assert _waiting_gauge() == gauge_before
    assert len(list(tmp_path.glob("segments/bid/*/*.parquet"))) == 1
    assert len(list((tmp_path / "wal").glob("*.log"))) == 1  # only the current one
    log.close()
    assert sorted(seqs(tmp_path)) == list(range(20))


def test_close_during_an_outage_leaves_the_file_for_the_next_start(tmp_path, monkeypatch):
    segments = _FailingSegments(monkeypatch)
    gauge_before = _waiting_gauge()
    log = EventLog(tmp_path, flush_interval_s=0.05)
    for event in bids(20):
        log.emit(event)
    log.close()  # returns: a shutdown is not held up by the outage
    assert len(list((tmp_path / "wal").glob("*.log"))) == 1
    assert _waiting_gauge() == gauge_before
    assert sorted(seqs(tmp_path)) == list(range(20))  # still readable from the tail
    segments.failing = False
    with EventLog(tmp_path, flush_interval_s=0.05):
        pass
    assert not list((tmp_path / "wal").glob("*.log"))
    assert sorted(seqs(tmp_path)) == list(range(20))


# --- the roll process


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
        monkeypatch.setattr(
            roller_module, "_ROLL_CHILD_MAIN", hold + roller_module._ROLL_CHILD_MAIN
        )

    def wait_started(self, log):
        poll(self.started.exists, "the roll process did not start", timeout_s=120)
        self.started.unlink()
        child = log.roller.child
        assert child is not None and child.poll() is None
        return child

    def release(self):
        self.gate.unlink(missing_ok=True)


def _child_rolling_log(tmp_path, events):
    """A log that rolls in a roll process, holding `events` bids."""
    log = EventLog(tmp_path, flush_interval_s=0.05, roll_in_subprocess=True)
    for event in bids(events):
        log.emit(event)
    return log


def _roll_in_background(log):
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
    assert os.sched_getscheduler(log.roller.thread.native_id) == os.SCHED_IDLE
    assert os.sched_getscheduler(log._flusher.native_id) == os.sched_getscheduler(0)
    assert os.sched_getscheduler(0) != os.SCHED_IDLE
    os.kill(child.pid, signal.SIGKILL)  # the roll process dies (OOM killer, say)
    rolling.join(30)
    assert log.logs_waiting == 1 and log.roller.child_failures == 1
    slow.release()  # the retry gets a new process, which rolls the file
    poll(lambda: log.logs_waiting == 0, "the roll was not retried in a new process", 120)
    assert log.roller.child_failures == 0 and log.roller.child is None
    for event in bids(10, start=10):
        log.emit(event)
    log.close()
    assert sorted(seqs(tmp_path)) == list(range(20))
    assert len(list(tmp_path.glob("segments/bid/*/*.parquet"))) == 2


def test_a_stuck_roll_process_is_killed_and_the_roll_retried(tmp_path, monkeypatch):
    # Stuck most likely means starved (SCHED_IDLE on saturated cores): the roll is retried
    # in a new roll process, never moved into the server, whose CPU it would then take.
    _fast_retries(monkeypatch)
    monkeypatch.setattr(roller_module, "ROLL_TIMEOUT_S", 1.0)
    monkeypatch.setattr(roller_module, "ROLL_CHILD_MAX_FAILURES", 1)
    slow = _SlowRollProcess(tmp_path, monkeypatch)
    log = _child_rolling_log(tmp_path, 10)
    rolling = _roll_in_background(log)
    child = slow.wait_started(log)
    rolling.join(30)  # the first attempt times out: the child is killed, not left stuck
    assert child.returncode == -signal.SIGKILL
    assert log.logs_waiting == 1 and log.roller.child_failures == 0
    slow.release()
    # At SCHED_IDLE on a busy machine a roll process can take seconds to import: the retry
    # gets the time it needs.
    monkeypatch.setattr(roller_module, "ROLL_TIMEOUT_S", 120.0)
    poll(lambda: log.logs_waiting == 0, "the roll was not retried", timeout_s=120)
    assert not log.roller.child_given_up  # the retry ran in a roll process too
    log.close()
    assert sorted(seqs(tmp_path)) == list(range(10))


def test_damage_met_by_the_roll_process_is_counted_by_the_server(tmp_path):
    write_dead_logs(tmp_path, 1, 5)
    path = next((tmp_path / "wal").glob("*.log"))
    path.write_bytes(path.read_bytes() + b"OM torn by a crash")
    before = REGISTRY.get_sample_value("openbid_events_bad_records_total") or 0.0
    with EventLog(tmp_path, flush_interval_s=0.05, roll_in_subprocess=True) as log:
        log.roll()
    assert REGISTRY.get_sample_value("openbid_events_bad_records_total") == before + 1
    assert sorted(seqs(tmp_path)) == list(range(5))


def test_wrongly_typed_values_met_by_the_roll_process_are_counted_by_the_server(tmp_path):
    events = bids(5)
    events[2] = BidEvent(T0, "a-bad", "dsp-a", price_micros="not an int")
    (tmp_path / "wal").mkdir()
    (tmp_path / "wal" / "dead-000-abcdef-00000001.log").write_bytes(encode_record("bid", events))
    before = REGISTRY.get_sample_value("openbid_events_bad_events_total") or 0.0
    with EventLog(tmp_path, flush_interval_s=0.05, roll_in_subprocess=True) as log:
        log.roll()
    assert REGISTRY.get_sample_value("openbid_events_bad_events_total") == before + 1
    assert sorted(seqs(tmp_path)) == [0, 1, 3, 4]


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
    assert child.returncode == 0 and log.logs_waiting == 0 and log.roller.child_failures == 0
    log.close()
    assert sorted(seqs(tmp_path)) == list(range(5))


def test_close_does_not_leave_a_roll_process_running(tmp_path, monkeypatch):
    slow = _SlowRollProcess(tmp_path, monkeypatch)
    log = _child_rolling_log(tmp_path, 5)
    log.flush()
    with pytest.raises(EventLogError, match="did not finish"):
        log.close(timeout_s=1.0)  # the roll takes longer than the shutdown may
    child = log.roller.child or None
    assert child is None or child.poll() is not None
    slow.release()
    assert sorted(seqs(tmp_path)) == list(range(5))  # the file stays for the next start
    with EventLog(tmp_path, flush_interval_s=0.05):
        pass
    assert sorted(seqs(tmp_path)) == list(range(5))


def test_a_roll_process_whose_server_died_stops(tmp_path):
    """A server killed mid-roll (kill -9) leaves no roll process behind for long."""
    script = (
        "import os, sys, time\n"
        "import openbid.events.roller as m\n"
        "m._ROLL_CHILD_MAIN = (\n"
        "    'import time\\nfrom openbid.events import rollproc\\n'\n"
        "    'rollproc.roll = lambda *args: time.sleep(60)\\nrollproc.main()\\n'\n"
        ")\n"
        "from openbid.events import EventLog, ClickEvent\n"
        "log = EventLog(sys.argv[1], flush_interval_s=0.05, roll_in_subprocess=True)\n"
        "log.emit(ClickEvent(1, 'a', 'b'))\n"
        "log.flush()\n"
        "log._rotate_requested = True\n"
        "while log.roller.child is None:\n"
        "    time.sleep(0.01)\n"
        "print(log.roller.child.pid, flush=True)\n"
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
    poll(lambda: not _running(child_pid), "the roll process outlived its server", 120)


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_after_repeated_roll_process_failures_the_writer_rolls_itself(tmp_path, monkeypatch):
    _fast_retries(monkeypatch)
    # Every roll process dies at once (it cannot import, say).
    monkeypatch.setattr(roller_module, "_ROLL_CHILD_MAIN", "os._exit(3)\n")
    log = _child_rolling_log(tmp_path, 4)
    log.roll()
    poll(lambda: log.logs_waiting == 0, "the writer did not roll in its own process")
    assert log.roller.child_given_up
    assert log.roller.child_failures == roller_module.ROLL_CHILD_MAX_FAILURES
    log.close()
    assert sorted(seqs(tmp_path)) == list(range(4))


def test_a_roll_process_rolls_into_an_object_store(tmp_path, s3_endpoint):
    """The roll process reopens the store from its URL (credentials and endpoint from the
    environment it inherits, never its command line) and writes there."""
    url = s3_endpoint()
    with EventLog(
        tmp_path, segments_url=url, flush_interval_s=0.05, roll_in_subprocess=True
    ) as log:
        for event in bids(5) + [ClickEvent(T0, "a1", "b1")]:
            log.emit(event)
        log.roll()
        assert log.logs_waiting == 0 and not log.roller.child_given_up
    reader = EventReader(tmp_path, segments_url=url)
    assert [len(reader.segments.list(kind)) for kind in ("bid", "click")] == [1, 1]
    assert sorted(seqs(tmp_path, segments_url=url)) == list(range(5))
