"""The alert rules as pure functions: is a model's calibration off, is it too old, did the
label rate shift? Each returns the numbers it judged, so a log line or a test can show them.

>>> calibration_verdict(expected=300.0, actual=100.0, band=0.2, z=4.0, min_expected=20.0).state
'off'
>>> calibration_verdict(expected=104.0, actual=100.0, band=0.2, z=4.0, min_expected=20.0).state
'ok'
>>> calibration_verdict(expected=5.0, actual=0.0, band=0.2, z=4.0, min_expected=20.0).state
'unknown'
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec
import numpy as np


class CalibrationVerdict(msgspec.Struct, frozen=True):
    state: Literal["ok", "off", "unknown"]
    expected: float
    actual: float
    ratio: float
    """expected / actual (inf with no positives)."""
    z: float
    """(actual - expected) / sqrt(expected): how many standard deviations apart."""


def calibration_verdict(
    *, expected: float, actual: float, band: float, z: float, min_expected: float
) -> CalibrationVerdict:
    """`off` when expected / actual leaves 1 +/- `band` and the gap is more than `z`
    standard deviations of the count (Poisson, a bound on a sum of Bernoulli trials), so
    noise on a thin slice does not alert; `unknown` until `min_expected` positives are
    expected."""
    ratio = expected / actual if actual > 0 else math.inf
    deviation = (actual - expected) / math.sqrt(expected) if expected > 0 else 0.0
    if expected < min_expected:
        return CalibrationVerdict("unknown", expected, actual, ratio, deviation)
    off = abs(ratio - 1.0) > band and abs(deviation) > z
    return CalibrationVerdict("off" if off else "ok", expected, actual, ratio, deviation)


def model_too_old(age_s: float, limit_s: float) -> bool:
    """A model whose training window ended more than `limit_s` ago (market seconds).

    >>> model_too_old(4 * 86400, 3 * 86400), model_too_old(3600, 3 * 86400)
    (True, False)
    """
    return age_s > limit_s


class LabelShift(msgspec.Struct, frozen=True):
    """The label rate of the most recent part of a window against the part before it."""

    halt: bool
    reason: str
    earlier_rate: float
    recent_rate: float
    change: float
    """recent / earlier - 1."""
    z: float
    earlier_rows: int
    recent_rows: int


def label_shift(
    labels,
    ts_micros,
    sample_weight=None,
    *,
    recent_share: float = 0.2,
    max_change: float = 0.5,
    z: float = 4.0,
    min_positives: float = 30.0,
) -> LabelShift:
    """Compares the label rate of the last `recent_share` of the window's time span with
    the rate before it. `halt` when it moved by more than `max_change` (relative) and by
    more than `z` standard errors (two-proportion test on effective row counts): a tracker
    that stopped firing, a DSP that stopped bidding, a broken join. A gradual drift of the
    rate is what training is for; an abrupt one would train a model on garbage.

    >>> ts = np.arange(10_000)
    >>> y = (np.arange(10_000) % 50 == 0).astype(float)  # 2% throughout
    >>> label_shift(y, ts).halt
    False
    >>> y[8_000:] = 0.0  # clicks stop being recorded
    >>> label_shift(y, ts).halt
    True
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    ts = np.asarray(ts_micros, dtype=np.int64).reshape(-1)
    w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float64)
    if y.size < 2 or ts.size != y.size or w.size != y.size:
        return LabelShift(False, "too few rows to compare", math.nan, math.nan, 0.0, 0.0,
                          int(y.size), 0)  # fmt: skip
    start, end = int(ts.min()), int(ts.max())
    cut = end - (end - start) * recent_share
    recent = ts > cut
    earlier = ~recent

    def rate(mask: np.ndarray) -> tuple[float, float, float]:
        total = float(w[mask].sum())
        positives = float((w[mask] * y[mask]).sum())
        squares = float((w[mask] ** 2).sum())
        effective = total * total / squares if squares > 0 else 0.0
        return (positives / total if total > 0 else math.nan), effective, positives

    r0, n0, p0 = rate(earlier)
    r1, n1, p1 = rate(recent)
    rows0, rows1 = int(earlier.sum()), int(recent.sum())
    if not (n0 > 0 and n1 > 0) or p0 + p1 < min_positives:
        return LabelShift(False, f"too few positives to compare ({p0 + p1:g})", r0, r1, 0.0,
                          0.0, rows0, rows1)  # fmt: skip
    pooled = (r0 * n0 + r1 * n1) / (n0 + n1)
    se = math.sqrt(max(pooled * (1.0 - pooled), 1e-12) * (1.0 / n0 + 1.0 / n1))
    score = (r1 - r0) / se
    change = r1 / r0 - 1.0 if r0 > 0 else math.inf
    halt = abs(change) > max_change and abs(score) > z
    reason = (
        f"label rate {r0:.4%} -> {r1:.4%} in the last {recent_share:.0%} of the window "
        f"({change:+.0%}, z = {score:.1f})"
    )
    return LabelShift(halt, reason, r0, r1, change, score, rows0, rows1)
