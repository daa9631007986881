"""Live calibration of the shaping model in each serving process: expected bids (the sum
of the scores of the calls it sent) against actual bids, overall and by slice (publisher,
DSP, country, device, hour), per A/B arm, for the model serving that arm now.

The exchange calls `observe` once per auction, after it is decided: a loop over the calls
already made and a few float additions into lists, nothing allocated once a slice value is
known (`bench/experiments.py` measures it). A slice keeps at most `max_slice_values` values
(the first seen); later ones count as `other`, so `/metrics` stays bounded whatever the
traffic sends. When an arm's model changes its counts start again: a new model is judged on
its own predictions only.

Metrics (`dimension` is `all`, `publisher`, `dsp`, `country`, `device` or `hour`):
`openbid_calibration_expected_total{purpose,arm,dimension,value}`,
`openbid_calibration_actual_total{...}` and `openbid_calibration_predictions_total{...}`;
in PromQL, expected / actual over a window is
`increase(..._expected_total[10m]) / increase(..._actual_total[10m])`.
"""

from __future__ import annotations

import weakref
from typing import Any

from prometheus_client.core import CounterMetricFamily

from openbid import clock
from openbid.experiments.arms import parse_label
from openbid.obs import REGISTRY

DIMENSIONS = ("publisher", "dsp", "country", "device", "hour")
OTHER = "other"


class Slices:
    """One dimension's counts by value; slot 0 is `other`."""

    __slots__ = ("cap", "index", "values", "expected", "actual", "predictions")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.index: dict[str, int] = {}
        self.values: list[str] = [OTHER]
        self.expected: list[float] = [0.0]
        self.actual: list[int] = [0]
        self.predictions: list[int] = [0]

    def slot(self, value: str) -> int:
        i = self.index.get(value)
        if i is not None:
            return i
        if len(self.values) > self.cap:
            return 0
        i = len(self.values)
        self.index[value] = i
        self.values.append(value)
        self.expected.append(0.0)
        self.actual.append(0)
        self.predictions.append(0)
        return i

    def add(self, value: str, expected: float, actual: int, predictions: int) -> None:
        i = self.index.get(value)
        if i is None:
            i = self.slot(value)
        self.expected[i] += expected
        self.actual[i] += actual
        self.predictions[i] += predictions


class Book:
    """Counts of one arm's model since it started serving this process."""

    __slots__ = ("arm", "model", "started_s", "expected", "actual", "predictions", "dims")

    def __init__(self, arm: str, model: str, cap: int) -> None:
        self.arm = arm
        self.model = model
        self.started_s = clock.now()
        self.expected = 0.0
        self.actual = 0
        self.predictions = 0
        self.dims = {name: Slices(cap) for name in DIMENSIONS}

    def totals(self) -> dict[tuple[str, str], tuple[float, int, int]]:
        """(expected, actual, predictions) by (dimension, value), `("all", "all")` included."""
        out = {("all", "all"): (self.expected, self.actual, self.predictions)}
        for name, slices in self.dims.items():
            for i, value in enumerate(slices.values):
                if slices.predictions[i]:
                    out[(name, value)] = (
                        slices.expected[i], slices.actual[i], slices.predictions[i]
                    )  # fmt: skip
        return out


class LiveCalibration:
    """The books of every arm of one serving process (module doc)."""

    purpose = "shaping"

    def __init__(self, max_slice_values: int = 30) -> None:
        self.cap = max_slice_values
        self.books: dict[str, Book] = {}
        """By the arm's label as logged (`""` when no test runs)."""
        _LIVE.add(self)

    def _book(self, label: str, model: str) -> Book:
        arm = parse_label(label).get("shaping", "none")
        book = self.books[label] = Book(arm, model, self.cap)
        return book

    def observe(self, state: Any, arm: str, shaping_model: str) -> None:
        """One decided auction: its sent calls that the model scored, and their bids."""
        if not shaping_model:
            return
        book = self.books.get(arm)
        if book is None or book.model != shaping_model:
            book = self._book(arm, shaping_model)
        expected = 0.0
        actual = 0
        sent = 0
        dsp = book.dims["dsp"]
        index, dsp_expected, dsp_actual, dsp_predictions = (
            dsp.index,
            dsp.expected,
            dsp.actual,
            dsp.predictions,
        )
        for call in state.calls:
            if call.pending is None:  # not sent: no label
                continue
            score = call.decision.score
            if score < 0.0:  # not scored by the model (a DSP it does not know)
                continue
            partner = call.state.partner.id
            i = index.get(partner)
            if i is None:
                i = dsp.slot(partner)
            dsp_expected[i] += score
            dsp_predictions[i] += 1
            expected += score
            sent += 1
            if call.outcome == "bid":
                dsp_actual[i] += 1
                actual += 1
        if not sent:
            return
        book.expected += expected
        book.actual += actual
        book.predictions += sent
        dims = book.dims
        features = state.features
        publisher = state.publisher
        dims["publisher"].add(publisher.id if publisher is not None else "", expected, actual, sent)
        dims["country"].add(features.get("country", ""), expected, actual, sent)
        dims["device"].add(features.get("device_type", ""), expected, actual, sent)
        dims["hour"].add(features.get("hour", ""), expected, actual, sent)


_LIVE: weakref.WeakSet[LiveCalibration] = weakref.WeakSet()


class _LiveCollector:
    def collect(self):
        labels = ["purpose", "arm", "dimension", "value"]
        expected = CounterMetricFamily(
            "openbid_calibration_expected",
            "Positives the serving model expected (sum of its predictions), by slice",
            labels=labels,
        )
        actual = CounterMetricFamily(
            "openbid_calibration_actual", "Positives observed, by slice", labels=labels
        )
        predictions = CounterMetricFamily(
            "openbid_calibration_predictions", "Predictions with an outcome, by slice",
            labels=labels,
        )  # fmt: skip
        for live in list(_LIVE):
            for book in list(live.books.values()):
                for (dimension, value), (e, a, n) in book.totals().items():
                    key = [live.purpose, book.arm, dimension, value]
                    expected.add_metric(key, e)
                    actual.add_metric(key, a)
                    predictions.add_metric(key, n)
        yield from (expected, actual, predictions)


REGISTRY.register(_LiveCollector())
