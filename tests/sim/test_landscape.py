"""The competitive landscape: D follows its stated law, varies by format and hour, and the
exchange settles first and second price by their rules."""

import numpy as np
import pytest

from openbid.sim.features import COLUMN
from openbid.sim.landscape import Landscape, LandscapeConfig
from openbid.sim.truth import click_probabilities


@pytest.fixture(scope="module")
def sample(market):
    batch = market.generate(60_000, seed=11, start_s=market.start_s, span_s=86_400)
    outcomes = market.dsp_outcomes(batch)
    first = Landscape(market)
    second = Landscape(market, LandscapeConfig(auction="second"))
    return batch, outcomes, first, first.competition(batch, outcomes), second


@pytest.mark.parametrize("bid_cpm", [0.5, 1.0, 2.0, 5.0, 15.0])
def test_sampled_competition_follows_the_true_win_curve(sample, bid_cpm):
    batch, _, landscape, competition, _ = sample
    bids = np.full(len(batch), int(bid_cpm * 1e6))
    predicted = landscape.win_probability(competition, bids)
    won = landscape.settle(competition, bids).won
    assert won.mean() == pytest.approx(predicted.mean(), abs=0.01)
    video = batch.column("format") == batch.market.vocab["format"].code("video")
    assert won[video].mean() == pytest.approx(predicted[video].mean(), abs=0.03)


def test_video_costs_more_than_banner_and_evenings_more_than_mornings(sample):
    batch, _, _, competition, _ = sample
    vocab = batch.market.vocab
    d = competition.competing_micros
    fmt = batch.column("format")
    hour = batch.column("hour")

    def median(mask):
        return np.median(d[mask & (d > 0)])

    assert median(fmt == vocab["format"].code("video")) > 3 * median(
        fmt == vocab["format"].code("banner")
    )
    evening = np.isin(hour, [vocab["hour"].code(str(h)) for h in (0, 1, 19, 20)])
    morning = np.isin(hour, [vocab["hour"].code(str(h)) for h in (6, 7, 8)])
    assert median(evening) > 1.3 * median(morning)


def test_the_simulated_dsps_bids_are_part_of_the_competition(sample):
    batch, outcomes, _, competition, _ = sample
    delivered = outcomes.delivered(batch.market.config.traffic.tmax_ms)
    best_dsp = np.where(delivered, outcomes.price_micros, 0).max(axis=1)
    assert np.all(competition.competing_micros >= best_dsp)
    assert np.mean(competition.competing_micros > best_dsp) > 0.3  # the open market too


def test_first_price_charges_the_bid_and_tells_half_the_losers_the_price(sample):
    batch, _, landscape, competition, _ = sample
    bids = np.full(len(batch), 2_000_000)
    result = landscape.settle(competition, bids)
    assert np.all(result.price_micros[result.won] == 2_000_000)
    assert np.all(result.price_micros[~result.won] == 0)
    lost = ~result.won & (competition.competing_micros > 0) & (bids >= competition.floor_micros)
    told = result.loss_price_micros > 0
    assert told[lost].mean() == pytest.approx(0.5, abs=0.02)
    assert np.all(result.loss_price_micros[told] == competition.competing_micros[told])
    assert np.all(result.loss_price_micros[told] >= 2_000_000)


def test_second_price_charges_what_it_took_to_win_and_tells_no_prices(sample):
    batch, _, _, competition, second = sample
    bids = np.full(len(batch), 2_000_000)
    result = second.settle(competition, bids)
    won = result.won
    expected = np.maximum(
        np.maximum(competition.competing_micros, competition.floor_micros), 10_000
    )
    assert np.all(result.price_micros[won] == np.minimum(expected[won], 2_000_000))
    assert np.all(result.price_micros[won] <= 2_000_000)
    assert result.price_micros[won].mean() < 0.75 * 2_000_000
    assert not result.loss_price_micros.any()


def test_a_bid_under_the_floor_never_wins(sample):
    batch, _, landscape, competition, _ = sample
    bids = np.maximum(competition.floor_micros - 1, 0)
    assert not landscape.settle(competition, bids).won.any()
    assert not landscape.win_probability(competition, bids).any()


def test_the_same_batch_meets_the_same_competition(market, sample):
    batch, outcomes, landscape, competition, _ = sample
    again = Landscape(market).competition(batch, outcomes)
    assert np.array_equal(again.competing_micros, competition.competing_micros)


def test_the_oracles_click_probabilities_are_the_markets(sample):
    batch, _, landscape, _, _ = sample
    code = batch.market.vocab["advertiser"].code("sportsgear.example")
    truth = click_probabilities(batch.market, batch.codes, np.full(len(batch), code))
    assert np.array_equal(landscape.click_probability(batch, "sportsgear.example"), truth)
    assert 0.0 < landscape.conversion_probability(batch, "sportsgear.example").mean() < 0.5


def test_placements_whose_users_click_more_are_bid_up(sample):
    batch, _, landscape, competition, _ = sample
    factor = landscape.placement_click_factor(batch)
    banner = batch.codes[:, COLUMN["format"]] == batch.market.vocab["format"].code("banner")
    median = competition.open_median_micros[banner]
    assert np.corrcoef(np.log(factor[banner]), np.log(median))[0, 1] > 0.3


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(hour_prices=[1.0] * 23), "hour_prices"),
        (dict(shape=0.0), "shape"),
        (dict(median_cpm={"hologram": 1.0}), "unknown value 'hologram'"),
    ],
)
def test_bad_landscapes_are_refused_naming_the_key(market, config, message):
    with pytest.raises(ValueError, match=message):
        Landscape(market, LandscapeConfig(**config))
