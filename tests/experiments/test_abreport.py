"""`openbid ab report`: per-arm figures from the event log with confidence intervals that
narrow as traffic grows, and plain verdicts: worse when the data says so, not yet known
(with the traffic still needed) when it cannot tell yet."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from openbid.cli import main
from openbid.events import EventReader
from openbid.experiments.abreport import ab_report
from openbid.experiments.stats import Estimate, compare, ratio_estimate
from openbid.experiments.synthetic import signal_tables
from openbid.pipeline.synthetic import write_segments

START = 1_700_000_000 * 1_000_000


def _log(directory, n_auctions: int, *, seed: int = 3, fill_loss: float = 0.3) -> None:
    """A log whose auctions are half `control`, half `challenger`; the challenger loses
    `fill_loss` of its wins (no bid came back in time, say)."""
    tables = signal_tables(n_auctions, seed=seed, start_micros=START, span_s=3600)
    auctions = tables["auction"]
    rng = np.random.default_rng(seed)
    challenger = rng.random(auctions.num_rows) < 0.5
    arms = np.where(challenger, "shaping=challenger", "shaping=control")
    bids = tables["bid"].filter(pc.field("bid"))
    best = bids.group_by("auction_id").aggregate([("price_micros", "max")])
    at = pc.index_in(auctions["auction_id"], value_set=best["auction_id"]).fill_null(-1).to_numpy()
    won = at >= 0
    price = np.where(won, best["price_micros_max"].to_numpy()[np.maximum(at, 0)], 0)
    auctions = auctions.set_column(auctions.column_names.index("clearing_price_micros"),
                                   "clearing_price_micros", pa.array(price, pa.int64()))  # fmt: skip
    lost = challenger & won & (rng.random(auctions.num_rows) < fill_loss)
    outcome = np.where(won & ~lost, "won", "no_bid")
    auctions = auctions.set_column(auctions.column_names.index("ab_arm"), "ab_arm", pa.array(arms))
    auctions = auctions.set_column(auctions.column_names.index("outcome"), "outcome",
                                   pa.array(outcome.tolist()))  # fmt: skip
    tables["auction"] = auctions
    write_segments(tables, str(directory / "segments"))


def _report(directory):
    return ab_report(EventReader(directory), "shaping", since_micros=START,
                     until_micros=START + 2 * 3600 * 10**6)  # fmt: skip


def test_a_worse_challenger_is_called_worse_and_the_interval_narrows_with_traffic(tmp_path):
    _log(tmp_path / "small", 1_000)
    _log(tmp_path / "large", 40_000)
    small, large = _report(tmp_path / "small"), _report(tmp_path / "large")
    assert [a.arm for a in large.arms] == ["control", "challenger"]
    assert abs(large.arms[0].auctions - 20_000) < 600
    fill_small = small.arms[1].estimates["fill %"]
    fill_large = large.arms[1].estimates["fill %"]
    assert fill_large.half_width < fill_small.half_width / 4  # ~ 1/sqrt(40)
    verdict = large.arms[1].comparisons["fill %"]
    assert verdict.verdict == "worse" and verdict.high < 0
    assert large.arms[1].comparisons["callouts / auction"].verdict in ("no difference seen",
                                                                        "not yet known")  # fmt: skip


def test_a_small_difference_on_little_traffic_is_not_yet_known_with_the_traffic_needed(tmp_path):
    _log(tmp_path, 600, fill_loss=0.05)
    comparison = _report(tmp_path).arms[1].comparisons["fill %"]
    assert comparison.verdict == "not yet known"
    assert comparison.more_units > 600
    assert "more auctions" in comparison.detail


def test_the_cli_prints_each_arm_and_its_verdicts(tmp_path):
    _log(tmp_path / "events", 5_000)
    result = CliRunner().invoke(
        main,
        ["ab", "report", "shaping", "--since", "2023-11-14T22:00:00", "--until", "2023-11-15T02:00"],
        env={"OPENBID_EVENTS__DIR": str(tmp_path / "events"),
             "OPENBID_MODELS__STORE_URL": str(tmp_path / "store")},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "control (" in result.output and "challenger (" in result.output
    assert "challenger against control:" in result.output
    assert "fill %" in result.output and "worse" in result.output


@given(st.integers(2, 6))
def test_interval_width_shrinks_as_one_over_the_square_root_of_traffic(power):
    rng = np.random.default_rng(power)
    n = 10**power // 2
    wide = ratio_estimate(rng.binomial(1, 0.2, n), np.ones(n))
    narrow = ratio_estimate(rng.binomial(1, 0.2, 4 * n), np.ones(4 * n))
    assert 1.5 < wide.half_width / narrow.half_width < 2.7  # ~2 = sqrt(4)


def test_a_clear_gain_is_better_and_an_identical_arm_is_no_difference_once_traffic_is_large():
    control = Estimate(0.20, 0.001, 100_000, 20_000, 100_000)
    assert (
        compare(Estimate(0.22, 0.001, 100_000, 22_000, 100_000), control, "higher").verdict
        == "better"
    )
    assert (
        compare(Estimate(0.22, 0.001, 100_000, 22_000, 100_000), control, "lower").verdict
        == "worse"
    )
    same = compare(
        Estimate(0.2002, 0.0003, 10**6, 0, 0), Estimate(0.2, 0.0003, 10**6, 0, 0), "higher"
    )
    assert same.verdict == "no difference seen"


def test_clicks_and_conversions_join_their_auction_arm(tmp_path):
    _log(tmp_path, 5_000)
    report = _report(tmp_path)
    clicks = sum(a.estimates["CTR %"].numerator for a in report.arms) / 100.0
    table = EventReader(tmp_path).read_table("click")
    assert clicks == table.num_rows
    assert pc.sum(pc.cast(pc.is_valid(table["auction_id"]), pa.int64())).as_py() == table.num_rows
