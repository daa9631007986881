"""Differential privacy for clean-room queries, with OpenDP's measurements and privacy maps
(imported only when a query asks for noise).

Each user's contribution is bounded first (at most `max_rows_per_user` joined rows, so a
user touches at most that many output rows). The output rows themselves depend on the data,
so they are released by OpenDP's Laplace threshold mechanism on the distinct-user counts: a
row comes out only when its noisy count passes a threshold, and that costs a delta as well
as an epsilon. The other aggregates get Laplace noise scaled to their sensitivity
(`max_rows_per_user` x the largest clamped value for sums). The query's epsilon is split
evenly over its measurements (the rows and users: one; an average: two, its sum and count).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from openbid.insights.errors import InsightsError


def _opendp():
    try:
        import opendp.prelude as dp
    except ImportError as exc:  # a dependency of openbid: only a broken install lacks it
        raise InsightsError(
            f"differential privacy needs OpenDP (pip install opendp): {exc}"
        ) from None
    dp.enable_features("contrib")
    return dp


@dataclass(frozen=True, slots=True)
class ReleasedKeys:
    """Noisy distinct-user counts of the rows that passed the threshold."""

    counts: dict[str, int]
    threshold: int
    epsilon: float
    delta: float


def release_keys(
    user_counts: Mapping[str, int],
    *,
    epsilon: float,
    min_users: int,
    max_rows_per_user: int,
    delta_target: float,
) -> ReleasedKeys:
    """Rows (keys) and their noisy user counts, by the Laplace threshold mechanism: the
    threshold is `min_users` or higher, as high as `delta_target` needs."""
    dp = _opendp()
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=int))
    metric = dp.l01inf_distance(dp.absolute_distance(T=int))
    # a user is in at most `max_rows_per_user` rows, adding 1 to each: (l0, l1, linf)
    d_in = (max_rows_per_user, max_rows_per_user, 1)
    scale = max_rows_per_user / epsilon
    # delta ~ l0 / 2 * exp(-(threshold - linf) / scale): start there, checked by OpenDP's map
    threshold = max(
        min_users, math.ceil(1 + scale * math.log(max_rows_per_user / (2 * delta_target)))
    )
    for _ in range(64):
        measurement = dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold)
        spent_epsilon, delta = measurement.map(d_in)
        if delta <= delta_target and spent_epsilon <= epsilon * (1 + 1e-9):
            break
        threshold += max(1, math.ceil(scale / 4))
    else:  # pragma: no cover - the map decreases geometrically in the threshold
        raise InsightsError("could not find a threshold meeting the delta target")
    noisy = measurement({str(k): int(v) for k, v in user_counts.items()})
    return ReleasedKeys(
        counts={k: int(v) for k, v in noisy.items()},
        threshold=int(threshold),
        epsilon=float(spent_epsilon),
        delta=float(delta),
    )


def laplace(
    values: Sequence[float], *, sensitivity: float, epsilon: float
) -> tuple[list[float], float]:
    """`values` with Laplace noise for an L1 `sensitivity`; the epsilon OpenDP's map gives."""
    if not values:
        return [], 0.0
    dp = _opendp()
    sensitivity = max(float(sensitivity), 1e-12)
    measurement = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.l1_distance(T=float),
        scale=sensitivity / epsilon,
    )
    spent = float(measurement.map(sensitivity))
    return [float(x) for x in measurement([float(v) for v in values])], spent
