"""The event log's Prometheus metrics, shared by the writer, the roller and the reader."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from openbid.obs import REGISTRY

EVENTS_EMITTED = Counter(
    "openbid_events_emitted", "Events handed to the event log", ["kind"], registry=REGISTRY
)
EVENTS_DROPPED = Counter(
    "openbid_events_dropped",
    "Events dropped: the log buffer was full, or an event could not be encoded",
    registry=REGISTRY,
)
EVENTS_BAD_RECORDS = Counter(
    "openbid_events_bad_records",
    "Damaged log records skipped while reading or rolling",
    registry=REGISTRY,
)
EVENTS_BAD_EVENTS = Counter(
    "openbid_events_bad_events",
    "Events skipped while reading or rolling because a value does not have its field's type"
    " (the other events of their record are kept)",
    registry=REGISTRY,
)
EVENTS_IO_ERRORS = Counter(
    "openbid_events_io_errors",
    "Failed writes, fsyncs and file opens of the event log (each is retried)",
    ["op"],
    registry=REGISTRY,
)
EVENTS_LOGS_WAITING = Gauge(
    "openbid_events_logs_waiting",
    "Closed log files waiting to be rolled into segments (queued or retrying after a failure)",
    registry=REGISTRY,
)
EVENTS_QUEUED = Gauge(
    "openbid_events_queued", "Events waiting for the next flush", registry=REGISTRY
)
