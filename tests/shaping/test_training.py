"""Training rows from the event log, exploration weights, thresholds, the model directory."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.events import AuctionEvent, BidEvent, EventLog, EventReader
from openbid.ml import FeatureSpec
from openbid.shaping import (
    ModelShaper,
    ShapingDataError,
    ShapingModelError,
    load_shaping_model,
    rows_from_events,
    save_shaping_model,
    train_shaping,
)
from openbid.shaping.thresholds import share_kept, threshold_for_share
from openbid.shaping.training import FTRLParams, ShapingScorerOffline, fit_learners

from .conftest import START_MICROS, event_tables


def test_rows_from_a_real_event_log(tmp_path):
    with EventLog(tmp_path / "events") as log:
        for i, country in enumerate(["USA", "DEU"]):
            auction = f"auc{i}"
            ts = START_MICROS + i
            log.emit(AuctionEvent(ts, auction, f"req{i}", features={"country": country}))
            log.emit(BidEvent(ts, auction, "atlas", bid=True, price_micros=900_000, bid_id="b1"))
            log.emit(BidEvent(ts, auction, "atlas", bid=True, price_micros=1_200_000, bid_id="b2"))
            log.emit(BidEvent(ts, auction, "cobalt", decision="filtered", shaping_score=0.01))
            log.emit(
                BidEvent(
                    ts, auction, "dune", decision="explored", send_probability=0.01, bid=i == 1
                )
            )
            log.emit(BidEvent(ts, auction, "ember", error="consent_blocked"))
            log.emit(BidEvent(ts, auction, "fjord", error="timeout"))
    reader = EventReader(tmp_path / "events")
    rows = rows_from_events(reader.read_table("auction"), reader.read_table("bid"))
    table = sorted(
        (str(rows.auction_id[r]), str(d), float(y), float(w), int(v))
        for r, d, y, w, v in zip(
            rows.request, rows.dsp, rows.label, rows.weight, rows.value_micros, strict=True
        )
    )
    assert table == [
        ("auc0", "atlas", 1.0, 1.0, 1_200_000),  # two bids: one row at the higher price
        ("auc0", "dune", 0.0, 100.0, 0),  # exploration: weight 1 / 0.01
        ("auc0", "fjord", 0.0, 1.0, 0),  # sent and timed out: no bid came back
        ("auc1", "atlas", 1.0, 1.0, 1_200_000),
        ("auc1", "dune", 1.0, 100.0, 0),  # a bid without a price is still a bid
        ("auc1", "fjord", 0.0, 1.0, 0),
    ]
    assert rows.features["country"].to_pylist() == ["USA", "DEU"]
    assert rows.features["site_id"].to_pylist() == [None, None]


def test_rows_need_bids_that_match_auctions():
    auctions, bids = event_tables(
        [{}], ["a"], np.zeros((1, 1), bool), np.full((1, 1), "called"), np.ones((1, 1))
    )
    orphans = bids.set_column(
        bids.column_names.index("auction_id"), "auction_id", pa.array(["elsewhere"])
    )
    with pytest.raises(ShapingDataError, match="no bid event matches"):
        rows_from_events(auctions, orphans)
    with pytest.raises(ShapingDataError, match="no auctions or no bid events"):
        rows_from_events(auctions, bids.slice(0, 0))


def _segment_market(n: int, share: float, seed: int):
    """Traffic in two countries; the old model filtered country X's video (true bid rate
    0.4) except an exploration share; X's banners (0.05) and country Y (0.1) were called."""
    rng = np.random.default_rng(seed)
    country = rng.choice(["X", "Y"], n)
    media = rng.choice(["video", "banner"], n)
    rate = np.where(country == "Y", 0.1, np.where(media == "video", 0.4, 0.05))
    bid = rng.random(n) < rate
    segment = (country == "X") & (media == "video")
    explored = segment & (rng.random(n) < share)
    decision = np.where(segment, np.where(explored, "explored", "filtered"), "called")
    send_probability = np.where(explored, share, 1.0)
    features = [{"country": c, "media": m} for c, m in zip(country, media, strict=True)]
    return features, bid[:, None], decision[:, None], send_probability[:, None], rate


def test_exploration_weights_make_the_model_unbiased_where_the_old_model_filtered():
    share = 0.05
    features, bid, decision, send_probability, rate = _segment_market(60_000, share, seed=1)
    rows = rows_from_events(*event_tables(features, ["dsp"], bid, decision, send_probability))
    # a model that cannot see what the old one filtered on (media): misspecified, as real
    # models are; what it says about country X must hold for all of X's traffic
    spec = FeatureSpec(categorical=["country"], hash_bits=18)
    params = FTRLParams(alpha=0.1, l1=0.0, l2=0.0, n_passes=3)
    weighted = fit_learners(rows, "per_dsp", spec, params)
    unweighted = fit_learners(rows, "per_dsp", spec, params, weighted=False)
    x_rows = rows.select(np.asarray(rows.features["country"].take(rows.request).to_pylist()) == "X")
    true_rate_x = float(rate[np.array([f["country"] == "X" for f in features])].mean())  # ~0.225

    def predicted(learners):
        return float(ShapingScorerOffline("per_dsp", spec, learners).score(x_rows).mean())

    assert predicted(weighted) == pytest.approx(true_rate_x, abs=0.02)
    assert predicted(unweighted) < true_rate_x - 0.1  # ~0.067: learnt from X's banners only


def test_exploration_weights_keep_held_out_thresholds_honest():
    """The old model filtered requests scoring under 0.1 but for a 5% exploration share:
    a threshold chosen on that log meets the recall target on all traffic only when the
    explored rows count 1 / 0.05 times."""
    rng = np.random.default_rng(3)
    n = 400_000
    score = rng.uniform(0.0, 0.5, n)  # a perfect model: the score is the true bid rate
    bid = (rng.random(n) < score).astype(float)
    filtered = score < 0.1
    logged = ~filtered | (rng.random(n) < 0.05)
    weight = np.where(filtered, 1 / 0.05, 1.0)[logged]
    weighted = threshold_for_share(score[logged], bid[logged] * weight, 0.99)
    unweighted = threshold_for_share(score[logged], bid[logged], 0.99)
    assert share_kept(score, bid, weighted) == pytest.approx(0.99, abs=0.003)
    assert share_kept(score, bid, unweighted) < 0.97


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 10)), min_size=1, max_size=60),
    st.floats(0.01, 1.0),
)
def test_threshold_keeps_at_least_the_target_and_no_higher_threshold_does(pairs, target):
    scores = np.array([p[0] for p in pairs])
    amounts = np.array([p[1] for p in pairs])
    threshold = threshold_for_share(scores, amounts, target)
    if amounts.sum() == 0:
        assert threshold == 0.0
        return
    assert share_kept(scores, amounts, threshold) >= target - 1e-9
    higher = scores[scores > threshold]
    if higher.size:
        assert share_kept(scores, amounts, higher.min()) < target + 1e-9


def _rows_of(tmp_path):
    rng = np.random.default_rng(4)
    n = 6000
    sites = rng.choice([f"s{i}" for i in range(30)], n)
    features = [{"site_id": s, "country": "USA"} for s in sites]
    site_rate = {f"s{i}": (i / 30) ** 2 for i in range(30)}
    bid = np.stack(
        [rng.random(n) < np.array([site_rate[s] for s in sites]), rng.random(n) < 0.2], 1
    )
    decision = np.full((n, 2), "called")
    return rows_from_events(*event_tables(features, ["a", "b"], bid, decision, np.ones((n, 2))))


def _trained(tmp_path, layout="per_dsp"):
    return train_shaping(_rows_of(tmp_path), layout=layout, holdout_s=12 * 3600, hash_bits=18)


@pytest.mark.parametrize("layout", ["per_dsp", "shared"])
def test_model_directory_round_trip_serves_the_same_scores(tmp_path, layout):
    trained = _trained(tmp_path, layout)
    path = save_shaping_model(trained, tmp_path / "model", version="v1")
    loaded = load_shaping_model(path)
    assert loaded.meta.version == "v1" and loaded.meta.layout == layout
    assert loaded.meta.thresholds == trained.thresholds
    assert {p.dsp for p in loaded.meta.frontier} == {"a", "b"}
    shaper = ModelShaper(path, exploration_share=0.0)
    offline = ShapingScorerOffline(layout, trained.spec, trained.learners)
    for site in ["s1", "s29", "unseen"]:
        decisions = shaper.decide({"site_id": site, "country": "USA"}, ["a", "b"])
        auctions, bids = event_tables(
            [{"site_id": site, "country": "USA"}], ["a", "b"], np.zeros((1, 2), bool),
            np.full((1, 2), "called"), np.ones((1, 2)),
        )  # fmt: skip
        expected = offline.score(rows_from_events(auctions, bids))
        np.testing.assert_allclose([d.score for d in decisions], expected, rtol=1e-5)


def test_high_bid_rate_sites_score_higher(tmp_path):
    trained = _trained(tmp_path)
    shaper = ModelShaper(save_shaping_model(trained, tmp_path / "m"), exploration_share=0.0)
    low = shaper.decide({"site_id": "s2", "country": "USA"}, ["a"])[0].score
    high = shaper.decide({"site_id": "s28", "country": "USA"}, ["a"])[0].score
    assert high > 0.6 and low < 0.15  # true rates 0.87 and 0.004, shrunk by l1 and l2


def test_damaged_metadata_is_refused(tmp_path):
    path = save_shaping_model(_trained(tmp_path), tmp_path / "model")
    meta = json.loads((path / "shaping.json").read_text())
    meta["thresholds"]["a"] = 1.5
    (path / "shaping.json").write_text(json.dumps(meta))
    with pytest.raises(ShapingModelError, match=r"thresholds\.a"):
        load_shaping_model(path)
    meta["thresholds"]["a"] = 0.5
    meta["spec_hash"] = "0" * 16
    (path / "shaping.json").write_text(json.dumps(meta))
    with pytest.raises(ShapingModelError, match="feature spec"):
        load_shaping_model(path)


def test_too_short_a_log_for_a_holdout_day():
    features = [{"country": "USA"}] * 100
    rows = rows_from_events(
        *event_tables(
            features,
            ["a"],
            np.ones((100, 1), bool),
            np.full((100, 1), "called"),
            np.ones((100, 1)),
            span_hours=10,
        )
    )
    with pytest.raises(ShapingDataError, match="needs more than the 24 h"):
        train_shaping(rows)


def test_learners_choose_their_settings_from_the_data_unless_fixed(tmp_path):
    trained = _trained(tmp_path)
    for dsp in ("a", "b"):
        metrics, learner = trained.metrics[dsp], trained.learners[dsp]
        assert (metrics["alpha"], metrics["l2"], metrics["n_passes"]) == (
            learner.alpha,
            learner.l2,
            learner.n_passes,
        )
    # a held-out share of the training part chose them: the saved model says what they are
    path = save_shaping_model(trained, tmp_path / "m")
    saved = load_shaping_model(path).artifacts["a"].meta.hyper_parameters
    assert saved["alpha"] == trained.learners["a"].alpha
    fixed = FTRLParams(alpha=0.7, l1=0.0, l2=2.0, n_passes=1)
    rows = _rows_of(tmp_path)
    by_hand = train_shaping(rows, holdout_s=12 * 3600, hash_bits=18, params=fixed)
    assert by_hand.learners["a"].alpha == 0.7 and by_hand.metrics["a"]["n_passes"] == 1.0
