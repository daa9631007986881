"""Lookalikes: users' feature bags from the real event log (impressions joined to their
auctions on DuckDB), hashed by hand-checkable rules; a model trained on a seed segment ranks
held-out seed members far above random (the lift), and the lookalikes it picks share the
seed's hidden interest more often than the population does."""

from __future__ import annotations

import mmh3
import numpy as np
import pyarrow as pa
import pytest

from openbid.insights.audiences.lookalike import featurize, lift_at, train_lookalike, user_features
from openbid.insights.audiences.synthetic import write_synthetic_log
from openbid.insights.errors import InsightsError
from openbid.pipeline import DuckDBEngine, EventSource


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lookalike")
    log = write_synthetic_log(directory, users=2500, hours=48, visits_per_user=10, seed=11)
    engine = DuckDBEngine()
    features = user_features(
        EventSource(directory), engine, since_micros=0, until_micros=log.end_micros + 10**10
    )
    engine.close()
    return log, features


def test_features_are_presence_bags_of_field_value_tokens():
    users = pa.array(["b", "a", "b", "b"])
    maps = pa.array(
        [
            [("site_id", "x"), ("categories", "IAB1,IAB2")],
            [("site_id", "y")],
            [("site_id", "x"), ("os", "")],  # a repeat, and an empty value: no token
            [("categories", "IAB2,")],
        ],
        type=pa.map_(pa.string(), pa.string()),
    )
    f = featurize(users, maps, fields=("site_id", "categories", "os"), hash_bits=18)
    assert f.user_ids == ["a", "b"]
    n = 1 << 18

    def col(token):
        return mmh3.hash(token, 0, signed=False) % (n - 1)

    assert f.rows.row(0).tolist() == [col("site_id=y"), n - 1]
    expected_b = sorted(col(t) for t in ("site_id=x", "categories=IAB1", "categories=IAB2"))
    assert f.rows.row(1).tolist() == [*expected_b, n - 1]


def test_users_come_from_the_event_log(market):
    log, features = market
    seen = {e.user_id for e in log.events if getattr(e, "user_id", "")}
    assert set(features.user_ids) == seen
    widths = np.diff(features.rows.indptr)
    assert widths.min() >= 2  # at least one token and the bias


def test_the_holdout_shows_lift_over_random(market):
    log, features = market
    result = train_lookalike(features, log.converters, seed=0)
    m = result.metrics
    assert m["seed_members"] == len(log.converters)
    assert m["holdout_auc"] > 0.8
    assert m["lift_at_10pct"] > 2.5
    assert m["lift_at_10pct"] > 2 * m["random_lift_at_10pct"]
    assert 0.5 < m["random_lift_at_20pct"] < 1.6  # random ranking: about 1


def test_lookalikes_are_outside_the_seed_and_share_its_interest(market):
    log, features = market
    result = train_lookalike(features, log.converters, size=300, seed=0)
    picked = result.lookalikes["user_id"].to_pylist()
    assert len(picked) == 300 and not set(picked) & log.converters
    scores = result.lookalikes["score"].to_numpy()
    assert np.all(np.diff(scores) <= 0)  # best first
    others = [u for u in features.user_ids if u not in log.converters]
    base = np.mean([log.interest[u] == "travel" for u in others])
    share = np.mean([log.interest[u] == "travel" for u in picked])
    assert share > 1.5 * base


def test_a_seed_too_small_is_refused(market):
    _, features = market
    with pytest.raises(InsightsError, match="the seed has 3 members"):
        train_lookalike(features, features.user_ids[:3])


def test_lift_at_counts_the_top_share():
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert lift_at(labels, np.arange(10)[::-1].astype(float), 0.2) == 5.0
    assert lift_at(labels, np.arange(10).astype(float), 0.2) == 0.0
