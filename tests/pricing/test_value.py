"""Value: goal x probability as a CPM in micros, with caps and floors, for batches."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.pricing import (
    GOAL_CPA,
    GOAL_CPC,
    GOAL_CPM,
    PricingError,
    goal_code,
    value_cpm_micros,
)

CASES = [
    # goal, amount (micros), p_click, p_conversion, expected CPM micros
    (GOAL_CPM, 2_500_000, 0.3, 0.5, 2_500_000),  # CPM ignores the probabilities
    (GOAL_CPC, 1_000_000, 0.002, 0.0, 2_000_000),  # $1 a click at 0.2%: $2 CPM
    (GOAL_CPC, 250_000, 0.0, 0.0, 0),
    (GOAL_CPA, 40_000_000, 0.01, 0.05, 20_000_000),  # $40 an action, 1% x 5%: $20 CPM
    (GOAL_CPA, 40_000_000, 0.01, 0.0, 0),
]


@pytest.mark.parametrize(("goal", "amount", "p_click", "p_conversion", "expected"), CASES)
def test_value_of_each_goal(goal, amount, p_click, p_conversion, expected):
    value = value_cpm_micros(goal, amount, np.array([p_click]), np.array([p_conversion]))
    assert value.tolist() == [expected]
    assert value.dtype == np.int64


def test_a_batch_of_mixed_goals_is_priced_in_one_call():
    goals = np.array([row[0] for row in CASES])
    amounts = np.array([row[1] for row in CASES])
    clicks = np.array([row[2] for row in CASES])
    conversions = np.array([row[3] for row in CASES])
    assert value_cpm_micros(goals, amounts, clicks, conversions).tolist() == [
        row[4] for row in CASES
    ]


def test_caps_lower_and_floors_raise_per_campaign():
    clicks = np.array([0.0005, 0.002, 0.02])
    value = value_cpm_micros(
        GOAL_CPC,
        1_000_000,
        clicks,
        max_bid_cpm_micros=np.array([0, 5_000_000, 5_000_000]),
        min_bid_cpm_micros=np.array([800_000, 0, 0]),
    )
    assert value.tolist() == [800_000, 2_000_000, 5_000_000]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (dict(goal=GOAL_CPC, goal_amount_micros=1, p_click=np.array([np.nan])), "p_click"),
        (dict(goal=GOAL_CPC, goal_amount_micros=1, p_click=np.array([1.5])), "p_click"),
        (
            dict(goal=GOAL_CPA, goal_amount_micros=1, p_click=0.1, p_conversion=np.array([-0.1])),
            "p_conversion",
        ),
        (dict(goal=7, goal_amount_micros=1, p_click=0.1), "goal"),
        (dict(goal=GOAL_CPM, goal_amount_micros=-5, p_click=0.1), "goal_amount_micros"),
        (dict(goal=GOAL_CPM, goal_amount_micros=5, p_click=0.1, max_bid_cpm_micros=-1), "max_bid"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(arguments, field):
    with pytest.raises(PricingError, match=field):
        value_cpm_micros(**arguments)


def test_goal_names_are_read_leniently_and_unknown_ones_named():
    assert [goal_code(name) for name in ("cpm", " CPC ", "Cpa")] == [GOAL_CPM, GOAL_CPC, GOAL_CPA]
    with pytest.raises(PricingError, match="goal.*'cpx'"):
        goal_code("cpx")


@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50),
    st.integers(0, 50_000_000),
    st.integers(0, 3_000_000),
    st.integers(0, 30_000_000),
)
def test_cpc_values_rise_with_the_click_probability_and_stay_within_floor_and_cap(
    clicks, amount, floor, cap
):
    p = np.sort(np.asarray(clicks))
    value = value_cpm_micros(GOAL_CPC, amount, p, max_bid_cpm_micros=cap, min_bid_cpm_micros=floor)
    assert np.all(np.diff(value) >= 0)
    assert np.all(value >= floor)
    if cap and cap >= floor:
        assert np.all(value <= cap)
