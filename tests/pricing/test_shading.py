"""First-price shading: the surplus-maximising bid on known win curves, the lookup table,
the floor, and no shading in second price."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.pricing import (
    FIRST_PRICE,
    SECOND_PRICE,
    PriceGrid,
    ShadingTable,
    best_bids,
    expected_surplus,
)
from openbid.pricing.shader import Shader

GRID = PriceGrid(low_micros=10_000, high_micros=100_000_000, bins=192)
EDGES = GRID.edges
VALUES = np.array([5e5, 1e6, 3e6, 8e6, 2e7])

# Win curves with a closed-form surplus-maximising bid b*(v).
C = 2e6
M = 4e7
CLOSED_FORM = {
    # P(win | b) = b / (c + b) (Zhang et al. 2014's win function): b* = sqrt(c^2 + c v) - c
    "zhang": (EDGES / (C + EDGES), lambda v: np.sqrt(C * C + C * v) - C),
    # D uniform on [0, M]: maximise (v - b) b / M: b* = v / 2
    "uniform": (np.clip(EDGES / M, 0, 1), lambda v: v / 2),
    # D the largest of 3 uniform bids: P(win | b) = (b / M)^3: b* = 3 v / 4
    "three bidders": (np.clip(EDGES / M, 0, 1) ** 3, lambda v: 0.75 * v),
}


@pytest.mark.parametrize("curve", CLOSED_FORM)
def test_best_bid_matches_the_closed_form(curve):
    cdf, optimum = CLOSED_FORM[curve]
    bids = best_bids(np.log(EDGES), cdf, VALUES)
    np.testing.assert_allclose(bids, optimum(VALUES), rtol=0.015)


@pytest.mark.parametrize("curve", CLOSED_FORM)
def test_the_lookup_table_gives_the_closed_form_bid(curve):
    cdf, optimum = CLOSED_FORM[curve]
    table = ShadingTable.build(GRID, cdf[None, :])
    for value in VALUES:
        assert table.shade(0, int(value)) == pytest.approx(optimum(value), rel=0.015)


def test_the_shaded_bid_earns_more_than_bidding_the_value_or_half_of_it():
    cdf, _ = CLOSED_FORM["zhang"]
    table = ShadingTable.build(GRID, cdf[None, :])
    value = 8e6
    win = lambda b: b / (C + b)  # noqa: E731
    shaded = table.shade(0, int(value))
    for other in (value, value / 2, value / 4, shaded * 1.1, shaded * 0.9):
        assert expected_surplus(value, shaded, win(shaded)) >= expected_surplus(
            value, other, win(other)
        )


def test_shading_is_off_in_second_price():
    cdf, _ = CLOSED_FORM["uniform"]
    table = ShadingTable.build(GRID, cdf[None, :])
    assert table.shade(0, 3_000_000, at=SECOND_PRICE) == 3_000_000
    assert table.shade(0, 3_000_000, at=FIRST_PRICE) == pytest.approx(1_500_000, rel=0.015)
    many = table.shade_many(np.zeros(3), np.full(3, 3_000_000), 0, at=np.array([2, 1, 2]))
    assert many[0] == many[2] == 3_000_000 and many[1] < 2_000_000
    shader = Shader(depth=0)
    assert shader.bids(np.zeros((1, 0)), [3_000_000], [0], at=SECOND_PRICE).tolist() == [3_000_000]


def test_the_floor_raises_a_shaded_bid_and_a_value_under_it_is_no_bid():
    cdf, _ = CLOSED_FORM["uniform"]
    table = ShadingTable.build(GRID, cdf[None, :])
    assert table.shade(0, 3_000_000, floor_micros=2_000_000) == 2_000_000
    assert table.shade(0, 3_000_000, floor_micros=3_500_000) == 0
    assert table.shade(0, 3_000_000, floor_micros=3_500_000, at=SECOND_PRICE) == 0
    assert table.shade_many([0, 0], [3_000_000, 3_000_000], [2_000_000, 3_500_000]).tolist() == [
        2_000_000,
        0,
    ]


@given(
    st.lists(st.integers(1, 10**9), min_size=1, max_size=30),
    st.integers(0, 2),
    st.integers(0, 5_000_000),
)
def test_shade_and_shade_many_agree_and_never_bid_above_the_value(values, row, floor):
    tables = np.stack([CLOSED_FORM[name][0] for name in CLOSED_FORM])
    table = TABLE_CACHE.setdefault("t", ShadingTable.build(GRID, tables))
    many = table.shade_many(np.full(len(values), row), np.asarray(values), floor)
    one = [table.shade(row, v, floor) for v in values]
    for value, a, b in zip(values, many.tolist(), one, strict=True):
        assert abs(a - b) <= max(1, value * 1e-7)  # float rounding, same interpolation
        assert a <= value
        assert a == 0 or a >= floor


TABLE_CACHE: dict = {}


def test_shader_bids_the_value_until_it_has_data_then_shades_from_its_own_outcomes():
    rng = np.random.default_rng(5)
    shader = Shader(depth=1, grid=GRID)
    segments = np.zeros((1, 1), dtype=np.int64)
    assert shader.bids(segments, [4_000_000], [0]).tolist() == [4_000_000]
    assert not shader.refit()
    n = 30_000
    competing = rng.uniform(0, M, n)  # the uniform landscape: best bid v / 2
    bids = np.exp(rng.uniform(np.log(2e5), np.log(M), n)).astype(np.int64)
    won = bids > competing
    told = ~won & (rng.random(n) < 0.5)
    shader.observe(np.zeros((n, 1)), bids, won, np.where(told, competing, 0))
    assert shader.refit()
    # Near its top the surplus is flat (a bid 10% off the best one loses 1% of it), so the
    # bid is judged by the surplus it earns on the true curve, against the best bid's (v/2).
    for value in (4_000_000, 8_000_000, 16_000_000):
        bid = shader.bids(segments, [value], [0])[0]
        best = expected_surplus(value, value / 2, value / 2 / M)
        assert expected_surplus(value, bid, bid / M) >= 0.98 * best
