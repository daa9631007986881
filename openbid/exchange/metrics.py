"""The exchange's metrics, registered in `openbid.obs.REGISTRY`, and the per-partner cache
of their labelled children that the auction updates.

They are updated on the event loop many times per auction, so they are `LoopMetric`s
(plain additions, exported at scrape time) rather than prometheus_client's locked ones.
A partner's circuit state (`openbid_dsp_circuit_state`) belongs to its breaker and lives
in `openbid.demand.registry`.
"""

from __future__ import annotations

from typing import Any

from openbid.obs import LoopMetric, loop_counter, loop_gauge, loop_histogram

# An auction takes under a millisecond of our time: sub-millisecond buckets keep p50 readable.
_LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05,
    0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0,
)  # fmt: skip

REQUESTS = loop_counter(
    "openbid_requests", "Requests to the exchange by endpoint and outcome", ("endpoint", "outcome")
)
AUCTION_LATENCY = loop_histogram(
    "openbid_auction_latency_seconds",
    "Time from request received to response ready",
    buckets=_LATENCY_BUCKETS,
)
DSP_CALLS = loop_counter(
    "openbid_dsp_calls",
    "Calls to demand partners by outcome (bid, no_bid, timeout, error kinds, filtered)",
    ("dsp", "outcome"),
)
DSP_LATENCY = loop_histogram(
    "openbid_dsp_latency_seconds",
    "Demand partner response time",
    ("dsp",),
    buckets=_LATENCY_BUCKETS,
)
DSP_WINS = loop_counter("openbid_dsp_wins", "Auctions won by partner", ("dsp",))
WON_REVENUE_MICROS = loop_counter(
    "openbid_won_revenue_micros",
    "Publisher revenue of won auctions (clearing CPM / 1000 each), micros of USD",
)
BILLED_REVENUE_MICROS = loop_counter(
    "openbid_billed_revenue_micros",
    "Publisher revenue of counted impressions (clearing CPM / 1000 each), micros of USD",
)
IMPRESSIONS = loop_counter(
    "openbid_impressions",
    "Impression trackers received, by outcome (counted, duplicate, invalid)",
    ("outcome",),
)
CLICKS = loop_counter("openbid_clicks", "Click trackers received, by outcome", ("outcome",))
RENDER_FAILURES = loop_counter(
    "openbid_render_failures",
    "Winning creatives that could not be rendered, by format",
    ("format",),
)
CATALOG_REFRESHED = loop_gauge(
    "openbid_catalog_refreshed_timestamp_seconds",
    "When publishers, placements and demand partners were last loaded from the catalog",
)
DEDUP_FALLBACKS = loop_counter(
    "openbid_dedup_fallbacks",
    "Impressions and win notices deduplicated in this worker only (counter store unavailable)",
)
WINS_NOTIFIED = loop_counter(
    "openbid_win_notices_received",
    "Win notices from our OpenRTB callers (/t/win) by outcome",
    ("outcome",),
)
REQUEST_REPAIRS = loop_counter(
    "openbid_request_repairs",
    "Faults repaired in bid requests, by rule (docs/openrtb.md, Repairs) and endpoint",
    ("kind", "endpoint"),
)
DSP_RESPONSE_FAULTS = loop_counter(
    "openbid_dsp_response_faults",
    "Faults repaired in demand partners' bid responses (a bid dropped, a missing id taken "
    "from the request, a currency upper-cased), by partner and rule",
    ("dsp", "kind"),
)
CONVERSIONS = loop_counter(
    "openbid_conversions",
    "Conversions reported to /conv, by source (pixel, postback) and outcome (click, view: "
    "attributed; unattributed; duplicate; invalid)",
    ("source", "outcome"),
)


class LabelCache(dict):
    """Children of a (dsp, outcome) counter for one dsp, created on first use."""

    def __init__(self, counter: LoopMetric, dsp: str) -> None:
        super().__init__()
        self._counter = counter
        self._dsp = dsp

    def __missing__(self, outcome: str) -> Any:
        child = self._counter.labels(self._dsp, outcome)
        self[outcome] = child
        return child


class DspMetrics:
    """A partner's metric children, resolved once (label lookups cost more than the
    increments themselves on the hot path)."""

    __slots__ = ("calls", "latency", "wins")

    def __init__(self, dsp: str) -> None:
        self.calls = LabelCache(DSP_CALLS, dsp)
        self.latency = DSP_LATENCY.labels(dsp)
        self.wins = DSP_WINS.labels(dsp)


_DSP_METRICS: dict[str, DspMetrics] = {}


def dsp_metrics(dsp: str) -> DspMetrics:
    """The metric children of partner `dsp` (made on its first use, then kept)."""
    found = _DSP_METRICS.get(dsp)
    if found is None:
        found = _DSP_METRICS[dsp] = DspMetrics(dsp)
    return found
