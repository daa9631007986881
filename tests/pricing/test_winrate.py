"""The win-rate curve from censored wins and losses recovers a known landscape."""

import numpy as np
import pytest

from openbid.pricing import PriceGrid, PricingError, censored_intervals, fit_win_curves

GRID = PriceGrid(low_micros=10_000, high_micros=100_000_000, bins=96)
NOBODY_SHARE = 0.1
MEDIAN, SIGMA = 1_500_000.0, 0.6


def true_cdf(x):
    """P(D <= x): nobody else bids 10% of the time, else a log-normal highest bid."""
    from math import erf, log, sqrt

    x = np.atleast_1d(np.asarray(x, dtype=float))
    normal = np.array([0.5 * (1 + erf((log(v) - log(MEDIAN)) / (SIGMA * sqrt(2)))) for v in x])
    return NOBODY_SHARE + (1 - NOBODY_SHARE) * normal


def landscape(n, seed):
    rng = np.random.default_rng(seed)
    competing = rng.lognormal(np.log(MEDIAN), SIGMA, n)
    competing[rng.random(n) < NOBODY_SHARE] = 0.0
    bids = np.exp(rng.uniform(np.log(3e5), np.log(6e6), n))
    return rng, competing, bids


CHECK = np.geomspace(5e5, 4e6, 12)


def fitted_error(curves, key=()):
    fitted = curves.win_probability(curves.row(key), CHECK)
    return float(np.abs(fitted - true_cdf(CHECK)).max())


def root(n):
    return np.zeros((n, 0), dtype=np.int64)


@pytest.mark.parametrize("loss_price_share", [0.0, 0.5])
def test_first_price_censored_estimate_recovers_the_landscape(loss_price_share):
    rng, competing, bids = landscape(40_000, seed=1)
    won = bids > competing
    told = ~won & (rng.random(len(bids)) < loss_price_share)
    first, last = censored_intervals(GRID, bids, won, np.where(told, competing, 0))
    curves = fit_win_curves(GRID, root(len(bids)), first, last)
    assert fitted_error(curves) < 0.03


def test_ignoring_the_censoring_is_far_off():
    """The same data read naively (the empirical law of the prices the loss notices told,
    which are all above our bids) misses the landscape: the censoring is what matters."""
    rng, competing, bids = landscape(40_000, seed=1)
    won = bids > competing
    told = ~won & (rng.random(len(bids)) < 0.5)
    naive = np.searchsorted(np.sort(competing[told]), CHECK) / told.sum()
    assert np.abs(naive - true_cdf(CHECK)).max() > 0.15


def test_second_price_prices_paid_are_exact_observations():
    rng, competing, bids = landscape(40_000, seed=2)
    won = bids > competing
    paid = np.where(won, np.maximum(competing, 10_000), 0)
    first, last = censored_intervals(GRID, bids, won, paid, second_price=True, floor_micros=0)
    assert np.all(first[won & (competing > 0)] == last[won & (competing > 0)])
    curves = fit_win_curves(GRID, root(len(bids)), first, last)
    assert fitted_error(curves) < 0.03


def test_intervals_say_what_each_outcome_tells():
    bids = np.array([1e6, 1e6, 1e6, 1e6])
    won = np.array([True, False, False, True])
    known = np.array([0, 2e6, 0, 0])
    first, last = censored_intervals(GRID, bids, won, known)
    edge = int(GRID.nearest_edge(1e6))
    assert (first[0], last[0]) == (0, edge)  # a first-price win: D <= bid
    assert first[1] == last[1] == int(GRID.cell(2e6))  # a told loss: D exactly
    assert (first[2], last[2]) == (edge + 1, GRID.n_cells - 1)  # an untold loss: D > bid
    floor = np.array([0, 0, 0, 8e5])
    paid = np.array([7e5, 0, 0, 8e5])
    first, last = censored_intervals(GRID, bids, won, paid, second_price=True, floor_micros=floor)
    assert first[0] == last[0] == int(GRID.cell(7e5))  # paid above the floor: D exactly
    assert (first[3], last[3]) == (0, int(GRID.nearest_edge(8e5)))  # paid the floor: D <= it


def test_a_segment_with_little_data_uses_its_parents_curve():
    _, cheap, cheap_bids = landscape(20_000, seed=3)
    expensive = cheap * 3.0
    segments = np.zeros((20_000 + 30, 1), dtype=np.int64)
    segments[20_000:] = 1
    bids = np.concatenate([cheap_bids, cheap_bids[:30]])
    competing = np.concatenate([cheap, expensive[:30]])
    first, last = censored_intervals(GRID, bids, bids > competing)
    curves = fit_win_curves(GRID, segments, first, last, min_observations=50)
    assert curves.row((1,)) == curves.row(())  # 30 observations: not fitted alone
    assert curves.row((0,)) != curves.row(())
    assert curves.row((5,)) == curves.row(())  # never seen: the root


def test_segments_with_enough_data_follow_their_own_landscape():
    _, competing, bids = landscape(30_000, seed=4)
    segments = (np.arange(30_000) % 2).reshape(-1, 1)
    competing = np.where(segments[:, 0] == 1, competing * 3.0, competing)
    first, last = censored_intervals(GRID, bids, bids > competing)
    curves = fit_win_curves(GRID, segments, first, last)
    cheap = curves.win_probability(curves.row((0,)), MEDIAN)
    dear = curves.win_probability(curves.row((1,)), MEDIAN * 3.0)
    assert abs(cheap - true_cdf(MEDIAN)[0]) < 0.04
    assert abs(dear - true_cdf(MEDIAN)[0]) < 0.04
    assert curves.win_probability(curves.row((1,)), MEDIAN) < cheap - 0.2


def test_bad_grids_and_intervals_are_refused():
    with pytest.raises(PricingError, match="PriceGrid"):
        PriceGrid(low_micros=10, high_micros=5)
    with pytest.raises(PricingError, match="censored intervals"):
        fit_win_curves(GRID, root(1), np.array([3]), np.array([5]))
