"""Lookalikes: the users most like a seed segment's members, by a model trained on the
users' logged request features.

Each user is the bag of the request features (`field=value`, as the event log keeps them:
site, domain, app, publisher, categories, device, OS, country ...) of the auctions where they
saw one of our impressions over the window, hashed (MurmurHash3) into `2**hash_bits`
features, one presence each. A logistic regression (FTRL-Proximal, `openbid.ml`) learns the
seed's members against a random sample of the other users; every non-member is then scored
and the highest-scoring ones are the lookalikes.

The holdout says whether it works: a share of the seed's members and of the other users is
kept out of training; the model ranks the held-out users, and `lift_at_<k>pct` is the share
of held-out seed members among the top k% divided by their share overall (1.0: no better
than random). The same ranking with random scores is reported beside it (`random_lift_*`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openbid.insights.errors import InsightsError
from openbid.ml import FTRLLogisticRegression, HashedRows
from openbid.ml.metrics import auc
from openbid.pipeline.engines import Engine
from openbid.pipeline.source import EventSource, entries_to_map

FEATURE_FIELDS: tuple[str, ...] = (
    "site_id",
    "domain",
    "app_bundle",
    "publisher_id",
    "categories",
    "content_categories",
    "inventory_type",
    "device_type",
    "os",
    "browser",
    "make",
    "country",
    "region",
    "city",
    "media",
    "size",
    "content_language",
)
"""Request features a user is described by; list-valued ones (categories) split on commas."""
LIST_FIELDS = frozenset({"categories", "content_categories"})
LIFT_AT = (1, 5, 10, 20)
"""Top shares (%) whose lift is reported."""

_USER_FEATURES_SQL = """
SELECT i.user_id AS user_id, a.features AS features
FROM impressions AS i
JOIN auctions AS a ON a.auction_id = i.auction_id
WHERE i.user_id <> ''"""


@dataclass(slots=True)
class UserFeatures:
    """Users (sorted ids) and their hashed feature bags, one row each (plus the bias)."""

    user_ids: list[str]
    rows: HashedRows
    hash_bits: int

    def index(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.user_ids)}


def user_features(
    source: EventSource,
    engine: Engine,
    *,
    since_micros: int,
    until_micros: int,
    fields: Sequence[str] = FEATURE_FIELDS,
    hash_bits: int = 18,
) -> UserFeatures:
    """Each user's logged request features over `[since_micros, until_micros)`: the
    auctions joined to the user's impressions on the engine, tokens hashed here."""
    impressions = source.load("impression", ("user_id", "auction_id"), since_micros, until_micros)
    auctions = source.load("auction", ("auction_id", "features"), since_micros, until_micros)
    engine.register("impressions", impressions)
    engine.register("auctions", auctions)
    joined = engine.query(_USER_FEATURES_SQL)
    return featurize(joined["user_id"], entries_to_map(joined["features"]), fields, hash_bits)


def featurize(
    user_ids: pa.Array | pa.ChunkedArray,
    features: pa.MapArray,
    fields: Sequence[str] = FEATURE_FIELDS,
    hash_bits: int = 18,
) -> UserFeatures:
    """Bags of hashed `field=value` tokens by user, from one row per (user, request)."""
    if isinstance(user_ids, pa.ChunkedArray):
        user_ids = user_ids.combine_chunks()
    users = pc.unique(user_ids).sort()
    user_index = pc.index_in(user_ids, value_set=users)
    parts_user, parts_token = [], []
    for name in fields:
        values = pc.map_lookup(features, pa.scalar(name, pa.string()), "first")
        present = pc.and_(pc.is_valid(values), pc.not_equal(pc.fill_null(values, ""), ""))
        values, rows = values.filter(present), user_index.filter(present)
        if name in LIST_FIELDS:
            split = pc.split_pattern(values, ",")
            rows = pc.take(rows, pc.list_parent_indices(split))
            values = pc.list_flatten(split)
            keep = pc.not_equal(values, "")
            values, rows = values.filter(keep), rows.filter(keep)
        parts_token.append(pc.binary_join_element_wise(pa.scalar(name + "="), values, ""))
        parts_user.append(rows)
    n_users = len(users)
    n_features = 1 << hash_bits
    bias = n_features - 1  # one column kept for the bias: tokens hash into the rest
    if not parts_token or n_users == 0:
        raise InsightsError("no user with logged request features in the window")
    pairs = pa.table(
        {
            "user": pa.concat_arrays([p.cast(pa.int64()) for p in parts_user]),
            "token": pa.concat_arrays(parts_token),
        }
    )
    pairs = pairs.group_by(["user", "token"]).aggregate([])  # presence, not counts
    tokens = pairs["token"].combine_chunks().dictionary_encode()
    hashed = np.array(
        [mmh3.hash(t, 0, signed=False) % (n_features - 1) for t in tokens.dictionary.to_pylist()],
        dtype=np.int64,
    )
    columns = hashed[tokens.indices.to_numpy(zero_copy_only=False)]
    user_of = pairs["user"].to_numpy()
    order = np.lexsort((columns, user_of))
    user_of, columns = user_of[order], columns[order]
    counts = np.bincount(user_of, minlength=n_users) + 1  # + the bias
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int64)
    bias_slots = indptr[1:] - 1
    indices[bias_slots] = bias
    mask = np.ones(indptr[-1], dtype=bool)
    mask[bias_slots] = False
    indices[mask] = columns
    return UserFeatures(users.to_pylist(), HashedRows(indices, indptr, n_features), hash_bits)


@dataclass(slots=True)
class Lookalike:
    """The lookalikes (non-seed users, best first, with scores) and the holdout's figures."""

    seed_size: int
    users_scored: int
    lookalikes: pa.Table
    metrics: dict[str, float] = field(default_factory=dict)
    model: FTRLLogisticRegression | None = None


def lift_at(labels: np.ndarray, scores: np.ndarray, share: float) -> float:
    """Share of positives among the top `share` of `scores`, over their share overall.

    >>> lift_at(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]), 0.25)
    4.0
    """
    n = len(labels)
    base = float(labels.mean()) if n else 0.0
    if base == 0.0:
        return float("nan")
    top = max(1, int(round(n * share)))
    order = np.argsort(-scores, kind="stable")[:top]
    return float(labels[order].mean() / base)


def _rows_for(features: UserFeatures, positions: np.ndarray) -> HashedRows:
    return features.rows.take(np.asarray(positions, dtype=np.int64))


def train_lookalike(
    features: UserFeatures,
    seed_users: Iterable[str],
    *,
    negatives_per_seed: float = 3.0,
    holdout_share: float = 0.3,
    size: int | None = None,
    seed: int = 0,
    alpha: float = 0.1,
    l2: float = 1.0,
    n_passes: int = 3,
) -> Lookalike:
    """Seed members (those with features) against a random sample of the others (module
    doc); `size` lookalikes (default: as many as the seed)."""
    started = time.perf_counter()
    if not 0 < holdout_share < 1 or negatives_per_seed <= 0:
        raise InsightsError("holdout_share must be in (0, 1) and negatives_per_seed > 0")
    index = features.index()
    seed_positions = np.array(sorted({index[u] for u in seed_users if u in index}), dtype=np.int64)
    n_users = len(features.user_ids)
    if len(seed_positions) < 10:
        raise InsightsError(
            f"the seed has {len(seed_positions)} members with logged features; need at least 10"
        )
    is_seed = np.zeros(n_users, dtype=bool)
    is_seed[seed_positions] = True
    others = np.flatnonzero(~is_seed)
    if len(others) < 10:
        raise InsightsError(f"only {len(others)} users outside the seed to learn against")
    rng = np.random.default_rng(seed)
    seed_shuffled, others_shuffled = rng.permutation(seed_positions), rng.permutation(others)
    seed_cut = int(round(len(seed_shuffled) * (1 - holdout_share)))
    other_cut = int(round(len(others_shuffled) * (1 - holdout_share)))
    seed_train, seed_test = seed_shuffled[:seed_cut], seed_shuffled[seed_cut:]
    pool, other_test = others_shuffled[:other_cut], others_shuffled[other_cut:]
    n_negatives = min(len(pool), int(round(len(seed_train) * negatives_per_seed)))
    negatives = pool[:n_negatives]  # the pool is shuffled: a random sample
    train = np.concatenate([seed_train, negatives])
    labels = np.concatenate([np.ones(len(seed_train)), np.zeros(len(negatives))])
    order = rng.permutation(len(train))  # FTRL learns online: no block of one class
    model = FTRLLogisticRegression(
        n_features=features.rows.n_features, alpha=alpha, l2=l2, n_passes=n_passes
    ).fit(_rows_for(features, train[order]), labels[order])

    test = np.concatenate([seed_test, other_test])
    test_labels = np.concatenate([np.ones(len(seed_test)), np.zeros(len(other_test))])
    test_scores = model.predict_proba(_rows_for(features, test))[:, 1]
    random_scores = rng.random(len(test))
    metrics: dict[str, float] = {
        "seed_members": float(len(seed_positions)),
        "users": float(n_users),
        "train_rows": float(len(train)),
        "holdout_users": float(len(test)),
        "holdout_seed_members": float(len(seed_test)),
        "holdout_auc": auc(test_labels, test_scores),
    }
    for k in LIFT_AT:
        metrics[f"lift_at_{k}pct"] = lift_at(test_labels, test_scores, k / 100)
        metrics[f"random_lift_at_{k}pct"] = lift_at(test_labels, random_scores, k / 100)

    candidates = others  # every non-member, the held-out ones included
    scores = model.predict_proba(_rows_for(features, candidates))[:, 1]
    wanted = min(len(candidates), size if size is not None else len(seed_positions))
    best = np.argsort(-scores, kind="stable")[:wanted]
    table = pa.table(
        {
            "user_id": pa.array([features.user_ids[i] for i in candidates[best]], pa.string()),
            "score": pa.array(scores[best], pa.float64()),
            "rank": pa.array(np.arange(1, wanted + 1), pa.int64()),
        }
    )
    metrics["seconds"] = time.perf_counter() - started
    return Lookalike(
        seed_size=len(seed_positions),
        users_scored=len(candidates),
        lookalikes=table,
        metrics=metrics,
        model=model,
    )
