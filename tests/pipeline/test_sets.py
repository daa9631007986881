"""The training sets on DuckDB from logs written through the real `EventLog`: joins, windows
and late events on the clock, deduplication, the tail, and what the shaping trainer needs."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openbid import clock
from openbid.events import (
    AuctionEvent,
    BidEvent,
    ClickEvent,
    ConversionEvent,
    EventLog,
    EventReader,
    ImpressionEvent,
)
from openbid.pipeline import DuckDBEngine, EventSource, PipelineError, Windows, plan, run
from openbid.pipeline.shaping_rows import shaping_rows
from openbid.shaping.training import rows_from_events

from .conftest import T0_MICROS as T0
from .conftest import S

MINUTE = 60 * S
HOUR = 3600 * S


def _write(directory, events) -> None:
    with EventLog(directory) as log:
        for event in events:
            log.emit(event)


def _auction(auction_id: str, ts: int, **features: str) -> AuctionEvent:
    return AuctionEvent(ts, auction_id, f"r-{auction_id}", publisher_id="pub1", features=features)


def _by(table: pa.Table, *keys: str) -> dict:
    return {tuple(row[k] for k in keys): row for row in table.to_pylist()}


CLICK_WINDOWS = Windows(click_window_s=1800, late_wait_s=600, lookback_s=3600)


def test_click_rows_label_clicks_within_the_window_once_it_and_the_wait_have_passed(tmp_path):
    _write(
        tmp_path,
        [
            _auction("a1", T0, os="ios"),
            _auction("a2", T0, os="android"),
            _auction("a3", T0, os="ios"),
            ImpressionEvent(T0 + 1 * S, "a1", "b1", dsp="d1", creative_id="c1", campaign_id="k1"),
            ImpressionEvent(T0 + 2 * S, "a2", "b2", dsp="d2"),
            ImpressionEvent(T0 + 3 * S, "a3", "b3", dsp="d1"),
            ImpressionEvent(T0 + 8 * S, "a3", "b3", dsp="d1"),  # the tracker fired twice
            ClickEvent(T0 + 20 * MINUTE, "a1", "b1"),
            ClickEvent(T0 + 21 * MINUTE, "a1", "b1"),
            ClickEvent(T0 + 2 * S + 31 * MINUTE, "a2", "b2"),  # past b2's 30 min window
        ],
    )
    source, engine = EventSource(tmp_path), DuckDBEngine()
    # the windows have closed (30 min) but the wait for late events (10 min) has not
    early = run("click", source, engine, CLICK_WINDOWS, now_micros=T0 + 35 * MINUTE)
    assert early.rows.num_rows == 0
    built = run("click", source, engine, CLICK_WINDOWS, now_micros=T0 + 41 * MINUTE)
    rows = _by(built.rows, "bid_id")
    assert sorted(rows) == [("b1",), ("b2",), ("b3",)]  # b3 once
    assert rows[("b1",)]["label"] == 1 and rows[("b1",)]["clicks"] == 2
    assert rows[("b1",)]["first_click_ts_micros"] == T0 + 20 * MINUTE
    assert rows[("b1",)]["features"] == [("os", "ios")]
    assert (rows[("b1",)]["creative_id"], rows[("b1",)]["campaign_id"]) == ("c1", "k1")
    assert rows[("b2",)]["label"] == 0 and rows[("b2",)]["first_click_ts_micros"] is None
    assert rows[("b3",)]["label"] == 0 and rows[("b3",)]["ts_micros"] == T0 + 3 * S
    assert (built.manifest.rows, built.manifest.positives) == (3, 1)


def test_a_click_logged_late_but_within_its_window_counts_when_the_wait_covers_it(tmp_path):
    _write(tmp_path, [_auction("a1", T0), ImpressionEvent(T0, "a1", "b1")])
    engine = DuckDBEngine()
    no_wait = Windows(click_window_s=1800, late_wait_s=0, lookback_s=3600)
    # without a wait, a build just after the window emits the impression as a negative...
    hasty = run("click", EventSource(tmp_path), engine, no_wait, now_micros=T0 + 31 * MINUTE)
    assert hasty.rows["label"].to_pylist() == [0]
    # ...which a click made within the window, but logged after it closed, proves wrong
    _write(tmp_path, [ClickEvent(T0 + 29 * MINUTE, "a1", "b1")])
    patient = run(
        "click", EventSource(tmp_path), engine, CLICK_WINDOWS, now_micros=T0 + 41 * MINUTE
    )
    assert patient.rows["label"].to_pylist() == [1]


def test_the_clock_decides_when_a_window_has_closed(tmp_path, market_clock):
    # An hour of market time per real second: the 30 min window and 10 min wait close
    # about 0.7 real seconds after the impression, and the build follows the clock.
    impression_ts = clock.now_micros()
    _write(tmp_path, [_auction("a1", impression_ts), ImpressionEvent(impression_ts, "a1", "b1")])
    source, engine = EventSource(tmp_path), DuckDBEngine()
    closes_at = impression_ts + 40 * MINUTE
    deadline = time.monotonic() + 30.0
    before = []
    while True:
        built = run("click", source, engine, CLICK_WINDOWS)
        now = built.manifest.window["now_micros"]
        if built.rows.num_rows:
            break
        before.append(now)
        assert time.monotonic() < deadline, "the window never closed on the market clock"
        time.sleep(0.05)
    assert now >= closes_at
    assert before and max(before) < closes_at  # built (empty) while the window was open
    assert built.rows["label"].to_pylist() == [0]
    assert built.manifest.window["closed_until_micros"] == now - 40 * MINUTE


CONVERSION_WINDOWS = Windows(
    click_window_s=1800,
    post_click_window_s=86400,
    post_view_window_s=3600,
    late_wait_s=600,
    lookback_s=3600,
)


def test_conversions_are_attributed_post_click_then_post_view_within_their_windows(tmp_path):
    events = [_auction(f"a{i}", T0 + i * S, os="ios") for i in range(1, 6)]
    events += [ImpressionEvent(T0 + i * S + 1, f"a{i}", f"b{i}", dsp="d1") for i in range(1, 6)]
    events += [
        # b1: clicked, converts 23 h later: post-click (not post-view, though it was seen)
        ClickEvent(T0 + 1 * S + 10 * S, "a1", "b1", dsp="d1"),
        ConversionEvent(T0 + 1 * S + 23 * HOUR, "a1", "cv1", bid_id="b1", value_micros=7),
        # b2: clicked, converts a second after its post-click window: attributed to nothing
        ClickEvent(T0 + 2 * S + 10 * S, "a2", "b2", dsp="d1"),
        ConversionEvent(T0 + 2 * S + 10 * S + 86400 * S + 1 * S, "a2", "cv2", bid_id="b2"),
        # b3: seen, not clicked, converts 30 min later: post-view
        ConversionEvent(T0 + 3 * S + 30 * MINUTE, "a3", "cv3", bid_id="b3", value_micros=5),
        # b4: seen, not clicked, converts 2 h later: past the 1 h post-view window
        ConversionEvent(T0 + 4 * S + 2 * HOUR, "a4", "cv4", bid_id="b4"),
        # b5: clicked, one conversion reported twice (a retried postback): counted once
        ClickEvent(T0 + 5 * S + 10 * S, "a5", "b5", dsp="d1"),
        ConversionEvent(T0 + 5 * S + HOUR, "a5", "cv5", bid_id="b5", value_micros=3),
        ConversionEvent(T0 + 5 * S + HOUR + 30 * S, "a5", "cv5", bid_id="b5", value_micros=3),
    ]
    _write(tmp_path, events)
    built = run(
        "conversion", EventSource(tmp_path), DuckDBEngine(), CONVERSION_WINDOWS,
        now_micros=T0 + 3 * 86400 * S,
    )  # fmt: skip
    rows = _by(built.rows, "bid_id", "touch")
    labels = {key: row["label"] for key, row in rows.items()}
    assert labels == {
        ("b1", "click"): 1,
        ("b1", "view"): 0,
        ("b2", "click"): 0,
        ("b2", "view"): 0,
        ("b3", "view"): 1,
        ("b4", "view"): 0,
        ("b5", "click"): 1,
        ("b5", "view"): 0,
    }
    assert rows[("b1", "click")]["value_micros"] == 7
    assert rows[("b3", "view")]["first_conversion_ts_micros"] == T0 + 3 * S + 30 * MINUTE
    assert rows[("b5", "click")]["conversions"] == 1
    assert rows[("b5", "click")]["value_micros"] == 3


def test_conversion_rows_wait_for_their_own_window_to_close(tmp_path):
    _write(
        tmp_path,
        [
            _auction("a1", T0),
            ImpressionEvent(T0, "a1", "b1"),
            ClickEvent(T0 + MINUTE, "a1", "b1"),
        ],
    )
    # 2 h on: the view's 1 h window (and wait) has closed, the click's 24 h has not
    built = run(
        "conversion", EventSource(tmp_path), DuckDBEngine(), CONVERSION_WINDOWS,
        now_micros=T0 + 2 * HOUR,
    )  # fmt: skip
    assert built.rows["touch"].to_pylist() == ["view"]


def test_a_postback_logged_after_the_view_window_but_within_the_wait_still_counts(tmp_path):
    _write(tmp_path, [_auction("a1", T0), ImpressionEvent(T0, "a1", "b1")])
    source, engine = EventSource(tmp_path), DuckDBEngine()
    # the 1 h post-view window has closed, the 10 min wait for late events has not
    waiting = run("conversion", source, engine, CONVERSION_WINDOWS, now_micros=T0 + 65 * MINUTE)
    assert waiting.rows.num_rows == 0
    # a conversion made within the window, whose postback is logged after it closed
    _write(tmp_path, [ConversionEvent(T0 + 50 * MINUTE, "a1", "cv1", bid_id="b1")])
    built = run(
        "conversion", EventSource(tmp_path), engine, CONVERSION_WINDOWS,
        now_micros=T0 + 71 * MINUTE,
    )  # fmt: skip
    assert built.rows["touch"].to_pylist() == ["view"]
    assert built.rows["label"].to_pylist() == [1]


@pytest.mark.parametrize("set_name", ["click", "conversion"])
def test_rows_of_auctions_with_several_imps_carry_their_own_auctions_features(tmp_path, set_name):
    from openbid.pipeline.synthetic import synthetic_tables, write_segments

    # 3 hours of segments (the auctions arrive in several chunks), 3 imps per auction
    tables = synthetic_tables(600, seed=5, start_micros=T0, span_s=3 * 3600.0, imps_per_auction=3)
    write_segments(tables, str(tmp_path / "segments"))
    built = run(
        set_name, EventSource(tmp_path), DuckDBEngine(), CONVERSION_WINDOWS,
        now_micros=T0 + 4 * 86400 * S,
    )  # fmt: skip
    features_of = dict(
        zip(
            tables["auction"]["auction_id"].to_pylist(),
            tables["auction"]["features"].to_pylist(),
            strict=True,
        )
    )
    rows = built.rows.to_pylist()
    assert len({row["imp_id"] for row in rows}) == 3
    assert len(rows) > len({row["auction_id"] for row in rows})  # auctions with several rows
    assert all(row["features"] == features_of[row["auction_id"]] for row in rows)


def test_shaping_rows_are_one_per_bid_event_with_the_auctions_features_and_the_tail(tmp_path):
    rolled = [
        _auction("a1", T0, os="ios", country="DEU"),
        BidEvent(T0, "a1", "d1", bid=True, bid_id="x1", price_micros=900),
        BidEvent(T0, "a1", "d1", bid=True, bid_id="x2", price_micros=1200),
        BidEvent(T0, "a1", "d2", decision="filtered", shaping_score=0.01),
        BidEvent(T0, "a1", "d3", error="qps_capped"),
        BidEvent(T0, "a1", "d4", decision="explored", send_probability=0.05),
    ]
    _write(tmp_path, rolled)
    log = EventLog(tmp_path, roll_interval_s=3600)  # the second auction stays in the tail
    try:
        log.emit(_auction("a2", T0 + S, os="android"))
        log.emit(BidEvent(T0 + S, "a2", "d1", error="timeout"))
        log.flush()
        assert list((tmp_path / "wal").glob("*.log"))
        built = run(
            "shaping", EventSource(tmp_path), DuckDBEngine(), Windows(late_wait_s=0),
            now_micros=T0 + HOUR,
        )  # fmt: skip
    finally:
        log.close()
    rows, auctions = built.tables["rows"], built.tables["auctions"]
    assert rows.num_rows == 6 and auctions.num_rows == 2
    assert auctions["auction_id"].to_pylist() == ["a1", "a2"]
    assert auctions["features"].to_pylist()[1] == [("os", "android")]
    by_dsp = _by(rows, "auction_id", "dsp", "bid_id")
    assert by_dsp[("a1", "d2", "")]["sent"] is False  # filtered
    assert by_dsp[("a1", "d3", "")]["sent"] is False  # the exchange did not send it
    assert by_dsp[("a1", "d4", "")]["sent"] is True
    assert by_dsp[("a1", "d4", "")]["send_probability"] == 0.05
    assert by_dsp[("a2", "d1", "")]["sent"] is True  # a timeout is a call without a bid
    assert by_dsp[("a1", "d1", "x2")]["label"] == 1
    assert {row["auction_row"] for row in rows.to_pylist() if row["auction_id"] == "a2"} == {1}
    assert built.manifest.positives == 2


def test_the_shaping_set_gives_the_trainer_the_rows_it_builds_from_the_raw_log(tmp_path):
    from openbid.pipeline.synthetic import synthetic_tables, write_segments

    write_segments(synthetic_tables(400, seed=3, start_micros=T0), str(tmp_path / "segments"))
    built = run(
        "shaping", EventSource(tmp_path), DuckDBEngine(), Windows(late_wait_s=0),
        now_micros=T0 + 86400 * S,
    )  # fmt: skip
    ours = shaping_rows(built.tables)
    reader = EventReader(tmp_path)
    theirs = rows_from_events(reader.read_table("auction"), reader.read_table("bid"))

    def keyed(rows):
        auction_of = rows.auction_id[rows.request]
        return {
            (auction_of[i], rows.dsp[i]): (rows.label[i], rows.weight[i], rows.value_micros[i])
            for i in range(len(rows))
        }

    assert len(ours) == len(theirs) and keyed(ours) == keyed(theirs)
    assert list(ours.auction_id) == list(theirs.auction_id)
    assert np.array_equal(ours.ts_micros, theirs.ts_micros)
    for name, column in theirs.features.items():
        assert ours.features[name].equals(column), name


def test_a_segment_written_before_a_field_existed_reads_with_the_fields_default(tmp_path):
    from openbid.pipeline.synthetic import synthetic_tables, write_segments

    tables = synthetic_tables(50, seed=1, start_micros=T0)
    tables["bid"] = tables["bid"].drop_columns(["won", "error"])  # as an older writer's
    write_segments(tables, str(tmp_path / "segments"))
    built = run(
        "shaping", EventSource(tmp_path), DuckDBEngine(), Windows(late_wait_s=0),
        now_micros=T0 + 86400 * S,
    )  # fmt: skip
    assert built.rows.num_rows == tables["bid"].num_rows
    assert set(built.rows["won"].to_pylist()) == {False}
    assert set(built.rows["error"].to_pylist()) == {""}


def test_plan_refuses_an_empty_window_and_never_reads_past_the_clock():
    with pytest.raises(PipelineError, match="empty window"):
        plan("click", Windows(), since_micros=T0, until_micros=T0)
    the_plan = plan(
        "conversion", CONVERSION_WINDOWS, since_micros=T0, until_micros=None, now_micros=T0 + HOUR
    )
    assert the_plan.until_micros == T0 + HOUR
    assert the_plan.load_until_micros <= T0 + HOUR - 600 * S
    assert the_plan.closed_until_micros == T0  # nothing has closed yet


def test_written_sets_round_trip_their_parquet_schema(tmp_path):
    from openbid.pipeline import build_training_set, read_training_set
    from openbid.pipeline.transforms import OUTPUT_SCHEMAS

    _write(tmp_path / "log", [_auction("a1", T0), ImpressionEvent(T0, "a1", "b1")])
    manifest = build_training_set(
        "click", EventSource(tmp_path / "log"), DuckDBEngine(), CLICK_WINDOWS,
        str(tmp_path / "sets"), since_micros=T0, until_micros=T0 + HOUR,
        now_micros=T0 + 2 * HOUR,
    )  # fmt: skip
    tables, read_back = read_training_set(manifest.path)
    assert tables["rows"].schema.equals(OUTPUT_SCHEMAS["click"]["rows"])
    assert read_back["rows"] == 1 and read_back["engine"] == "duckdb"
    assert manifest.path.endswith("click/20270115T080000Z_20270115T090000Z")
    assert pq.read_table(f"{manifest.path}/rows.parquet").num_rows == 1
