"""Exchange health from two scrapes of the exchange's `/metrics` (fixtures in the text
format the exchange writes): rates over the window, latency quantiles from the histogram's
buckets, per DSP bid rate, timeouts, errors and breaker state, creative failure rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from openbid.console.web.scrape import Scrape, health, parse

FIXTURES = Path(__file__).parent / "fixtures"


def scrape(name: str, at_s: float) -> Scrape:
    return Scrape(at_s, parse((FIXTURES / name).read_text()))


def test_rates_and_quantiles_between_two_scrapes():
    report = health("u", scrape("metrics-after.txt", 110.0), scrape("metrics-before.txt", 100.0))
    assert report.window_s == 10.0
    assert report.qps == {"auction": pytest.approx(60.0), "imp": 0.0}
    assert report.outcomes == {"won": 200.0, "no_bid": 400.0}
    assert report.auction_p50_ms == pytest.approx(0.75)
    assert report.auction_p99_ms == pytest.approx(46.0)
    assert report.creative_failure_rate == pytest.approx(0.01)
    atlas, brightline = report.dsps
    assert atlas["dsp"] == "atlas" and atlas["breaker"] == "closed"
    assert atlas["sent"] == 500 and atlas["calls_per_s"] == pytest.approx(50.0)
    assert atlas["bid_rate"] == pytest.approx(0.12)
    assert (atlas["timeouts"], atlas["errors"], atlas["not_sent"]) == (30.0, 10.0, 0.0)
    assert brightline == brightline | {"dsp": "brightline", "breaker": "open", "sent": 0}


def test_one_scrape_gives_totals_since_the_start():
    report = health("u", scrape("metrics-before.txt", 100.0), None)
    assert report.window_s == 0.0 and report.qps["auction"] == 400.0
    assert report.dsps[0]["calls_per_s"] is None
    assert report.dsps[0]["not_sent"] == 100.0  # filtered calls were never sent
    assert report.dsps[0]["bid_rate"] == pytest.approx(40 / 400)
