"""Record framing: records encode and decode, older Arrow records still read, damage is
skipped (never raised) and reading resumes at the next intact record."""

import zlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.events import AuctionEvent
from openbid.events.columns import to_batch
from openbid.events.framing import (
    HEADER,
    KIND_CODES,
    MAGIC_ARROW,
    MAGIC_MSGPACK,
    decode_events,
    encode_record,
    parse_log,
)
from openbid.events.schema import SCHEMA_VERSION

from .conftest import T0, bids, rows


def _prices(records):
    return [[event.price_micros for event in record.events] for record in records]


def test_reader_resyncs_past_a_damaged_record_mid_file(caplog):
    parts = [encode_record("bid", bids(10, start=10 * i)) for i in range(3)]
    data = bytearray(b"".join(parts))
    middle = len(parts[0]) + len(parts[1]) // 2
    data[middle : middle + 8] = b"\xff" * 8  # bad sectors inside the second record
    records, bad = parse_log(bytes(data), "damaged")
    assert bad == 1
    assert _prices(records) == [list(range(10)), list(range(20, 30))]
    assert "skipped damaged event log records" in caplog.text
    # A record torn in two, with later records appended after it, is skipped alone too.
    torn = parts[0] + parts[1][:30] + parts[2]
    records, bad = parse_log(torn)
    assert (_prices(records), bad) == ([list(range(10)), list(range(20, 30))], 1)


def test_a_truncated_last_record_is_one_damaged_stretch():
    data = encode_record("bid", bids(4)) + encode_record("bid", bids(4, start=4))
    records, bad = parse_log(data[:-7], "torn")
    assert (_prices(records), bad) == ([[0, 1, 2, 3]], 1)


def test_garbage_is_damage_not_an_error():
    records, bad = parse_log(bytes(range(256)) * 16)
    assert (records, bad) == ([], 1)


def _arrow_record(kind, events):
    """A record as logs written before MessagePack records hold it: an Arrow IPC stream."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    batch = to_batch(kind, events)
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    payload = sink.getvalue().to_pybytes()
    header = HEADER.pack(MAGIC_ARROW, 1, KIND_CODES[kind], len(payload), zlib.crc32(payload))
    return header + payload


def test_records_are_messagepack_and_older_arrow_records_still_read():
    new = encode_record("bid", bids(3))
    assert new[:2] == MAGIC_MSGPACK
    old = _arrow_record("bid", bids(2, start=3))
    records, bad = parse_log(old + new + b"torn tail" + old)
    assert bad == 1
    assert rows(records) == [2, 3, 2]
    assert records[0].arrow is not None and records[1].payload is not None
    assert records[0].arrow.column("price_micros").to_pylist() == [3, 4]
    # A damaged MessagePack payload with a matching CRC is skipped, not raised.
    payload = b"\x91\x92\x01"
    header = HEADER.pack(
        MAGIC_MSGPACK, SCHEMA_VERSION, KIND_CODES["bid"], len(payload), zlib.crc32(payload)
    )
    assert rows(parse_log(header + payload + new)[0]) == [3]


def test_a_record_nested_past_the_stack_is_damaged_not_a_crash():
    nested = b"\x91" * 100_000 + b"\xc0"  # [[[...[nil]...]]]: no writer of ours makes it
    payload = b"\x91" + nested
    header = HEADER.pack(
        MAGIC_MSGPACK, SCHEMA_VERSION, KIND_CODES["bid"], len(payload), zlib.crc32(payload)
    )
    good = encode_record("bid", bids(2))
    records, damaged = parse_log(good + header + payload + good)
    assert damaged == 1
    assert sum(len(decode_events("bid", r.payload)) for r in records) == 4


def test_a_record_of_a_newer_schema_version_is_not_taken_for_ours():
    record = encode_record("bid", bids(2))
    magic, version, code, length, crc = HEADER.unpack_from(record)
    newer = HEADER.pack(magic, version + 1, code, length, crc) + record[HEADER.size :]
    assert parse_log(newer) == ([], 1)


@pytest.mark.parametrize("count", [1, 15, 16, 128, 70_000])
def test_events_encoded_one_by_one_frame_the_same_bytes_as_the_list_encoded_at_once(count):
    events = bids(count)
    payload = msgspec.msgpack.encode(events)
    header = HEADER.pack(
        MAGIC_MSGPACK, SCHEMA_VERSION, KIND_CODES["bid"], len(payload), zlib.crc32(payload)
    )
    assert encode_record("bid", events) == header + payload
    records, damaged = parse_log(encode_record("bid", events))
    assert damaged == 0 and records[0].events == events


def test_reading_one_kind_decodes_only_its_records():
    data = encode_record("bid", bids(3)) + encode_record("auction", [AuctionEvent(T0, "a", "r")])
    records, bad = parse_log(data, kind="auction")
    assert bad == 0 and [r.kind for r in records] == ["bid", "auction"]
    assert records[0].events is None and rows(records[1:]) == [1]


def test_a_wrongly_typed_value_costs_only_its_event(caplog):
    events = bids(5)
    # msgspec encodes anything; only the typed decoder refuses a str where an int belongs.
    events[2] = events[2].__class__(T0, "a-bad", "dsp-a", price_micros="not an int")
    records, damaged = parse_log(encode_record("bid", events))
    assert damaged == 0
    assert [e.price_micros for e in records[0].events] == [0, 1, 3, 4]
    assert caplog.text.count("whose values do not have their types") == 1


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=6),
    damage=st.tuples(st.integers(min_value=0), st.binary(min_size=1, max_size=40)),
    cut=st.integers(min_value=0, max_value=60),
)
def test_damage_costs_only_the_records_it_touches(sizes, damage, cut):
    """Whatever bytes overwrite a stretch of a log (and however much of its end is torn
    off), parsing never raises and every record the damage did not touch is recovered."""
    parts, start = [], 0
    for size in sizes:
        parts.append(encode_record("bid", bids(size, start=start)))
        start += size
    data = bytearray(b"".join(parts))
    at, junk = damage[0] % len(data), damage[1]
    data[at : at + len(junk)] = junk
    end = max(0, len(data) - cut)
    records, _ = parse_log(bytes(data[:end]))
    got = [event.price_micros for record in records for event in record.events or []]
    offset, untouched = 0, []
    for part, size, first in zip(parts, sizes, _firsts(sizes), strict=True):
        clean = offset + len(part) <= at or offset >= at + len(junk)
        if clean and offset + len(part) <= end:
            untouched.extend(range(first, first + size))
        offset += len(part)
    assert set(untouched) <= set(got)


def _firsts(sizes):
    firsts, start = [], 0
    for size in sizes:
        firsts.append(start)
        start += size
    return firsts
