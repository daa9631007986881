"""The serving shaper: score every eligible DSP for a request in one call and decide.

`ModelShaper.decide(features, dsps)` hashes the request's features once, scores every DSP
in one numba call (`MultiModelScorer`), and calls the DSPs at or above their threshold
(and under their QPS cap), plus a seeded random exploration share of the others, marked
`explored=True` with `send_probability=share` so training can weight them. It fails open:
with no model, a model that cannot be loaded, or a request it cannot score, every DSP is
called, and the metrics say so.

`load(path)` validates a new model directory completely, then replaces one reference; a
bad directory is refused (log line, `openbid_shaping_model_loads_total{result="refused"}`)
and the old model keeps serving.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from openbid.ml import MultiModelScorer
from openbid.obs import REGISTRY
from openbid.shaping.base import ShapingDecision
from openbid.shaping.errors import ShapingError, ShapingModelError
from openbid.shaping.fastpath import RequestScorer
from openbid.shaping.features import DSP_FIELD
from openbid.shaping.model import SHARED, ShapingModel, load_shaping_model
from openbid.shaping.thresholds import CALL_ALL, cap_threshold

log = logging.getLogger(__name__)

DECISION_KINDS = ("called", "filtered", "explored", "capped", "unscored", "fail_open")
_CALLED, _FILTERED, _EXPLORED, _CAPPED, _UNSCORED, _FAIL_OPEN = range(len(DECISION_KINDS))


_PROBE_ROWS: tuple[dict[str, str], ...] = (
    {},
    {"country": "USA", "media": "banner", "size": "300x250", "hour": "20", "floor": "0"},
    {"site_id": "s1", "os": "iOS", "device_type": "phone", "placement": "", "gdpr": "1"},
)
"""Requests a new model must score (finite, in [0, 1]) before it serves."""


class _Serving:
    """One loaded model in serving form; immutable once built, swapped as a whole."""

    __slots__ = (
        "version", "layout", "featurizer", "scorer", "fast", "column", "names", "thresholds",
        "share", "_out",
    )  # fmt: skip

    def __init__(self, model: ShapingModel, exploration_share: float | None) -> None:
        meta = model.meta
        self.version = meta.version
        self.layout = meta.layout
        self.names = [SHARED] if meta.layout == "shared" else list(meta.thresholds)
        artifacts = [model.artifacts[name] for name in self.names]
        self.featurizer = artifacts[0].featurizer()
        self.column = {name: i for i, name in enumerate(self.names)}
        self.thresholds = dict(meta.thresholds)
        self.share = meta.exploration_share if exploration_share is None else exploration_share
        self.fast = None
        self.scorer = None
        calibrated = any(a.meta.calibration is not None for a in artifacts)
        if self.layout == "per_dsp" and not calibrated:
            fast = RequestScorer(artifacts[0].meta.spec, [a.weights for a in artifacts])
            if fast.check(_PROBE_ROWS):
                self.fast = fast
            else:
                log.warning("shaping fast path disagrees with the featurizer; using the featurizer")
        if self.fast is None:
            self.scorer = MultiModelScorer(
                [a.scoring_model(n) for a, n in zip(artifacts, self.names, strict=True)]
            )
        self._out = np.empty(len(self.names))
        # scoring here compiles and warms the kernels, and refuses a model that scores
        # outside [0, 1] before it sees traffic
        for row in _PROBE_ROWS:
            probe = self.scores(row, list(self.thresholds))
            if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in probe.values()):
                raise ShapingModelError(f"{model.path}: the model scores outside [0, 1]")

    def scores(self, features: Mapping[str, str], dsps: Sequence[str]) -> dict[str, float]:
        """Predicted bid probability of each DSP that has a model."""
        if self.layout == "shared":
            out = {}
            for dsp in dsps:
                if dsp in self.thresholds:
                    row = dict(features)
                    row[DSP_FIELD] = dsp
                    out[dsp] = float(self.scorer.score_one(self.featurizer.transform_one(row))[0])
            return out
        if self.fast is not None:
            self.fast.score(features, self._out)
            probabilities = self._out.tolist()
        else:
            probabilities = self.scorer.score_one(self.featurizer.transform_one(features)).tolist()
        column = self.column
        return {dsp: probabilities[column[dsp]] for dsp in dsps if dsp in column}


class QpsCapGate:
    """Keeps one DSP under `cap_qps` by sending its highest-scored requests.

    It watches the scores of the requests that passed the model threshold and how many
    arrive per second; when more arrive than the cap allows, only those scoring above the
    (1 - cap / rate) quantile of the recent scores are sent.
    """

    __slots__ = (
        "cap_qps", "_scores", "_seen", "_window_start", "_window_count", "_rate",
        "threshold", "_since_update",
    )  # fmt: skip

    WINDOW_S = 1.0
    RECENT = 2048
    UPDATE_EVERY = 64

    def __init__(self, cap_qps: float, now: float) -> None:
        self.cap_qps = cap_qps
        self._scores = np.zeros(self.RECENT)
        self._seen = 0
        self._window_start = now
        self._window_count = 0
        self._rate = 0.0
        self._since_update = 0
        self.threshold = CALL_ALL

    def admit(self, score: float, now: float) -> bool:
        """Record a candidate's score; whether it is sent under the cap."""
        self._scores[self._seen % self.RECENT] = score
        self._seen += 1
        self._window_count += 1
        self._since_update += 1
        elapsed = now - self._window_start
        if elapsed >= self.WINDOW_S:
            self._rate = self._window_count / elapsed
            self._window_start = now
            self._window_count = 0
            self._update()
        elif self._since_update >= self.UPDATE_EVERY and self._rate > 0.0:
            # within a window, the rate so far is a lower bound: never relax below it
            self._rate = max(self._rate, self._window_count / max(elapsed, 1e-3))
            self._update()
        return score >= self.threshold

    def _update(self) -> None:
        self._since_update = 0
        recent = self._scores[: min(self._seen, self.RECENT)]
        self.threshold = cap_threshold(recent, self._rate, self.cap_qps)


class ModelShaper:
    """The `Shaper` the exchange calls: a model's thresholds, exploration, QPS caps, fail-open.

    `exploration_share` overrides the share stored with the model; `qps_caps` maps a DSP to
    its cap in calls per second; `seed` seeds the exploration draws; `clock` (seconds,
    monotonic) is injectable for tests.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        exploration_share: float | None = None,
        qps_caps: Mapping[str, float] | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "default",
    ) -> None:
        if exploration_share is not None and not 0.0 <= exploration_share <= 1.0:
            raise ShapingError(f"exploration share must be in [0, 1], got {exploration_share}")
        self.name = name
        self._exploration_share = exploration_share
        self._rng = random.Random(seed)
        self._clock = clock
        self._caps = {dsp: QpsCapGate(cap, clock()) for dsp, cap in (qps_caps or {}).items()}
        self._serving: _Serving | None = None
        self._load_lock = threading.Lock()
        # per DSP, one count per entry of DECISION_KINDS: list indexing is the cheapest
        # counter on the hot path; `decisions` turns it into a Counter for readers
        self._counts: dict[str, list[int]] = {}
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.loads: Counter[str] = Counter()
        self.score_ns = 0
        self.scored_requests = 0
        self.score_failures = 0
        _SHAPERS.add(self)
        if model_path is not None:
            try:
                self.load(model_path)
            except ShapingModelError:
                log.warning(
                    "no usable shaping model at start: calling every DSP (fail open)",
                    extra={"path": str(model_path)},
                )

    # --- model
    @property
    def model_version(self) -> str:
        serving = self._serving
        return serving.version if serving is not None else ""

    @property
    def failing_open(self) -> bool:
        return self._serving is None

    def thresholds(self) -> dict[str, float]:
        serving = self._serving
        return dict(serving.thresholds) if serving is not None else {}

    def load(self, path: str | Path) -> str:
        """Validate the model at `path` and serve it; returns its version. On any problem
        raises `ShapingModelError` and keeps serving the current model (or failing open)."""
        with self._load_lock:
            try:
                serving = _Serving(load_shaping_model(path), self._exploration_share)
            except (ShapingModelError, ValueError, OSError) as exc:
                self.loads["refused"] += 1
                log.error(
                    "shaping model refused; the current one keeps serving",
                    extra={"path": str(path), "error": str(exc), "current": self.model_version},
                )
                if isinstance(exc, ShapingModelError):
                    raise
                raise ShapingModelError(f"{path}: {exc}") from exc
            self._serving = serving
            self.loads["ok"] += 1
        log.info("shaping model serving", extra={"path": str(path), "version": serving.version})
        return serving.version

    def unload(self) -> None:
        """Stop using the model: every DSP is called (fail open)."""
        self._serving = None

    # --- the hot path
    def decide(self, features: Mapping[str, str], dsps: Sequence[str]) -> list[ShapingDecision]:
        serving = self._serving
        if serving is None:
            return self._fail_open(dsps)
        started = time.perf_counter_ns()
        try:
            scores = serving.scores(features, dsps)
        except Exception:  # a request the featurizer cannot read must not stop the auction
            self.score_failures += 1
            if self.score_failures & (self.score_failures - 1) == 0:  # log 1st, 2nd, 4th, ...
                log.exception("shaping could not score a request; calling every DSP")
            return self._fail_open(dsps)
        self.score_ns += time.perf_counter_ns() - started
        self.scored_requests += 1
        thresholds = serving.thresholds
        share = serving.share
        caps = self._caps
        counts = self._counts
        decisions = []
        now = self._clock() if caps else 0.0
        for dsp in dsps:
            count = counts.get(dsp)
            if count is None:
                count = counts[dsp] = [0] * len(DECISION_KINDS)
            score = scores.get(dsp)
            if score is None:
                decisions.append(ShapingDecision(dsp, True))
                count[_UNSCORED] += 1
                continue
            send = score >= thresholds[dsp]
            if send and caps:
                gate = caps.get(dsp)
                if gate is not None and not gate.admit(score, now):
                    send = False
                    count[_CAPPED] += 1
            if send:
                decisions.append(ShapingDecision(dsp, True, score))
                count[_CALLED] += 1
            elif share > 0.0 and self._rng.random() < share:
                decisions.append(ShapingDecision(dsp, True, score, True, share))
                count[_EXPLORED] += 1
            else:
                decisions.append(ShapingDecision(dsp, False, score))
                count[_FILTERED] += 1
        return decisions

    async def decide_async(
        self, features: Mapping[str, str], dsps: Sequence[str]
    ) -> list[ShapingDecision]:
        """`decide`, for the exchange (the `Shaper` protocol): scoring in process never waits."""
        return self.decide(features, dsps)

    def _fail_open(self, dsps: Sequence[str]) -> list[ShapingDecision]:
        for dsp in dsps:
            self._counts.setdefault(dsp, [0] * len(DECISION_KINDS))[_FAIL_OPEN] += 1
        return [ShapingDecision(dsp, True) for dsp in dsps]

    @property
    def decisions(self) -> Counter[tuple[str, str]]:
        """Decisions so far by (DSP, kind); a capped call is also counted as filtered or
        explored."""
        return Counter(
            {
                (dsp, kind): n
                for dsp, row in list(self._counts.items())
                for kind, n in zip(DECISION_KINDS, row, strict=True)
                if n
            }
        )

    def observe(self, decision: ShapingDecision, bid: bool) -> None:
        """Count what came back from a call (for the bid rate and the bids-lost estimate)."""
        kind = "explored" if decision.explored else "called"
        self.outcomes[(decision.dsp, kind)] += 1
        if bid:
            self.outcomes[(decision.dsp, f"{kind}_bid")] += 1

    def stats(self) -> dict[str, dict[str, float]]:
        """Per DSP: decisions, callouts saved, bid rate among sent calls, estimated bids lost
        (from the exploration slice), threshold."""
        serving = self._serving
        share = serving.share if serving is not None else 0.0
        thresholds = serving.thresholds if serving is not None else {}
        by_dsp: dict[str, dict[str, float]] = {}
        for (dsp, kind), count in self.decisions.items():
            by_dsp.setdefault(dsp, {})[kind] = float(count)
        for dsp, row in by_dsp.items():
            total = sum(n for kind, n in row.items() if kind != "capped")
            not_sent = row.get("filtered", 0.0)
            row["callouts_saved"] = not_sent / total if total else 0.0
            called = self.outcomes[(dsp, "called")]
            row["bid_rate_sent"] = self.outcomes[(dsp, "called_bid")] / called if called else 0.0
            explored_bids = self.outcomes[(dsp, "explored_bid")]
            row["bids_lost_estimate"] = explored_bids * (1.0 - share) / share if share else 0.0
            if dsp in thresholds:
                row["threshold"] = thresholds[dsp]
        return by_dsp

    def mean_score_us(self) -> float:
        return self.score_ns / self.scored_requests / 1000.0 if self.scored_requests else 0.0


_SHAPERS: weakref.WeakSet[ModelShaper] = weakref.WeakSet()


class _ShapingCollector:
    """Exports every live `ModelShaper`'s counters at scrape time (the hot path only bumps
    plain counters)."""

    def collect(self):
        decisions = CounterMetricFamily(
            "openbid_shaping_decisions",
            "Shaping decisions per DSP: called, filtered, explored, capped, unscored, fail_open",
            labels=["shaper", "dsp", "decision"],
        )
        saved = GaugeMetricFamily(
            "openbid_shaping_callouts_saved_ratio",
            "Share of a DSP's eligible calls not sent (filtered, capped ones included) since start",
            labels=["shaper", "dsp"],
        )
        bid_rate = GaugeMetricFamily(
            "openbid_shaping_bid_rate_sent",
            "Bids per call among calls sent on the model's word (observed outcomes)",
            labels=["shaper", "dsp"],
        )
        lost = GaugeMetricFamily(
            "openbid_shaping_bids_lost_estimate",
            "Bids estimated lost to filtering, from the exploration slice",
            labels=["shaper", "dsp"],
        )
        threshold = GaugeMetricFamily(
            "openbid_shaping_threshold", "Score threshold per DSP", labels=["shaper", "dsp"]
        )
        info = GaugeMetricFamily(
            "openbid_shaping_model_info", "The model serving (1)", labels=["shaper", "version"]
        )
        fail_open = GaugeMetricFamily(
            "openbid_shaping_fail_open",
            "1 when the shaper has no usable model and calls every DSP",
            labels=["shaper"],
        )
        loads = CounterMetricFamily(
            "openbid_shaping_model_loads",
            "Model loads: ok or refused (the old model kept serving)",
            labels=["shaper", "result"],
        )
        scoring = SummaryMetricFamily(
            "openbid_shaping_scoring_seconds",
            "Time to score all DSPs of one request",
            labels=["shaper"],
        )
        for shaper in list(_SHAPERS):
            name = shaper.name
            for (dsp, kind), count in list(shaper.decisions.items()):
                decisions.add_metric([name, dsp, kind], count)
            for dsp, row in shaper.stats().items():
                saved.add_metric([name, dsp], row["callouts_saved"])
                bid_rate.add_metric([name, dsp], row["bid_rate_sent"])
                lost.add_metric([name, dsp], row["bids_lost_estimate"])
            for dsp, value in shaper.thresholds().items():
                threshold.add_metric([name, dsp], value)
            if shaper.model_version:
                info.add_metric([name, shaper.model_version], 1.0)
            fail_open.add_metric([name], 1.0 if shaper.failing_open else 0.0)
            for result, count in list(shaper.loads.items()):
                loads.add_metric([name, result], count)
            scoring.add_metric([name], shaper.scored_requests, shaper.score_ns / 1e9)
        yield from (decisions, saved, bid_rate, lost, threshold, info, fail_open, loads, scoring)


REGISTRY.register(_ShapingCollector())
