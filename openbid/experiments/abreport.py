"""`openbid ab report`: each arm of a purpose's A/B test against control, from the event
log (every auction event carries its arms, `ab_arm`; bids, impressions, clicks and
conversions join it by auction id).

Per arm: auctions, callouts per auction, bid rate (bids per call), fill, revenue per
thousand auctions, CTR, CPC, CPA and the shaping model's expected / actual bids, each with
its 95% confidence interval (`openbid.experiments.stats`: the auction is the unit), then
each arm against control with a plain verdict: better, worse, no difference seen, or not
yet known with the auctions still needed.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openbid.experiments.arms import CONTROL
from openbid.experiments.stats import Comparison, Direction, Estimate, compare, ratio_estimate

HOUR_MICROS = 3_600_000_000
NOT_SENT = ("circuit_open", "consent_blocked", "no_time", "qps_capped")

METRICS: tuple[tuple[str, str, str, Direction, float], ...] = (
    # name, numerator, denominator, better, display scale
    ("callouts / auction", "calls", "auctions", "lower", 1.0),
    ("bid rate", "bids", "calls", "higher", 100.0),
    ("fill %", "won", "auctions", "higher", 100.0),
    ("revenue / 1k auctions $", "revenue_usd", "auctions", "higher", 1000.0),
    ("CTR %", "clicks", "impressions", "higher", 100.0),
    ("CPC $", "revenue_usd", "clicks", "lower", 1.0),
    ("CPA $", "revenue_usd", "conversions", "lower", 1.0),
    ("expected / actual bids", "expected", "scored_bids", "one", 1.0),
)


class ArmFigures(msgspec.Struct):
    arm: str
    auctions: int
    estimates: dict[str, Estimate]
    comparisons: dict[str, Comparison] = {}


class ABReport(msgspec.Struct):
    purpose: str
    since_micros: int
    until_micros: int
    arms: list[ArmFigures]


def _units(reader: Any, purpose: str, since: int, until: int) -> dict[str, Any]:
    """Per auction of the window that carries an arm of `purpose`: its arm and sums."""
    hours = {"start_hour": since // HOUR_MICROS, "end_hour": until // HOUR_MICROS + 1}
    auctions = reader.read_table("auction", **hours)
    auctions = auctions.filter(pc.and_(pc.greater_equal(auctions["ts_micros"], since),
                                       pc.less(auctions["ts_micros"], until)))  # fmt: skip
    labels = auctions["ab_arm"].to_pylist()
    prefix = f"{purpose}="
    arm_of = []
    for label in labels:
        arm = ""
        for part in (label or "").split(","):
            if part.startswith(prefix):
                arm = part[len(prefix) :]
        arm_of.append(arm)
    arms = np.asarray(arm_of, dtype=object)
    keep = np.flatnonzero(arms != "")
    auctions = auctions.take(keep)
    arms = arms[keep]
    n = auctions.num_rows
    ids = auctions["auction_id"].combine_chunks()
    won = np.asarray(pc.equal(auctions["outcome"], "won").to_numpy(zero_copy_only=False), float)
    # the clearing price is a CPM: one impression earns a thousandth of it
    revenue = auctions["clearing_price_micros"].to_numpy().astype(float) / 1e9 * won

    def per_auction(kind: str, mask_of=None, weights_of=None) -> np.ndarray:
        # trackers come after their auction: read from the window's start to the log's end
        table = reader.read_table(kind, start_hour=hours["start_hour"])
        if mask_of is not None and table.num_rows:
            table = table.filter(mask_of(table))
        if table.num_rows == 0 or n == 0:
            return np.zeros(n)
        at = pc.index_in(table["auction_id"], value_set=ids).fill_null(-1).to_numpy()
        found = at >= 0
        weights = np.ones(table.num_rows) if weights_of is None else weights_of(table)
        return np.bincount(at[found], weights=weights[found], minlength=n)

    def sent(table: pa.Table) -> pa.Array:
        return pc.and_(pc.not_equal(table["decision"], "filtered"),
                       pc.invert(pc.is_in(table["error"], pa.array(NOT_SENT))))  # fmt: skip

    def scored(table: pa.Table) -> pa.Array:
        return pc.and_(sent(table), pc.greater_equal(table["shaping_score"], 0.0))

    def bid_weight(table: pa.Table) -> np.ndarray:
        return np.asarray(table["bid"].to_numpy(zero_copy_only=False), dtype=float)

    def score_weight(table: pa.Table) -> np.ndarray:
        return table["shaping_score"].to_numpy()

    return {
        "arms": arms,
        "auctions": np.ones(n),
        "won": won,
        "revenue_usd": revenue,
        "calls": per_auction("bid", sent),
        "bids": per_auction("bid", sent, bid_weight),
        "expected": per_auction("bid", scored, score_weight),
        "scored_bids": per_auction("bid", scored, bid_weight),
        "impressions": per_auction("impression"),
        "clicks": per_auction("click"),
        "conversions": per_auction("conversion", lambda t: pc.not_equal(t["attribution"], "none")),
    }


def ab_report(
    reader: Any, purpose: str, *, since_micros: int, until_micros: int, min_effect: float = 0.01
) -> ABReport:
    """The report of `purpose`'s arms over [since, until) (`reader`: an `EventReader`)."""
    units = _units(reader, purpose, since_micros, until_micros)
    arms = units["arms"]
    names = sorted(set(arms.tolist()) - {CONTROL})
    figures = []
    for arm in [CONTROL, *names]:
        mask = arms == arm
        estimates = {}
        for name, numerator, denominator, _, scale in METRICS:
            e = ratio_estimate(units[numerator][mask] * scale, units[denominator][mask])
            estimates[name] = e
        figures.append(ArmFigures(arm, int(mask.sum()), estimates))
    control = figures[0]
    for arm in figures[1:]:
        arm.comparisons = {
            name: compare(
                arm.estimates[name], control.estimates[name], direction, min_effect=min_effect
            )  # fmt: skip
            for name, _, _, direction, _ in METRICS
        }
    return ABReport(purpose, since_micros, until_micros, figures)


def _value(e: Estimate) -> str:
    if not math.isfinite(e.value):
        return "-"
    return f"{e.value:,.4g} ± {e.half_width:,.2g}" if math.isfinite(e.se) else f"{e.value:,.4g}"


def report_text(report: ABReport) -> str:
    """The report as a terminal table, then one verdict line per arm and metric."""
    arms = report.arms
    header = ["metric", *[f"{a.arm} ({a.auctions:,})" for a in arms]]
    rows = [header]
    for name, *_ in METRICS:
        rows.append([name, *[_value(a.estimates[name]) for a in arms]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                               for i, c in enumerate(row)))  # fmt: skip
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    if len(arms) == 1:
        lines.append(f"\nno arm of {report.purpose} besides control in this window")
    for arm in arms[1:]:
        lines.append(f"\n{arm.arm} against control:")
        for name, comparison in arm.comparisons.items():
            lines.append(f"  {name:<26} {comparison.verdict:<19} {comparison.detail}")
    return "\n".join(lines)
