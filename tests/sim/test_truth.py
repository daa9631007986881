"""Ground truth: the oracle's probabilities are what the DSPs and users draw from."""

import math

import msgspec
import numpy as np
import pytest

from openbid.sim import Market, click_probability, true_bid_probability
from openbid.sim.draws import draw_key, uniform, uniforms
from openbid.sim.features import COLUMN
from openbid.sim.model import FAULT_KINDS
from openbid.sim.oracle import Oracle
from openbid.sim.truth import decide


@pytest.fixture(scope="module")
def batch(market):
    return market.generate(100_000, seed=21)


@pytest.fixture(scope="module")
def outcomes(market, batch):
    return market.dsp_outcomes(batch)


def _within(observed_count: int, probabilities: np.ndarray, sigmas: float = 4.5) -> bool:
    """Whether a count of Bernoulli successes fits their probabilities (normal approximation)."""
    expected = probabilities.sum()
    sd = math.sqrt(float((probabilities * (1 - probabilities)).sum()))
    return abs(observed_count - expected) <= sigmas * sd + 1


def test_scalar_and_vectorised_draws_agree():
    keys = np.asarray([draw_key(7, f"r{i}", "1") for i in range(1000)], dtype=np.uint64)
    vector = uniforms(keys, 12345, 3)
    scalar = [uniform(int(k), 12345, 3) for k in keys.tolist()]
    assert vector.tolist() == scalar
    assert 0.45 < vector.mean() < 0.55


def test_every_dsp_bids_at_its_true_mean_probability(market, outcomes):
    for dsp in market.dsps:
        p = outcomes.probability[:, dsp.index]
        bids = int(outcomes.bid[:, dsp.index].sum())
        assert 0.02 <= p.mean() <= 0.2, dsp.name
        assert _within(bids, p), (dsp.name, bids, p.sum())


def test_most_requests_are_near_zero_for_each_dsp(market, outcomes):
    """Like real DSPs, each buys a niche: at least half of all requests have a bid
    probability under 1% (gated out, or far from what the DSP buys), and they carry a small
    share of its bids."""
    for dsp in market.dsps:
        p = outcomes.probability[:, dsp.index]
        low = p < 0.01
        assert low.mean() >= 0.5, (dsp.name, low.mean())
        assert p[low].sum() <= 0.02 * p.sum(), (dsp.name, p[low].sum() / p.sum())


def test_bid_rates_hold_within_slices_of_traffic(market, batch, outcomes):
    """Planted effects show up where they are planted, not just on average."""
    video = batch.column("format") == market.vocab["format"].code("video")
    brightline = market.dsp("brightline").index
    assert outcomes.bid[~video, brightline].sum() == 0
    assert _within(
        int(outcomes.bid[video, brightline].sum()), outcomes.probability[video, brightline]
    )
    no_id = batch.column("user_id") == market.vocab["user_id"].code("no")
    ember = market.dsp("ember").index
    assert outcomes.bid[no_id, ember].mean() < 0.2 * outcomes.bid[~no_id, ember].mean()


def test_gates_give_probability_zero(market, batch, outcomes):
    dune = market.dsp("dune")
    allowed = [market.vocab["country"].code(c) for c in dune.config.gates.countries]
    outside = ~np.isin(batch.column("country"), allowed)
    assert np.all(outcomes.probability[outside, dune.index] == 0.0)
    refused = batch.column("consent") == market.vocab["consent"].code("reject_all")
    assert refused.any() and np.all(outcomes.probability[refused, dune.index] == 0.0)


def test_a_higher_floor_never_raises_the_bid_probability(market, batch, outcomes):
    # A request inside fjord's gates (outside them the probability is 0 at any floor).
    features = batch.features(int(np.argmax(outcomes.probability[:, market.dsp("fjord").index])))
    probabilities = [
        true_bid_probability(market, msgspec.structs.replace(features, floor_cpm=floor), "fjord")
        for floor in (0.0, 0.1, 0.3, 1.0, 3.0)
    ]
    assert probabilities == sorted(probabilities, reverse=True)
    assert probabilities[-1] < probabilities[0]


def test_the_pure_function_is_the_vectorised_one(market, batch, outcomes):
    for row in range(0, 3000, 7):
        features = batch.features(row)
        for dsp in market.dsps:
            scalar = true_bid_probability(market, features, dsp.name)
            assert scalar == pytest.approx(outcomes.probability[row, dsp.index], rel=1e-12, abs=0)


def test_a_single_decision_is_the_batch_decision(market, batch, outcomes):
    for row in range(0, 5000, 3):
        codes = batch.codes[row].tolist()
        for dsp in market.dsps:
            decision = decide(dsp, codes, float(batch.floor_cpm[row]), int(batch.keys[row]))
            j = dsp.index
            assert decision.bid == outcomes.bid[row, j]
            assert decision.fault == FAULT_KINDS[outcomes.fault[row, j]]
            assert decision.latency_ms == pytest.approx(outcomes.latency_ms[row, j], rel=1e-12)
            assert decision.advertiser == outcomes.advertiser[row, j]
            if decision.bid:
                assert round(decision.price_cpm * 1e6) == outcomes.price_micros[row, j]
                assert decision.price_cpm >= batch.floor_cpm[row]


def test_faults_happen_at_their_configured_rates(market, outcomes):
    n = outcomes.fault.shape[0]
    for dsp in market.dsps:
        faults = dsp.config.faults
        counts = np.bincount(outcomes.fault[:, dsp.index], minlength=len(FAULT_KINDS))
        for kind, rate in zip(
            FAULT_KINDS[1:],
            (
                faults.timeout,
                faults.http_5xx,
                faults.malformed_json,
                faults.slow_body,
                faults.connection_reset,
            ),
            strict=True,
        ):
            observed = int(counts[FAULT_KINDS.index(kind)])
            assert _within(observed, np.full(n, rate)), (dsp.name, kind, observed, rate * n)


def test_latencies_are_realistic(market, outcomes):
    latency = outcomes.latency_ms
    assert 10 <= np.median(latency) <= 120
    tail = np.percentile(latency, 99.9, axis=0)
    assert np.all(tail > 2 * np.median(latency, axis=0))
    slow = [d.name for d in market.dsps if np.mean(latency[:, d.index] > 150) > 0.05]
    assert 1 <= len(slow) <= 3


def test_oracle_answers_by_request_id(market, batch, outcomes):
    oracle = Oracle(market, batch[:2000])
    for row in range(0, 2000, 50):
        request_id = batch.request_ids[row]
        for dsp in market.dsps:
            assert oracle.would_bid(request_id, dsp.name) == outcomes.bid[row, dsp.index]
            assert (
                oracle.bid_probability(request_id, dsp.name) == outcomes.probability[row, dsp.index]
            )
    with pytest.raises(KeyError, match="not in this oracle's batch"):
        oracle.bid_probability("nope", "atlas")


def test_users_click_and_convert_at_display_rates(market, batch, outcomes):
    impressions = market.impressions(batch, outcomes)
    assert len(impressions.row) > 0.2 * len(batch)
    ctr = impressions.click_probability.mean()
    assert 0.0005 <= ctr <= 0.01
    assert _within(int(impressions.clicked.sum()), impressions.click_probability)
    clicked = impressions.clicked
    conversions = int(impressions.converted.sum())
    assert _within(conversions, impressions.conversion_probability[clicked])
    assert 0.01 <= conversions / clicked.sum() <= 0.08
    # The winner is the highest price that arrived in time.
    delivered = outcomes.delivered(market.config.traffic.tmax_ms)
    rows = impressions.row[:500]
    best = np.where(delivered[rows], outcomes.price_micros[rows], -1).max(axis=1)
    np.testing.assert_array_equal(impressions.price_micros[:500], best)


def test_click_probability_scalar_matches_batch_and_has_interactions(market, batch, outcomes):
    impressions = market.impressions(batch, outcomes)
    names = market.vocab["advertiser"].values
    for i in range(0, 2000, 40):
        row = impressions.row[i]
        scalar = click_probability(market, batch.features(row), names[impressions.advertiser[i]])
        assert scalar == pytest.approx(impressions.click_probability[i], rel=1e-12)
    # The planted site x advertiser interaction varies the click probability of one ad by site.
    (site_column, advertiser_column, table) = next(
        (a, b, t)
        for a, b, t in market.click_model.pairs
        if (a, b) == (COLUMN["site"], COLUMN["advertiser"])
    )
    assert site_column == COLUMN["site"] and advertiser_column == COLUMN["advertiser"]
    assert 0.4 < table[:-1, :-1].std() < 1.5


def test_the_hard_market_bids_more_rarely(hard_market):
    batch = hard_market.generate(20_000, seed=2)
    rates = hard_market.dsp_outcomes(batch).probability.mean(axis=0)
    assert np.all(rates <= 0.06) and np.all(rates >= 0.004)


def test_markets_are_deterministic(market):
    again = Market(market.config)
    batch = market.generate(300, seed=4)
    np.testing.assert_array_equal(
        again.dsp_outcomes(again.generate(300, seed=4)).bid, market.dsp_outcomes(batch).bid
    )
