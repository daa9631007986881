"""The writer (`EventLog`): non-blocking `emit`, and a flusher thread that appends CRC-checked
records to this writer's log file and fsyncs it.

`emit()` encodes an event (MessagePack, on the caller's thread) onto an open record of its
kind and returns; it never blocks: past `buffer_max_events` an event is dropped and counted.
Every WRITE_INTERVAL_S the flusher frames the records and appends them to the log file under
`<dir>/wal/`; every `flush_interval_s` it fsyncs. A `kill -9` loses what was not yet
written (the last write interval); a power loss, what was not yet fsync'd (the last flush
interval and write interval). Every `roll_interval_s` (or `roll_max_bytes`) the flusher
starts a new log file and hands the closed one to the `Roller`.

Records go into the log file whole or not at all: a short write (disk full, file size limit)
is completed, or cut off again with `ftruncate` and retried, so no record is ever appended
after a torn one, and `flush()` does not return while bytes are missing. A failed fsync makes
the file suspect (the kernel may have dropped its dirty pages): it is cut back to its durable
prefix and the rest is rewritten to a new file. While writes fail, the queue behind them is
bounded and new events are dropped and counted. A writer holds an `flock` on its log file
(created under a temp name and renamed once locked), so a file named *.log whose lock is
free is a dead writer's: a new writer rolls those.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import logging
import math
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from openbid.events.errors import EventLogError
from openbid.events.framing import ENCODER, KIND_CODES, WAL_SUFFIX, frame
from openbid.events.metrics import (
    EVENTS_DROPPED,
    EVENTS_EMITTED,
    EVENTS_IO_ERRORS,
    EVENTS_QUEUED,
)
from openbid.events.roller import Roller
from openbid.events.schema import Event
from openbid.events.segments import open_segment_store, segments_url_for
from openbid.events.segments.local import fsync_dir

log = logging.getLogger(__name__)

# emit's hot path: names of this module's own, not only imported. CPython 3.11 compiles
# `name.method()` on a name an import statement bound as a module attribute call (a bound
# method built per call: emit measured 5-10% slower) and on any other global as a method call.
_ENCODER = ENCODER
_EVENTS_DROPPED = EVENTS_DROPPED

_OPENING_SUFFIX = ".log.new"  # a log file being created: locked before it is named *.log
WRITE_INTERVAL_S = 0.1  # how often the flusher writes what was emitted
WRITE_MAX_BYTES = 4 * 1024 * 1024  # one write (and what a failed one holds for its retry)
ENCODE_BATCH = 128  # events per record at most
DROP_LOG_INTERVAL_S = 10.0  # unencodable events are logged at most this often
# Bytes written since the last good fsync are kept until the next one, to be rewritten to a new
# file if that fsync fails; past this many the flusher fsyncs early.
UNSYNCED_MAX_BYTES = 16 * 1024 * 1024


class EventLog:
    """The writer: `emit()` never blocks; threads flush, fsync and roll in the background."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segments_url: str = "",
        flush_interval_s: float = 1.0,
        roll_interval_s: float = 60.0,
        roll_max_bytes: int = 64 * 1024 * 1024,
        buffer_max_events: int = 1_000_000,
        roll_in_subprocess: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.wal_dir = self.directory / "wal"
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        self.segments = open_segment_store(segments_url_for(self.directory, segments_url))
        self.flush_interval_s = flush_interval_s
        self.roll_interval_s = roll_interval_s
        self.roll_max_bytes = roll_max_bytes
        self.buffer_max_events = buffer_max_events
        self.roll_in_subprocess = roll_in_subprocess
        self.roller = Roller(self.segments, in_subprocess=roll_in_subprocess)
        self.dropped = 0
        self._writer_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._seq = 0
        # Events are encoded as they are emitted, into one open record per kind; a record
        # is sealed at ENCODE_BATCH events. The flusher takes sealed and open records alike.
        self._lock = threading.Lock()
        self._open: dict[str, list] = {}  # kind -> [encoded events (bytearray), count]
        self._sealed: collections.deque[tuple[str, int, bytearray]] = collections.deque()
        self._buffered = 0  # events encoded and not yet taken by the flusher
        self._unencodable_since_log = 0
        self._unencodable_logged_at = -math.inf
        self._wake = threading.Event()
        self._flushed = threading.Condition()
        self._flush_generation = 0
        self._stopping = False
        self._fd: int | None = None
        self._pending = b""  # encoded records not yet (wholly) in the log file
        self._unsynced: list[bytes] = []  # written since the last good fsync
        self._unsynced_bytes = 0
        self._suspect = False  # an fsync failed or a torn write could not be cut off
        self._io_failing = False
        self._wal_path: Path | None = None
        self._wal_opened = 0.0
        self._wal_bytes = 0  # the log file's length: always a record boundary
        self._synced_bytes = 0  # the prefix of the log file known to be durable
        self._open_wal()
        self.roller.enqueue_orphans(self.wal_dir, own=self._wal_path)
        self._flusher = threading.Thread(target=self._flush_loop, name="event-flush", daemon=True)
        self._flusher.start()
        self.roller.start()

    # --- the caller's side
    def emit(self, event: Event) -> None:
        """Encodes one event into the buffer (a microsecond or less, on the caller's thread:
        the flusher then only writes bytes and never competes for the GIL); drops it, and
        counts the drop, when the buffer is full or the event cannot be encoded."""
        kind = event.kind
        if kind not in KIND_CODES:
            self._drop_unencodable(event, f"unknown event kind {kind!r}")
            return
        with self._lock:
            if self._buffered >= self.buffer_max_events:
                self.dropped += 1
                _EVENTS_DROPPED.inc()
                return
            entry = self._open.get(kind)
            if entry is None:
                entry = self._open[kind] = [bytearray(), 0]
            data = entry[0]
            size = len(data)
            try:
                _ENCODER.encode_into(event, data, -1)
            except Exception as error:  # an int beyond 64 bits, nesting past the stack...
                del data[size:]  # never half an event in a record
                refused: str | None = f"{type(error).__name__}: {error}"
            except BaseException:
                del data[size:]
                raise
            else:
                refused = None
                self._buffered += 1
                entry[1] += 1
                if entry[1] >= ENCODE_BATCH:
                    self._sealed.append((kind, entry[1], data))
                    del self._open[kind]
        if refused is not None:
            self._drop_unencodable(event, refused)  # counted and logged outside the lock

    @property
    def buffered(self) -> int:
        """Events emitted and not yet taken by the flusher."""
        return self._buffered

    @property
    def logs_waiting(self) -> int:
        """Closed log files not rolled yet: queued, being rolled or waiting for a retry."""
        return self.roller.logs_waiting

    def _drop_unencodable(self, event: Event, error: str) -> None:
        """An event that cannot be encoded (an int beyond 64 bits, a value nested past the
        stack, from a bug upstream) is dropped and counted; it never reaches the log, where
        it would cost its record. Logged at most once every DROP_LOG_INTERVAL_S, with how
        many were dropped since, so a flood of them cannot stall the callers on logging."""
        with self._lock:
            self.dropped += 1
            self._unencodable_since_log += 1
            now = time.monotonic()
            if now - self._unencodable_logged_at < DROP_LOG_INTERVAL_S:
                EVENTS_DROPPED.inc()
                return
            self._unencodable_logged_at = now
            count, self._unencodable_since_log = self._unencodable_since_log, 0
        EVENTS_DROPPED.inc()
        try:
            shown = repr(event)[:300]
        except Exception:  # nested past the stack too
            shown = f"{type(event).__name__}(auction_id={event.auction_id!r}, ...)"
        log.error(
            "dropped an event that cannot be encoded",
            extra={
                "kind": event.kind,
                "event": shown,
                "error": error[:300],
                "dropped_since_last_report": count,
            },
        )

    def flush(self, timeout_s: float = 30.0) -> None:
        """Blocks until everything emitted so far is written and fsync'd."""
        # Two flush cycles: the one under way may have started before our last emit.
        with self._flushed:
            target = self._flush_generation + 2
        deadline = time.monotonic() + timeout_s
        while True:
            self._wake.set()
            with self._flushed:
                if self._flushed.wait_for(lambda: self._flush_generation >= target, 0.05):
                    return
            if time.monotonic() > deadline:
                raise EventLogError(f"event log flush did not finish within {timeout_s} s")

    def roll(self, timeout_s: float = 60.0) -> None:
        """Flushes, closes the current log file and waits until every closed file was tried.

        Files whose roll fails (and those waiting for a retry, tried again now) stay queued
        and are retried with backoff: `logs_waiting` counts them.
        """
        self.flush(timeout_s)
        with self._flushed:
            self._rotate_requested = True
        self.flush(timeout_s)
        self.roller.retry_now()
        self.roller.wait(timeout_s)

    def close(self, timeout_s: float = 60.0) -> None:
        """Flushes everything, rolls every log file into segments and stops the threads."""
        if self._stopping:
            return
        try:
            self.roll(timeout_s)
        except EventLogError:
            self.roller.stop_child()  # a roll that did not finish in time is not left running
            raise
        self._stopping = True
        self._wake.set()
        self._flusher.join(timeout_s)
        self.roller.stop(timeout_s)  # after the flusher: it rolls what the last pass closed
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._wal_path is not None:
            if self._wal_bytes_of(self._wal_path) == 0:
                self._wal_path.unlink(missing_ok=True)
            else:
                # Events emitted while the last roll ran were written (and maybe reported
                # flushed) after it: the file stays, for the next writer to roll.
                log.info(
                    "event log file left for the next start",
                    extra={"file": str(self._wal_path)},
                )

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the log file
    _rotate_requested = False

    def _open_wal(self) -> None:
        self._seq += 1
        name = f"{self._writer_id}-{self._seq:08d}"
        path = self.wal_dir / f"{name}{WAL_SUFFIX}"
        # Created under another name and locked before it is renamed: a file named *.log
        # whose lock is free is always a dead writer's, never one being opened.
        opening = self.wal_dir / f"{name}{_OPENING_SUFFIX}"
        fd = os.open(opening, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(opening, path)
            fsync_dir(self.wal_dir)
        except BaseException:
            os.close(fd)
            opening.unlink(missing_ok=True)
            raise
        self._fd, self._wal_path = fd, path
        self._wal_opened = time.monotonic()
        self._wal_bytes = 0
        self._synced_bytes = 0

    def _rotate(self) -> None:
        old_fd, old_path = self._fd, self._wal_path
        try:
            self._open_wal()
        except OSError:
            EVENTS_IO_ERRORS.labels("open").inc()
            raise
        if old_fd is not None:
            try:
                os.close(old_fd)
            except OSError:  # a late writeback error: the file is rolled as it reads
                log.warning("closing an event log file failed", exc_info=True)
        if old_path is not None:
            if self._wal_bytes_of(old_path) == 0:
                old_path.unlink(missing_ok=True)
            else:
                self.roller.enqueue(old_path)

    @staticmethod
    def _wal_bytes_of(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    # --- the flusher thread
    def _flush_loop(self) -> None:
        # Events arrive encoded (by `emit`); they are written every WRITE_INTERVAL_S and
        # fsync'd every `flush_interval_s` (the durability bound) or when a flush is asked
        # for. A flush generation is only counted when everything taken from the buffer is
        # written and fsync'd, so `flush()` never reports success while bytes are missing.
        last_sync = time.monotonic()
        while True:
            self._wake.wait(min(WRITE_INTERVAL_S, self.flush_interval_s))
            forced = self._wake.is_set()
            self._wake.clear()
            stopping = self._stopping
            try:
                if self._suspect:
                    self._replace_suspect_file()
                self._write_queued()
                if forced or stopping or time.monotonic() - last_sync >= self.flush_interval_s:
                    self._sync()
                    last_sync = time.monotonic()
                    with self._flushed:
                        self._flush_generation += 1
                        self._flushed.notify_all()
            except OSError as error:
                # Disk full, quota, I/O error: the bytes stay pending and are retried; the
                # buffer behind them is bounded, so new events are dropped and counted.
                if not self._io_failing:
                    log.exception("event log write failed; retrying with the same bytes")
                self._io_failing = True
                if error.errno == errno.EFBIG and self._wal_bytes:
                    # The file reached a size limit (RLIMIT_FSIZE, the file system's): no
                    # retry would fit in it, so the retry goes to a new file.
                    self._rotate_requested = True
                    with contextlib.suppress(OSError):
                        self._sync()
            else:
                if self._io_failing:
                    log.warning("event log writes recovered", extra={"dropped": self.dropped})
                self._io_failing = False
            if stopping:
                return

    def _write_queued(self) -> None:
        """Writes what was emitted before this call, oldest records first, in writes of at
        most WRITE_MAX_BYTES: the records are already encoded, so this holds the GIL only to
        frame them (a header and CRC each), and after a write outage the bytes held for the
        retry stay bounded (the rest waits, encoded, in the buffer)."""
        goal = self._buffered  # what later emits add waits for the next call
        written = 0
        while True:
            if not self._pending:
                if written >= goal:
                    return
                self._pending, taken = self._take()
                if not taken:
                    return
                written += taken
            self._append(self._pending)  # raises: kept in _pending, retried
            self._unsynced.append(self._pending)
            self._unsynced_bytes += len(self._pending)
            self._pending = b""
            if self._unsynced_bytes >= UNSYNCED_MAX_BYTES:
                self._sync_file()

    def _take(self) -> tuple[bytes, int]:
        """The oldest records framed, about WRITE_MAX_BYTES (at least one record), and how
        many events they hold. Sealed records go before the open ones, which are newer."""
        taken: list[tuple[str, int, bytearray]] = []
        size = 0
        with self._lock:
            EVENTS_QUEUED.set(self._buffered)
            sealed = self._sealed
            while sealed and size < WRITE_MAX_BYTES:
                record = sealed.popleft()
                taken.append(record)
                size += len(record[2])
            if not sealed and size < WRITE_MAX_BYTES:
                taken.extend((kind, entry[1], entry[0]) for kind, entry in self._open.items())
                self._open = {}
            events = sum(count for _, count, _ in taken)
            self._buffered -= events
        counts: dict[str, int] = collections.Counter()
        for kind, count, _ in taken:
            counts[kind] += count
        for kind, count in counts.items():
            EVENTS_EMITTED.labels(kind).inc(count)
        return b"".join(frame(kind, count, data) for kind, count, data in taken), events

    def _append(self, data: bytes) -> None:
        """Writes whole records or nothing: a short write is completed or cut off again."""
        assert self._fd is not None
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                n = os.write(self._fd, view[written:])
                if n <= 0:
                    raise OSError(errno.EIO, "event log write wrote nothing")
                written += n
        except OSError:
            EVENTS_IO_ERRORS.labels("write").inc()
            if written:
                # Never leave a torn record for later records to be appended after.
                try:
                    os.ftruncate(self._fd, self._wal_bytes)
                except OSError:
                    log.warning("cutting off a torn event log write failed", exc_info=True)
                    self._suspect = True
            raise
        self._wal_bytes += written

    def _sync_file(self) -> None:
        if not self._unsynced:
            return
        assert self._fd is not None
        try:
            os.fsync(self._fd)
        except OSError:
            # After a failed fsync the kernel may have dropped the dirty pages and a retry
            # would "succeed" (fsyncgate): the unsynced bytes are rewritten to a new file.
            EVENTS_IO_ERRORS.labels("fsync").inc()
            self._suspect = True
            raise
        self._synced_bytes = self._wal_bytes
        self._unsynced.clear()
        self._unsynced_bytes = 0

    def _replace_suspect_file(self) -> None:
        """Cuts the suspect file back to its durable prefix and rewrites the rest to a new one."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._synced_bytes)
        except OSError:  # then the rewritten records may be read twice, never lost
            log.warning("cutting back a suspect event log file failed", exc_info=True)
        self._wal_bytes = self._synced_bytes
        self._rotate()  # raises: still suspect, retried
        log.warning(
            "event log file replaced after a failed write or fsync",
            extra={"rewritten_bytes": self._unsynced_bytes},
        )
        self._pending = b"".join(self._unsynced) + self._pending
        self._unsynced.clear()
        self._unsynced_bytes = 0
        self._suspect = False

    def _sync(self) -> None:
        self._sync_file()
        rotate_due = self._wal_bytes and (
            time.monotonic() - self._wal_opened >= self.roll_interval_s
            or self._wal_bytes >= self.roll_max_bytes
        )
        if rotate_due or self._rotate_requested:
            self._rotate_requested = False
            self._rotate()
