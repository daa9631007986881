"""The periodic checks of a serving process: every `monitoring.check_interval_s` of market
time it judges the live calibration of each arm's model (overall and by slice, over the last
`window_s`, or since the model started serving when that is shorter), the age of every
model it serves, and whether a swap was refused since the last check; each finding is an
alert (`openbid.monitoring.alerts`: log line, metric, webhook).

| alert | raised when | resolved when |
| --- | --- | --- |
| `calibration` | expected / actual leaves 1 +/- `calibration_band`, by more than `z` standard deviations (`rules.calibration_verdict`) | it is back in the band, or the model is replaced |
| `model_stale` | a serving model's training window ended more than `max_model_age_s` ago | a younger model serves |
| `swap_failed` | the model sync refused a new model (an event) | |
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Any

from openbid import clock
from openbid.config import MonitoringConfig
from openbid.monitoring.alerts import Alerter
from openbid.monitoring.live import LiveCalibration
from openbid.monitoring.rules import calibration_verdict, model_too_old

log = logging.getLogger(__name__)


class _Snapshot:
    __slots__ = ("at_s", "totals")

    def __init__(self, at_s: float, totals: dict) -> None:
        self.at_s = at_s
        self.totals = totals


class Watch:
    """Judges `live` (and `sync`'s models, when given) and raises alerts on `alerter`."""

    def __init__(
        self,
        live: LiveCalibration,
        alerter: Alerter,
        settings: MonitoringConfig | None = None,
        *,
        sync: Any = None,
    ) -> None:
        self.live = live
        self.alerter = alerter
        self.settings = settings or MonitoringConfig()
        self.sync = sync
        self.history: dict[str, deque[_Snapshot]] = {}
        self.models: dict[str, str] = {}
        self.refused_seen: dict[tuple[str, str], int] = {}
        self.verdicts: dict[tuple[str, str, str], Any] = {}
        """The last verdict of each (arm, dimension, value): for the demo panel."""

    def check(self, now_s: float | None = None) -> None:
        """One round of checks (module doc)."""
        now = clock.now() if now_s is None else now_s
        self._calibration(now)
        if self.sync is not None:
            self._models(now)

    def _calibration(self, now: float) -> None:
        settings = self.settings
        for label, book in list(self.live.books.items()):
            if self.models.get(label) != book.model:
                if label in self.models:
                    self._replaced(book.arm)
                self.models[label] = book.model
                self.history[label] = deque()
            history = self.history[label]
            totals = book.totals()
            history.append(_Snapshot(now, totals))
            while len(history) > 1 and history[1].at_s <= now - settings.window_s:
                history.popleft()
            base = history[0].totals if history[0].at_s <= now - settings.window_s else {}
            for (dimension, value), (expected, actual, _) in totals.items():
                e0, a0, _ = base.get((dimension, value), (0.0, 0, 0))
                verdict = calibration_verdict(
                    expected=expected - e0,
                    actual=actual - a0,
                    band=settings.calibration_band,
                    z=settings.z,
                    min_expected=settings.min_expected,
                )
                self.verdicts[(book.arm, dimension, value)] = verdict
                where = "all" if dimension == "all" else f"{dimension}={value}"
                labels = {"purpose": "shaping", "arm": book.arm, "slice": where}
                if verdict.state == "off":
                    self.alerter.fire(
                        "calibration",
                        labels,
                        f"shaping model {book.model} expects {verdict.expected:.1f} bids where "
                        f"{verdict.actual:.0f} came (expected / actual {verdict.ratio:.2f}, "
                        f"z = {verdict.z:.1f}) over the last "
                        f"{max(0.0, min(now - book.started_s, settings.window_s)):.0f} s",
                        verdict.ratio,
                    )
                elif verdict.state == "ok":
                    self.alerter.resolve("calibration", labels)

    def _replaced(self, arm: str) -> None:
        for key in list(self.alerter.firing):
            if key[0] == "calibration" and key[2] == arm:
                labels = {"purpose": key[1], "arm": key[2], "slice": key[3]}
                self.alerter.resolve("calibration", labels, "the model was replaced")
        for key in [k for k in self.verdicts if k[0] == arm]:
            del self.verdicts[key]

    def _models(self, now: float) -> None:
        sync = self.sync
        followed = [(purpose, sync.alias, f) for purpose, f in sync.followed.items()]
        followed += [(purpose, ref, f) for (purpose, ref), f in list(sync.extra.items())]
        limit_s = self.settings.max_model_age_s
        for purpose, ref, state in followed:
            labels = {"purpose": purpose, "arm": ref}
            pointer = state.pointer
            if pointer is not None and pointer.trained_end_micros > 0:
                age_s = now - pointer.trained_end_micros / 1e6
                if model_too_old(age_s, limit_s):
                    self.alerter.fire(
                        "model_stale",
                        labels,
                        f"{purpose} model {pointer.version} was trained on data up to "
                        f"{age_s / 3600:.1f} h ago (limit {limit_s / 3600:.1f} h)",
                        age_s,
                    )
                else:
                    self.alerter.resolve("model_stale", labels)
            seen = self.refused_seen.get((purpose, ref), 0)
            if state.swaps_refused > seen:
                self.alerter.event(
                    "swap_failed",
                    labels,
                    f"{state.swaps_refused - seen} new {purpose} model(s) refused; the current "
                    f"one ({pointer.version if pointer else 'none'}) keeps serving",
                    float(state.swaps_refused),
                    severity="critical",
                )
            self.refused_seen[(purpose, ref)] = state.swaps_refused

    async def run(self) -> None:
        """Checks every `check_interval_s` of market time until cancelled."""
        while True:
            await clock.current().sleep(self.settings.check_interval_s)
            try:
                self.check()
            except Exception:  # a bug here must not stop serving; say it once a round
                log.exception("monitoring check failed")

    def close(self) -> None:
        self.alerter.close()


def attach_monitoring(platform: Any) -> Watch | None:
    """Live calibration on `platform`'s exchange and a `Watch` over it and the model sync;
    the platform runs `Watch.run` beside its servers and closes it when it stops."""
    exchange = platform.exchange
    if exchange is None:
        return None
    settings = platform.config.monitoring
    live = LiveCalibration(settings.max_slice_values)
    exchange.monitor = live
    alerter = Alerter(settings, source=f"openbid pid {os.getpid()}")
    return Watch(live, alerter, settings, sync=platform.model_sync)
