"""The durable event log: non-blocking writes, an fsync'd append-only log, Parquet segments.

`EventLog.emit()` only appends to an in-memory queue. A flusher thread encodes queued events
every 0.1 s, as MessagePack (one C call per batch, so it never holds the GIL for long), and
appends them to this writer's log file (one CRC-checked record per event kind per batch); every
`flush_interval_s` it fsyncs, so a `kill -9` loses at most the last interval. Every
`roll_interval_s` (or `roll_max_bytes`) the log file is closed and a roller thread turns it
into immutable Parquet segments (building the Arrow columns then, in a low-priority child
process when `roll_in_subprocess`), partitioned by event kind and hour, each written to a temp
name, fsync'd and renamed; only then is the log file deleted. A writer that starts finds the
log files of dead writers (their `flock` is free) and rolls them too. A roller holds the
file's `flock` from reading it to deleting it, so two processes never roll the same file.
A failed roll is retried with backoff; `logs_waiting` (and a gauge) count the files waiting.

Records go into the log file whole or not at all: a short write (disk full, file size limit)
is completed, or cut off again with `ftruncate` and retried, so no record is ever appended
after a torn one, and `flush()` does not return while bytes are missing. A failed fsync makes
the file suspect (the kernel may have dropped its dirty pages): it is cut back to its durable
prefix and the rest is rewritten to a new file. While writes fail, the queue behind them is
bounded and new events are dropped and counted.

`EventReader` yields the segments and the not-yet-rolled tail; a damaged record (the torn
end of a file after a crash, a bad sector) is skipped with a warning and counted, never raised,
and reading resumes at the next record whose header and CRC check out.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import json
import logging
import math
import operator
import os
import re
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prometheus_client import Counter, Gauge

from openbid.events.schema import EVENT_TYPES, SCHEMA_VERSION, Event, arrow_schema
from openbid.obs import REGISTRY, JsonFormatter

log = logging.getLogger(__name__)

_MAGIC = b"OB"  # payload: one Arrow IPC stream (logs written before MessagePack records)
_MAGIC_MSGPACK = b"OM"  # payload: the events as a MessagePack array of arrays
_MAGICS = (_MAGIC, _MAGIC_MSGPACK)
_HEADER = struct.Struct("<2sHBxII")  # magic, schema version, kind code, pad, length, crc32
_KIND_CODES = {kind: code for code, kind in enumerate(EVENT_TYPES, start=1)}
_CODE_KINDS = {code: kind for kind, code in _KIND_CODES.items()}
_WAL_SUFFIX = ".log"
_OPENING_SUFFIX = ".log.new"  # a log file being created: locked before it is named *.log
WRITE_INTERVAL_S = 0.1  # how often the flusher writes what was emitted
WRITE_MAX_BYTES = 4 * 1024 * 1024  # one write (and what a failed one holds for its retry)
ENCODE_BATCH = 128  # events per record at most
DROP_LOG_INTERVAL_S = 10.0  # unencodable events are logged at most this often
# Bytes written since the last good fsync are kept until the next one, to be rewritten to a new
# file if that fsync fails; past this many the flusher fsyncs early.
UNSYNCED_MAX_BYTES = 16 * 1024 * 1024
# A failed roll (disk full, object store down) is retried after 1 s, doubling up to a minute.
ROLL_RETRY_S = 1.0
ROLL_RETRY_MAX_S = 60.0
# A roll in the child process taking longer than this is stuck (a hung object store): the
# child is killed and the roll retried. After this many roll-process failures in a row the
# writer rolls in its own process instead.
ROLL_TIMEOUT_S = 600.0
ROLL_CHILD_MAX_FAILURES = 3
# A roll decodes and converts this many events at a time (a bounded number of Python objects).
ROLL_CHUNK_EVENTS = 65_536
_HOUR_MICROS = 3_600_000_000

EVENTS_EMITTED = Counter(
    "openbid_events_emitted", "Events handed to the event log", ["kind"], registry=REGISTRY
)
EVENTS_DROPPED = Counter(
    "openbid_events_dropped",
    "Events dropped: the log buffer was full, or an event could not be encoded",
    registry=REGISTRY,
)
EVENTS_BAD_RECORDS = Counter(
    "openbid_events_bad_records",
    "Damaged log records skipped while reading or rolling",
    registry=REGISTRY,
)
EVENTS_BAD_EVENTS = Counter(
    "openbid_events_bad_events",
    "Events skipped while reading or rolling because a value does not have its field's type"
    " (the other events of their record are kept)",
    registry=REGISTRY,
)
EVENTS_IO_ERRORS = Counter(
    "openbid_events_io_errors",
    "Failed writes, fsyncs and file opens of the event log (each is retried)",
    ["op"],
    registry=REGISTRY,
)
EVENTS_LOGS_WAITING = Gauge(
    "openbid_events_logs_waiting",
    "Closed log files waiting to be rolled into segments (queued or retrying after a failure)",
    registry=REGISTRY,
)
EVENTS_QUEUED = Gauge(
    "openbid_events_queued", "Events waiting for the next flush", registry=REGISTRY
)


class EventLogError(Exception):
    """The event log cannot be opened or written."""


@dataclass(frozen=True)
class _Record:
    """One intact record: its MessagePack payload (a view of the file's bytes, decoded on
    demand, so reading a file never holds all its events at once), or its Arrow batch (older
    logs). A record of a kind not asked for holds neither."""

    kind: str
    version: int
    payload: memoryview | None = None
    arrow: pa.RecordBatch | None = None

    @property
    def events(self) -> list[Event] | None:
        """The record's events, decoded now (each access decodes again: nothing is kept)."""
        if self.payload is None:
            return None
        return _decode_events(self.kind, self.payload)

    @property
    def batch(self) -> pa.RecordBatch:
        """The record as an Arrow batch (built on demand for a MessagePack record)."""
        if self.arrow is not None:
            return self.arrow
        return _to_batch(self.kind, self.events or [])


_GETTERS = {
    kind: [(operator.attrgetter(field.name), field.type) for field in arrow_schema(cls)]
    for kind, cls in EVENT_TYPES.items()
}
_SCHEMAS = {kind: arrow_schema(cls) for kind, cls in EVENT_TYPES.items()}
_ENCODER = msgspec.msgpack.Encoder()
_DECODERS = {kind: msgspec.msgpack.Decoder(list[cls]) for kind, cls in EVENT_TYPES.items()}
# Checks a payload is a well-formed MessagePack array without building its events.
_ITEM_DECODERS = {kind: msgspec.msgpack.Decoder(cls) for kind, cls in EVENT_TYPES.items()}
_RAW_ITEMS = msgspec.msgpack.Decoder(list[msgspec.Raw])


def _decode_events(kind: str, payload: memoryview | bytes) -> list[Event]:
    """The events of a MessagePack record. Should some not have their fields' types (a str
    where an int belongs: msgspec encodes anything), the items are decoded one by one and
    only those are skipped, counted (EVENTS_BAD_EVENTS) and logged once for the record."""
    try:
        # Records of an older schema version lack the newest fields: they take defaults.
        return _DECODERS[kind].decode(payload)
    except (msgspec.DecodeError, RecursionError, MemoryError) as error:
        first_error = f"{type(error).__name__}: {error}"
    try:
        items = _RAW_ITEMS.decode(payload)
    except (msgspec.DecodeError, RecursionError, MemoryError):  # parse_log checks this first
        EVENTS_BAD_RECORDS.inc()
        log.warning(
            "skipped an event log record that does not decode",
            extra={"kind": kind, "error": first_error},
        )
        return []
    decoder = _ITEM_DECODERS[kind]
    events = []
    for item in items:
        with contextlib.suppress(msgspec.DecodeError, RecursionError, MemoryError):
            events.append(decoder.decode(item))
    bad = len(items) - len(events)
    if bad:
        EVENTS_BAD_EVENTS.inc(bad)
        log.warning(
            "skipped events of an event log record whose values do not have their types",
            extra={"kind": kind, "events": len(items), "bad_events": bad, "error": first_error},
        )
    return events


def _to_batch(kind: str, events: list[Event]) -> pa.RecordBatch:
    """Events of one kind as an Arrow record batch, one column per field."""
    arrays = [
        pa.array(list(map(get, events)), type=arrow_type) for get, arrow_type in _GETTERS[kind]
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=_SCHEMAS[kind])


def _encode_record(kind: str, events: list[Event]) -> bytes:
    """One log record: the header, then the events of one kind as a MessagePack array of
    arrays (Arrow conversion waits for the roll)."""
    return _frame(kind, len(events), b"".join(map(_ENCODER.encode, events)))


def _array_header(count: int) -> bytes:
    """The MessagePack header of an array of `count` items."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _frame(kind: str, count: int, items: bytes | bytearray) -> bytes:
    """A record of `count` events of `kind` already encoded one after the other in `items`:
    an array header in front of them makes the same bytes as encoding the list at once."""
    payload = _array_header(count) + items
    header = _HEADER.pack(
        _MAGIC_MSGPACK, SCHEMA_VERSION, _KIND_CODES[kind], len(payload), zlib.crc32(payload)
    )
    return header + payload


def _record_at(data: bytes, offset: int, kind: str | None = None) -> tuple[_Record, int] | None:
    """The intact record starting at `offset` and the offset after it, or None."""
    if len(data) - offset < _HEADER.size:
        return None
    magic, version, code, length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    if (
        magic not in _MAGICS
        or code not in _CODE_KINDS
        or version > SCHEMA_VERSION
        or start + length > len(data)
    ):
        return None
    payload = memoryview(data)[start : start + length]  # a view: the bytes are not copied
    if zlib.crc32(payload) != crc:
        return None
    record_kind = _CODE_KINDS[code]
    if kind is not None and record_kind != kind:
        return _Record(record_kind, version), start + length  # intact, not decoded
    try:
        if magic == _MAGIC_MSGPACK:
            _RAW_ITEMS.decode(payload)  # well-formed (the events are decoded when converted)
            record = _Record(record_kind, version, payload=payload)
        else:
            batch = pa.ipc.open_stream(pa.py_buffer(payload)).read_next_batch()
            record = _Record(record_kind, version, arrow=batch)
    except (pa.ArrowException, StopIteration, msgspec.DecodeError, RecursionError, MemoryError):
        return None  # damaged (nesting past the stack: a record no writer of ours makes)
    return record, start + length


def parse_log(data: bytes, name: str = "", kind: str | None = None) -> tuple[list[_Record], int]:
    """The intact records of a log file's bytes and the number of damaged stretches skipped.

    After a damaged record (a torn write, bad sectors) reading resumes at the next offset
    holding a record whose header and CRC check out, so damage costs only the damaged bytes.
    With `kind`, records of other kinds are checked (header, CRC) but not decoded.
    """
    records: list[_Record] = []
    offset = 0
    bad = 0
    skipped_bytes = 0
    while offset < len(data):
        found = _record_at(data, offset, kind)
        if found is not None:
            records.append(found[0])
            offset = found[1]
            continue
        bad += 1
        resume = _next_magic(data, offset + 1)
        while resume != -1 and _record_at(data, resume, kind) is None:
            resume = _next_magic(data, resume + 1)
        end = len(data) if resume == -1 else resume
        skipped_bytes += end - offset
        offset = end
    if bad:
        EVENTS_BAD_RECORDS.inc(bad)
        log.warning(
            "skipped damaged event log records",
            extra={"file": name, "bad_records": bad, "skipped_bytes": skipped_bytes},
        )
    return records, bad


_ANY_MAGIC = re.compile(b"|".join(re.escape(magic) for magic in _MAGICS))


def _next_magic(data: bytes, start: int) -> int:
    """The offset of the next record magic at or after `start`, or -1 (one scan for both)."""
    found = _ANY_MAGIC.search(data, start)
    return -1 if found is None else found.start()


def read_log_file(path: Path, kind: str | None = None) -> tuple[list[_Record], int]:
    """The intact records of a log file and the number of damaged stretches skipped."""
    return parse_log(path.read_bytes(), str(path), kind)


def _records_to_tables(records: list[_Record]) -> dict[tuple[str, int], pa.Table]:
    """Groups records by (kind, hour): one Arrow table each. MessagePack records are decoded
    and converted ROLL_CHUNK_EVENTS events at a time (a record holds at most ENCODE_BATCH
    events, so damage costs little; columns are built in larger batches here), so the decoded events held at
    once are bounded whatever the file's size: the peak is about the file plus its columns."""
    batches_by_kind: dict[str, list[pa.RecordBatch]] = collections.defaultdict(list)
    pending: dict[str, list[list[Event]]] = collections.defaultdict(list)  # decoded records
    pending_events = 0

    def convert() -> None:
        for kind, decoded in pending.items():
            batches_by_kind[kind].extend(_events_to_batches(kind, decoded))
        pending.clear()

    for record in records:
        if record.arrow is not None:
            batches_by_kind[record.kind].append(record.arrow)
        elif record.payload is not None:
            events = _decode_events(record.kind, record.payload)
            pending[record.kind].append(events)
            pending_events += len(events)
            if pending_events >= ROLL_CHUNK_EVENTS:
                convert()
                pending_events = 0
    convert()
    tables: dict[tuple[str, int], pa.Table] = {}
    for kind, batches in batches_by_kind.items():
        if not batches:
            continue  # every record of the kind was skipped
        # Batches written by an older schema version lack the newest (defaulted) columns.
        table = (
            pa.Table.from_batches(batches)
            if _same_schema(batches)
            else pa.concat_tables(
                [pa.Table.from_batches([b]) for b in batches], promote_options="default"
            )
        )
        del batches[:]
        hours = pc.divide(table["ts_micros"], _HOUR_MICROS)
        unique_hours = pc.unique(hours).to_pylist()
        if len(unique_hours) == 1:  # the usual case: no copy
            tables[(kind, unique_hours[0])] = table
            continue
        for hour in unique_hours:
            tables[(kind, hour)] = table.filter(pc.equal(hours, hour))
    return tables


def _events_to_batches(kind: str, decoded: list[list[Event]]) -> list[pa.RecordBatch]:
    """One batch of the events of `decoded` (records' events); should a value not fit its
    column (an int in [2**63, 2**64): MessagePack holds it, an int64 column does not), the
    records one by one, and in a record that does not fit, its events one by one: only the
    events that do not fit are skipped and counted (EVENTS_BAD_EVENTS)."""
    try:
        return [_to_batch(kind, [event for events in decoded for event in events])]
    except (pa.ArrowException, OverflowError):
        pass
    batches = []
    for events in decoded:
        try:
            batches.append(_to_batch(kind, events))
            continue
        except (pa.ArrowException, OverflowError) as error:
            first_error = str(error)
        kept = []
        for event in events:
            try:
                _to_batch(kind, [event])
            except (pa.ArrowException, OverflowError):
                continue
            kept.append(event)
        EVENTS_BAD_EVENTS.inc(len(events) - len(kept))
        log.warning(
            "skipped events whose values do not fit the schema",
            extra={
                "kind": kind,
                "events": len(events),
                "bad_events": len(events) - len(kept),
                "error": first_error,
            },
        )
        if kept:
            batches.append(_to_batch(kind, kept))
    return batches


def _same_schema(batches: list[pa.RecordBatch]) -> bool:
    first = batches[0].schema
    return all(b.schema.equals(first) for b in batches[1:])


def hour_label(hour: int) -> str:
    """The partition label of an hour counted since the epoch (`2026-11-22T21`)."""
    return time.strftime("%Y-%m-%dT%H", time.gmtime(hour * 3600))


class _SegmentStore:
    """Where Parquet segments live: a local directory (atomic rename) or any fsspec URL."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = self.fs.protocol in ("file", ("file", "local")) or "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )

    def path(self, kind: str, hour: int, stem: str) -> str:
        return f"{self.root}/{kind}/hour={hour_label(hour)}/{stem}.parquet"

    def write(self, table: pa.Table, path: str) -> None:
        if self.local:
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            # Unique per call: two rollers never write into each other's temp file.
            stem = os.path.basename(path).removesuffix(".parquet")
            tmp = os.path.join(
                directory, f".tmp-{stem}-{os.getpid()}-{secrets.token_hex(4)}.parquet"
            )
            pq.write_table(table, tmp, compression="zstd")
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(directory)
        else:
            # Object stores publish an object atomically when its upload completes.
            self.fs.makedirs(os.path.dirname(path), exist_ok=True)
            with self.fs.open(path, "wb") as handle:
                pq.write_table(table, handle, compression="zstd")

    def list(self, kind: str) -> list[str]:
        pattern = f"{self.root}/{kind}/hour=*/*.parquet"
        found = self.fs.glob(pattern)
        return sorted(p for p in found if not os.path.basename(p).startswith(".tmp-"))

    def read(self, path: str) -> pa.Table:
        with self.fs.open(path, "rb") as handle:
            return pq.read_table(handle)

    def remove_temp_files(self, stem: str) -> None:
        """Removes the temp files of an earlier, interrupted roll of the log file `stem`."""
        if not self.local:
            return
        own = re.compile(rf"\.tmp-{re.escape(stem)}(-\d+-[0-9a-f]+)?\.parquet")
        for tmp in Path(self.root).glob(f"*/hour=*/.tmp-{stem}*.parquet"):
            if own.fullmatch(tmp.name):
                tmp.unlink(missing_ok=True)


def _fsync_dir(directory: str | os.PathLike[str]) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segments_url(directory: Path, segments_url: str) -> str:
    return segments_url or str(directory / "segments")


def roll_log_file(path: Path, segments: _SegmentStore) -> int | None:
    """Turns one closed log file into Parquet segments, then deletes it; returns the rows.

    The file's `flock` is held from reading to deleting, so two processes never roll the same
    file at once: when another one holds it (its writer, or another roller) nothing is done
    and None is returned. Segment names derive from the log file's name, so rolling the
    same file again after a crash overwrites the same segments instead of duplicating events.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0  # rolled by another process
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            named = os.stat(path)
        except FileNotFoundError:
            return 0  # rolled and deleted by another process while we waited for the lock
        opened = os.fstat(fd)
        if (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
            return 0
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
        records, _ = parse_log(data, str(path))
        tables = _records_to_tables(records)
        segments.remove_temp_files(path.stem)
        for (kind, hour), table in tables.items():
            segments.write(table, segments.path(kind, hour, path.stem))
        path.unlink()
        _fsync_dir(path.parent)
        return sum(t.num_rows for t in tables.values())
    finally:
        os.close(fd)


# The roll process (see openbid.events.rollproc) runs at Linux's SCHED_IDLE from its first
# instruction, inherited from the roller thread (`_idle_this_thread`): only on CPU time the
# server leaves idle, preempted the moment the server wakes. Before anything is imported it
# ignores the signals a terminal or a service manager sends to everything (the server
# finishes its rolls on shutdown, then stops) and takes `nice` 10, the priority that holds
# where SCHED_IDLE is missing or refused.
_ROLL_CHILD_PRELUDE = (
    "import os, signal\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTTOU, signal.SIG_IGN)\n"  # in a terminal's background group,
    "signal.signal(signal.SIGTTIN, signal.SIG_IGN)\n"  # `stty tostop` must not stop it
    "try:\n"
    "    os.nice(10)\n"
    "except OSError:\n"  # not permitted: rolls at normal priority
    "    pass\n"
)
_ROLL_CHILD_MAIN = "from openbid.events.rollproc import main\nmain()\n"


ROLL_RESULT_MARKER = "openbid-roll-result "
"""The roll process's result line starts with this (then JSON)."""


def _standard_level_name(level: int) -> str:
    """The name of the highest standard logging level at or below `level` ("Level 15" is
    not a name the roll process could set)."""
    for number, name in ((50, "critical"), (40, "error"), (30, "warning"), (20, "info")):
        if level >= number:
            return name
    return "debug"


def _idle_this_thread() -> None:
    """Puts the calling thread (the roller, which only waits for roll processes) at Linux's
    SCHED_IDLE, a per-thread setting that a process it starts inherits, so the roll process
    runs at it from its first instruction (lowering its own priority once started would
    leave its interpreter's start-up, 20-30 ms of CPU, sharing the server's core). Once set it stays (an unprivileged
    thread cannot raise it again), which the roller, idle but for its waits, never needs."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or refused
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class RollProcessError(EventLogError):
    """The roll process died, could not start or was stuck (and was killed: `stuck`)."""

    def __init__(self, message: str, *, stuck: bool = False) -> None:
        super().__init__(message)
        self.stuck = stuck


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
        self.segments = _SegmentStore(_segments_url(self.directory, segments_url))
        self.flush_interval_s = flush_interval_s
        self.roll_interval_s = roll_interval_s
        self.roll_max_bytes = roll_max_bytes
        self.buffer_max_events = buffer_max_events
        self.roll_in_subprocess = roll_in_subprocess
        self._roll_child: subprocess.Popen[bytes] | None = None  # the roll process, while it runs
        self._child_failures = 0  # roll process failures in a row
        self._child_given_up = False
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
        # Closed log files to roll, with how often rolling each has failed; those that failed
        # wait in _roll_retry (due time, failures, path) until their backoff has passed.
        self._roll_queue: collections.deque[tuple[Path, int]] = collections.deque()
        self._roll_retry: list[tuple[float, int, Path]] = []
        self._roll_wake = threading.Event()
        self._idle_rolls = threading.Condition()  # guards the counts and _roll_retry
        self._rolls_pending = 0  # queued or being rolled
        self._logs_waiting = 0  # queued, being rolled or waiting for a retry
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
        self._recover_orphans()
        self._flusher = threading.Thread(target=self._flush_loop, name="event-flush", daemon=True)
        self._roller = threading.Thread(target=self._roll_loop, name="event-roll", daemon=True)
        self._flusher.start()
        self._roller.start()

    # --- the caller's side
    def emit(self, event: Event) -> None:
        """Encodes one event into the buffer (a microsecond or less, on the caller's thread:
        the flusher then only writes bytes and never competes for the GIL); drops it, and
        counts the drop, when the buffer is full or the event cannot be encoded."""
        kind = event.kind
        if kind not in _KIND_CODES:
            self._drop_unencodable(event, f"unknown event kind {kind!r}")
            return
        with self._lock:
            if self._buffered >= self.buffer_max_events:
                self.dropped += 1
                EVENTS_DROPPED.inc()
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
        self._queue_retries(due_by=float("inf"))  # files waiting for a retry get one now
        self._wait_rolls(timeout_s)

    def close(self, timeout_s: float = 60.0) -> None:
        """Flushes everything, rolls every log file into segments and stops the threads."""
        if self._stopping:
            return
        try:
            self.roll(timeout_s)
        except EventLogError:
            self._stop_roll_child()  # a roll that did not finish in time is not left running
            raise
        self._stopping = True
        self._wake.set()
        self._roll_wake.set()
        self._flusher.join(timeout_s)
        self._roller.join(timeout_s)
        self._stop_roll_child()
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

    def _stop_roll_child(self) -> None:
        """Kills the roll process should one still run (its roll is retried at the next start:
        the file stays until its segments are written)."""
        child = self._roll_child
        if child is not None and child.poll() is None:
            log.warning("stopping the event log roll process", extra={"pid": child.pid})
            with contextlib.suppress(OSError):
                child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(10)

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the log file
    _rotate_requested = False

    def _open_wal(self) -> None:
        self._seq += 1
        name = f"{self._writer_id}-{self._seq:08d}"
        path = self.wal_dir / f"{name}{_WAL_SUFFIX}"
        # Created under another name and locked before it is renamed: a file named *.log
        # whose lock is free is always a dead writer's, never one being opened.
        opening = self.wal_dir / f"{name}{_OPENING_SUFFIX}"
        fd = os.open(opening, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(opening, path)
            _fsync_dir(self.wal_dir)
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
                self._enqueue_roll(old_path)

    @staticmethod
    def _wal_bytes_of(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    def _recover_orphans(self) -> None:
        """Queues for rolling the log files of writers that died (their lock is free)."""
        for path in sorted(self.wal_dir.glob(f"*{_WAL_SUFFIX}")):
            if path == self._wal_path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            finally:
                os.close(fd)
            log.info("recovering event log of a stopped writer", extra={"file": str(path)})
            self._enqueue_roll(path)

    @property
    def logs_waiting(self) -> int:
        """Closed log files not rolled yet: queued, being rolled or waiting for a retry."""
        return self._logs_waiting

    def _enqueue_roll(self, path: Path) -> None:
        with self._idle_rolls:
            self._rolls_pending += 1
            self._logs_waiting += 1
        EVENTS_LOGS_WAITING.inc()
        self._roll_queue.append((path, 0))
        self._roll_wake.set()

    def _queue_retries(self, *, due_by: float) -> None:
        """Moves the files whose retry is due by `due_by` back to the roll queue."""
        with self._idle_rolls:
            due = [item for item in self._roll_retry if item[0] <= due_by]
            if not due:
                return
            self._roll_retry = [item for item in self._roll_retry if item[0] > due_by]
            self._rolls_pending += len(due)
        self._roll_queue.extend((path, failures) for _, failures, path in due)
        self._roll_wake.set()

    def _wait_rolls(self, timeout_s: float) -> None:
        with self._idle_rolls:
            if not self._idle_rolls.wait_for(lambda: self._rolls_pending == 0, timeout=timeout_s):
                raise EventLogError(f"event log roll did not finish within {timeout_s} s")

    # --- threads
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
        return b"".join(_frame(kind, count, data) for kind, count, data in taken), events

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

    def _roll_loop(self) -> None:
        while True:
            with self._idle_rolls:
                next_due = min((item[0] for item in self._roll_retry), default=math.inf)
            self._roll_wake.wait(min(1.0, max(0.0, next_due - time.monotonic())))
            self._roll_wake.clear()
            self._queue_retries(due_by=time.monotonic())
            while self._roll_queue:
                path, failures = self._roll_queue.popleft()
                rolled = False
                try:
                    rows = self._roll_one(path)
                    if rows is None:
                        log.info(
                            "event log is being rolled elsewhere; checking again later",
                            extra={"file": str(path)},
                        )
                    else:
                        rolled = True
                        log.debug("rolled event log", extra={"file": str(path), "rows": rows})
                except Exception:
                    log.exception(
                        "rolling event log failed; will retry",
                        extra={"file": str(path), "failures": failures + 1},
                    )
                with self._idle_rolls:
                    if rolled:
                        self._logs_waiting -= 1
                        EVENTS_LOGS_WAITING.dec()
                    else:
                        backoff = min(ROLL_RETRY_MAX_S, ROLL_RETRY_S * 2**failures)
                        self._roll_retry.append((time.monotonic() + backoff, failures + 1, path))
                    self._rolls_pending -= 1
                    self._idle_rolls.notify_all()
            if self._stopping and not self._roll_queue:
                with self._idle_rolls:
                    left = len(self._roll_retry)
                if left:
                    log.warning(
                        "event log files left unrolled for the next start",
                        extra={"files": [str(item[2]) for item in self._roll_retry]},
                    )
                    EVENTS_LOGS_WAITING.dec(left)
                return

    def _roll_one(self, path: Path) -> int | None:
        """Rolls one file, in this thread or in a low-priority roll process.

        Turning a log file into Parquet holds the GIL for about as long as the events took
        to serve (decoding, column building), so a serving process rolls in a child process
        at low CPU priority: the event loop never waits for the roll. A roll process that
        dies or is stuck fails this roll (retried like any failed roll); after
        ROLL_CHILD_MAX_FAILURES that could not start or died in a row, the writer rolls in
        its own process."""
        if not self.roll_in_subprocess or self._child_failures >= ROLL_CHILD_MAX_FAILURES:
            if self.roll_in_subprocess and not self._child_given_up:
                self._child_given_up = True
                log.error(
                    "the roll process failed repeatedly; rolling in this process from now on",
                    extra={"failures": self._child_failures},
                )
            return roll_log_file(path, self.segments)
        try:
            result = self._roll_in_child(path)
        except RollProcessError as error:
            # A roll process that runs but does not finish in time was most likely starved
            # (at SCHED_IDLE it gets no CPU while the server's cores are saturated): rolling
            # in this process instead would take that CPU from serving. Only roll processes
            # that cannot start or die count towards giving them up.
            if not error.stuck:
                self._child_failures += 1
            raise
        self._child_failures = 0
        if result.get("error"):
            raise EventLogError(f"the roll process failed: {result['error']}")
        if result.get("bad_records"):
            EVENTS_BAD_RECORDS.inc(result["bad_records"])
        if result.get("bad_events"):
            EVENTS_BAD_EVENTS.inc(result["bad_events"])
        return result["rows"]

    def _roll_in_child(self, path: Path) -> dict:
        """Runs one roll process for `path` and returns what it printed (its JSON line).

        A fresh interpreter (not a fork, nor multiprocessing's spawn, which would import the
        server's main module first), in a process group of its own so a Ctrl-C in a terminal
        does not reach it, but in the server's session: with autogroup scheduling (Linux's
        default), a session of its own would be a scheduling group of its own, given as much
        CPU as the server whatever its priority. Killed when it takes longer than
        ROLL_TIMEOUT_S."""
        root = logging.getLogger()
        json_logs = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
        # The arguments go on stdin, not the command line, where every local user could read
        # them (a segments URL may carry credentials).
        arguments = json.dumps(
            {
                "path": str(path),
                "segments_url": self.segments.url,
                "log_level": _standard_level_name(root.getEffectiveLevel()),
                "log_format": "json" if json_logs else "text",
                "server_pid": os.getpid(),
            }
        ).encode()
        # `-P`: the current directory is not put on the import path (it could hold another
        # `openbid`); the child imports exactly what this process can import.
        command = [sys.executable, "-P", "-c", _ROLL_CHILD_PRELUDE + _ROLL_CHILD_MAIN]
        _idle_this_thread()  # the roll process inherits it from its first instruction
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            child = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                process_group=0,
                close_fds=True,
            )
        except OSError as error:
            raise RollProcessError(f"the roll process could not start: {error}") from error
        self._roll_child = child
        try:
            try:
                out, _ = child.communicate(arguments, timeout=ROLL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()  # it ignores SIGTERM
                child.communicate()  # reaps it and closes the pipes
                raise RollProcessError(
                    f"the roll process was stuck for {ROLL_TIMEOUT_S} s and was killed",
                    stuck=True,
                ) from None
        finally:
            if child.poll() is None:  # interrupted some other way: never left running
                child.kill()
                child.wait()
            self._roll_child = None
        result = None
        for line in reversed(out.decode("utf-8", "replace").splitlines()):
            if line.startswith(ROLL_RESULT_MARKER):  # whatever else a library printed
                with contextlib.suppress(ValueError):
                    result = json.loads(line.removeprefix(ROLL_RESULT_MARKER))
                break
        if child.returncode != 0 or not isinstance(result, dict):
            raise RollProcessError(f"the roll process exited with {child.returncode} and no result")
        return result


class EventReader:
    """Reads events back: the immutable segments, then the not-yet-rolled log files."""

    def __init__(self, directory: str | os.PathLike[str], *, segments_url: str = "") -> None:
        self.directory = Path(directory)
        self.segments = _SegmentStore(_segments_url(self.directory, segments_url))
        self.bad_records = 0

    def tables(self, kind: str, *, include_tail: bool = True) -> Iterator[pa.Table]:
        """Yields tables of events of `kind`, one per segment and one for the tail."""
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {sorted(EVENT_TYPES)}")
        wal_dir = self.directory / "wal"
        live_stems: set[str] = set()
        tail_records: list[_Record] = []
        if include_tail and wal_dir.is_dir():
            # A log file is deleted only after its segments are durable, so while it exists
            # it is the whole truth and its (maybe partial) segments are ignored.
            for path in sorted(wal_dir.glob(f"*{_WAL_SUFFIX}")):
                try:
                    records, bad = read_log_file(path, kind)
                except FileNotFoundError:
                    continue  # rolled meanwhile: its segments are listed below
                self.bad_records += bad
                live_stems.add(path.stem)
                tail_records.extend(r for r in records if r.kind == kind)
        for segment in self.segments.list(kind):
            if Path(segment).stem in live_stems:
                continue
            yield self.segments.read(segment)
        if tail_records:
            for (_, _hour), table in sorted(_records_to_tables(tail_records).items()):
                yield table

    def read_table(self, kind: str, *, include_tail: bool = True) -> pa.Table:
        """All events of `kind` in one table (empty with the right schema when there are none)."""
        tables = list(self.tables(kind, include_tail=include_tail))
        if not tables:
            return arrow_schema(EVENT_TYPES[kind]).empty_table()
        return pa.concat_tables(tables, promote_options="default")
