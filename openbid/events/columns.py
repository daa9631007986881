"""Records to Arrow columns: one table per event kind and hour, for the roller and the reader.

MessagePack records are decoded and converted a bounded number of events at a time, so
converting a file never holds all its events as Python objects at once; a value that does
not fit its column (an int in [2**63, 2**64)) costs only its event, counted and logged.
"""

from __future__ import annotations

import collections
import logging
import operator

import pyarrow as pa
import pyarrow.compute as pc

from openbid.events.framing import Record, decode_events
from openbid.events.metrics import EVENTS_BAD_EVENTS
from openbid.events.schema import EVENT_TYPES, Event, arrow_schema

log = logging.getLogger(__name__)

HOUR_MICROS = 3_600_000_000
# A roll decodes and converts this many events at a time (a bounded number of Python objects).
ROLL_CHUNK_EVENTS = 65_536

_GETTERS = {
    kind: [(operator.attrgetter(field.name), field.type) for field in arrow_schema(cls)]
    for kind, cls in EVENT_TYPES.items()
}
_SCHEMAS = {kind: arrow_schema(cls) for kind, cls in EVENT_TYPES.items()}


def to_batch(kind: str, events: list[Event]) -> pa.RecordBatch:
    """Events of one kind as an Arrow record batch, one column per field."""
    arrays = [
        pa.array(list(map(get, events)), type=arrow_type) for get, arrow_type in _GETTERS[kind]
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=_SCHEMAS[kind])


def record_batch(record: Record) -> pa.RecordBatch:
    """One record as an Arrow batch (built now for a MessagePack record)."""
    if record.arrow is not None:
        return record.arrow
    return to_batch(record.kind, record.events or [])


def records_to_tables(records: list[Record]) -> dict[tuple[str, int], pa.Table]:
    """Groups records by (kind, hour): one Arrow table each. MessagePack records are decoded
    and converted ROLL_CHUNK_EVENTS events at a time (a record holds few events, so damage
    costs little; columns are built in larger batches here), so the decoded events held at
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
            events = decode_events(record.kind, record.payload)
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
        hours = pc.divide(table["ts_micros"], HOUR_MICROS)
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
        return [to_batch(kind, [event for events in decoded for event in events])]
    except (pa.ArrowException, OverflowError):
        pass
    batches = []
    for events in decoded:
        try:
            batches.append(to_batch(kind, events))
            continue
        except (pa.ArrowException, OverflowError) as error:
            first_error = str(error)
        kept = []
        for event in events:
            try:
                to_batch(kind, [event])
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
            batches.append(to_batch(kind, kept))
    return batches


def _same_schema(batches: list[pa.RecordBatch]) -> bool:
    first = batches[0].schema
    return all(b.schema.equals(first) for b in batches[1:])
