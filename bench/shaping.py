"""Traffic shaping on the simulated market: callouts saved at a bid value or recall target.

A training window (the event log of an exchange calling every DSP) trains the shaping
model; a later test window measures, at the threshold target (by default the shaping
default: 99.7% of each DSP's bid value; `--target-kind recall --target 0.99` for 99% bid
recall): the callouts saved by our model, by the oracle (the simulator's true bid
probabilities: the limit) and by random throttling; the bid recall; the share of winning
revenue kept; the same for recall and value targets of 99% and 99.5% (and value 99.7%)
side by side; the scoring time per request for all DSPs; and, when the exchange can run
in-process, auctions/s with shaping on and off.

Features are made exactly as the exchange makes them: the request bytes decoded with
`openbid.openrtb`, enriched with `build_auction_context` at the request's simulated time,
and `auction_features`. Calls the exchange would not send for consent (TCF vendor or
purpose refused) are not callouts and are left out of every figure.

    .venv/bin/python bench/shaping.py [--quick] [--market default] [--market-seed N]
        [--layout both] [--target-kind value|recall] [--target 0.997] [--seed 1]

`--market-seed N` replaces the market's own seed (its hidden structure: which sites each DSP
likes, site effects, latent vectors, every draw): the same rules of the market, a market
nobody tuned on.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa

from openbid.enrich.context import build_auction_context
from openbid.events import AuctionEvent, BidEvent, arrow_schema
from openbid.exchange.features import auction_features
from openbid.exchange.orchestrator import NOT_SENT
from openbid.openrtb import decode_bid_request
from openbid.privacy.consent import redaction_for
from openbid.shaping import ModelShaper, rows_from_events, save_shaping_model, train_shaping
from openbid.shaping.cli import frontier_table
from openbid.shaping.thresholds import threshold_for_share
from openbid.shaping.training import (
    DEFAULT_TARGET,
    DEFAULT_TARGET_KIND,
    ShapingScorerOffline,
    choose_thresholds,
    split_holdout,
)
from openbid.sim import Market
from openbid.sim.config import load_market_config

DAY_S = 86_400.0
COMPARED = (
    ("recall", 0.99),
    ("value", 0.99),
    ("recall", 0.995),
    ("value", 0.995),
    ("value", 0.997),
)
"""Targets measured side by side (kind, share)."""


def featurize(batch) -> tuple[list[dict[str, str]], list]:
    """The exchange's features of every request, and each request's consent context."""
    features, consents = [], []
    for body, ts_ms in zip(batch.bodies, batch.ts_ms.tolist(), strict=True):
        request = decode_bid_request(body)
        context = build_auction_context(request, now=datetime.fromtimestamp(ts_ms / 1000, UTC))
        features.append(auction_features(request, context, None))
        consents.append(context.consent)
    return features, consents


def blocked_matrix(market: Market, consents: list) -> np.ndarray:
    """Which (request, DSP) calls the exchange blocks for consent (never sent)."""
    vendor_ids = [dsp.config.vendor_id for dsp in market.dsps]
    blocked = np.zeros((len(consents), len(vendor_ids)), dtype=bool)
    for i, consent in enumerate(consents):
        if consent.gdpr_applies:
            blocked[i] = [redaction_for(consent, vendor).block for vendor in vendor_ids]
    return blocked


def event_tables(market, batch, features, delivered, price_micros, blocked):
    """The auction and bid tables an exchange calling every DSP would have logged."""
    n, n_dsps = delivered.shape
    keys, items, offsets = [], [], [0]
    for row in features:
        keys.extend(row.keys())
        items.extend(row.values())
        offsets.append(len(keys))
    feature_map = pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(keys, pa.string()), pa.array(items, pa.string())
    )
    ts_micros = batch.ts_ms.astype(np.int64) * 1000
    auction_schema = arrow_schema(AuctionEvent)
    auctions = pa.table(
        {
            "ts_micros": ts_micros,
            "auction_id": batch.request_ids,
            "request_id": batch.request_ids,
            "features": feature_map,
        }
    )
    auctions = auctions.cast(pa.schema([auction_schema.field(n) for n in auctions.column_names]))
    dsp_names = np.array([d.name for d in market.dsps], dtype=object)
    bids = pa.table(
        {
            "ts_micros": np.repeat(ts_micros, n_dsps),
            "auction_id": np.repeat(np.array(batch.request_ids, dtype=object), n_dsps),
            "dsp": np.tile(dsp_names, n),
            "decision": np.full(n * n_dsps, "called", dtype=object),
            "send_probability": np.ones(n * n_dsps),
            "bid": delivered.reshape(-1),
            "price_micros": np.where(delivered, price_micros, 0).reshape(-1),
            "error": np.where(blocked, "consent_blocked", "").reshape(-1).astype(object),
        }
    )
    bid_schema = arrow_schema(BidEvent)
    bids = bids.cast(pa.schema([bid_schema.field(n) for n in bids.column_names]))
    return auctions, bids


def winning_revenue(price_micros: np.ndarray, delivered: np.ndarray, sent: np.ndarray) -> int:
    """Sum over auctions of the highest delivered bid among the DSPs called (first price)."""
    return int(np.where(delivered & sent, price_micros, 0).max(axis=1).sum())


def target_amounts(kind: str, delivered: np.ndarray, price: np.ndarray) -> np.ndarray:
    """What a threshold keeps a share of: each delivered bid (recall) or its price (value)."""
    if kind == "recall":
        return delivered.astype(float)
    return np.where(delivered, price, 0).astype(float)


def evaluate_scores(scores, amounts, eligible, target):
    """Per DSP thresholds keeping exactly `target` of `amounts` on these rows; (sent mask,
    thresholds)."""
    sent = np.zeros_like(eligible)
    thresholds = []
    for j in range(scores.shape[1]):
        rows = eligible[:, j]
        t = threshold_for_share(scores[rows, j], amounts[rows, j], target)
        thresholds.append(t)
        sent[:, j] = rows & (scores[:, j] >= t)
    return sent, thresholds


def summarize(name, sent, eligible, labels, price, delivered):
    calls = eligible.sum()
    bids = (labels & eligible).sum()
    full_revenue = winning_revenue(price, delivered, eligible)
    return {
        "name": name,
        "saved": 1.0 - sent.sum() / calls,
        "recall": (labels & sent).sum() / bids,
        "revenue_kept": winning_revenue(price, delivered, sent) / full_revenue,
    }


DSP_SERVERS_SCRIPT = """
import json, sys, time
from openbid.sim import Market
from openbid.sim.config import load_market_config
from openbid.sim.server import DspServersThread
import msgspec
from openbid.sim.config import load_market_config
config = load_market_config(sys.argv[1])
if len(sys.argv) > 2:
    config = msgspec.structs.replace(config, seed=int(sys.argv[2]))
servers = DspServersThread(Market(config), simulate_latency=False).start()
print(json.dumps(servers.urls), flush=True)
sys.stdin.read()
"""


def exchange_cpu_throughput(
    market, market_name: str, model_path, bodies, seconds: float
) -> dict[str, dict]:
    """Auctions per CPU second of the exchange, in this process, with the pass-through
    shaper and with ours; the DSP servers (answering at once) run in another process.
    Each run also counts the DSP calls that left per auction and the share of them that
    failed: a DSP server that cannot keep up fails calls, opens breakers and makes
    auctions cheap, and the auctions/s alone would not show it."""
    import asyncio
    import os
    import subprocess

    import uvloop

    from openbid.config import ExchangeConfig
    from openbid.creative import TrackerSigner
    from openbid.demand import DemandRegistry
    from openbid.domain import DemandPartner
    from openbid.exchange.orchestrator import Exchange
    from openbid.http.client import FanoutClient
    from openbid.shaping import PassThroughShaper

    servers = subprocess.Popen(
        [sys.executable, "-c", DSP_SERVERS_SCRIPT, market_name, str(market.seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        urls = json.loads(servers.stdout.readline())
        vendor = {d.name: d.config.vendor_id for d in market.dsps}
        partners = [
            DemandPartner(name, url, seat=name, vendor_id=vendor[name], timeout_ms=150)
            for name, url in urls.items()
        ]
        results = {}

        async def run(shaper) -> float:
            client = FanoutClient()
            exchange = Exchange(
                ExchangeConfig(),
                registry=DemandRegistry(partners),
                client=client,
                signer=TrackerSigner(b"b" * 32),
                shaper=shaper,
            )
            loop = asyncio.get_running_loop()
            position = 0
            done = sent = failed = 0

            async def worker(deadline: float) -> None:
                nonlocal position, done, sent, failed
                while loop.time() < deadline:
                    body = bodies[position % len(bodies)]
                    position += 1
                    request = decode_bid_request(body)
                    outcome = await exchange.auction(request, None, started=loop.time())
                    done += 1
                    for call in outcome.calls:
                        if call.outcome not in NOT_SENT:
                            sent += 1
                            failed += call.outcome not in ("bid", "no_bid")

            await asyncio.gather(*(worker(loop.time() + 1.0) for _ in range(32)))  # warm-up
            done = sent = failed = 0
            cpu = time.process_time()
            await asyncio.gather(*(worker(loop.time() + seconds) for _ in range(32)))
            cpu = time.process_time() - cpu
            client.close()
            return {
                "auctions_per_cpu_s": done / cpu,
                "calls_per_auction": sent / max(done, 1),
                "failed_share": failed / max(sent, 1),
            }

        for name, shaper in (
            ("off", PassThroughShaper()),
            ("on", ModelShaper(model_path)),
        ):
            results[name] = uvloop.run(run(shaper))
        return results
    finally:
        servers.stdin.close()
        servers.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    parser.add_argument("--market", default="default")
    parser.add_argument(
        "--market-seed", type=int, help="replace the market's hidden-structure seed"
    )
    parser.add_argument("--layout", choices=["per_dsp", "shared", "both"], default="both")
    parser.add_argument("--train", type=int, default=0, help="training requests")
    parser.add_argument("--test", type=int, default=0, help="test requests")
    parser.add_argument("--no-exchange", action="store_true", help="skip the exchange part")
    parser.add_argument("--target-kind", choices=["recall", "value"], default=DEFAULT_TARGET_KIND)
    parser.add_argument("--target", type=float, default=DEFAULT_TARGET)
    parser.add_argument(
        "--seed", type=int, default=1, help="traffic seed (training window; test uses seed + 1)"
    )
    args = parser.parse_args()
    kind, target = args.target_kind, args.target
    label = f"{kind} {target:g}"
    n_train = args.train or (60_000 if args.quick else 300_000)
    n_test = args.test or (20_000 if args.quick else 100_000)
    layouts = ["per_dsp", "shared"] if args.layout == "both" else [args.layout]

    config = load_market_config(args.market)
    if args.market_seed is not None:
        config = msgspec.structs.replace(config, seed=args.market_seed)
    market = Market(config)
    tmax_ms = market.config.traffic.tmax_ms
    started = time.perf_counter()
    train_batch = market.generate(n_train, seed=args.seed, start_s=market.start_s, span_s=6 * DAY_S)
    test_batch = market.generate(
        n_test, seed=args.seed + 1, start_s=market.start_s + 6 * DAY_S, span_s=DAY_S
    )
    train_features, train_consents = featurize(train_batch)
    test_features, test_consents = featurize(test_batch)
    featurize_s = time.perf_counter() - started
    print(
        f"market {market.name}: {n_train} training and {n_test} test requests, "
        f"featurized in {featurize_s:.1f} s ({featurize_s / (n_train + n_test) * 1e6:.0f} us each)"
    )

    train_out = market.dsp_outcomes(train_batch)
    train_delivered = train_out.delivered(tmax_ms)
    auctions, bids = event_tables(
        market, train_batch, train_features, train_delivered, train_out.price_micros,
        blocked_matrix(market, train_consents),
    )  # fmt: skip
    rows = rows_from_events(auctions, bids)

    test_out = market.dsp_outcomes(test_batch)
    delivered = test_out.delivered(tmax_ms)
    eligible = ~blocked_matrix(market, test_consents)
    price = test_out.price_micros
    dsp_names = [d.name for d in market.dsps]

    results = []
    amounts = target_amounts(kind, delivered, price)
    oracle_sent, _ = evaluate_scores(test_out.probability, amounts, eligible, target)
    oracle = summarize("oracle", oracle_sent, eligible, delivered, price, delivered)
    rng = np.random.default_rng(6 + args.seed)
    random_sent = eligible & (rng.random(eligible.shape) < target)
    random = summarize("random", random_sent, eligible, delivered, price, delivered)

    test_rows = rows_from_events(
        *event_tables(market, test_batch, test_features, delivered, price, ~eligible)
    )
    models = {}
    for layout in layouts:
        t0 = time.perf_counter()
        trained = train_shaping(rows, layout=layout, target_kind=kind, target=target)
        train_s = time.perf_counter() - t0
        scorer = ShapingScorerOffline(layout, trained.spec, trained.learners)
        row_scores = scorer.score(test_rows)
        scores = np.zeros(delivered.shape)
        index = {rid: i for i, rid in enumerate(test_batch.request_ids)}
        req_index = np.array([index[r] for r in test_rows.auction_id[test_rows.request]])
        dsp_col = np.array([dsp_names.index(d) for d in test_rows.dsp])
        scores[req_index, dsp_col] = np.nan_to_num(row_scores, nan=1.0)
        exact_sent, _ = evaluate_scores(scores, amounts, eligible, target)
        exact = summarize(
            f"{layout}, thresholds of the test day", exact_sent, eligible, delivered, price,
            delivered,
        )  # fmt: skip
        deployed_thresholds = np.array([trained.thresholds.get(d, 0.0) for d in dsp_names])
        deployed_sent = eligible & (scores >= deployed_thresholds)
        deployed = summarize(
            f"{layout} held-out thresholds", deployed_sent, eligible, delivered, price, delivered
        )
        results += [exact, deployed]
        models[layout] = (trained, exact, deployed, train_s, scores)
        print(f"{layout}: trained on {len(rows)} rows in {train_s:.1f} s")

    print()
    print(f"at {label} per DSP (recall: bids kept; revenue: winning revenue kept)")
    print(f"{'policy':<34} {'saved':>8} {'recall':>8} {'revenue':>8} {'vs oracle':>10}")
    for r in [oracle, random, *results]:
        print(
            f"{r['name']:<34} {r['saved']:>8.2%} {r['recall']:>8.2%} "
            f"{r['revenue_kept']:>8.2%} {r['saved'] / oracle['saved']:>10.2%}"
        )

    # per_dsp serves in one featurize + one numba call; shared featurizes once per DSP
    best_layout = "per_dsp" if "per_dsp" in models else layouts[0]
    trained, exact, deployed, _, scores = models[best_layout]
    print()
    print(
        f"frontier of the held-out training day ({best_layout}, as `openbid train shaping` prints):"
    )
    print(frontier_table(trained))
    print()
    compared = compare_targets(
        rows, trained, scores, test_out.probability, eligible, delivered, price, dsp_names
    )
    print(
        f"targets side by side ({best_layout}; held out: thresholds of the training log's last day)"
    )
    print(
        f"{'target':<13} {'oracle':>8} {'rev':>7} {'ours':>8} {'recall':>7} {'rev':>7} "
        f"{'vs oracle':>9} {'held out':>9} {'recall':>7} {'rev':>7}"
    )
    for name, r in compared.items():
        print(
            f"{name:<13} {r['oracle_saved']:>8.2%} {r['oracle_revenue_kept']:>7.2%} "
            f"{r['saved']:>8.2%} {r['recall']:>7.2%} {r['revenue_kept']:>7.2%} "
            f"{r['saved'] / r['oracle_saved']:>9.2%} {r['deployed_saved']:>9.2%} "
            f"{r['deployed_recall']:>7.2%} {r['deployed_revenue_kept']:>7.2%}"
        )

    print()
    print(f"per DSP, {best_layout} at {label} on the test window (saved share of callouts):")
    print(f"  {'dsp':<11} {'bid rate':>9} {'oracle':>8} {'ours':>8} {'vs oracle':>10}")
    for j, name in enumerate(dsp_names):
        rows_j = eligible[:, j]
        labels = delivered[rows_j, j].astype(float)
        mine = threshold_for_share(scores[rows_j, j], amounts[rows_j, j], target)
        best = threshold_for_share(test_out.probability[rows_j, j], amounts[rows_j, j], target)
        saved_mine = float((scores[rows_j, j] < mine).mean())
        saved_best = float((test_out.probability[rows_j, j] < best).mean())
        print(
            f"  {name:<11} {labels.mean():>9.2%} {saved_best:>8.2%} {saved_mine:>8.2%} "
            f"{saved_mine / saved_best if saved_best else float('nan'):>10.2%}"
        )

    with tempfile.TemporaryDirectory() as tmp:
        model_path = save_shaping_model(trained, Path(tmp) / "model")
        timing = _serving_us(model_path, trained, test_features[: 2000 if args.quick else 5000])
        print()
        print(f"{'scoring one request, all DSPs':<44} {'baseline':>10} {'ours':>10} {'ratio':>7}")
        print(
            f"{'featurizer + MultiModelScorer vs fast path':<44} {timing['baseline_us']:>8.1f}us "
            f"{timing['fast_us']:>8.1f}us {timing['baseline_us'] / timing['fast_us']:>7.2f}"
        )
        print(
            f"{'pass-through decide vs ModelShaper.decide':<44} {timing['pass_us']:>8.1f}us "
            f"{timing['decide_us']:>8.1f}us {timing['decide_us'] / timing['pass_us']:>7.2f}"
        )
        throughput = {}
        if not args.no_exchange:
            bodies = test_batch.bodies[:5000]
            throughput = exchange_cpu_throughput(
                market, args.market, model_path, bodies, seconds=4.0 if args.quick else 12.0
            )
            print()
            print(
                f"{'exchange in-process, auctions per CPU s':<44} {'off':>10} {'on':>10} {'ratio':>7}"
            )
            off, on = throughput["off"], throughput["on"]
            print(
                f"{f'pass-through vs shaping ({len(dsp_names)} DSPs answering now)':<44} "
                f"{off['auctions_per_cpu_s']:>10.0f} {on['auctions_per_cpu_s']:>10.0f} "
                f"{on['auctions_per_cpu_s'] / off['auctions_per_cpu_s']:>7.2f}"
            )
            print(
                f"{'  DSP calls that left per auction':<44} {off['calls_per_auction']:>10.2f} "
                f"{on['calls_per_auction']:>10.2f}"
            )
            print(
                f"{'  of them failed (timeouts, errors)':<44} {off['failed_share']:>10.1%} "
                f"{on['failed_share']:>10.1%}"
            )

    record = {
        "bench": "shaping",
        "market": market.name,
        "market_seed": market.seed,
        "seed": args.seed,
        "layout": best_layout,
        "target_kind": kind,
        "target": target,
        "recall": round(float(exact["recall"]), 4),
        "saved": round(float(exact["saved"]), 4),
        "oracle_saved": round(float(oracle["saved"]), 4),
        "random_saved": round(float(random["saved"]), 4),
        "saved_vs_oracle": round(float(exact["saved"] / oracle["saved"]), 4),
        "revenue_kept": round(float(exact["revenue_kept"]), 4),
        "oracle_revenue_kept": round(float(oracle["revenue_kept"]), 4),
        "deployed_recall": round(float(deployed["recall"]), 4),
        "deployed_saved": round(float(deployed["saved"]), 4),
        "shared_saved": round(float(models["shared"][1]["saved"]), 4)
        if "shared" in models
        else None,
        "scoring_us": round(timing["decide_us"], 2),
        "baseline_scoring_us": round(timing["baseline_us"], 2),
        "auctions_per_cpu_s_on": (
            round(throughput["on"]["auctions_per_cpu_s"]) if throughput else None
        ),
        "auctions_per_cpu_s_off": (
            round(throughput["off"]["auctions_per_cpu_s"]) if throughput else None
        ),
        "calls_per_auction_on": (
            round(throughput["on"]["calls_per_auction"], 2) if throughput else None
        ),
        "calls_per_auction_off": (
            round(throughput["off"]["calls_per_auction"], 2) if throughput else None
        ),
        "targets": {
            name: {key: round(float(value), 4) for key, value in r.items()}
            for name, r in compared.items()
        },
    }
    print(json.dumps(record))
    return 0


def compare_targets(rows, trained, scores, probability, eligible, delivered, price, dsp_names):
    """For each of `COMPARED`: the oracle and our model with thresholds chosen on the test
    day itself, and ours with the thresholds the trainer would choose on its held-out day."""
    _, holdout = split_holdout(rows, DAY_S)
    scorer = ShapingScorerOffline(trained.layout, trained.spec, trained.learners)
    holdout_scores = scorer.score(holdout)
    out = {}
    for kind, target in COMPARED:
        amounts = target_amounts(kind, delivered, price)
        oracle_sent, _ = evaluate_scores(probability, amounts, eligible, target)
        oracle = summarize("oracle", oracle_sent, eligible, delivered, price, delivered)
        exact_sent, _ = evaluate_scores(scores, amounts, eligible, target)
        exact = summarize("ours", exact_sent, eligible, delivered, price, delivered)
        chosen = choose_thresholds(holdout, holdout_scores, kind, target)
        deployed_sent = eligible & (scores >= np.array([chosen.get(d, 0.0) for d in dsp_names]))
        deployed = summarize("held out", deployed_sent, eligible, delivered, price, delivered)
        out[f"{kind}@{target:g}"] = {
            "saved": exact["saved"],
            "recall": exact["recall"],
            "revenue_kept": exact["revenue_kept"],
            "oracle_saved": oracle["saved"],
            "oracle_recall": oracle["recall"],
            "oracle_revenue_kept": oracle["revenue_kept"],
            "deployed_saved": deployed["saved"],
            "deployed_recall": deployed["recall"],
            "deployed_revenue_kept": deployed["revenue_kept"],
        }
    return out


def _serving_us(model_path, trained, features) -> dict[str, float]:
    """Per request with 8 DSPs, steady state (every field value seen once before)."""
    from openbid.ml import Featurizer, MultiModelScorer, ScoringModel
    from openbid.shaping import PassThroughShaper

    dsps = trained.dsps
    shaper = ModelShaper(model_path)
    featurizer = Featurizer(trained.spec)
    scorer = MultiModelScorer(
        [ScoringModel.from_learner(d, trained.learners[d]) for d in trained.learners]
    )
    passthrough = PassThroughShaper()

    def timed(call) -> float:
        for row in features:
            call(row)
        best = float("inf")
        for _ in range(3):  # best of three: the machine is shared
            started = time.perf_counter()
            for row in features:
                call(row)
            best = min(best, (time.perf_counter() - started) / len(features) * 1e6)
        return best

    out = np.empty(len(trained.learners))
    fast = shaper._serving.fast
    return {
        "baseline_us": timed(lambda row: scorer.score_one(featurizer.transform_one(row))),
        "fast_us": timed(lambda row: fast.score(row, out)),
        "pass_us": timed(lambda row: passthrough.decide(row, dsps)),
        "decide_us": timed(lambda row: shaper.decide(row, dsps)),
    }


if __name__ == "__main__":
    sys.exit(main())
