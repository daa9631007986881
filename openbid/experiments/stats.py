"""Statistics of an A/B test: a metric per arm as a ratio of per-auction sums (bid rate =
bids / calls, CTR = clicks / impressions, revenue per auction = revenue / auctions), its
confidence interval by the delta method (auctions are the independent units, so calls and
impressions clustered in an auction are not counted as independent), the difference between
an arm and control, a plain verdict, and the traffic still needed to reach one.

>>> rng = np.random.default_rng(1)
>>> small = ratio_estimate(rng.binomial(1, 0.1, 1_000), np.ones(1_000))
>>> large = ratio_estimate(rng.binomial(1, 0.1, 100_000), np.ones(100_000))
>>> round(small.half_width / large.half_width)  # 100 times the traffic, a tenth of the width
10
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal

import msgspec
import numpy as np

Z95 = NormalDist().inv_cdf(0.975)
Z_POWER = NormalDist().inv_cdf(0.8)
"""80% power: the traffic needed is for a real difference to show 4 times in 5."""


class Estimate(msgspec.Struct, frozen=True):
    """A ratio of sums over `units` (auctions) with its standard error (delta method)."""

    value: float
    se: float
    units: int
    numerator: float
    denominator: float

    @property
    def half_width(self) -> float:
        return Z95 * self.se

    @property
    def low(self) -> float:
        return self.value - self.half_width

    @property
    def high(self) -> float:
        return self.value + self.half_width


def ratio_estimate(x, y) -> Estimate:
    """sum(x) / sum(y) over units, with the delta-method standard error:
    var(R) ~= (var(x) - 2 R cov(x, y) + R^2 var(y)) / (n mean(y)^2)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = int(x.shape[0])
    sx, sy = float(x.sum()), float(y.sum())
    if n < 2 or sy <= 0.0:
        return Estimate(math.nan, math.nan, n, sx, sy)
    r = sx / sy
    mean_y = sy / n
    residual = x - r * y
    variance = float(np.sum(residual * residual)) / (n - 1)
    return Estimate(r, math.sqrt(variance / n) / mean_y, n, sx, sy)


Direction = Literal["higher", "lower", "one"]
"""What is better for a metric: higher (fill, revenue), lower (callouts, CPC), or closer to
one (calibration)."""


class Comparison(msgspec.Struct, frozen=True):
    """An arm against control on one metric."""

    difference: float
    """arm - control."""
    low: float
    high: float
    """95% confidence interval of the difference."""
    relative: float
    """difference / control (NaN when control is 0)."""
    verdict: Literal["better", "worse", "no difference seen", "not yet known"]
    more_units: int
    """Auctions (both arms together, at this split) still needed to tell; 0 when known."""
    detail: str


def compare(
    arm: Estimate,
    control: Estimate,
    direction: Direction,
    *,
    min_effect: float = 0.01,
) -> Comparison:
    """The difference, its CI and a plain verdict. When the CI holds 0: "no difference
    seen" once it is narrower than `min_effect` (relative) on both sides, else "not yet
    known" with the traffic that would tell the observed difference (or `min_effect`, if
    larger) at 95% with 80% power."""
    if not (math.isfinite(arm.value) and math.isfinite(control.value)):
        return Comparison(math.nan, math.nan, math.nan, math.nan, "not yet known", 0,
                          "not enough data in one of the arms")  # fmt: skip
    if direction == "one":
        diff = abs(control.value - 1.0) - abs(arm.value - 1.0)  # > 0: arm closer to one
        sign = 1.0
    else:
        diff = arm.value - control.value
        sign = 1.0 if direction == "higher" else -1.0
    se = math.hypot(arm.se, control.se)
    low, high = diff - Z95 * se, diff + Z95 * se
    scale = abs(control.value) if direction != "one" else 1.0
    relative = diff / scale if scale > 0 else math.nan
    if se == 0.0 or low > 0.0 or high < 0.0:
        better = diff * sign > 0
        return Comparison(diff, low, high, relative, "better" if better else "worse", 0,
                          f"{relative:+.1%} (95% CI {low / scale if scale else low:+.1%} to "
                          f"{high / scale if scale else high:+.1%})")  # fmt: skip
    effect = max(abs(diff), min_effect * scale) if scale > 0 else abs(diff)
    if Z95 * se < min_effect * scale:
        return Comparison(diff, low, high, relative, "no difference seen", 0,
                          f"within +/-{min_effect:.0%}")  # fmt: skip
    units = arm.units + control.units
    factor = ((Z95 + Z_POWER) * se / effect) ** 2 if effect > 0 else math.inf
    more = max(int(math.ceil(units * (factor - 1.0))), 0) if math.isfinite(factor) else -1
    detail = (
        f"{relative:+.1%} so far; about {more:,} more auctions to tell a "
        f"{effect / scale if scale else effect:.1%} difference"
    )
    return Comparison(diff, low, high, relative, "not yet known", more, detail)
