"""The oracle: true probabilities and realised draws of a generated batch, by request id.

Benchmarks measure models against it (the best any model could do), and tests check that
what the DSP servers and users actually did is what it says.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from openbid.sim.generator import RequestBatch
from openbid.sim.market import Market
from openbid.sim.truth import DspOutcomes, click_probabilities


class Oracle:
    """Ground truth for the requests of one batch.

    >>> market = Market.load("default")
    >>> batch = market.generate(2000, seed=5)
    >>> oracle = Oracle(market, batch)
    >>> request_id = batch.request_ids[0]
    >>> 0.0 <= oracle.bid_probability(request_id, "fjord") <= 1.0
    True
    >>> oracle.would_bid(request_id, "fjord") == bool(market.dsp_outcomes(batch).bid[0, 5])
    True
    """

    def __init__(self, market: Market, batch: RequestBatch) -> None:
        self.market = market
        self.batch = batch
        self._rows = {request_id: row for row, request_id in enumerate(batch.request_ids)}

    @cached_property
    def outcomes(self) -> DspOutcomes:
        """Every DSP's decision on every request of the batch."""
        return self.market.dsp_outcomes(self.batch)

    @property
    def bid_probabilities(self) -> np.ndarray:
        """True bid probabilities, shape (requests, DSPs), in `market.dsps` order."""
        return self.outcomes.probability

    def row(self, request_id: str) -> int:
        try:
            return self._rows[request_id]
        except KeyError:
            raise KeyError(f"request {request_id!r} is not in this oracle's batch") from None

    def bid_probability(self, request_id: str, dsp: str) -> float:
        """The true probability that `dsp` bids on the request."""
        return float(self.outcomes.probability[self.row(request_id), self.market.dsp(dsp).index])

    def would_bid(self, request_id: str, dsp: str) -> bool:
        """Whether `dsp` bids on the request (its seeded draw, as its server makes it)."""
        return bool(self.outcomes.bid[self.row(request_id), self.market.dsp(dsp).index])

    def click_probability(self, request_id: str, advertiser: str) -> float:
        """The true probability that the request's user clicks the ad of `advertiser`."""
        row = self.row(request_id)
        code = self.market.vocab["advertiser"].code(advertiser)
        return float(
            click_probabilities(self.market, self.batch.codes[row : row + 1], np.asarray([code]))[0]
        )
