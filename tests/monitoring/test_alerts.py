"""Alerts: raised once per condition and resolved once, counted in /metrics, and posted to
a real HTTP server off the caller's thread with retries; the label-shift hook that halts
training raises its alert."""

from __future__ import annotations

import http.server
import json
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from openbid.config import MonitoringConfig, load_config
from openbid.monitoring.alerts import Alerter
from openbid.monitoring.labels import label_shift_gate
from openbid.monitoring.rules import calibration_verdict, label_shift
from openbid.obs import metrics_payload


class Hook:
    """A webhook receiver on loopback that fails its first `failures` posts with 500."""

    def __init__(self, failures: int = 0) -> None:
        self.bodies: list[dict] = []
        self.attempts = 0
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                hook.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.attempts <= failures:
                    self.send_response(500)
                    self.end_headers()
                    return
                hook.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def until(self, count: int, timeout_s: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while len(self.bodies) < count:
            assert time.monotonic() < deadline, f"{len(self.bodies)} posts, wanted {count}"
            time.sleep(0.02)
        return self.bodies

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    receiver = Hook(failures=2)
    yield receiver
    receiver.close()


def test_a_condition_fires_once_resolves_once_and_is_posted_with_retries(hook):
    alerter = Alerter(MonitoringConfig(webhook_url=hook.url, webhook_retries=3), source="test")
    labels = {"purpose": "shaping", "arm": "challenger", "slice": "dsp=alpha"}
    started = time.monotonic()
    assert alerter.fire("calibration", labels, "expects 3x the bids", 3.0)
    assert time.monotonic() - started < 0.2  # the post happens on the webhook's thread
    assert not alerter.fire("calibration", labels, "still off", 3.1)
    assert (
        'openbid_alert_firing{alert="calibration",arm="challenger",purpose="shaping",slice="dsp=alpha"} 1.0'
        in metrics_payload().decode()
    )
    assert alerter.resolve("calibration", labels)
    assert not alerter.resolve("calibration", labels)
    bodies = hook.until(2)
    alerter.close()
    assert hook.attempts == 4  # two refused (500), retried, then both delivered
    assert [b["state"] for b in bodies] == ["firing", "resolved"]
    assert bodies[0]["alert"] == "calibration" and bodies[0]["labels"] == labels
    assert bodies[0]["value"] == 3.0 and bodies[0]["source"] == "test"
    assert bodies[0]["text"].startswith("[openbid ALERT] calibration")
    assert 'alert="calibration",arm="challenger"' not in metrics_payload().decode()


def test_a_webhook_that_never_answers_is_given_up_after_its_retries_and_counted():
    alerter = Alerter(MonitoringConfig(webhook_url="http://127.0.0.1:9/nothing", webhook_retries=1,
                                       webhook_timeout_s=0.5))  # fmt: skip
    before = _sample('openbid_alert_webhook_total{result="failed"}')
    alerter.event("swap_failed", {"purpose": "ctr"}, "refused")
    alerter.close(timeout_s=10.0)
    assert _sample('openbid_alert_webhook_total{result="failed"}') == before + 1


def _sample(line_start: str) -> float:
    for line in metrics_payload().decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(
    ("expected", "actual", "state"),
    [(300.0, 100.0, "off"), (60.0, 100.0, "off"), (105.0, 100.0, "ok"), (10.0, 3.0, "unknown"),
     (130.0, 100.0, "ok")],  # 1.3 is outside the band but z = -2.6: not enough to say
)  # fmt: skip
def test_calibration_verdicts(expected, actual, state):
    verdict = calibration_verdict(
        expected=expected, actual=actual, band=0.2, z=4.0, min_expected=20.0
    )
    assert verdict.state == state


def test_a_gradual_drift_of_the_label_rate_does_not_halt_training_and_an_abrupt_drop_does():
    rng = np.random.default_rng(3)
    ts = np.arange(50_000)
    rate = np.linspace(0.02, 0.026, ts.size)  # +30% over the window, smoothly
    y = (rng.random(ts.size) < rate).astype(float)
    assert not label_shift(y, ts).halt
    y[45_000:] = (rng.random(5_000) < 0.004).astype(float)  # a tracker stopped firing
    verdict = label_shift(y, ts, recent_share=0.1)
    assert verdict.halt and verdict.change < -0.5 and "label rate" in verdict.reason


def _click_rows(rates: tuple[float, float], seed: int = 5) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = 40_000
    ts = 1_760_000_000_000_000 + np.sort(rng.integers(0, 6 * 3600 * 10**6, n))
    recent = ts > ts.min() + 0.8 * (ts.max() - ts.min())
    y = rng.random(n) < np.where(recent, rates[1], rates[0])
    return pa.table({"ts_micros": ts, "label": y.astype(np.int32)})


def test_the_training_hook_halts_on_a_label_shift_raising_its_alert_and_passes_a_steady_set(hook):
    config = load_config(environ={"OPENBID_MONITORING__WEBHOOK_URL": hook.url})
    steady = label_shift_gate("ctr", {"rows": _click_rows((0.02, 0.02))}, config)
    assert not steady.halt
    shifted = label_shift_gate("ctr", {"rows": _click_rows((0.02, 0.002))}, config)
    assert shifted.halt
    body = hook.until(1)[0]
    assert body["alert"] == "label_shift" and body["labels"] == {"purpose": "ctr"}
    assert body["summary"].startswith("training halted: label rate")
    assert len(hook.bodies) == 1  # the steady set raised nothing


def test_the_training_hook_reads_a_shaping_set_by_its_sent_calls_and_their_weights():
    rng = np.random.default_rng(9)
    n = 40_000
    ts = np.sort(rng.integers(0, 10**10, n))
    sent = rng.random(n) < 0.7
    label = (rng.random(n) < 0.3) & sent
    rows = pa.table({"ts_micros": ts, "label": label.astype(np.int32), "sent": sent,
                     "send_probability": np.ones(n)})  # fmt: skip
    verdict = label_shift_gate("shaping", {"rows": rows}, load_config(environ={}))
    assert not verdict.halt
    assert abs(verdict.earlier_rate - 0.3) < 0.01  # of the calls sent, not of every row
