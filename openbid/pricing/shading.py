"""First-price bid shading: bid the price that maximises the expected surplus
(value - price) x P(win | price), from a segment's learned win curve (`winrate`).

In a first-price auction the winner pays its bid, so bidding the full value earns nothing
when it wins; bidding lower wins less often but keeps the difference. For every segment the
best bid is computed once for a log-spaced grid of values (`ShadingTable.build`, off the hot
path: a refit builds a new table and swaps one reference); a bid is then a lookup and a
linear interpolation of the bid/value ratio (`shade`, about a microsecond in pure Python,
or `shade_many` for a batch). A second-price auction charges the price that would have won,
so bidding the value is already best there: shading is off (`at=2` returns the value).

>>> from openbid.pricing.winrate import PriceGrid
>>> grid = PriceGrid(low_micros=10_000, high_micros=100_000_000, bins=200)
>>> cdf = np.clip(grid.edges / 8e6, 0, 1)          # D uniform on [0, 8 CPM]: best bid v/2
>>> table = ShadingTable.build(grid, cdf[None, :])
>>> round(table.shade(0, 4_000_000) / 1e6, 1), table.shade(0, 4_000_000, at=SECOND_PRICE)
(2.0, 4000000)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from openbid.pricing.winrate import PriceGrid, WinCurves

FIRST_PRICE = 1
SECOND_PRICE = 2
"""OpenRTB's `at`: 1 first price, 2 second price plus."""


def expected_surplus(value_micros, bid_micros, win_probability) -> np.ndarray:
    """(value - bid) x P(win | bid): what a first-price bid earns on average."""
    return (np.asarray(value_micros) - np.asarray(bid_micros)) * np.asarray(win_probability)


@numba.njit(cache=True)
def _best_bids_kernel(
    log_edges: np.ndarray, curves: np.ndarray, values: np.ndarray, per_bin: int
) -> np.ndarray:
    """For each curve (row) and value: the bid maximising (value - bid) x W(bid), searched
    over `per_bin` candidates a bin (W is linear in log price inside one) and refined to the
    vertex of the parabola through the best candidate and its neighbours."""
    n_edges = log_edges.shape[0]
    n_candidates = (n_edges - 1) * per_bin + 1
    log_candidates = np.empty(n_candidates)
    edge_of = np.empty(n_candidates, dtype=np.int64)
    fraction = np.empty(n_candidates)
    for k in range(n_edges - 1):
        for step in range(per_bin):
            j = k * per_bin + step
            f = step / per_bin
            log_candidates[j] = log_edges[k] + (log_edges[k + 1] - log_edges[k]) * f
            edge_of[j] = k
            fraction[j] = f
    log_candidates[-1] = log_edges[-1]
    edge_of[-1] = n_edges - 2
    fraction[-1] = 1.0
    candidates = np.exp(log_candidates)
    step_log = log_candidates[1] - log_candidates[0]
    result = np.empty((curves.shape[0], values.shape[0]))
    win = np.empty(n_candidates)
    for row in range(curves.shape[0]):
        for j in range(n_candidates):
            k = edge_of[j]
            win[j] = curves[row, k] * (1.0 - fraction[j]) + curves[row, k + 1] * fraction[j]
        for i in range(values.shape[0]):
            value = values[i]
            best, best_surplus = -1, 0.0
            for j in range(n_candidates):
                if candidates[j] > value:
                    break
                surplus = (value - candidates[j]) * win[j]
                if best < 0 or surplus > best_surplus:
                    best, best_surplus = j, surplus
            if best < 0:  # the value is below every candidate: bid it (earns 0)
                result[row, i] = value
                continue
            log_bid = log_candidates[best]
            if 0 < best < n_candidates - 1 and candidates[best + 1] <= value:
                left = (value - candidates[best - 1]) * win[best - 1]
                right = (value - candidates[best + 1]) * win[best + 1]
                curvature = left - 2.0 * best_surplus + right
                if curvature < 0.0:
                    offset = 0.5 * (left - right) / curvature
                    log_bid += min(max(offset, -0.5), 0.5) * step_log
            result[row, i] = min(np.exp(log_bid), value)
    return result


def best_bids(
    log_edges: np.ndarray, cdf: np.ndarray, values: np.ndarray, candidates_per_bin: int = 4
) -> np.ndarray:
    """The surplus-maximising bid for each value, for win curves given at the edges (`cdf`:
    P(D <= edge), one curve or one per row); one row of bids per curve.

    >>> from openbid.pricing.winrate import PriceGrid
    >>> grid = PriceGrid(low_micros=1e4, high_micros=1e8, bins=200)
    >>> c = 1e6   # P(win | b) = b / (c + b): the best bid is sqrt(c^2 + c v) - c
    >>> bids = best_bids(np.log(grid.edges), grid.edges / (c + grid.edges), np.array([3e6, 8e6]))
    >>> np.round(bids / 1e6, 2).tolist()
    [1.0, 2.0]
    """
    curves = np.ascontiguousarray(np.atleast_2d(cdf), dtype=np.float64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    bids = _best_bids_kernel(np.asarray(log_edges, np.float64), curves, values, candidates_per_bin)
    return bids[0] if np.ndim(cdf) == 1 else bids


@dataclass
class ShadingTable:
    """Per segment row, the best bid/value ratio on a log grid of values."""

    log_value_low: float
    log_value_step: float
    ratios: list[list[float]]
    ratio_array: np.ndarray

    @classmethod
    def build(cls, grid: PriceGrid, cdf: np.ndarray, values_per_decade: int = 40) -> ShadingTable:
        """Best-bid ratios for every row of `cdf` (P(D <= edge), shape (rows, bins + 1))."""
        cdf = np.atleast_2d(np.asarray(cdf, dtype=np.float64))
        log_edges = np.log(grid.edges)
        decades = math.log10(grid.high_micros / grid.low_micros)
        count = max(int(decades * values_per_decade) + 1, 2)
        log_values = np.linspace(log_edges[0], log_edges[-1], count)
        values = np.exp(log_values)
        ratio_array = best_bids(log_edges, cdf, values) / values[None, :]
        # A best bid never falls as the value rises; interpolation keeps that only if the
        # grid points do, so small numerical dips are ironed out (cumulative max of bids).
        bids = np.maximum.accumulate(ratio_array * values[None, :], axis=1)
        ratio_array = np.minimum(bids / values[None, :], 1.0)
        return cls(
            log_value_low=float(log_values[0]),
            log_value_step=float(log_values[1] - log_values[0]),
            ratios=ratio_array.tolist(),
            ratio_array=ratio_array,
        )

    @classmethod
    def from_curves(cls, curves: WinCurves, values_per_decade: int = 40) -> ShadingTable:
        """The table of every row of fitted win curves (rows as in `curves.row`)."""
        return cls.build(curves.grid, curves.cdf, values_per_decade)

    def shade(
        self, row: int, value_micros: int, floor_micros: int = 0, at: int = FIRST_PRICE
    ) -> int:
        """The bid for one candidate: 0 (no bid) when the value does not reach the floor;
        the value in a second-price auction; else the shaded value, raised to the floor."""
        if value_micros <= 0 or value_micros < floor_micros:
            return 0
        if at == SECOND_PRICE:
            return value_micros
        ratios = self.ratios[row]
        position = (math.log(value_micros) - self.log_value_low) / self.log_value_step
        if position <= 0.0:
            ratio = ratios[0]
        elif position >= len(ratios) - 1:
            ratio = ratios[-1]
        else:
            index = int(position)
            ratio = ratios[index] + (ratios[index + 1] - ratios[index]) * (position - index)
        bid = int(value_micros * ratio)
        return bid if bid >= floor_micros else floor_micros

    def shade_many(self, rows, value_micros, floor_micros=0, at=FIRST_PRICE) -> np.ndarray:
        """`shade` for a batch (arrays, or scalars that apply to all); int64 micros."""
        value = np.asarray(value_micros, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        floor = np.asarray(floor_micros, dtype=np.int64)
        position = (np.log(np.maximum(value, 1)) - self.log_value_low) / self.log_value_step
        position = np.clip(position, 0.0, self.ratio_array.shape[1] - 1.000001)
        index = position.astype(np.int64)
        fraction = position - index
        table = self.ratio_array
        ratio = table[rows, index] + (table[rows, index + 1] - table[rows, index]) * fraction
        bid = np.maximum((value * ratio).astype(np.int64), floor)
        bid = np.where(np.asarray(at) == SECOND_PRICE, value, bid)
        return np.where((value > 0) & (value >= floor), bid, 0).astype(np.int64)
