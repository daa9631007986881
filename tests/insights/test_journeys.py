"""Journeys built from a real event log (written through `EventLog`) on DuckDB, and on a real
local Spark with the same paths: touches per user up to each conversion, null paths once
their window has closed, conversions without a user id joined through their bid."""

from __future__ import annotations

import pytest

from openbid.events import AuctionEvent, ClickEvent, ConversionEvent, EventLog, ImpressionEvent
from openbid.insights.attribution import attribute
from openbid.insights.attribution.journeys import build_journeys
from openbid.insights.errors import InsightsError
from openbid.pipeline import DuckDBEngine, EventSource

T0 = 1_800_000_000_000_000
S = 1_000_000
HOUR = 3600 * S


def view(log, t, user, campaign, n, publisher="pub1"):
    log.emit(AuctionEvent(T0 + t, f"a{n}", f"r{n}", publisher_id=publisher))
    log.emit(
        ImpressionEvent(T0 + t, f"a{n}", f"b{n}", dsp="dsp1", campaign_id=campaign, user_id=user)
    )


@pytest.fixture(scope="module")
def event_log(tmp_path_factory):
    directory = tmp_path_factory.mktemp("journeys")
    with EventLog(directory, roll_interval_s=3600) as log:
        # u1: view A, click B (on the view's bid), converts; later views A again (a null path)
        view(log, 0, "u1", "A", 1)
        log.emit(ImpressionEvent(T0 + 1 * S, "a1", "b1", dsp="dsp1", campaign_id="A", user_id="u1"))
        view(log, 10 * S, "u1", "B", 2, publisher="pub2")
        log.emit(ClickEvent(T0 + 11 * S, "a2", "b2", campaign_id="B", user_id="u1"))
        log.emit(
            ConversionEvent(T0 + HOUR, "a2", "cv1", bid_id="b2", user_id="u1", value_micros=5 * S)
        )
        log.emit(
            ConversionEvent(
                T0 + HOUR + S, "a2", "cv1", bid_id="b2", user_id="u1", value_micros=5 * S
            )
        )
        view(log, 2 * HOUR, "u1", "A", 3)
        # u2: view B; the conversion names no user: its bid's impression does
        view(log, 5 * S, "u2", "B", 4, publisher="pub2")
        log.emit(ConversionEvent(T0 + 20 * S, "a4", "cv2", bid_id="b4", value_micros=3 * S))
        # u3: a view of A, no conversion
        view(log, 30 * S, "u3", "A", 5)
        # u4: a conversion with no touch before it
        log.emit(ConversionEvent(T0 + 40 * S, "", "cv3", user_id="u4", value_micros=S))
        # u5: a view of B long before its conversion (outside a 1-day lookback)
        view(log, 0, "u5", "B", 6)
        log.emit(ConversionEvent(T0 + 50 * HOUR, "", "cv4", user_id="u5", value_micros=S))
    return directory


def paths_of(journeys):
    p = journeys.paths
    return {
        " > ".join(p.path(i)): (p.conversions[i], p.value[i], p.nulls[i]) for i in range(p.n_paths)
    }


def test_journeys_by_campaign_from_the_event_log(event_log):
    j = build_journeys(
        EventSource(event_log),
        DuckDBEngine(),
        since_micros=T0,
        until_micros=T0 + 100 * HOUR,
        by="campaign",
        lookback_s=86400,
    )
    assert paths_of(j) == {
        "A > B > B": (1, 5 * S, 0),  # view A, view B, click B, then cv1 (once, deduplicated)
        "A": (0, 0, 2),  # u1's view after converting, u3's view
        "B": (1, 3 * S, 0),  # u2
    }
    assert j.stats["conversions"] == 4
    assert j.stats["unattributed_conversions"] == 2  # u4 (no touch) and u5 (touch too old)
    assert j.stats["open_journeys"] == 0


def test_views_only_by_publisher_leave_open_journeys_out(event_log):
    j = build_journeys(
        EventSource(event_log),
        DuckDBEngine(),
        since_micros=T0,
        until_micros=T0 + 10 * HOUR,
        by="publisher",
        touches=("view",),
        lookback_s=86400,
    )
    # with 10 h of log and a 1-day window, the non-converting journeys are still open: u1's
    # view after converting, u3's, and u5's (its conversion comes after the window)
    assert paths_of(j) == {"pub1 > pub2": (1, 5 * S, 0), "pub2": (1, 3 * S, 0)}
    assert j.stats["open_journeys"] == 3


def test_time_decay_uses_the_touches_real_ages(event_log):
    j = build_journeys(
        EventSource(event_log),
        DuckDBEngine(),
        since_micros=T0,
        until_micros=T0 + 100 * HOUR,
        by="campaign",
        touches=("view",),
        lookback_s=86400,
        half_life_s=3600,
    )
    # u1: view A at 0 and B at 10 s, converting at 1 h: weights 2^-1 and 2^-(3590/3600)
    a = 0.5
    b = 2 ** (-(3600 - 10) / 3600)
    credit = dict(zip(j.paths.channels, j.time_decay.conversions, strict=True))
    assert credit["A"] == pytest.approx(a / (a + b))
    assert credit["B"] == pytest.approx(b / (a + b) + 1)  # and all of u2's conversion
    report = attribute(j.paths, time_decay_credit=j.time_decay)
    assert report.table["time_decay_conversions"].to_pylist() == pytest.approx(
        j.time_decay.conversions.tolist()
    )


def test_an_unknown_dimension_is_refused(event_log):
    with pytest.raises(InsightsError, match="channel dimension"):
        build_journeys(
            EventSource(event_log), DuckDBEngine(), since_micros=0, until_micros=1, by="site"
        )


@pytest.mark.slow
def test_spark_builds_the_same_journeys_as_duckdb(event_log, spark):
    args = dict(since_micros=T0, until_micros=T0 + 100 * HOUR, by="publisher", lookback_s=86400)
    duck = build_journeys(EventSource(event_log), DuckDBEngine(), **args)
    sparked = build_journeys(EventSource(event_log), spark, **args)
    assert paths_of(sparked) == paths_of(duck)
    assert sparked.time_decay.conversions.tolist() == pytest.approx(
        duck.time_decay.conversions.tolist()
    )
    assert sparked.stats["unattributed_conversions"] == duck.stats["unattributed_conversions"]
