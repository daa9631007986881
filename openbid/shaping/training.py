"""The shaping training set and trainer: (auction features, DSP) -> did a valid bid come back?

`rows_from_events` turns the event log's auction and bid tables into one row per (auction,
DSP called): the raw features as logged, the label, the bid's value, and the row's weight,
1 / the probability the call was sent (1 for a normal call, 1 / exploration share for an
exploration call). Filtered calls have no label and are left out; the exploration calls,
weighted up, stand for them, so the model keeps learning what it stopped letting through.

`train_shaping` fits FTRL logistic regression (per DSP, or one shared model with DSP
crosses), holds out the last day to choose each DSP's threshold at the bid recall (or bid
value) target, and returns everything `save_shaping_model` stores. By default each learner's
hyper-parameters (alpha, L1, L2, passes) are chosen from its own data by `openbid.ml.fit_auto`
(a held-out share at the end of the training part, in time order), as those that keep the
fewest calls at 95-99.5% bid recall there; `FTRLParams` fixes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openbid.ml import (
    AutoSettings,
    FeatureSpec,
    Featurizer,
    FTRLLogisticRegression,
    HashedRows,
    TrainingDataError,
    evaluate,
    fit_auto,
)
from openbid.shaping.errors import ShapingDataError
from openbid.shaping.features import DSP_FIELD, REQUEST_FIELDS, Layout, shaping_spec
from openbid.shaping.thresholds import (
    RECALL_TARGETS,
    FrontierPoint,
    calls_kept_at_recall,
    frontier,
    threshold_for_share,
)

log = logging.getLogger(__name__)

NOT_SENT_ERRORS = ("consent_blocked", "qps_capped", "no_time")
"""Outcomes of a call the shaper allowed but the exchange did not send: no label."""

DEFAULT_EXPLORATION_SHARE = 0.01
"""Share of below-threshold calls sent anyway, unless the model or the shaper says otherwise."""
MIN_ROWS_PER_DSP = 50
"""Fewer training rows than this for a DSP and it gets no model (it is always called)."""

TargetKind = Literal["recall", "value"]

DEFAULT_TARGET_KIND: TargetKind = "value"
DEFAULT_TARGET = 0.997
"""Thresholds keep 99.7% of each DSP's bid value by default. Bids a recall target loses
are the rare ones, often on high floors, so they are pricier than average and usually
alone in their auction: at 99% bid recall about 1.1% of winning revenue goes with them,
while a value target keeps about its own share of the winning revenue. 99.7% rather than
99.5%: thresholds chosen on the held-out day keep up to 0.2 points less on the next day,
and the goal is to keep at least 99.5% of the revenue (docs/shaping.md, "Thresholds")."""


@dataclass(slots=True)
class ShapingRows:
    """Training rows. Features are per auction (hashed once); rows point at their auction.

    `features[name]` and `auction_id` have one value per auction (strings, None when a
    feature is absent); `request`,
    `dsp`, `label`, `weight` and `value_micros` have one entry per (auction, DSP) row.
    """

    features: dict[str, pa.Array]
    auction_id: np.ndarray
    ts_micros: np.ndarray
    request: np.ndarray
    dsp: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    value_micros: np.ndarray

    def __len__(self) -> int:
        return int(self.request.shape[0])

    @property
    def n_auctions(self) -> int:
        return int(self.ts_micros.shape[0])

    @property
    def dsps(self) -> list[str]:
        return sorted(set(self.dsp.tolist()))

    def row_ts_micros(self) -> np.ndarray:
        return self.ts_micros[self.request]

    def select(self, rows: np.ndarray) -> ShapingRows:
        """The given rows (boolean mask or indices); auctions are kept whole."""
        return ShapingRows(
            self.features,
            self.auction_id,
            self.ts_micros,
            self.request[rows],
            self.dsp[rows],
            self.label[rows],
            self.weight[rows],
            self.value_micros[rows],
        )

    def feature_columns(self, request: np.ndarray | None = None) -> dict[str, pa.Array]:
        """The request features of the given auctions (all when None), one column per field."""
        if request is None:
            return self.features
        indices = pa.array(request, type=pa.int64())
        return {name: column.take(indices) for name, column in self.features.items()}


def rows_from_events(auctions: pa.Table, bids: pa.Table) -> ShapingRows:
    """One row per (auction, DSP) the exchange sent a call to, from the event log's
    `auction` and `bid` tables (`EventReader.read_table`). A DSP that returned several bids
    is one positive row valued at its highest bid."""
    if bids.num_rows == 0 or auctions.num_rows == 0:
        raise ShapingDataError("the event log has no auctions or no bid events to learn from")
    sent = pc.and_(
        pc.not_equal(bids["decision"], "filtered"),
        pc.invert(pc.is_in(bids["error"], pa.array(NOT_SENT_ERRORS))),
    )
    bids = bids.filter(sent)
    bids = bids.append_column("bid_int", pc.cast(bids["bid"], pa.int8()))
    grouped = bids.group_by(["auction_id", "dsp"], use_threads=False).aggregate(
        [
            ("bid_int", "max"),
            ("price_micros", "max"),
            ("send_probability", "min"),
        ]
    )
    # the features map cannot pass through a join: join on a row number, then take
    auction_part = auctions.select(["auction_id", "ts_micros"]).append_column(
        "auction_row", pa.array(np.arange(auctions.num_rows, dtype=np.int64))
    )
    joined = grouped.join(auction_part, keys="auction_id", join_type="inner")
    if joined.num_rows == 0:
        raise ShapingDataError(
            "no bid event matches an auction event (check the log's auction ids)"
        )
    joined = joined.sort_by([("ts_micros", "ascending"), ("auction_id", "ascending")])
    send_probability = joined["send_probability_min"].to_numpy()
    if np.any(~(send_probability > 0.0)) or np.any(send_probability > 1.0):
        raise ShapingDataError("bid events carry a send_probability outside (0, 1]")
    # one auction per distinct id, in time order; rows point at it
    auction_ids = pc.unique(joined["auction_id"])
    first = pc.index_in(auction_ids, value_set=joined["auction_id"])
    request = pc.index_in(joined["auction_id"], value_set=auction_ids).to_numpy().astype(np.int64)
    auction_rows = joined["auction_row"].take(first)
    feature_map = auctions["features"].take(auction_rows).combine_chunks()
    features = {
        name: pc.map_lookup(feature_map, pa.scalar(name), "first") for name in REQUEST_FIELDS
    }
    label = joined["bid_int_max"].to_numpy().astype(np.float64)
    return ShapingRows(
        features=features,
        auction_id=np.asarray(auction_ids.to_pylist(), dtype=object),
        ts_micros=joined["ts_micros"].take(first).to_numpy().astype(np.int64),
        request=request,
        dsp=np.asarray(joined["dsp"].to_pylist(), dtype=object),
        label=label,
        weight=1.0 / send_probability,
        value_micros=np.where(label > 0, joined["price_micros_max"].to_numpy(), 0).astype(np.int64),
    )


@dataclass(slots=True)
class FTRLParams:
    """Fixed hyper-parameters of the FTRL-Proximal learners (see `openbid.ml.ftrl`); without
    them the trainer chooses them per learner (`AUTO_SETTINGS`). These were the defaults
    before: tuned by hand on the default market."""

    alpha: float = 0.1
    beta: float = 1.0
    l1: float = 0.5
    l2: float = 1.0
    n_passes: int = 2


@dataclass(slots=True)
class TrainedShaping:
    """A trained shaping model, ready for `save_shaping_model`."""

    layout: Layout
    spec: FeatureSpec
    dsps: list[str]
    learners: dict[str, FTRLLogisticRegression]
    """Per DSP (`per_dsp`), or one entry "shared"."""
    thresholds: dict[str, float]
    target_kind: TargetKind
    target: float
    exploration_share: float
    window_start_micros: int
    window_end_micros: int
    rows: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    frontier: list[FrontierPoint] = field(default_factory=list)


class ShapingScorerOffline:
    """Scores rows with trained learners, for thresholds and evaluation (not serving)."""

    def __init__(self, layout: Layout, spec: FeatureSpec, learners: dict) -> None:
        self.layout = layout
        self.featurizer = Featurizer(spec)
        self.learners = learners

    def hash(self, rows: ShapingRows) -> HashedRows:
        """Per auction (`per_dsp`) or per row (`shared`)."""
        if self.layout == "per_dsp":
            return self.featurizer.transform_columns(rows.features, n_rows=rows.n_auctions)
        columns = rows.feature_columns(rows.request)
        columns[DSP_FIELD] = pa.array(rows.dsp.tolist(), type=pa.string())
        return self.featurizer.transform_columns(columns, n_rows=len(rows))

    def score(self, rows: ShapingRows, hashed: HashedRows | None = None) -> np.ndarray:
        """The predicted bid probability of every row; NaN for a DSP with no model."""
        hashed = self.hash(rows) if hashed is None else hashed
        scores = np.full(len(rows), np.nan)
        if self.layout == "shared":
            learner = self.learners.get("shared")
            if learner is not None:
                scores[:] = learner.predict_proba(hashed)[:, 1]
            return scores
        for dsp, learner in self.learners.items():
            mask = rows.dsp == dsp
            if mask.any():
                scores[mask] = learner.predict_proba(hashed.take(rows.request[mask]))[:, 1]
        return scores


def split_holdout(rows: ShapingRows, holdout_s: float) -> tuple[ShapingRows, ShapingRows]:
    """(training rows, the last `holdout_s` seconds of rows)."""
    ts = rows.row_ts_micros()
    if len(rows) == 0:
        raise ShapingDataError("no training rows")
    cut = int(ts.max()) - int(holdout_s * 1e6)
    train = ts <= cut
    if not train.any() or train.all():
        span_h = (int(ts.max()) - int(ts.min())) / 3.6e9
        raise ShapingDataError(
            f"the log spans {span_h:.1f} h: it needs more than the {holdout_s / 3600:g} h "
            "held out to choose thresholds"
        )
    return rows.select(train), rows.select(~train)


AUTO_SETTINGS = AutoSettings(kind="ftrl_lr", calibration=())
"""How `fit_auto` trains a shaping learner: logistic regression only (the serving fast path
scores linear models), no calibration (thresholds are chosen on the scores themselves, and
a monotone map would change nothing but add ties). Its criterion is
`calls_kept_at_recall`, not log loss: thresholds keep a share of the bids, so the settings
that rank the bids highest are the ones to keep."""


def fit_learners(
    rows: ShapingRows,
    layout: Layout,
    spec: FeatureSpec,
    params: FTRLParams | None = None,
    *,
    weighted: bool = True,
    dsps: Sequence[str] | None = None,
) -> dict[str, FTRLLogisticRegression]:
    """FTRL learners on `rows` (in time order), with `params`, or chosen from each
    learner's data by `fit_auto` when None; `weighted=False` ignores the exploration weights
    (only to show what they are for)."""
    featurizer = Featurizer(spec)
    weights = rows.weight if weighted else np.ones(len(rows))

    def learner(hashed: HashedRows, labels: np.ndarray, w: np.ndarray) -> FTRLLogisticRegression:
        fixed = params
        if fixed is None:
            try:
                return fit_auto(  # type: ignore[return-value]
                    hashed, labels, w, settings=AUTO_SETTINGS, criterion=calls_kept_at_recall
                ).learner
            except TrainingDataError as exc:  # e.g. a DSP that never bid in the window
                log.warning("shaping learner trained with fixed settings: %s", exc)
                fixed = FTRLParams()
        return FTRLLogisticRegression(
            n_features=spec.n_features,
            alpha=fixed.alpha,
            beta=fixed.beta,
            l1=fixed.l1,
            l2=fixed.l2,
            n_passes=fixed.n_passes,
        ).fit(hashed, labels, w)

    if layout == "shared":
        hashed = ShapingScorerOffline(layout, spec, {}).hash(rows)
        return {"shared": learner(hashed, rows.label, weights)}
    hashed = featurizer.transform_columns(rows.features, n_rows=rows.n_auctions)
    learners = {}
    for dsp in dsps or rows.dsps:
        mask = rows.dsp == dsp
        if mask.sum() < MIN_ROWS_PER_DSP:
            log.warning(
                "too few rows to train a shaping model; the DSP will always be called",
                extra={"dsp": dsp, "rows": int(mask.sum())},
            )
            continue
        learners[dsp] = learner(hashed.take(rows.request[mask]), rows.label[mask], weights[mask])
    return learners


def target_amounts(rows: ShapingRows, mask: np.ndarray, kind: TargetKind) -> np.ndarray:
    """What a threshold keeps a share of, for the rows in `mask`: their weighted bids
    (`recall`) or the weighted value of those bids in micros (`value`). Bids logged without
    a price (all zero) count one each: a value target then keeps that share of the bids."""
    weight = rows.weight[mask]
    bids = weight * rows.label[mask]
    if kind == "recall":
        return bids
    value = weight * rows.value_micros[mask]
    return value if value.sum() > 0 else bids


def choose_thresholds(
    rows: ShapingRows, scores: np.ndarray, kind: TargetKind, target: float
) -> dict[str, float]:
    """Per DSP, the threshold keeping `target` of its `kind` on these (held-out) rows."""
    thresholds = {}
    for dsp in rows.dsps:
        mask = (rows.dsp == dsp) & ~np.isnan(scores)
        if mask.any():
            thresholds[dsp] = threshold_for_share(
                scores[mask], target_amounts(rows, mask, kind), target
            )
    return thresholds


def train_shaping(
    rows: ShapingRows,
    *,
    layout: Layout = "per_dsp",
    target_kind: TargetKind = DEFAULT_TARGET_KIND,
    target: float = DEFAULT_TARGET,
    exploration_share: float = DEFAULT_EXPLORATION_SHARE,
    holdout_s: float = 86_400.0,
    params: FTRLParams | None = None,
    hash_bits: int | None = None,
    frontier_targets: Sequence[float] = RECALL_TARGETS,
) -> TrainedShaping:
    """Train on all but the last `holdout_s` seconds (hyper-parameters chosen per learner
    unless `params` fixes them), choose thresholds on those, report per-DSP metrics and the
    frontier (held-out day, weighted)."""
    if not 0.0 < exploration_share <= 1.0:
        raise ShapingDataError(f"exploration share must be in (0, 1], got {exploration_share}")
    spec = shaping_spec(layout) if hash_bits is None else shaping_spec(layout, hash_bits)
    train, holdout = split_holdout(rows, holdout_s)
    dsps = rows.dsps
    learners = fit_learners(train, layout, spec, params, dsps=dsps)
    scores = ShapingScorerOffline(layout, spec, learners).score(holdout)
    thresholds: dict[str, float] = {}
    metrics: dict[str, dict[str, float]] = {}
    points: list[FrontierPoint] = []
    for dsp in dsps:
        mask = (holdout.dsp == dsp) & ~np.isnan(scores)
        if (layout == "per_dsp" and dsp not in learners) or not mask.any():
            continue
        s, y, w = scores[mask], holdout.label[mask], holdout.weight[mask]
        thresholds[dsp] = threshold_for_share(s, target_amounts(holdout, mask, target_kind), target)
        points += frontier(dsp, s, w * y, w, frontier_targets)
        learner = learners["shared" if layout == "shared" else dsp]
        dsp_metrics = {
            "holdout_rows": float(mask.sum()),
            "bid_rate": float(np.average(y, weights=w)),
            "alpha": float(learner.alpha),
            "l1": float(learner.l1),
            "l2": float(learner.l2),
            "n_passes": float(learner.n_passes),
        }
        if 0 < y.sum() < len(y):
            quality = evaluate(y, s, w)
            dsp_metrics |= {
                "logloss": quality.logloss,
                "normalized_entropy": quality.normalized_entropy,
                "auc": quality.auc,
                "calibration_ratio": quality.calibration_ratio,
            }
        metrics[dsp] = dsp_metrics
    ts = rows.row_ts_micros()
    return TrainedShaping(
        layout=layout,
        spec=spec,
        dsps=dsps,
        learners=learners,
        thresholds=thresholds,
        target_kind=target_kind,
        target=target,
        exploration_share=exploration_share,
        window_start_micros=int(ts.min()),
        window_end_micros=int(ts.max()),
        rows=len(rows),
        metrics=metrics,
        frontier=points,
    )
