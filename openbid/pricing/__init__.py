"""Pricing: what an impression is worth to a campaign (goal x predicted probability, with
caps and floors), the win rate as a function of the bid learned from censored wins and
losses, and first-price bid shading to the surplus-maximising price."""

from openbid.pricing.shader import Shader, WinLog
from openbid.pricing.shading import (
    FIRST_PRICE,
    SECOND_PRICE,
    ShadingTable,
    best_bids,
    expected_surplus,
)
from openbid.pricing.value import (
    GOAL_CPA,
    GOAL_CPC,
    GOAL_CPM,
    GOALS,
    PricingError,
    goal_code,
    value_cpm_micros,
)
from openbid.pricing.winrate import (
    PriceGrid,
    WinCurves,
    censored_intervals,
    fit_win_curves,
    turnbull,
    win_probability_one,
)

__all__ = [
    "FIRST_PRICE",
    "GOALS",
    "GOAL_CPA",
    "GOAL_CPC",
    "GOAL_CPM",
    "SECOND_PRICE",
    "PriceGrid",
    "PricingError",
    "Shader",
    "ShadingTable",
    "WinCurves",
    "WinLog",
    "best_bids",
    "censored_intervals",
    "expected_surplus",
    "fit_win_curves",
    "goal_code",
    "turnbull",
    "value_cpm_micros",
    "win_probability_one",
]
