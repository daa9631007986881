"""Records to Arrow columns: one table per kind and hour; a value that does not fit costs
only its event."""

from openbid.events import AuctionEvent, BidEvent
from openbid.events.columns import records_to_tables, to_batch
from openbid.events.framing import Record, encode_record, parse_log
from openbid.obs import REGISTRY

from .conftest import HOUR_MICROS, T0, bids


def _bad_events_count():
    return REGISTRY.get_sample_value("openbid_events_bad_events_total") or 0.0


def test_tables_are_split_by_kind_and_hour():
    data = (
        encode_record("bid", bids(3) + bids(2, start=3, ts=T0 + HOUR_MICROS))
        + encode_record("auction", [AuctionEvent(T0, "a1", "req-1")])
        + encode_record("bid", bids(1, start=5))
    )
    tables = records_to_tables(parse_log(data)[0])
    hour = T0 // HOUR_MICROS
    assert sorted(tables) == [("auction", hour), ("bid", hour), ("bid", hour + 1)]
    assert tables[("bid", hour)].column("price_micros").to_pylist() == [0, 1, 2, 5]
    assert tables[("bid", hour + 1)].column("price_micros").to_pylist() == [3, 4]


def test_a_value_that_does_not_fit_its_column_costs_only_its_event():
    good = encode_record("bid", bids(3))
    # MessagePack holds up to 2**64 - 1, an Arrow int64 column only up to 2**63 - 1.
    huge = BidEvent(T0, "a-huge", "dsp-a", price_micros=2**63 + 5)
    mixed = encode_record("bid", [*bids(2, start=10), huge, *bids(2, start=20)])
    records, damaged = parse_log(good + mixed + good)
    assert damaged == 0  # it decodes; only the column cannot hold it
    before = _bad_events_count()
    tables = records_to_tables(records)
    ids = sorted(i for t in tables.values() for i in t["auction_id"].to_pylist())
    assert ids == sorted(["a0", "a1", "a2"] * 2 + ["a10", "a11", "a20", "a21"])
    assert _bad_events_count() == before + 1


def test_a_wrongly_typed_value_costs_only_its_event():
    events = bids(5)
    events[2] = BidEvent(T0, "a-bad", "dsp-a", price_micros="not an int")
    data = encode_record("bid", events) + encode_record("bid", bids(2, start=5))
    before = _bad_events_count()
    tables = records_to_tables(parse_log(data)[0])
    prices = sorted(p for t in tables.values() for p in t.column("price_micros").to_pylist())
    assert prices == [0, 1, 3, 4, 5, 6]
    assert _bad_events_count() == before + 1


def test_a_kind_whose_every_record_is_skipped_does_not_stop_the_others():
    bad = encode_record("bid", [BidEvent(T0, "a-huge", "dsp-a", price_micros=2**63 + 5)])
    auction = encode_record("auction", [AuctionEvent(T0, "a1", "req-1")])
    tables = records_to_tables(parse_log(bad + auction)[0])
    assert [kind for kind, _ in tables] == ["auction"]


def test_batches_of_an_older_schema_take_the_newest_columns_as_nulls():
    """A log written before a field was appended holds batches without its column."""
    full = to_batch("bid", bids(2))
    older = full.select(full.schema.names[:-1])
    newest = full.schema.names[-1]
    records = [Record("bid", 1, arrow=older), *parse_log(encode_record("bid", bids(1, 2)))[0]]
    (table,) = records_to_tables(records).values()
    assert table.column("price_micros").to_pylist() == [0, 1, 2]
    assert table.column(newest).null_count == 2
