"""Click logs from the simulated market, as CSV files shaped like real ones: a stand-in for
the real RTB impression logs of issue 15 (16 categorical fields of high cardinality, rare
clicks, a later test window, and a training file whose negatives were subsampled).

    .venv/bin/python bench/clicklogs.py --out DIR [--market default] [--quick]
        [--keep-negatives 0.25] [--seed 1]

writes, for the impressions the market's auctions filled (`Market.impressions`):

| file | rows |
| --- | --- |
| `train.csv` | a 6-day training window, in time order |
| `train_sampled.csv` | the same, each non-click kept with probability `--keep-negatives` (the file does not say so) |
| `test.csv` | the next day, not sampled |

Columns: the label `click`, the true click probability `p_click` (the simulator's ground
truth: a bench reads it as the oracle, never as a feature) and 16 categorical fields: `site`,
`page` (site and one of 40 pages), `category`, `format`, `size`, `devicetype`, `os`,
`browser`, `connection`, `country`, `region`, `hour`, `user` (an id; most users are rare),
`ip` (new every day for every user, as addresses churn), `advertiser`, `ad_category`.
`user`, `ip` and `page` carry no signal of their own and take tens or hundreds of
thousands of values: the trap where a learner fits noise.

Train on it with `bench/learners.py --csv DIR/train.csv --test DIR/test.csv --label click
--ignore p_click --truth p_click` (`--sim` does all of this in one go).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from openbid.ml import subsample_negatives
from openbid.sim import Market
from openbid.sim.features import COLUMN

DAY_S = 86_400.0
FIELDS = (
    "site",
    "page",
    "category",
    "format",
    "size",
    "devicetype",
    "os",
    "browser",
    "connection",
    "country",
    "region",
    "hour",
    "user",
    "ip",
    "advertiser",
    "ad_category",
)
LABEL = "click"
TRUTH = "p_click"
PAGES_PER_SITE = 40
IP_SPACE = 4_000_000


def impressions_table(market: Market, n_requests: int, seed: int, start_s: float, span_s: float):
    """The filled impressions of `n_requests` generated requests, in time order."""
    batch = market.generate(n_requests, seed=seed, start_s=start_s, span_s=span_s)
    won = market.impressions(batch, market.dsp_outcomes(batch))
    codes = batch.codes[won.row]
    columns: dict[str, object] = {LABEL: won.clicked.astype(np.int8)}
    columns[TRUTH] = won.click_probability
    ad_category = market.advertiser_category
    day = (batch.ts_ms[won.row] // 86_400_000).astype(np.int64)
    user = batch.user[won.row].astype(np.int64)
    for field in FIELDS:
        if field == "user":
            values = np.char.add("u", user.astype(str))
        elif field == "ip":
            values = ((user * 2_654_435_761 + day * 97_003) % IP_SPACE).astype(str)
        elif field == "page":
            page = (batch.keys[won.row] % np.uint64(PAGES_PER_SITE)).astype(np.int64)
            site = batch.site[won.row].astype(np.int64)
            values = np.char.add(np.char.add(site.astype(str), "/"), page.astype(str))
        elif field == "advertiser":
            values = np.asarray(market.vocab["advertiser"].values, dtype=object)[won.advertiser]
        elif field == "ad_category":
            vocab = np.asarray(market.vocab["ad_category"].values, dtype=object)
            values = vocab[ad_category[won.advertiser]]
        else:
            vocab = np.asarray(market.vocab[field].values, dtype=object)
            values = vocab[codes[:, COLUMN[field]]]
        columns[field] = pa.array(np.asarray(values).astype(str), pa.string())
    return pa.table(columns)


def click_logs(
    market_name: str = "default",
    n_train_requests: int = 3_000_000,
    n_test_requests: int = 1_000_000,
    seed: int = 1,
) -> tuple[pa.Table, pa.Table]:
    """(6-day training window, the next day) of impressions."""
    market = Market.load(market_name)
    train = impressions_table(market, n_train_requests, seed, market.start_s, 6 * DAY_S)
    test = impressions_table(market, n_test_requests, seed + 1, market.start_s + 6 * DAY_S, DAY_S)
    return train, test


def sample_negatives(table: pa.Table, keep_rate: float, seed: int = 5) -> pa.Table:
    """Every click and each non-click with probability `keep_rate`, in order."""
    rows, _ = subsample_negatives(table.column(LABEL).to_numpy(), keep_rate, seed)
    return table.take(pa.array(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--market", default="default")
    parser.add_argument("--quick", action="store_true", help="a fifth of the requests")
    parser.add_argument("--keep-negatives", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    scale = 5 if args.quick else 1
    started = time.perf_counter()
    train, test = click_logs(args.market, 3_000_000 // scale, 1_000_000 // scale, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    sampled = sample_negatives(train, args.keep_negatives)
    for name, table in (("train", train), ("train_sampled", sampled), ("test", test)):
        pcsv.write_csv(table, args.out / f"{name}.csv")
        clicks = table.column(LABEL).to_numpy()
        print(f"{args.out / name}.csv: {table.num_rows} rows, click rate {clicks.mean():.3%}")
    print(f"in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
