"""The exchange's health from its Prometheus `/metrics`, as pure functions over scrapes: the
rate of each counter between two scrapes, latency quantiles from histogram buckets, and per
DSP the call rate, bid rate, timeouts, errors and breaker state. `Watch` keeps the console
process's recent scrapes (a few minutes), so rates need no Prometheus server."""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]
NOT_SENT = ("filtered", "circuit_open", "consent_blocked", "no_time", "qps_capped")
ANSWERED = ("bid", "no_bid", "timeout")
BREAKER = {0: "closed", 1: "half-open", 2: "open"}


def parse(text: str) -> Samples:
    """Samples by name, then by sorted labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def total(samples: Samples, name: str, **match: str) -> float:
    """The sum of `name`'s samples whose labels include `match`."""
    return sum(
        value
        for labels, value in samples.get(name, {}).items()
        if all(dict(labels).get(k) == v for k, v in match.items())
    )


def by_label(samples: Samples, name: str, label: str, **match: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for labels, value in samples.get(name, {}).items():
        as_dict = dict(labels)
        if label in as_dict and all(as_dict.get(k) == v for k, v in match.items()):
            found[as_dict[label]] = found.get(as_dict[label], 0.0) + value
    return found


def quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """The q-quantile of a histogram's cumulative buckets (upper bound: count), linearly
    interpolated inside the bucket, as Prometheus's histogram_quantile does.

    >>> quantile({0.001: 50, 0.002: 90, 0.005: 100, math.inf: 100}, 0.5)
    0.001
    >>> round(quantile({0.001: 50, 0.002: 90, 0.005: 100, math.inf: 100}, 0.99), 5)
    0.0047
    >>> quantile({math.inf: 0}, 0.5) is None
    True
    """
    bounds = sorted(buckets)
    count = buckets[bounds[-1]] if bounds else 0.0
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for bound in bounds:
        cumulative = buckets[bound]
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            share = (rank - below) / inside if inside > 0 else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, cumulative
    return lower


def buckets_of(samples: Samples, name: str, **match: str) -> dict[float, float]:
    found: dict[float, float] = {}
    for labels, value in samples.get(f"{name}_bucket", {}).items():
        as_dict = dict(labels)
        if all(as_dict.get(k) == v for k, v in match.items()):
            bound = float(as_dict["le"])
            found[bound] = found.get(bound, 0.0) + value
    return found


def delta(newer: Mapping[float, float], older: Mapping[float, float]) -> dict[float, float]:
    return {bound: value - older.get(bound, 0.0) for bound, value in newer.items()}


@dataclass
class Scrape:
    at_s: float
    samples: Samples


@dataclass
class ExchangeHealth:
    """What the exchange health page shows; rates over `window_s` seconds (0: since the
    exchange started, from a single scrape)."""

    url: str
    reachable: bool
    problem: str = ""
    window_s: float = 0.0
    qps: dict[str, float] = field(default_factory=dict)
    outcomes: dict[str, float] = field(default_factory=dict)
    auction_p50_ms: float | None = None
    auction_p99_ms: float | None = None
    dsps: list[dict] = field(default_factory=list)
    render_failures: float = 0.0
    wins: float = 0.0
    creative_failure_rate: float | None = None
    impressions: float = 0.0
    history: list[tuple[float, float]] = field(default_factory=list)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def health(
    url: str, newer: Scrape, older: Scrape | None, history: Iterable[Scrape] = ()
) -> ExchangeHealth:
    """The figures between two scrapes (or since the start, with one)."""
    now, then = newer.samples, (older.samples if older else {})
    window = newer.at_s - older.at_s if older else 0.0

    def change(name: str, **match: str) -> float:
        return total(now, name, **match) - total(then, name, **match)

    def per_label(name: str, label: str, **match: str) -> dict[str, float]:
        current = by_label(now, name, label, **match)
        before = by_label(then, name, label, **match)
        return {key: value - before.get(key, 0.0) for key, value in current.items()}

    report = ExchangeHealth(url, True, window_s=window)
    endpoints = per_label("openbid_requests_total", "endpoint")
    report.qps = {k: (v / window if window > 0 else v) for k, v in sorted(endpoints.items())}
    report.outcomes = per_label("openbid_requests_total", "outcome", endpoint="auction")
    latency = delta(buckets_of(now, "openbid_auction_latency_seconds"),
                    buckets_of(then, "openbid_auction_latency_seconds"))  # fmt: skip
    report.auction_p50_ms = _ms(quantile(latency, 0.5))
    report.auction_p99_ms = _ms(quantile(latency, 0.99))
    states = by_label(now, "openbid_dsp_circuit_state", "dsp")
    calls = per_label("openbid_dsp_calls_total", "dsp")
    wins = per_label("openbid_dsp_wins_total", "dsp")
    for dsp in sorted(set(calls) | set(states)):
        outcomes = per_label("openbid_dsp_calls_total", "outcome", dsp=dsp)
        sent = sum(v for k, v in outcomes.items() if k not in NOT_SENT)
        bids = outcomes.get("bid", 0.0)
        timeouts = outcomes.get("timeout", 0.0)
        errors = sum(v for k, v in outcomes.items() if k not in NOT_SENT and k not in ANSWERED)
        dsp_latency = delta(buckets_of(now, "openbid_dsp_latency_seconds", dsp=dsp),
                            buckets_of(then, "openbid_dsp_latency_seconds", dsp=dsp))  # fmt: skip
        report.dsps.append(
            {
                "dsp": dsp,
                "calls_per_s": sent / window if window > 0 else None,
                "sent": sent,
                "bid_rate": bids / sent if sent else None,
                "timeouts": timeouts,
                "errors": errors,
                "not_sent": sum(outcomes.get(k, 0.0) for k in NOT_SENT),
                "wins": wins.get(dsp, 0.0),
                "p50_ms": _ms(quantile(dsp_latency, 0.5)),
                "p99_ms": _ms(quantile(dsp_latency, 0.99)),
                "breaker": BREAKER.get(int(states.get(dsp, 0)), "closed"),
            }
        )
    report.render_failures = change("openbid_render_failures_total")
    report.wins = report.outcomes.get("won", 0.0)
    report.impressions = change("openbid_impressions_total", outcome="counted")
    if report.wins:
        report.creative_failure_rate = report.render_failures / report.wins
    points = list(history)
    report.history = [
        (b.at_s, (total(b.samples, "openbid_requests_total", endpoint="auction")
                  - total(a.samples, "openbid_requests_total", endpoint="auction"))
         / max(b.at_s - a.at_s, 1e-9))
        for a, b in zip(points, points[1:], strict=False)
    ]  # fmt: skip
    return report


class Watch:
    """The console's recent scrapes of one exchange (at most `keep`, one per `min_gap_s`)."""

    def __init__(self, url: str, keep: int = 120, min_gap_s: float = 2.0) -> None:
        self.url = url
        self.min_gap_s = min_gap_s
        self.scrapes: deque[Scrape] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def fetch(self, timeout_s: float = 5.0) -> Scrape:
        with urllib.request.urlopen(self.url, timeout=timeout_s) as response:  # noqa: S310 - our own exchange
            text = response.read(8 * 1024 * 1024).decode("utf-8", errors="replace")
        # Rates are per real second, whatever the market clock's speed: a monotonic clock.
        return Scrape(time.monotonic(), parse(text))

    def health(self, window_s: float = 60.0) -> ExchangeHealth:
        """Scrapes now (unless the last scrape is fresher than `min_gap_s`) and compares with
        the oldest scrape of the last `window_s`."""
        try:
            scrape = self.fetch()
        except (OSError, ValueError) as exc:
            return ExchangeHealth(self.url, False, problem=str(getattr(exc, "reason", exc)))
        with self._lock:
            if not self.scrapes or scrape.at_s - self.scrapes[-1].at_s >= self.min_gap_s:
                self.scrapes.append(scrape)
            # The oldest scrape of the window that is at least `min_gap_s` older: rates over
            # a few milliseconds would be noise.
            older = next(
                (s for s in self.scrapes if window_s >= scrape.at_s - s.at_s >= self.min_gap_s),
                None,
            )
            history = list(self.scrapes)
        return health(self.url, scrape, older, history)
