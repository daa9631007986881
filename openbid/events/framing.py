"""Record framing of the log files: how events become CRC-checked records and back.

A record is a header (magic, schema version, kind code, payload length, CRC-32 of the
payload) and a payload: the events of one kind as one MessagePack array of arrays (the
same bytes as encoding the list at once), or, in logs written by earlier versions, one
Arrow IPC stream. `parse_log` returns the intact records of a file's bytes; a damaged
stretch (a torn write, a bad sector) is skipped, counted and logged, never raised, and
reading resumes at the next offset whose header and CRC check out.
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pyarrow as pa

from openbid.events.metrics import EVENTS_BAD_EVENTS, EVENTS_BAD_RECORDS
from openbid.events.schema import EVENT_TYPES, SCHEMA_VERSION, Event

log = logging.getLogger(__name__)

MAGIC_ARROW = b"OB"  # payload: one Arrow IPC stream (logs written before MessagePack records)
MAGIC_MSGPACK = b"OM"  # payload: the events as a MessagePack array of arrays
_MAGICS = (MAGIC_ARROW, MAGIC_MSGPACK)
HEADER = struct.Struct("<2sHBxII")  # magic, schema version, kind code, pad, length, crc32
KIND_CODES = {kind: code for code, kind in enumerate(EVENT_TYPES, start=1)}
_CODE_KINDS = {code: kind for kind, code in KIND_CODES.items()}

WAL_SUFFIX = ".log"  # a log file's name: written or closed (one being created: *.log.new)

ENCODER = msgspec.msgpack.Encoder()
_DECODERS = {kind: msgspec.msgpack.Decoder(list[cls]) for kind, cls in EVENT_TYPES.items()}
# Checks a payload is a well-formed MessagePack array without building its events.
_ITEM_DECODERS = {kind: msgspec.msgpack.Decoder(cls) for kind, cls in EVENT_TYPES.items()}
_RAW_ITEMS = msgspec.msgpack.Decoder(list[msgspec.Raw])


@dataclass(frozen=True)
class Record:
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
        return decode_events(self.kind, self.payload)


def decode_events(kind: str, payload: memoryview | bytes) -> list[Event]:
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


def encode_record(kind: str, events: list[Event]) -> bytes:
    """One log record: the header, then the events of one kind as a MessagePack array of
    arrays (Arrow conversion waits for the roll)."""
    return frame(kind, len(events), b"".join(map(ENCODER.encode, events)))


def _array_header(count: int) -> bytes:
    """The MessagePack header of an array of `count` items."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def frame(kind: str, count: int, items: bytes | bytearray) -> bytes:
    """A record of `count` events of `kind` already encoded one after the other in `items`:
    an array header in front of them makes the same bytes as encoding the list at once."""
    payload = _array_header(count) + items
    header = HEADER.pack(
        MAGIC_MSGPACK, SCHEMA_VERSION, KIND_CODES[kind], len(payload), zlib.crc32(payload)
    )
    return header + payload


def _record_at(data: bytes, offset: int, kind: str | None = None) -> tuple[Record, int] | None:
    """The intact record starting at `offset` and the offset after it, or None."""
    if len(data) - offset < HEADER.size:
        return None
    magic, version, code, length, crc = HEADER.unpack_from(data, offset)
    start = offset + HEADER.size
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
        return Record(record_kind, version), start + length  # intact, not decoded
    try:
        if magic == MAGIC_MSGPACK:
            _RAW_ITEMS.decode(payload)  # well-formed (the events are decoded when converted)
            record = Record(record_kind, version, payload=payload)
        else:
            batch = pa.ipc.open_stream(pa.py_buffer(payload)).read_next_batch()
            record = Record(record_kind, version, arrow=batch)
    except (pa.ArrowException, StopIteration, msgspec.DecodeError, RecursionError, MemoryError):
        return None  # damaged (nesting past the stack: a record no writer of ours makes)
    return record, start + length


def parse_log(data: bytes, name: str = "", kind: str | None = None) -> tuple[list[Record], int]:
    """The intact records of a log file's bytes and the number of damaged stretches skipped.

    After a damaged record (a torn write, bad sectors) reading resumes at the next offset
    holding a record whose header and CRC check out, so damage costs only the damaged bytes.
    With `kind`, records of other kinds are checked (header, CRC) but not decoded.
    """
    records: list[Record] = []
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


def read_log_file(path: Path, kind: str | None = None) -> tuple[list[Record], int]:
    """The intact records of a log file and the number of damaged stretches skipped."""
    return parse_log(path.read_bytes(), str(path), kind)
