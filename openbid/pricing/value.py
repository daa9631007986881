"""What an impression is worth to a campaign: its goal amount times the predicted probability
of the event it pays for, as a CPM bid in integer micros, for a batch of candidates at once.

| goal | value per impression | as a CPM |
| --- | --- | --- |
| CPM | the amount | the amount |
| CPC | amount x pCTR | amount x pCTR x 1000 |
| CPA | amount x pCTR x pCVR (pCVR: conversion given a click) | x 1000 |

A campaign's bid cap (`max_bid_cpm_micros`) lowers a value above it; its floor
(`min_bid_cpm_micros`) raises a value below it (0 means none, for either). Arguments are numpy
arrays of one value per candidate, or scalars that apply to all of them.

>>> value_cpm_micros(
...     goal=np.array([GOAL_CPM, GOAL_CPC, GOAL_CPA]),
...     goal_amount_micros=np.array([2_000_000, 500_000, 20_000_000]),
...     p_click=np.array([0.01, 0.004, 0.01]),
...     p_conversion=np.array([0.0, 0.0, 0.05]),
... ).tolist()
[2000000, 2000000, 10000000]
>>> value_cpm_micros(GOAL_CPC, 500_000, np.array([0.001, 0.05]),
...                  max_bid_cpm_micros=5_000_000, min_bid_cpm_micros=800_000).tolist()
[800000, 5000000]
"""

from __future__ import annotations

import numpy as np

from openbid.errors import OpenbidError

GOAL_CPM = 0
GOAL_CPC = 1
GOAL_CPA = 2
GOALS = {"cpm": GOAL_CPM, "cpc": GOAL_CPC, "cpa": GOAL_CPA}
"""Goal names as catalogs write them, and their codes."""
IMPRESSIONS_PER_CPM = 1000.0


class PricingError(OpenbidError, ValueError):
    """Inputs a price cannot be computed from; the message names the argument."""


def goal_code(name: str) -> int:
    """The code of a goal name (`cpm`, `cpc`, `cpa`; any case).

    >>> goal_code("CPC")
    1
    """
    try:
        return GOALS[name.strip().lower()]
    except KeyError:
        raise PricingError(f"goal: expected one of cpm, cpc, cpa, got {name!r}") from None


def _probabilities(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    # One pass answers both questions: NaN fails the comparison, and so does a value outside
    # [0, 1] (a probability of exactly 0 or 1 passes).
    if array.size and not (array.min() >= 0.0 and array.max() <= 1.0):
        bad = array[~((array >= 0.0) & (array <= 1.0))]
        raise PricingError(f"{name}: probabilities must be in [0, 1], got {bad[:3].tolist()}")
    return array


def _scalar_goal(goal) -> int | None:
    """The goal code when one goal applies to the whole batch (the common case: one
    campaign's candidates), else None."""
    if isinstance(goal, int | np.integer):
        code = int(goal)
    elif np.ndim(goal) == 0:
        code = int(np.asarray(goal))
    else:
        return None
    if code not in (GOAL_CPM, GOAL_CPC, GOAL_CPA):
        raise PricingError(f"goal: codes must be {GOAL_CPM}, {GOAL_CPC} or {GOAL_CPA}")
    return code


def value_cpm_micros(
    goal,
    goal_amount_micros,
    p_click,
    p_conversion=0.0,
    *,
    max_bid_cpm_micros=0,
    min_bid_cpm_micros=0,
) -> np.ndarray:
    """The CPM value of each candidate, in integer micros (int64).

    `goal` holds `GOAL_CPM`, `GOAL_CPC` or `GOAL_CPA` codes; `goal_amount_micros` the
    campaign's price per thousand impressions, per click or per action; `p_click` and
    `p_conversion` calibrated probabilities (conversion given a click). A CPM goal ignores
    the probabilities. Raises `PricingError` naming the argument on an unknown goal, a
    negative amount or a probability outside [0, 1] (NaN included).
    """
    amount = np.asarray(goal_amount_micros, dtype=np.float64)
    if amount.size and not amount.min() >= 0:
        raise PricingError("goal_amount_micros: must be >= 0")
    click = _probabilities("p_click", p_click)
    code = _scalar_goal(goal)
    if code == GOAL_CPC:
        value = amount * IMPRESSIONS_PER_CPM * click
    elif code == GOAL_CPA:
        conversion = _probabilities("p_conversion", p_conversion)
        value = amount * IMPRESSIONS_PER_CPM * click * conversion
    elif code == GOAL_CPM:
        value = np.broadcast_to(amount, np.broadcast_shapes(amount.shape, click.shape))
    else:
        goal = np.asarray(goal)
        if goal.size and (goal.min() < GOAL_CPM or goal.max() > GOAL_CPA):
            raise PricingError(f"goal: codes must be {GOAL_CPM}, {GOAL_CPC} or {GOAL_CPA}")
        conversion = _probabilities("p_conversion", p_conversion)
        per_event = np.where(goal == GOAL_CPA, click * conversion, click)
        value = np.where(goal == GOAL_CPM, amount, amount * per_event * IMPRESSIONS_PER_CPM)
    value = np.rint(value).astype(np.int64)
    if np.ndim(max_bid_cpm_micros) or max_bid_cpm_micros:
        cap = np.asarray(max_bid_cpm_micros, dtype=np.int64)
        if cap.size and cap.min() < 0:
            raise PricingError("max_bid_cpm_micros: must be >= 0 (0: none)")
        value = np.where(cap > 0, np.minimum(value, cap), value)
    if np.ndim(min_bid_cpm_micros) or min_bid_cpm_micros:
        floor = np.asarray(min_bid_cpm_micros, dtype=np.int64)
        if floor.size and floor.min() < 0:
            raise PricingError("min_bid_cpm_micros: must be >= 0 (0: none)")
        value = np.maximum(value, floor)
    return value
