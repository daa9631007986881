"""Personalisation: Thompson sampling per segment beats uniform on a simulated segment market
(seeded); its served table gives every choice an exact propensity with a floor; IPS and DR
are unbiased on a known logging policy (within their intervals of the true value, and over
many seeded logs their intervals cover it about 95% of the time); the gate refuses a worse
policy and promotes a better one; logged choices read back from the real event log."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.insights.errors import InsightsError
from openbid.insights.personalize.bandit import (
    DEFAULT_SEGMENT,
    BetaPosteriors,
    ChoicePolicy,
    uniform_policy,
)
from openbid.insights.personalize.logged import read_choices
from openbid.insights.personalize.ope import (
    Logged,
    dr,
    effective_sample_size,
    evaluate_candidate,
    ips,
    snips,
)
from openbid.insights.personalize.simulate import (
    SegmentMarket,
    log_choices,
    run_bandit,
    write_logged_policy,
)
from openbid.pipeline import DuckDBEngine, EventSource

T0 = 1_800_000_000_000_000


def test_thompson_regret_is_below_uniform_on_a_segment_market():
    market = SegmentMarket.random(n_segments=6, n_creatives=4, seed=1)
    uniform = run_bandit(market, "uniform", rounds=60_000, seed=2)
    thompson = run_bandit(market, "thompson", rounds=60_000, seed=2)
    oracle = run_bandit(market, "oracle", rounds=60_000, seed=2)
    assert oracle.regret == 0.0
    assert thompson.regret < 0.6 * uniform.regret
    # it learns: the last third of the run costs less than the first third
    curve = thompson.regret_curve
    third = len(curve) // 3
    assert curve[-1] - curve[-third] < curve[third - 1]


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_thompson_beats_uniform_on_other_markets(seed):
    market = SegmentMarket.random(n_segments=4, n_creatives=3, seed=seed)
    assert (
        run_bandit(market, "thompson", rounds=40_000, seed=seed).regret
        < run_bandit(market, "uniform", rounds=40_000, seed=seed).regret
    )


def test_the_table_favours_the_better_creative_and_keeps_a_floor():
    posteriors = BetaPosteriors(["s"], ["a", "b", "c"])
    s = np.zeros(3000, dtype=np.int64)
    a = np.repeat([0, 1, 2], 1000)
    r = np.concatenate([np.ones(80), np.zeros(920), np.ones(20), np.zeros(980), np.zeros(1000)])
    posteriors.update(s, a, r)
    policy = posteriors.policy("camp", epsilon=0.06)
    row = dict(zip(policy.creatives, policy.probabilities[0], strict=True))
    assert row["a"] > 0.9
    assert min(row.values()) >= 0.06 / 3 - 1e-12
    assert policy.segments == ["s", DEFAULT_SEGMENT]
    assert policy.name.startswith("ts-")
    assert posteriors.policy("camp", epsilon=0.06).name == policy.name  # seeded: same table


def test_choose_draws_the_table_with_its_propensity():
    policy = ChoicePolicy("p", "c", ["a", "b", "c"], ["s", ""], [[0.2, 0.0, 0.8], [1 / 3] * 3])
    rng = np.random.default_rng(0)
    picks = [policy.choose("s", u) for u in rng.random(20_000)]
    share_a = np.mean([c == "a" for c, _ in picks])
    assert abs(share_a - 0.2) < 0.01
    assert {p for c, p in picks if c == "c"} == {0.8}
    assert not any(c == "b" for c, _ in picks)
    assert policy.context_of({"x", "s"}) == "s" and policy.context_of({"x"}) == ""


@given(st.lists(st.floats(0, 1), min_size=2, max_size=5), st.floats(0, 1, exclude_max=True))
def test_choose_never_picks_a_creative_of_propensity_zero(weights, u):
    total = sum(weights)
    if total <= 0:
        return
    row = [w / total for w in weights]
    row[-1] = 1.0 - sum(row[:-1])
    if row[-1] < 0:
        return
    policy = ChoicePolicy("p", "c", [f"k{i}" for i in range(len(row))], [""], [row])
    creative, propensity = policy.choose("", u)
    assert propensity > 0
    assert propensity == row[policy.creatives.index(creative)]


def test_a_policy_with_bad_rows_is_refused_by_name():
    with pytest.raises(InsightsError, match=r"probabilities\['s'\]"):
        ChoicePolicy("p", "c", ["a", "b"], ["s", ""], [[0.5, 0.6], [0.5, 0.5]])
    with pytest.raises(InsightsError, match="default segment"):
        ChoicePolicy("p", "c", ["a"], ["s"], [[1.0]])


def known_logging(market, seed=0):
    s, k = market.ctr.shape
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(k, 2.0), size=s) * 0.8 + 0.2 / k


def best_policy(market):
    s, k = market.ctr.shape
    target = np.zeros((s, k))
    target[np.arange(s), market.ctr.argmax(axis=1)] = 1.0
    return target


def test_ips_and_dr_estimates_cover_the_true_value_on_a_known_logging_policy():
    market = SegmentMarket.random(seed=7)
    logging, target = known_logging(market), best_policy(market)
    truth = market.value(target)
    logged = log_choices(market, logging, 30_000, np.random.default_rng(11))
    for estimate in (ips(logged, target), dr(logged, target), snips(logged, target)):
        assert estimate.covers(truth), (estimate, truth)
    assert not ips(logged, logging).covers(truth)  # the logging policy earns less: distinguishable
    assert 0 < effective_sample_size(logged, target) < len(logged)


def test_ips_and_dr_are_unbiased_over_many_logs():
    market = SegmentMarket.random(seed=8)
    logging = known_logging(market, seed=1)
    target = 0.5 * best_policy(market) + 0.5 / market.ctr.shape[1]  # stochastic target
    truth = market.value(target)
    runs = 60
    values = {"ips": [], "dr": []}
    covered = {"ips": 0, "dr": 0}
    for seed in range(runs):
        logged = log_choices(market, logging, 10_000, np.random.default_rng(1000 + seed))
        for name, estimator in (("ips", ips), ("dr", dr)):
            e = estimator(logged, target)
            values[name].append(e.value)
            covered[name] += e.covers(truth)
    for name in ("ips", "dr"):
        mean = np.mean(values[name])
        stderr_of_mean = np.std(values[name], ddof=1) / np.sqrt(runs)
        assert abs(mean - truth) < 3 * stderr_of_mean, (name, mean, truth)
        assert covered[name] >= 0.85 * runs, (name, covered[name])


def test_dr_has_less_variance_than_ips_when_the_reward_model_is_good():
    market = SegmentMarket.random(seed=9, base_ctr=0.2, spread=0.4)
    logging = known_logging(market, seed=2)
    target = best_policy(market)
    logged = log_choices(market, logging, 40_000, np.random.default_rng(3))
    assert dr(logged, target).stderr < ips(logged, target).stderr


def test_the_gate_promotes_a_better_policy_and_refuses_a_worse_one():
    market = SegmentMarket.random(seed=10)
    s, k = market.ctr.shape
    uniform = np.full((s, k), 1.0 / k)
    logged = log_choices(market, uniform, 60_000, np.random.default_rng(4))
    better = 0.9 * best_policy(market) + 0.1 / k
    worse = np.zeros((s, k))
    worse[np.arange(s), market.ctr.argmin(axis=1)] = 1.0
    good = evaluate_candidate(logged, better, uniform)
    assert good.promote, good.reason
    assert good.difference.lower > 0
    bad = evaluate_candidate(logged, worse, uniform)
    assert not bad.promote and "worse" in bad.reason
    few = evaluate_candidate(logged.take(np.arange(500)), better, uniform)
    assert not few.promote and "fewer than the 1000 required" in few.reason
    on_policy = evaluate_candidate(logged, better)  # the current table unknown: logged mean
    assert abs(on_policy.current.value - logged.reward.mean()) < 1e-12


def test_logged_propensities_must_be_probabilities():
    with pytest.raises(InsightsError, match="propensity must be in"):
        Logged(np.zeros(2, int), np.zeros(2, int), np.zeros(2), np.array([0.5, 0.0]))


def test_logged_choices_read_back_from_the_event_log(tmp_path):
    market = SegmentMarket.random(n_segments=3, n_creatives=3, base_ctr=0.1, seed=12)
    policy = uniform_policy("camp-1", market.creatives)
    policy = ChoicePolicy(
        policy.name, "camp-1", market.creatives, [*market.segments, ""],
        [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [1 / 3] * 3, [1 / 3] * 3],
    )  # fmt: skip
    written = write_logged_policy(tmp_path, market, policy, 3000, start_micros=T0, seed=1)
    engine = DuckDBEngine()
    choices = read_choices(
        EventSource(tmp_path), engine, "camp-1", since_micros=T0, until_micros=T0 + 10**11
    )
    engine.close()
    assert choices.segments == market.segments and choices.creatives == market.creatives
    assert choices.policies == {policy.name: 3000}
    assert len(choices.logged) == 3000
    assert choices.logged.reward.sum() == written.reward.sum()
    assert np.isclose(np.sort(choices.logged.propensity), np.sort(written.propensity)).all()
    with pytest.raises(InsightsError, match="no logged choices for campaign 'other'"):
        read_choices(
            EventSource(tmp_path),
            DuckDBEngine(),
            "other",
            since_micros=T0,
            until_micros=T0 + 10**11,
        )
