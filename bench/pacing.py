"""Budgets, pacing and bidding on the simulated market: simulated days at an accelerated clock
(in process, no HTTP), and four worker processes sharing one budget over the real Redis.

One campaign (a CPC goal for `--advertiser`, budget-bound) buys on the landscape of
`openbid.sim.landscape`. Its click model is trained honestly: FTRL-LR (`openbid.ml`) on two
training days of its own exploration log (impressions with the market's click draws); it
never sees the oracle's probabilities. Then, on days the model has not seen:

1. a validation day tunes what can be tuned (the pacing controller's gain and elasticity;
   the linear baseline's base bid, for the most clicks within the budget, in each auction);
2. a test day reports, for first and second price:
   - ours: value (CPC x pCTR) x the pacing multiplier, shaded in first price from a win
     curve refitted every hour from our own censored outcomes (the first refit uses the
     validation day's), following a plan shaped by the previous day's traffic;
   - linear (Zhang et al. 2014): `base x pCTR / mean pCTR` until the budget is gone;
   - the oracle: our loop with the true click probabilities and each request's true win
     curve (the best this bidder could do);
   - ours without shading (the same loop, bidding the paced value).

Clicks are expected clicks (the sum of the true click probabilities of the impressions
won, the mean of the realised clicks, which are shown beside them). Surplus is what the
impressions were worth at the goal's CPC (CPC x expected clicks) minus what they cost.

    .venv/bin/python bench/pacing.py [--quick] [--requests 1000000] [--seed 1]
        [--redis redis://127.0.0.1:6379/15] [--workers 4]

Timing figures (the banker's hold) are noisy while other programs share the machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from openbid.campaigns.bidding import LineItemBidding
from openbid.campaigns.pacing import PacingSettings, SpendPlan
from openbid.ml import FeatureSpec, Featurizer, FTRLLogisticRegression, evaluate
from openbid.pricing import GOAL_CPC
from openbid.pricing.shader import Shader
from openbid.sim import Market
from openbid.sim.buying import (
    SEGMENT_FEATURES,
    BuyingDay,
    DayResult,
    LinearBidder,
    PolicyBidder,
    hourly_plan_error,
    run_day,
)
from openbid.sim.draws import STREAM_CLICK, uniforms
from openbid.sim.features import COLUMN, REQUEST_FEATURES
from openbid.sim.landscape import Landscape, LandscapeConfig
from openbid.sim.truth import USER_SALT

DAY_S = 86_400.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller market day, same output")
    parser.add_argument("--requests", type=int, help="requests per day (default 1M, quick 150k)")
    parser.add_argument("--market", default="default")
    parser.add_argument("--advertiser", default="sportsgear.example")
    parser.add_argument("--cpc", type=float, default=2.0, help="the goal: USD per click")
    parser.add_argument(
        "--budget-share",
        type=float,
        default=0.1,
        help="daily budget as a share of what bidding the full value all day spends",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--workers", type=int, default=4)
    return parser.parse_args()


# ---- the market's days and the click model ------------------------------------------------


def make_days(market: Market, per_day: int, seed: int):
    """Four consecutive days (two of training, validation, test), volume by weekday."""
    weights = market.config.traffic.weekday_weights
    days = []
    for d in range(4):
        start = market.start_s + d * DAY_S
        weekday = int(((start // DAY_S) + 3) % 7)  # 1970-01-01 was a Thursday
        count = int(per_day * weights[weekday] / np.mean(weights))
        days.append(
            (start, market.generate(count, seed=seed * 100 + d, start_s=start, span_s=DAY_S))
        )
    return days


SPEC = FeatureSpec(
    categorical=list(REQUEST_FEATURES),
    crosses=[["site", "devicetype"], ["category", "hour_bucket"], ["os", "format"]],
    hash_bits=20,
)


def columns(market: Market, batch) -> dict[str, pa.Array]:
    """The request features as the click model reads them (strings, dictionary-encoded)."""
    return {
        name: pa.DictionaryArray.from_arrays(
            pa.array(batch.codes[:, COLUMN[name]].astype(np.int32)),
            pa.array(list(market.vocab[name].values)),
        )
        for name in REQUEST_FEATURES
    }


def train_click_model(market, landscape, advertiser, training_days):
    """FTRL-LR on the exploration log of the training days: every request shown our ad, the
    label the market's own click draw (what the log would have recorded)."""
    featurizer = Featurizer(SPEC)
    model = FTRLLogisticRegression(n_features=SPEC.n_features, alpha=0.05, l2=1.0)
    for _, batch in training_days:
        truth = landscape.click_probability(batch, advertiser)
        labels = (uniforms(batch.keys, USER_SALT, STREAM_CLICK) < truth).astype(np.float64)
        model.partial_fit(featurizer.transform_columns(columns(market, batch)), labels)
    return featurizer, model


# ---- runs ---------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    result: DayResult
    plan: SpendPlan | None = None
    bidder: LineItemBidding | None = None

    @property
    def plan_error(self) -> tuple[float, float]:
        if self.plan is None:
            return float("nan"), float("nan")
        return hourly_plan_error(self.result, self.plan.hourly_shares())


def traffic_plan(previous: BuyingDay, day: BuyingDay) -> SpendPlan:
    """Spend shaped by the previous day's requests per hour."""
    return SpendPlan.from_forecast(day.day_start_s, previous.hourly_requests() + 1.0)


def paced(
    day, landscape, budget, cpc_micros, plan, settings, shader, memory, slot_s, refit_s,
    oracle=False, shade=True,
) -> Run:  # fmt: skip
    """Our loop for a day; `memory` is what the previous day's controller learned (None: it
    starts from a multiplier of 0.3)."""
    policy = LineItemBidding(
        GOAL_CPC,
        cpc_micros,
        plan.shares,
        settings=settings,
        shader=shader,
        shade=shade,
        refit_s=refit_s,
        memory=memory,
    )
    bidder = PolicyBidder(policy, landscape, oracle=oracle)
    result = run_day(day, landscape, bidder, budget, slot_s=slot_s)
    return Run("paced", result, SpendPlan(day.day_start_s, plan.shares), policy)


def memory(run: Run):
    """What the run's controller learned, for the next day's."""
    return run.bidder.controller.remember()


def tune_linear(day, landscape, budget, mean_ctr, hindsight=False) -> tuple[float, DayResult]:
    """The base bid with the most realised clicks within the budget on `day` (`hindsight`:
    the most expected clicks, which only the oracle knows): a coarse geometric grid, then a
    finer one around its best."""
    best = (-1.0, 0.0, None)
    grid = np.geomspace(2e4, 2e7, 25)
    for _ in range(2):
        for base in grid:
            result = run_day(day, landscape, LinearBidder(base, mean_ctr), budget, slot_s=DAY_S)
            score = result.expected_clicks if hindsight else result.clicks
            if score > best[0]:
                best = (score, base, result)
        grid = best[1] * np.geomspace(0.8, 1.25, 11)
    return best[1], best[2]


def unshaded_full_spend(day, landscape, cpc_micros) -> int:
    """What bidding the full value on every request spends in a day (first price)."""
    full = PacingSettings(min_multiplier=1.0, headroom_share=1e6, slot_cap=1e6)
    policy = LineItemBidding(
        GOAL_CPC, cpc_micros, SpendPlan.even(0.0).shares, settings=full, initial_multiplier=1.0
    )
    return run_day(
        day, landscape, PolicyBidder(policy, landscape), 10**15, slot_s=DAY_S
    ).spend_micros


def surplus(run: Run, cpc_micros: int) -> float:
    return cpc_micros * run.result.expected_clicks - run.result.spend_micros


def bid_time_costs(shader: Shader, day: BuyingDay, cpc_micros: int) -> dict[str, float]:
    """What pricing and shading cost per candidate at bid time (one core, CPU time): the
    value of a batch of 64, the shaded bid of one (`shade`) and of a batch (`shade_many`)."""
    from openbid.pricing import value_cpm_micros

    table = shader.table
    n = min(len(day), 100_000)
    rows = shader.rows_of(day.segments[:n])
    value = value_cpm_micros(GOAL_CPC, cpc_micros, day.predicted_ctr[:n])
    floor = day.competition.floor_micros[:n]
    started = time.process_time()
    for start in range(0, n, 64):
        value_cpm_micros(GOAL_CPC, cpc_micros, day.predicted_ctr[start : start + 64])
    value_ns = (time.process_time() - started) / n * 1e9
    pairs = list(zip(rows.tolist(), value.tolist(), floor.tolist(), strict=True))
    started = time.process_time()
    for row, v, f in pairs:
        table.shade(row, v, f)
    one_ns = (time.process_time() - started) / n * 1e9
    started = time.process_time()
    for start in range(0, n, 64):
        end = start + 64
        table.shade_many(rows[start:end], value[start:end], floor[start:end])
    many_ns = (time.process_time() - started) / n * 1e9
    return {"value_ns": value_ns, "shade_ns": one_ns, "shade_many_ns": many_ns}


# ---- the banker over Redis ----------------------------------------------------------------


def banker_load(redis_url: str, workers: int, quick: bool) -> dict:
    from openbid.campaigns.bankerload import run_load

    result = run_load(
        redis_url,
        workers=workers,
        budget_micros=6_000_000 if quick else 20_000_000,
        seconds=4.0 if quick else 10.0,
        concurrency=32,
    )
    holds = sum(w.holds for w in result.workers)
    starved = sum(w.starved for w in result.workers)
    return {
        "overspend_bids": result.overspend_bids,
        "spend_micros": result.spend_micros,
        "budget_micros": result.budget_micros,
        "delivered_share": result.delivered_share,
        "starved_share": starved / max(holds + starved, 1),
        "holds": holds,
        "wins": sum(w.wins for w in result.workers),
        "duplicates_ignored": sum(w.duplicates_ignored for w in result.workers),
        "hold_ns_p99": max(w.hold_ns_p99 for w in result.workers),
    }


# ---- main ---------------------------------------------------------------------------------


@dataclass
class Prepared:
    """The market's days as the campaign meets them, and its click model's quality."""

    market: Market
    first: Landscape
    second: Landscape
    train1: BuyingDay
    valid: BuyingDay
    test: BuyingDay
    model_auc: float
    oracle_auc: float
    calibration: float
    budget_micros: int


def prepare(args: argparse.Namespace, per_day: int) -> Prepared:
    cpc_micros = int(args.cpc * 1_000_000)
    market = Market.load(args.market)
    first = Landscape(market, LandscapeConfig(auction="first"))
    second = Landscape(market, LandscapeConfig(auction="second"))
    raw = make_days(market, per_day, args.seed)
    featurizer, model = train_click_model(market, first, args.advertiser, raw[:2])

    def predicted(batch) -> np.ndarray:
        return model.predict_proba(featurizer.transform_columns(columns(market, batch)))[:, 1]

    train1, valid, test = (
        BuyingDay.build(first, batch, args.advertiser, predicted(batch), start)
        for start, batch in raw[1:]
    )
    labels = (test.click_draw < test.true_ctr).astype(np.float64)
    quality = evaluate(labels, test.predicted_ctr)
    budget = int(args.budget_share * unshaded_full_spend(train1, first, cpc_micros))
    return Prepared(
        market, first, second, train1, valid, test,
        quality.auc, evaluate(labels, test.true_ctr).auc, quality.calibration_ratio, budget,
    )  # fmt: skip


@dataclass
class Results:
    chosen: PacingSettings
    ours: Run
    unshaded: Run
    oracle: Run
    ours_second: Run
    linear: Run
    linear_second: Run
    linear_hindsight: DayResult
    """Linear with the base that is best on the test day itself: the most it could do."""


def simulate(p: Prepared, args: argparse.Namespace, quick: bool) -> Results:
    """Exploration on the last training day, tuning on the validation day, the test day."""
    slot_s = 600.0 if quick else 300.0
    refit_s = 4 * 3600.0 if quick else 3600.0
    cpc_micros = int(args.cpc * 1_000_000)
    budget, first, second = p.budget_micros, p.first, p.second
    depth = len(SEGMENT_FEATURES)

    # Exploration: the paced loop without shading, its outcomes logged for the first fit.
    explorer_shader = Shader(depth, capacity=2 * len(p.test))
    explore = paced(
        p.train1, first, budget, cpc_micros, traffic_plan(p.train1, p.train1),
        PacingSettings(slot_s=slot_s), explorer_shader, None, slot_s, refit_s, shade=False,
    )  # fmt: skip

    # Validation: the controller's settings (least plan error), the linear baselines.
    candidates = [
        PacingSettings(slot_s=slot_s, gain=gain, elasticity=elasticity, max_multiplier=2.0)
        for gain in ((0.3,) if quick else (0.2, 0.4))
        for elasticity in (1.0, 2.0)
    ]
    valid_plan = traffic_plan(p.train1, p.valid)
    start_memory = memory(explore)
    tried = []
    for settings in candidates:
        run = paced(
            p.valid, first, budget, cpc_micros, valid_plan, settings,
            copy.deepcopy(explorer_shader), start_memory, slot_s, refit_s,
        )  # fmt: skip
        tried.append((run.plan_error[0], id(run), settings, run))
    _, _, chosen, valid_run = min(tried, key=lambda item: item[0])
    # Unshaded, a multiplier over 1 would only be cut back to the value: capped at 1 there.
    at_value = dataclasses.replace(chosen, max_multiplier=1.0)
    valid_second = paced(
        p.valid, second, budget, cpc_micros, valid_plan, at_value, None, start_memory, slot_s,
        refit_s,
    )  # fmt: skip
    mean_ctr = float(p.train1.predicted_ctr.mean())
    base_first, _ = tune_linear(p.valid, first, budget, mean_ctr)
    base_second, _ = tune_linear(p.valid, second, budget, mean_ctr)

    # Test: the shader continues from the validation day's outcomes.
    plan = traffic_plan(p.valid, p.test)
    start = memory(valid_run)
    common = (budget, cpc_micros, plan, chosen)
    capped = (budget, cpc_micros, plan, at_value)
    return Results(
        chosen=chosen,
        ours=paced(p.test, first, *common, valid_run.bidder.shader, start, slot_s, refit_s),
        unshaded=paced(p.test, first, *capped, None, start, slot_s, refit_s),
        oracle=paced(p.test, first, *common, None, start, slot_s, refit_s, oracle=True),
        ours_second=paced(p.test, second, *capped, None, memory(valid_second), slot_s, refit_s),
        linear=Run(
            "linear",
            run_day(p.test, first, LinearBidder(base_first, mean_ctr), budget, slot_s=slot_s),
        ),
        linear_second=Run(
            "linear",
            run_day(p.test, second, LinearBidder(base_second, mean_ctr), budget, slot_s=slot_s),
        ),
        linear_hindsight=tune_linear(p.test, first, budget, mean_ctr, hindsight=True)[1],
    )


def main() -> int:
    args = parse_args()
    began = time.perf_counter()
    per_day = args.requests or (150_000 if args.quick else 1_000_000)
    cpc_micros = int(args.cpc * 1_000_000)
    p = prepare(args, per_day)
    prepared_s = time.perf_counter() - began
    r = simulate(p, args, args.quick)
    simulated_s = time.perf_counter() - began - prepared_s
    load = banker_load(args.redis, args.workers, args.quick)
    costs = bid_time_costs(r.ours.bidder.shader, p.test, cpc_micros)
    ours = r.ours
    figures = {
        "bench": "pacing",
        "quick": args.quick,
        "requests_per_day": per_day,
        "daily_budget_usd": p.budget_micros / 1e6,
        "delivered_share": ours.result.delivered_share,
        "hourly_plan_error": ours.plan_error[0],
        "hourly_plan_error_mean_hour": ours.plan_error[1],
        "overspend_bids": load["overspend_bids"],
        "clicks_vs_linear": ours.result.expected_clicks / r.linear.result.expected_clicks,
        "clicks_vs_linear_second_price": (
            r.ours_second.result.expected_clicks / r.linear_second.result.expected_clicks
        ),
        "clicks_vs_oracle": ours.result.expected_clicks / r.oracle.result.expected_clicks,
        "clicks_vs_linear_hindsight": (
            ours.result.expected_clicks / r.linear_hindsight.expected_clicks
        ),
        "shading_surplus_gain": surplus(ours, cpc_micros) / surplus(r.unshaded, cpc_micros),
        "clicks": ours.result.expected_clicks,
        "clicks_linear": r.linear.result.expected_clicks,
        "clicks_oracle": r.oracle.result.expected_clicks,
        "realised_clicks": ours.result.clicks,
        "realised_clicks_linear": r.linear.result.clicks,
        "impressions": ours.result.impressions,
        "linear_delivered_share": r.linear.result.delivered_share,
        "second_price_delivered_share": r.ours_second.result.delivered_share,
        "second_price_hourly_plan_error": r.ours_second.plan_error[0],
        "pacing_gain": r.chosen.gain,
        "pacing_elasticity": r.chosen.elasticity,
        "pctr_auc": p.model_auc,
        "pctr_auc_oracle": p.oracle_auc,
        "pctr_calibration": p.calibration,
        "banker_delivered_share": load["delivered_share"],
        "banker_starved_share": load["starved_share"],
        "banker_hold_ns_p99": load["hold_ns_p99"],
        "value_ns_per_candidate_batch64": costs["value_ns"],
        "shade_ns_per_bid": costs["shade_ns"],
        "shade_ns_per_candidate_batch64": costs["shade_many_ns"],
        "shading_segments_fitted": int(r.ours.bidder.shader.curves.cdf.shape[0]),
        "shading_refit_cpu_s": r.ours.bidder.shader.refit_cpu_s,
        "shading_log_outcomes": len(r.ours.bidder.shader.log),
        "seconds": round(time.perf_counter() - began, 1),
    }
    print_table(figures, cpc_micros, r, load)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}))
    print(f"(prepared in {prepared_s:.0f} s, simulated in {simulated_s:.0f} s)", file=sys.stderr)
    return 0


def print_table(f, cpc, r: Results, load) -> None:
    ours, unshaded, linear, oracle = r.ours, r.unshaded, r.linear, r.oracle
    ours_second, linear_second = r.ours_second, r.linear_second
    rows = [
        ("clicks, first price (test day)", "linear", linear.result.expected_clicks,
         ours.result.expected_clicks),
        ("clicks, first price", "lin. hindsight", r.linear_hindsight.expected_clicks,
         ours.result.expected_clicks),
        ("clicks, second price", "linear", linear_second.result.expected_clicks,
         ours_second.result.expected_clicks),
        ("clicks, first price", "oracle", oracle.result.expected_clicks,
         ours.result.expected_clicks),
        ("surplus USD, first price", "unshaded", surplus(unshaded, cpc) / 1e6,
         surplus(ours, cpc) / 1e6),
        ("delivered share", "linear", linear.result.delivered_share,
         ours.result.delivered_share),
        ("hourly plan error", "unshaded", unshaded.plan_error[0], ours.plan_error[0]),
        ("banker overspend (bids)", "-", float("nan"), load["overspend_bids"]),
        ("banker delivered share", "-", float("nan"), load["delivered_share"]),
    ]  # fmt: skip
    print(f"{'work':32} {'baseline':>14} {'baseline':>10} {'ours':>10} {'ratio':>7}")
    for work, name, base, mine in rows:
        ratio = mine / base if base == base and base else float("nan")
        print(f"{work:32} {name:>14} {base:10.4g} {mine:10.4g} {ratio:7.3f}")
    print(
        f"pCTR AUC {f['pctr_auc']:.3f} (oracle {f['pctr_auc_oracle']:.3f}), calibration "
        f"{f['pctr_calibration']:.2f}; pacing gain {f['pacing_gain']}, elasticity "
        f"{f['pacing_elasticity']}; budget ${f['daily_budget_usd']:.0f}/day; banker: "
        f"{load['holds']} holds, {load['wins']} wins, {load['duplicates_ignored']} duplicate "
        f"notices ignored, starved {load['starved_share']:.2%}, hold p99 {load['hold_ns_p99']} ns"
    )
    print(
        f"bid time per candidate (CPU): value {f['value_ns_per_candidate_batch64']:.0f} ns in "
        f"batches of 64, shade {f['shade_ns_per_bid']:.0f} ns one at a time, "
        f"{f['shade_ns_per_candidate_batch64']:.0f} ns in batches of 64; "
        f"{f['shading_segments_fitted']} segment curves refitted from "
        f"{f['shading_log_outcomes']} outcomes in {f['shading_refit_cpu_s']:.2f} s of CPU"
    )


if __name__ == "__main__":
    sys.exit(main())
