"""The serving shaper: thresholds, exploration, QPS caps by score, hot swap and fail-open."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from prometheus_client import generate_latest

from openbid.ml import FeatureSpec, Featurizer, MultiModelScorer, ScoringModel
from openbid.obs import REGISTRY
from openbid.shaping import ModelShaper, PassThroughShaper, QpsCapGate, ShapingModelError
from openbid.shaping.fastpath import RequestScorer
from openbid.shaping.features import REQUEST_FIELDS, shaping_spec

DSPS = ["alpha", "beta"]
# alpha bids on site "good" (p = sigmoid(3) ~ 0.95), not elsewhere (sigmoid(-3) ~ 0.05)
WEIGHTS = {"alpha": {"good": 6.0}, "beta": {"bad": 6.0}}


def _metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_calls_only_dsps_above_threshold(model_factory):
    shaper = ModelShaper(model_factory(DSPS, WEIGHTS), exploration_share=0.0)
    decisions = shaper.decide({"site_id": "good"}, DSPS)
    assert [(d.dsp, d.send, d.explored) for d in decisions] == [
        ("alpha", True, False),
        ("beta", False, False),
    ]
    assert decisions[0].score == pytest.approx(1 / (1 + math.exp(-3.0)), rel=1e-5)
    assert decisions[1].score == pytest.approx(1 / (1 + math.exp(3.0)), rel=1e-5)
    assert shaper.model_version


def test_unknown_dsp_is_called_unscored(model_factory):
    shaper = ModelShaper(model_factory(DSPS, WEIGHTS), exploration_share=0.0)
    (decision,) = shaper.decide({"site_id": "bad"}, ["newcomer"])
    assert decision.send and decision.score == -1.0
    assert shaper.decisions[("newcomer", "unscored")] == 1


def test_exploration_sends_a_seeded_share_marked_with_its_probability(model_factory):
    path = model_factory(DSPS, WEIGHTS)
    shaper = ModelShaper(path, exploration_share=0.1, seed=3)
    decisions = [shaper.decide({"site_id": "bad"}, ["alpha"])[0] for _ in range(5000)]
    explored = [d for d in decisions if d.explored]
    assert all(d.send and d.send_probability == 0.1 for d in explored)
    assert all(not d.send and d.send_probability == 1.0 for d in decisions if not d.explored)
    assert 400 <= len(explored) <= 600
    again = ModelShaper(path, exploration_share=0.1, seed=3)
    assert [again.decide({"site_id": "bad"}, ["alpha"])[0] for _ in range(5000)] == decisions


def test_exploration_share_defaults_to_the_models(model_factory):
    shaper = ModelShaper(model_factory(DSPS, WEIGHTS, exploration_share=0.25), seed=1)
    explored = [shaper.decide({"site_id": "bad"}, ["alpha"])[0].explored for _ in range(2000)]
    assert 0.2 < sum(explored) / 2000 < 0.3


def test_fail_open_without_a_model(tmp_path):
    shaper = ModelShaper(tmp_path / "missing", name="no-model")
    decisions = shaper.decide({"site_id": "x"}, DSPS)
    assert [(d.dsp, d.send, d.score) for d in decisions] == [
        ("alpha", True, -1.0),
        ("beta", True, -1.0),
    ]
    assert decisions == PassThroughShaper().decide({}, DSPS)
    assert shaper.failing_open and shaper.model_version == ""
    assert _metric("openbid_shaping_fail_open", shaper="no-model") == 1.0
    assert (
        _metric(
            "openbid_shaping_decisions_total", shaper="no-model", dsp="alpha", decision="fail_open"
        )
        == 1.0
    )
    assert _metric("openbid_shaping_model_loads_total", shaper="no-model", result="refused") == 1.0


def test_bad_model_is_refused_and_the_old_one_keeps_serving(model_factory, tmp_path):
    good = model_factory(DSPS, WEIGHTS)
    shaper = ModelShaper(good, exploration_share=0.0, name="swap")
    version = shaper.model_version
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    weights = broken / "models" / "alpha" / "weights.npy"
    weights.write_bytes(weights.read_bytes()[:-64])  # truncated
    with pytest.raises(ShapingModelError, match="alpha"):
        shaper.load(broken)
    assert shaper.model_version == version
    assert [d.send for d in shaper.decide({"site_id": "good"}, DSPS)] == [True, False]
    assert _metric("openbid_shaping_model_loads_total", shaper="swap", result="refused") == 1.0
    assert _metric("openbid_shaping_fail_open", shaper="swap") == 0.0


def test_hot_swap_replaces_thresholds_and_version(model_factory):
    shaper = ModelShaper(model_factory(DSPS, WEIGHTS), exploration_share=0.0)
    first = shaper.model_version
    lenient = model_factory(DSPS, WEIGHTS, thresholds={"alpha": 0.01, "beta": 0.01})
    second = shaper.load(lenient)
    assert second != first and shaper.model_version == second
    assert [d.send for d in shaper.decide({"site_id": "good"}, DSPS)] == [True, True]


def test_metrics_report_thresholds_and_saved_share(model_factory):
    shaper = ModelShaper(model_factory(DSPS, WEIGHTS), exploration_share=0.0, name="metrics")
    for site in ["good", "bad", "bad", "bad"]:
        shaper.decide({"site_id": site}, DSPS)
    text = generate_latest(REGISTRY).decode()
    assert 'openbid_shaping_threshold{dsp="alpha",shaper="metrics"} 0.5' in text
    assert _metric("openbid_shaping_callouts_saved_ratio", shaper="metrics", dsp="alpha") == 0.75
    assert _metric("openbid_shaping_scoring_seconds_count", shaper="metrics") == 4.0
    assert (
        _metric("openbid_shaping_model_info", shaper="metrics", version=shaper.model_version) == 1.0
    )


def test_observed_outcomes_give_bid_rate_and_bids_lost_estimate(model_factory):
    shaper = ModelShaper(model_factory(DSPS, WEIGHTS), exploration_share=0.1, seed=0)
    for _ in range(3000):
        for decision in shaper.decide({"site_id": "bad"}, ["alpha"]):
            if decision.send:
                shaper.observe(decision, bid=True)
    stats = shaper.stats()["alpha"]
    explored = stats["explored"]
    # every explored call bid: each stands for 1 / 0.1 requests, 9 of them not sent
    assert stats["bids_lost_estimate"] == pytest.approx(explored * 9)
    assert stats["filtered"] + explored == 3000


def test_qps_cap_sends_the_highest_scored_requests():
    clock = [0.0]
    gate = QpsCapGate(cap_qps=100.0, now=clock[0])
    rng = np.random.default_rng(0)
    sent_scores, held_scores = [], []
    for second in range(6):
        for score in rng.random(1000):  # 1000 candidates a second against a cap of 100
            clock[0] += 0.001
            sent = gate.admit(float(score), clock[0])
            if second > 0:  # the first second measures the rate: nothing is held yet
                (sent_scores if sent else held_scores).append(score)
    assert 80 * 5 <= len(sent_scores) <= 120 * 5
    assert min(sent_scores) > 0.85  # the top tenth of scores, not a random tenth
    assert np.mean(held_scores) < 0.5


def test_qps_cap_does_not_bind_under_the_cap():
    gate = QpsCapGate(cap_qps=1000.0, now=0.0)
    now = 0.0
    admitted = 0
    for score in np.random.default_rng(1).random(3000):
        now += 0.01  # 100 per second
        admitted += gate.admit(float(score), now)
    assert admitted == 3000


def test_shaper_applies_qps_cap_by_score(model_factory):
    sites = {f"s{i}": 4.0 + i / 100 for i in range(100)}  # every site above threshold
    clock = [0.0]
    shaper = ModelShaper(
        model_factory(["alpha"], {"alpha": sites}),
        exploration_share=0.0,
        qps_caps={"alpha": 50.0},
        clock=lambda: clock[0],
    )
    rng = np.random.default_rng(2)
    late = []
    for i in range(4000):  # 500 requests per second for 8 seconds
        clock[0] = i / 500
        site = f"s{rng.integers(100)}"
        (decision,) = shaper.decide({"site_id": site}, ["alpha"])
        if i >= 2000:
            late.append((int(site[1:]), decision.send))
    sent_sites = [site for site, sent in late if sent]
    assert 0.05 < len(sent_sites) / len(late) < 0.15
    assert min(sent_sites) >= 80  # the best-scored sites
    assert shaper.decisions[("alpha", "capped")] > 3000


def test_fast_path_matches_featurizer_and_scorer():
    spec = shaping_spec("per_dsp", hash_bits=18)
    rng = np.random.default_rng(5)
    weights = [rng.normal(0, 0.3, spec.n_features).astype(np.float32) for _ in range(3)]
    fast = RequestScorer(spec, weights)
    featurizer = Featurizer(spec)
    reference = MultiModelScorer([ScoringModel(f"m{i}", w) for i, w in enumerate(weights)])
    out = np.empty(3)
    for _ in range(200):
        row = {
            name: str(rng.integers(5))
            for name in REQUEST_FIELDS
            if rng.random() < 0.8  # some fields missing
        }
        if rng.random() < 0.2:
            row["site_id"] = ""
        assert np.array_equal(fast.indices(row), featurizer.transform_one(row))
        fast.score(row, out)
        np.testing.assert_allclose(
            out, reference.score_one(featurizer.transform_one(row)), rtol=1e-6
        )


def test_fast_path_hash_caches_skip_long_values_and_stay_within_bytes(monkeypatch):
    """The request scorer's per-field caches: a long sender-chosen value is not kept, and
    the byte budget clears a field's cache instead of growing past it."""
    import openbid.ml.features as features

    monkeypatch.setattr(features, "MAX_CACHE_BYTES", 20_000)  # the bound the scorer shares
    spec = FeatureSpec(categorical=["site", "os"], hash_bits=18, seed=3)
    fast = RequestScorer(spec, [np.zeros(spec.n_features)])
    site = fast.names.index("site")
    fast._field_hash(site, "y" * 8192)
    assert "y" * 8192 not in fast._caches[site]
    for i in range(500):
        fast._field_hash(site, f"site-{i:04d}.example")
        assert fast._cache_bytes[site] <= 20_000
    assert 0 < len(fast._caches[site]) < 120
