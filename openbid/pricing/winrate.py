"""The win rate as a function of the bid, learned from our own wins and losses.

We win an auction when our bid beats D, the highest competing bid (0 when nobody else bids),
so `P(win | bid b) = P(D <= b)`: the distribution function of D. We rarely see D itself:

| what happened | what it tells about D |
| --- | --- |
| first-price win | D <= bid (we pay our bid, the rest is hidden) |
| second-price win, paid p above the floor | D = p |
| second-price win, paid the floor | D <= floor |
| loss with the clearing price p in the loss notice (first price) | D = p |
| loss without a price (or second price: the price is the winner's, not D) | D > bid |

So most observations are censored, from the left (wins) or the right (losses). Ignoring that
(fitting only the prices we saw) biases the curve toward the bids we happened to make; the
estimate here is the nonparametric maximum likelihood one for interval-censored data
(Turnbull's self-consistency EM, 1976) on a fixed log-spaced price grid, the approach of Pan
et al. 2020 for first-price shading.

Placements differ (a video slot on a phone at 8 pm is not a banner at 4 am), so curves are
fitted per segment, given as rows of integer codes (format, floor level, hour, ...). Each
segment's curve is pulled toward its parent's (the same codes without the last one) by
`prior_weight` pseudo-observations, so a segment with few observations looks like its parent
and one with many follows its own data.

>>> grid = PriceGrid(low_micros=100_000, high_micros=10_000_000, bins=40)
>>> rng = np.random.default_rng(1)
>>> competing = rng.lognormal(np.log(1e6), 0.5, 20_000)      # the hidden landscape
>>> bids = rng.uniform(2e5, 4e6, 20_000)
>>> first, last = censored_intervals(grid, bids, won=bids > competing)
>>> curves = fit_win_curves(grid, np.zeros((20_000, 0), dtype=np.int64), first, last)
>>> round(curves.win_probability(curves.row(()), 1_000_000), 2)     # truth: 0.5
0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from openbid.pricing.value import PricingError

_TINY = 1e-300


@dataclass(frozen=True)
class PriceGrid:
    """Log-spaced CPM prices (micros) that cut the range of D into bins.

    Bin 0 holds D <= `low_micros` (and D = 0: nobody else bid); bin k in 1..bins holds
    `edges[k-1] < D <= edges[k]`; bin `bins + 1` holds D above `high_micros`.
    """

    low_micros: float = 10_000.0
    high_micros: float = 200_000_000.0
    bins: int = 96

    def __post_init__(self) -> None:
        if not (0 < self.low_micros < self.high_micros) or self.bins < 2:
            raise PricingError("PriceGrid: need 0 < low_micros < high_micros and bins >= 2")

    @property
    def edges(self) -> np.ndarray:
        return np.geomspace(self.low_micros, self.high_micros, self.bins + 1)

    @property
    def n_cells(self) -> int:
        """Bins including the two open ends."""
        return self.bins + 2

    def cell(self, price_micros) -> np.ndarray:
        """The bin of each price."""
        return np.searchsorted(self.edges, np.asarray(price_micros, dtype=np.float64), "left")

    def nearest_edge(self, price_micros) -> np.ndarray:
        """The index of the edge nearest each price (in log price), 0..bins.

        A bid inside a bin splits it; rounding the bid to the nearest edge splits it at a
        border instead, with an error as often up as down, so "D <= bid" becomes bins
        0..edge and "D > bid" bins edge+1..end, without a bin claimed by both.
        """
        log_price = np.log(np.maximum(np.asarray(price_micros, dtype=np.float64), 1.0))
        step = math.log(self.high_micros / self.low_micros) / self.bins
        position = np.rint((log_price - math.log(self.low_micros)) / step)
        return np.clip(position, 0, self.bins).astype(np.int64)


def censored_intervals(
    grid: PriceGrid,
    bid_micros,
    won,
    known_price_micros=None,
    *,
    second_price: bool = False,
    floor_micros=None,
) -> tuple[np.ndarray, np.ndarray]:
    """What each outcome says about D, as an inclusive range of grid bins (first, last).

    `known_price_micros` (0 where unknown): on a second-price win the price paid; on a loss
    the clearing price of the loss notice, used only in first price (in second price it is
    what the winner paid, not D). `floor_micros` tells a second-price win at the floor (D at
    most the floor) from one above it. Bids below the floor tell nothing: leave them out.
    """
    bid = np.asarray(bid_micros, dtype=np.float64)
    won = np.asarray(won, dtype=bool)
    n = bid.shape[0]
    known = (
        np.zeros(n) if known_price_micros is None else np.asarray(known_price_micros, np.float64)
    )
    floor = np.zeros(n) if floor_micros is None else np.asarray(floor_micros, np.float64)
    bid_edge = grid.nearest_edge(bid)
    top = grid.n_cells - 1
    first = np.where(won, 0, bid_edge + 1)
    last = np.where(won, bid_edge, top)
    if second_price:
        exact = won & (known > 0) & (known > floor)
        at_floor = won & (known > 0) & ~exact
        first = np.where(exact, grid.cell(known), first)
        last = np.where(exact, grid.cell(known), np.where(at_floor, grid.nearest_edge(floor), last))
    else:
        exact = ~won & (known > 0)
        known_cell = grid.cell(known)
        first = np.where(exact, known_cell, first)
        last = np.where(exact, known_cell, last)
    return first.astype(np.int64), last.astype(np.int64)


def turnbull(
    exact: np.ndarray,
    at_most: np.ndarray,
    above: np.ndarray,
    prior: np.ndarray,
    prior_weight: float,
    iterations: int = 300,
    tolerance: float = 1e-7,
) -> np.ndarray:
    """Bin probabilities of D for several segments at once (rows), by Turnbull's EM (at most
    `iterations`, fewer once no probability moves by more than `tolerance` in one).

    `exact[s, k]` counts observations in bin k; `at_most[s, c]` those known to lie in bins
    0..c; `above[s, a]` those in bins a..end; `prior[s]` is a distribution worth
    `prior_weight` observations (a Dirichlet prior, which also keeps every bin above 0).
    """
    total = exact.sum(1) + at_most.sum(1) + above.sum(1)
    p = prior.copy()
    # Rows still moving; a row whose probabilities all moved less than `tolerance` in an
    # iteration is done (checked every 10 iterations) and leaves the working set.
    active = np.arange(len(p))
    e, m, a, w = exact, at_most, above, prior_weight * prior
    norm = (total + prior_weight)[:, None]
    current = p
    for iteration in range(iterations):
        below_or_at = np.cumsum(current, axis=1)
        # P(D in bins a..end) = 1 - P(D in bins 0..a) + P(D in bin a), and a reversed
        # cumulative sum is the total minus the cumulative sum plus the element itself.
        at_or_above = 1.0 - below_or_at + current
        ratio = m / np.maximum(below_or_at, _TINY)
        left = ratio.sum(1, keepdims=True) - np.cumsum(ratio, axis=1) + ratio
        right = np.cumsum(a / np.maximum(at_or_above, _TINY), axis=1)
        updated = (e + current * (left + right) + w) / norm
        if iteration % 10 == 9:
            moving = np.abs(updated - current).max(axis=1) >= tolerance
            p[active] = updated
            if not moving.all():
                active = active[moving]
                e, m, a = e[moving], m[moving], a[moving]
                w, norm, updated = w[moving], norm[moving], updated[moving]
                if len(active) == 0:
                    return p
        current = updated
    p[active] = current
    return p


@dataclass
class WinCurves:
    """Fitted curves: `cdf[row, k] = P(D <= edges[k])`, one row per segment prefix."""

    grid: PriceGrid
    rows: dict[tuple[int, ...], int]
    cdf: np.ndarray
    observations: np.ndarray
    """Observations behind each row's own fit."""
    _log_edges: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._log_edges = np.log(self.grid.edges)

    def row(self, key: tuple[int, ...]) -> int:
        """The row of a segment, or of its longest fitted prefix (the root at worst)."""
        key = tuple(key)
        while key not in self.rows:
            key = key[:-1]
        return self.rows[key]

    def win_probability(self, row: int, bid_micros) -> np.ndarray | float:
        """P(win) at these bids: the CDF interpolated linearly in log price between edges."""
        bid = np.asarray(bid_micros, dtype=np.float64)
        log_bid = np.log(np.maximum(bid, 1.0))
        result = np.interp(log_bid, self._log_edges, self.cdf[row])
        return float(result) if result.ndim == 0 else result


def segment_radix(segments: np.ndarray) -> np.ndarray:
    """The number of values of each segment column (max code + 1), for `prefix_codes`."""
    if segments.shape[0] == 0 or segments.shape[1] == 0:
        return np.ones(segments.shape[1], dtype=np.int64)
    if segments.min() < 0:
        raise PricingError("segment codes must be >= 0")
    radix = segments.max(axis=0).astype(np.int64) + 1
    if float(np.prod(radix.astype(np.float64))) >= 2.0**62:
        raise PricingError("segment codes: too many combinations to index (over 2**62)")
    return radix


def prefix_codes(segments: np.ndarray, level: int, radix: np.ndarray) -> np.ndarray:
    """One int64 per row for its first `level` codes (mixed radix): sorting one integer
    column is far faster than sorting rows."""
    code = np.zeros(segments.shape[0], dtype=np.int64)
    for column in range(level):
        code = code * radix[column] + segments[:, column]
    return code


def _histogram(
    node: np.ndarray, nodes: int, cells: int, mask: np.ndarray, cell: np.ndarray
) -> np.ndarray:
    """Counts of the masked observations by (segment node, bin)."""
    flat = np.bincount(node[mask] * cells + cell[mask], minlength=nodes * cells)
    return flat.reshape(nodes, cells).astype(np.float64)


def fit_win_curves(
    grid: PriceGrid,
    segments: np.ndarray,
    first_cell: np.ndarray,
    last_cell: np.ndarray,
    *,
    prior_weight: float = 30.0,
    iterations: int = 300,
    min_observations: int = 50,
) -> WinCurves:
    """Curves for every prefix of the segment codes (`segments`: one row of codes per
    observation, shape (n, depth)); prefixes with fewer than `min_observations` are left out
    (their segments use their parent's curve)."""
    segments = np.asarray(segments, dtype=np.int64).reshape(len(first_cell), -1)
    depth = segments.shape[1]
    cells = grid.n_cells
    first_cell = np.asarray(first_cell, dtype=np.int64)
    last_cell = np.asarray(last_cell, dtype=np.int64)
    is_exact = first_cell == last_cell
    is_at_most = ~is_exact & (first_cell == 0)
    is_above = ~is_exact & ~is_at_most
    if np.any(is_above & (last_cell != cells - 1)):
        raise PricingError("censored intervals must be exact, from 0, or to the top bin")
    radix = segment_radix(segments)
    rows: dict[tuple[int, ...], int] = {}
    curves: list[np.ndarray] = []
    counts: list[int] = []
    parent_p: dict[tuple[int, ...], np.ndarray] = {}
    # The root's prior is flat over the bins: it only keeps empty bins above zero.
    root_prior = np.full((1, cells), 1.0 / cells)
    for level in range(depth + 1):
        if level == 0:
            keys = np.zeros((1, 0), dtype=np.int64)
            node = np.zeros(len(first_cell), dtype=np.int64)
        else:
            codes = prefix_codes(segments, level, radix)
            unique_codes, node = np.unique(codes, return_inverse=True)
            node = node.reshape(-1)
            first_seen = np.zeros(len(unique_codes), dtype=np.int64)
            first_seen[node[::-1]] = np.arange(len(node))[::-1]
            keys = segments[first_seen, :level]
        n_nodes = len(keys)

        exact = _histogram(node, n_nodes, cells, is_exact, first_cell)
        at_most = _histogram(node, n_nodes, cells, is_at_most, last_cell)
        above = _histogram(node, n_nodes, cells, is_above, first_cell)
        n_obs = (exact.sum(1) + at_most.sum(1) + above.sum(1)).astype(np.int64)
        key_tuples = [tuple(int(v) for v in k) for k in keys]
        if level == 0:
            prior = root_prior
            weight = 1.0
        else:
            prior = np.stack([parent_p.get(k[:-1], root_prior[0]) for k in key_tuples])
            weight = prior_weight
        keep = n_obs >= (min_observations if level else 0)
        if not keep.any():
            break
        p = turnbull(
            exact[keep], at_most[keep], above[keep], prior[keep], weight, iterations=iterations
        )
        for key, probabilities, count in zip(
            (k for k, kept in zip(key_tuples, keep, strict=True) if kept),
            p,
            n_obs[keep],
            strict=True,
        ):
            parent_p[key] = probabilities
            rows[key] = len(curves)
            curves.append(np.cumsum(probabilities)[: grid.bins + 1])
            counts.append(int(count))
    cdf = np.minimum(np.stack(curves), 1.0)
    return WinCurves(grid, rows, cdf, np.asarray(counts, dtype=np.int64))


def win_probability_one(curves: WinCurves, row: int, bid_micros: float) -> float:
    """`win_probability` of one bid without numpy (for a caller pricing one candidate)."""
    if bid_micros <= curves.grid.low_micros:
        return float(curves.cdf[row, 0])
    edges = curves._log_edges
    position = (math.log(bid_micros) - edges[0]) / (edges[1] - edges[0])
    index = int(position)
    if index >= curves.grid.bins:
        return float(curves.cdf[row, -1])
    fraction = position - index
    cdf = curves.cdf[row]
    return float(cdf[index] + (cdf[index + 1] - cdf[index]) * fraction)
