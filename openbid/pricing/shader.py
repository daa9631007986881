"""The shading loop: keep our recent bid outcomes, refit the win curves off the hot path, and
swap in the new lookup table.

`WinLog` is a bounded ring of outcomes (segment codes, bid, won, the clearing price when a
loss notice told it). `Shader.refit()` fits `winrate.fit_win_curves` on it and builds a
`ShadingTable`; bidding reads `shader.table` and `shader.rows_of(...)`, which a refit
replaces in one assignment each, so a bid never sees half a refit. Until the first refit
(no data yet) `bids` bids the value (no shading), and so does a second-price auction.
"""

from __future__ import annotations

import time

import numpy as np

from openbid.pricing.shading import FIRST_PRICE, ShadingTable
from openbid.pricing.value import PricingError
from openbid.pricing.winrate import (
    PriceGrid,
    WinCurves,
    censored_intervals,
    fit_win_curves,
    prefix_codes,
    segment_radix,
)


class WinLog:
    """The last `capacity` first-price outcomes, as arrays."""

    def __init__(self, depth: int, capacity: int = 2_000_000) -> None:
        if depth < 0 or capacity < 1:
            raise PricingError("WinLog: depth >= 0 and capacity >= 1")
        self.depth = depth
        self.capacity = capacity
        self._segments = np.zeros((capacity, depth), dtype=np.int64)
        self._bids = np.zeros(capacity, dtype=np.int64)
        self._won = np.zeros(capacity, dtype=bool)
        self._loss_price = np.zeros(capacity, dtype=np.int64)
        self._next = 0
        self.total = 0

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    def add(self, segments, bid_micros, won, loss_price_micros) -> None:
        """Appends outcomes of bids that were made (bid > 0); the oldest fall out."""
        n = len(np.asarray(bid_micros))
        segments = np.asarray(segments, dtype=np.int64).reshape(n, self.depth)
        if n > self.capacity:
            keep = slice(n - self.capacity, n)
            segments, n = segments[keep], self.capacity
            bid_micros, won = np.asarray(bid_micros)[keep], np.asarray(won)[keep]
            loss_price_micros = np.asarray(loss_price_micros)[keep]
        at = (self._next + np.arange(n)) % self.capacity
        self._segments[at] = segments
        self._bids[at] = bid_micros
        self._won[at] = won
        self._loss_price[at] = loss_price_micros
        self._next = int((self._next + n) % self.capacity)
        self.total += n

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(segments, bids, won, loss prices) of what the log holds."""
        n = len(self)
        return self._segments[:n], self._bids[:n], self._won[:n], self._loss_price[:n]


class Shader:
    """Win curves and the shading table of one bidder, refitted from its `WinLog`."""

    def __init__(
        self,
        depth: int,
        grid: PriceGrid | None = None,
        *,
        capacity: int = 2_000_000,
        prior_weight: float = 30.0,
        min_observations: int = 50,
        iterations: int = 200,
    ) -> None:
        self.grid = grid or PriceGrid()
        self.log = WinLog(depth, capacity)
        self.prior_weight = prior_weight
        self.min_observations = min_observations
        self.iterations = iterations
        self.curves: WinCurves | None = None
        self.table: ShadingTable | None = None
        self.refit_cpu_s = 0.0
        """CPU time of the last refit (fit and table)."""
        self._radix = np.ones(depth, dtype=np.int64)

    def observe(self, segments, bid_micros, won, loss_price_micros) -> None:
        bid = np.asarray(bid_micros)
        made = bid > 0
        self.log.add(
            np.asarray(segments)[made],
            bid[made],
            np.asarray(won)[made],
            np.asarray(loss_price_micros)[made],
        )

    def refit(self) -> bool:
        """Fits new curves and a new table from the log; False when the log is empty."""
        started = time.process_time()
        segments, bids, won, loss_price = self.log.arrays()
        if len(bids) == 0:
            return False
        first, last = censored_intervals(self.grid, bids, won, loss_price)
        curves = fit_win_curves(
            self.grid,
            segments,
            first,
            last,
            prior_weight=self.prior_weight,
            iterations=self.iterations,
            min_observations=self.min_observations,
        )
        table = ShadingTable.from_curves(curves)
        self._radix = segment_radix(segments)
        self.curves, self.table = curves, table
        self.refit_cpu_s = time.process_time() - started
        return True

    def rows_of(self, segments) -> np.ndarray:
        """The table row of each segment (its longest fitted prefix)."""
        curves = self.curves
        if curves is None:
            raise PricingError("Shader.rows_of: no curves yet (refit first)")
        segments = np.asarray(segments, dtype=np.int64)
        segments = segments.reshape(len(segments), self.log.depth)
        radix = np.maximum(segment_radix(segments), self._radix)
        codes = prefix_codes(segments, self.log.depth, radix)
        unique, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        keys = segments[first].tolist()
        rows = np.fromiter((curves.row(tuple(k)) for k in keys), np.int64, len(unique))
        return rows[inverse.reshape(-1)]

    def bids(self, segments, value_micros, floor_micros, at: int = FIRST_PRICE) -> np.ndarray:
        """Shaded bids for a batch (0 where the value does not reach the floor)."""
        value = np.asarray(value_micros, dtype=np.int64)
        floor = np.asarray(floor_micros, dtype=np.int64)
        if self.table is None or at != FIRST_PRICE:
            return np.where((value > 0) & (value >= floor), value, 0)
        return self.table.shade_many(self.rows_of(segments), value, floor, at)
