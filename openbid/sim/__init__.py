"""The simulated market: publisher traffic, DSPs with hidden rules, users who click.

It has a known ground truth (every DSP's true bid probability, every user's true click
probability) against which openbid's models are measured. Serving code never imports this
package, and this package never imports serving code.
"""

from openbid.sim.config import MarketConfig, MarketError, load_market_config
from openbid.sim.features import REQUEST_FEATURES, RequestFeatures
from openbid.sim.generator import RequestBatch
from openbid.sim.market import Market
from openbid.sim.truth import (
    DspOutcomes,
    Impressions,
    click_probability,
    true_bid_probability,
)

__all__ = [
    "REQUEST_FEATURES",
    "DspOutcomes",
    "Impressions",
    "Market",
    "MarketConfig",
    "MarketError",
    "RequestBatch",
    "RequestFeatures",
    "click_probability",
    "load_market_config",
    "true_bid_probability",
]
