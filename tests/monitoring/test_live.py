"""Live calibration on a running exchange: a calibrated shaping model raises nothing, a
deliberately miscalibrated one swapped in raises its alert (log, metric, webhook); slices in
/metrics stay bounded; an old model and a refused swap raise theirs."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

from openbid.monitoring.alerts import Alerter
from openbid.monitoring.live import LiveCalibration
from openbid.monitoring.watch import Watch
from openbid.obs import metrics_payload
from tests.experiments.conftest import START_MICROS, publish, shaping_model, start_server
from tests.monitoring.test_alerts import Hook


def test_a_miscalibrated_model_raises_its_alert_and_a_calibrated_one_does_not(
    tmp_path, models_settings, store, caplog
):
    # the test DSPs bid on every call: p = 0.98 is calibrated, p = 0.57 expects 43% too few
    good = shaping_model(tmp_path / "made" / "good", {"alpha": 4.0, "beta": 4.0})
    bad = shaping_model(tmp_path / "made" / "bad", {"alpha": 0.3, "beta": 0.3})
    publish(store, "shaping", "1", good, alias="production")
    hook = Hook()
    env = {
        "OPENBID_MONITORING__WEBHOOK_URL": hook.url,
        "OPENBID_MONITORING__CHECK_INTERVAL_S": "3600",  # checks run by hand here
        "OPENBID_MONITORING__MAX_MODEL_AGE_S": "1e12",  # the hand-made models are old
    }

    async def main():
        server = await start_server(tmp_path, models_settings, env)
        watch = server.platform.watch
        sync = server.platform.model_sync
        try:
            for i in range(60):
                await server.routed(f"u{i}")
            watch.check()
            assert not watch.alerter.firing
            assert watch.verdicts[("none", "all", "all")].state == "ok"
            publish(store, "shaping", "2", bad, alias="production")
            await server.until(lambda: sync.serving("shaping") == "2")
            for i in range(60):
                await server.routed(f"u{i}")
            watch.check()
            return dict(watch.alerter.firing), await server.metrics()
        finally:
            await server.stop()

    with caplog.at_level(logging.ERROR, logger="openbid.monitoring.alerts"):
        firing, metrics = asyncio.run(main())
    try:
        keys = set(firing)
        assert ("calibration", "shaping", "none", "all") in keys
        assert ("calibration", "shaping", "none", "dsp=alpha") in keys
        alert = firing[("calibration", "shaping", "none", "all")]
        assert 0.5 < alert.value < 0.65  # expected / actual of p = 0.574 on every-call bidders
        assert any(r.getMessage() == "alert" and r.alert == "calibration" for r in caplog.records)
        assert 'openbid_alerts_total{alert="calibration"}' in metrics
        assert (
            'openbid_calibration_expected_total{arm="none",dimension="dsp",purpose="shaping",value="alpha"}'
            in metrics
        )
        posted = hook.until(1)
        assert posted[0]["alert"] == "calibration" and posted[0]["labels"]["arm"] == "none"
    finally:
        hook.close()


class _Call:
    def __init__(self, dsp: str, score: float, bid: bool) -> None:
        self.pending = object()
        self.decision = SimpleNamespace(score=score)
        self.outcome = "bid" if bid else "no_bid"
        self.state = SimpleNamespace(partner=SimpleNamespace(id=dsp))


def _state(country: str, calls: list[_Call]):
    return SimpleNamespace(calls=calls, features={"country": country, "device_type": "phone",
                                                  "hour": "3"}, publisher=None)  # fmt: skip


def test_slices_in_metrics_stay_bounded_whatever_values_the_traffic_sends():
    live = LiveCalibration(max_slice_values=5)
    for i in range(500):
        live.observe(
            _state(f"C{i}", [_Call(f"dsp{i % 50}", 0.5, i % 2 == 0)]), "shaping=bounded", "m1"
        )
    book = live.books["shaping=bounded"]
    assert len(book.dims["country"].values) == 6 and book.dims["country"].values[0] == "other"
    assert len(book.dims["dsp"].values) == 6
    text = metrics_payload().decode()
    countries = [line for line in text.splitlines()
                 if line.startswith("openbid_calibration_expected_total") and 'arm="bounded",dimension="country"' in line]  # fmt: skip
    assert len(countries) == 6
    assert book.expected == 250.0 and book.actual == 250


def test_a_new_model_is_judged_on_its_own_predictions_and_its_predecessors_alerts_resolve():
    live = LiveCalibration()
    alerter = Alerter()
    watch = Watch(live, alerter)
    for _ in range(100):
        live.observe(_state("USA", [_Call("a", 0.9, False), _Call("b", 0.1, False)]), "", "old")
    watch.check(now_s=1000.0)
    assert ("calibration", "shaping", "none", "all") in alerter.firing
    for i in range(100):
        calls = [_Call("a", 0.5, i % 2 == 0), _Call("b", 0.5, i % 2 == 1)]
        live.observe(_state("USA", calls), "", "new")
    watch.check(now_s=1010.0)
    assert not alerter.firing
    assert alerter.raised[-1].state == "resolved"


def test_an_old_model_and_a_refused_swap_raise_their_alerts(tmp_path, models_settings, store):
    old = shaping_model(tmp_path / "made" / "old", {"alpha": 4.0, "beta": 4.0},
                        end_micros=START_MICROS)  # fmt: skip
    publish(store, "shaping", "1", old, alias="production")
    env = {"OPENBID_MONITORING__CHECK_INTERVAL_S": "3600",
           "OPENBID_MONITORING__MAX_MODEL_AGE_S": "86400"}  # fmt: skip

    async def main():
        server = await start_server(tmp_path, models_settings, env)
        watch = server.platform.watch
        sync = server.platform.model_sync
        try:
            watch.check(now_s=START_MICROS / 1e6 + 3600)
            young = dict(watch.alerter.firing)
            watch.check(now_s=START_MICROS / 1e6 + 2 * 86400)
            stale = dict(watch.alerter.firing)
            broken = tmp_path / "made" / "broken"
            broken.mkdir()
            (broken / "shaping.json").write_text("{}")
            publish(store, "shaping", "2", broken, alias="production")
            await server.until(lambda: sync.followed["shaping"].swaps_refused == 1)
            watch.check(now_s=START_MICROS / 1e6 + 2 * 86400)
            return young, stale, list(watch.alerter.raised)
        finally:
            await server.stop()

    young, stale, raised = asyncio.run(main())
    assert not young
    assert ("model_stale", "shaping", "production", "") in stale
    assert raised[-1].alert == "swap_failed" and raised[-1].severity == "critical"
