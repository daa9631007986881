"""Alerts: one log line, one metric and (with `monitoring.webhook_url`) one JSON POST each.

Two kinds:

| kind | when | e.g. |
| --- | --- | --- |
| a condition (`fire`, `resolve`) | fires once when it starts holding, resolves once when it stops | calibration off, model too old |
| an event (`event`) | each time it happens | a swap refused, training halted on a label shift |

Metrics: `openbid_alerts_total{alert}` (alerts raised), `openbid_alert_firing{alert,purpose,
arm,slice}` (1 while a condition holds; the labels come from bounded sets), and
`openbid_alert_webhook_total{result}` (`ok`, `failed` after its retries, `dropped` when
the queue was full).

The webhook is posted from a thread of its own, never the event loop, with retries
(`monitoring.webhook_retries`, backoff from 0.5 s doubling); the body is the alert as JSON
plus a `text` line (what Slack's and most chat tools' incoming webhooks show).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

import msgspec
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from openbid import clock
from openbid.config import MonitoringConfig
from openbid.obs import REGISTRY

log = logging.getLogger(__name__)

ALERTS = ("calibration", "model_stale", "label_shift", "swap_failed")
LABELS = ("purpose", "arm", "slice")
QUEUE_MAX = 1000
BACKOFF_S = 0.5

_RAISED = Counter("openbid_alerts", "Alerts raised", ["alert"], registry=REGISTRY)
_WEBHOOK = Counter(
    "openbid_alert_webhook", "Alert webhook posts: ok, failed, dropped", ["result"],
    registry=REGISTRY,
)  # fmt: skip


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """What is logged and posted."""

    alert: str
    state: Literal["firing", "resolved", "event"]
    summary: str
    labels: dict[str, str] = {}
    value: float = 0.0
    severity: Literal["warning", "critical"] = "warning"
    at: str = ""
    """ISO-8601 UTC on openbid's clock (market time in the demo)."""
    at_micros: int = 0
    text: str = ""
    """One line for chat tools."""


def _key(alert: str, labels: Mapping[str, str]) -> tuple[str, ...]:
    return (alert, *(labels.get(name, "") for name in LABELS))


class Alerter:
    """Raises alerts for one process (module doc); `close` stops the webhook thread."""

    def __init__(self, settings: MonitoringConfig | None = None, *, source: str = "") -> None:
        self.settings = settings or MonitoringConfig()
        self.source = source
        self.firing: dict[tuple[str, ...], Alert] = {}
        self.raised: list[Alert] = []
        """The last alerts raised (at most 100), newest last: for the demo panel and tests."""
        self._queue: queue.Queue[Alert | None] = queue.Queue(QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        _ALERTERS.add(self)

    # --- raising
    def fire(self, alert: str, labels: Mapping[str, str], summary: str, value: float = 0.0,
             severity: Literal["warning", "critical"] = "warning") -> bool:  # fmt: skip
        """Raise condition `alert` for `labels` unless it is already firing; True if raised."""
        key = _key(alert, labels)
        with self._lock:
            if key in self.firing:
                return False
            raised = self._make(alert, "firing", labels, summary, value, severity)
            self.firing[key] = raised
        self._emit(raised)
        return True

    def resolve(self, alert: str, labels: Mapping[str, str], summary: str = "") -> bool:
        """End condition `alert` for `labels` if it is firing; True if it was."""
        key = _key(alert, labels)
        with self._lock:
            firing = self.firing.pop(key, None)
        if firing is None:
            return False
        self._emit(self._make(alert, "resolved", labels, summary or f"resolved: {firing.summary}",
                              firing.value, firing.severity))  # fmt: skip
        return True

    def event(self, alert: str, labels: Mapping[str, str], summary: str, value: float = 0.0,
              severity: Literal["warning", "critical"] = "warning") -> Alert:  # fmt: skip
        """Raise a one-off alert (each occurrence)."""
        raised = self._make(alert, "event", labels, summary, value, severity)
        self._emit(raised)
        return raised

    def _make(self, alert, state, labels, summary, value, severity) -> Alert:  # type: ignore[no-untyped-def]
        micros = clock.now_micros()
        at = datetime.fromtimestamp(micros / 1e6, UTC).isoformat(timespec="seconds")
        where = ", ".join(f"{k}={v}" for k, v in labels.items() if v)
        prefix = {"firing": "ALERT", "resolved": "RESOLVED", "event": "ALERT"}[state]
        return Alert(
            alert=alert, state=state, summary=summary, labels=dict(labels), value=float(value),
            severity=severity, at=at, at_micros=micros,
            text=f"[openbid {prefix}] {alert}{f' ({where})' if where else ''}: {summary}",
        )  # fmt: skip

    def _emit(self, alert: Alert) -> None:
        if alert.state != "resolved":
            _RAISED.labels(alert.alert).inc()
        self.raised.append(alert)
        del self.raised[:-100]
        fields = {"alert": alert.alert, "state": alert.state, "value": alert.value,
                  "summary": alert.summary, **alert.labels}  # fmt: skip
        if alert.state == "resolved":
            log.info("alert resolved", extra=fields)
        else:
            log.error("alert", extra=fields)
        if self.settings.webhook_url:
            self._post_soon(alert)

    # --- the webhook, off the caller's thread
    def _post_soon(self, alert: Alert) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            _WEBHOOK.labels("dropped").inc()

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            self._post(alert)

    def _post(self, alert: Alert) -> bool:
        settings = self.settings
        body = msgspec.json.encode({**msgspec.to_builtins(alert), "source": self.source})
        delay_s = BACKOFF_S
        for attempt in range(settings.webhook_retries + 1):
            request = urllib.request.Request(
                settings.webhook_url, data=body, method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "openbid-alerts"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=settings.webhook_timeout_s) as reply:
                    reply.read()
                _WEBHOOK.labels("ok").inc()
                return True
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if attempt == settings.webhook_retries:
                    _WEBHOOK.labels("failed").inc()
                    log.warning(
                        "alert webhook failed after its retries",
                        extra={"alert": alert.alert, "attempts": attempt + 1, "error": str(exc)},
                    )
                    return False
            time.sleep(delay_s)
            delay_s *= 2
        return False

    def close(self, timeout_s: float = 5.0) -> None:
        """Posts what is queued (for up to `timeout_s`), then stops the thread."""
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        thread.join(timeout_s)
        self._thread = None


_ALERTERS: weakref.WeakSet[Alerter] = weakref.WeakSet()


class _FiringCollector:
    def collect(self):
        firing = GaugeMetricFamily(
            "openbid_alert_firing",
            "1 while an alert's condition holds (calibration, model_stale)",
            labels=["alert", *LABELS],
        )
        for alerter in list(_ALERTERS):
            for key in list(alerter.firing):
                firing.add_metric(list(key), 1.0)
        yield firing


REGISTRY.register(_FiringCollector())
