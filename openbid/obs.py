"""Observability base shared by every server: JSON-lines logging and the Prometheus registry.

Servers expose `metrics_payload()` at `/metrics`; library code logs through
`logging.getLogger(__name__)` with `extra={...}` fields, which `JsonFormatter` turns into
one JSON object per line.
"""

from __future__ import annotations

import bisect
import logging
import sys
import time
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)
"""The process-wide registry: every openbid metric registers here, not in the global default."""

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)
_encoder = msgspec.json.Encoder(enc_hook=repr)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, msg, then the `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


def setup_logging(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """Configures the root logger once for a process: JSON lines (default) or plain text."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic narrates every plugin it loads at info; only its warnings matter to an operator.
    if logging.getLevelName(level.upper()) == logging.INFO:
        logging.getLogger("alembic").setLevel(logging.WARNING)


def metrics_payload(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The Prometheus text exposition of `registry`, for a `/metrics` endpoint."""
    return generate_latest(registry)


class _Child:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class LoopMetric:
    """A counter, gauge or histogram for code on one event loop: `labels(...).inc()` costs a
    dict lookup and an addition (prometheus_client's take a lock and several calls, which
    adds up at tens of thousands of updates a second). Not for use from other threads."""

    def __init__(
        self,
        kind: str,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...] = (),
        buckets: tuple[float, ...] = (),
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.buckets = buckets
        self._children: dict[tuple[str, ...], _Child | _HistogramChild] = {}
        registry.register(self)  # type: ignore[arg-type]

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = _HistogramChild(self.buckets) if self.kind == "histogram" else _Child()
            self._children[values] = child
        return child

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        if self.kind == "counter":
            family: Any = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
            for values, child in self._children.items():
                family.add_metric(list(values), child.value)  # type: ignore[union-attr]
        elif self.kind == "gauge":
            family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
            for values, child in self._children.items():
                family.add_metric(list(values), child.value)  # type: ignore[union-attr]
        else:
            family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
            for values, child in self._children.items():
                assert isinstance(child, _HistogramChild)
                cumulative, buckets = 0, []
                for bound, count in zip(self.buckets, child.counts, strict=False):
                    cumulative += count
                    buckets.append((repr(float(bound)), cumulative))
                buckets.append(("+Inf", cumulative + child.counts[-1]))
                family.add_metric(list(values), buckets, child.sum)
        return [family]


def loop_counter(name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> LoopMetric:
    """A counter (exposed as `<name>_total`)."""
    return LoopMetric("counter", name, documentation, labelnames)


def loop_gauge(name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> LoopMetric:
    return LoopMetric("gauge", name, documentation, labelnames)


def loop_histogram(
    name: str, documentation: str, labelnames: tuple[str, ...] = (), *, buckets: tuple[float, ...]
) -> LoopMetric:
    return LoopMetric("histogram", name, documentation, labelnames, buckets)
