"""Learners: training rows/s, held-out log loss and AUC, and prediction throughput of our
FTRL-LR and FM against Vowpal Wabbit (FTRL) and scikit-learn, on the same hashed features.

    python bench/learners.py [--quick] [--csv FILE [--test FILE] --label COLUMN
                             [--categorical C ...] [--numeric N ...] [--ignore X ...]]

Without `--csv`, the real Criteo rows in ../shared/data/ctr/criteo_tiny.csv (first 1,599
rows train, last 400 test; I1-I13 log-bucketed numbers, C1-C26 categories). Without
`--test`, the last 20% of rows (file order) are held out. Columns not named as numeric or
ignored are categorical.

Speed is measured on the training rows repeated to a million-row stream (pre-hashed, and
end to end with hashing), and on random indices spread over the whole hash space (the
cache-unfriendly case of a large real data set).

Every rate is per core: work divided by the CPU seconds this process spent on it
(`time.process_time`, all threads; our kernels use one). On a shared machine, wall time
also counts the time other programs held the core; CPU time does not. Vowpal Wabbit runs
in this process and is timed the same way (its parser thread included).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from openbid.ml import (
    FactorizationMachine,
    FeatureSpec,
    Featurizer,
    FTRLLogisticRegression,
    HashedRows,
    MultiModelScorer,
    NumericField,
    ScoringModel,
    evaluate,
)

ROOT = Path(__file__).resolve().parents[1]
CRITEO = ROOT.parent / "shared" / "data" / "ctr" / "criteo_tiny.csv"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--categorical", nargs="*")
    parser.add_argument("--numeric", nargs="*", default=None)
    parser.add_argument("--ignore", nargs="*", default=[])
    parser.add_argument("--hash-bits", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="shorter runs, same output")
    args = parser.parse_args()
    if args.csv is None:
        args.csv, args.label = CRITEO, "Label"
        args.numeric = [f"I{i}" for i in range(1, 14)]
        args.ignore = ["Id"]
    elif not args.label:
        parser.error("--label is required with --csv")
    return args


def load(args) -> tuple[pa.Table, pa.Table, FeatureSpec]:
    header = pcsv.read_csv(args.csv, read_options=pcsv.ReadOptions(block_size=1 << 16))
    columns = [c for c in header.column_names if c != args.label and c not in args.ignore]
    numeric = [c for c in (args.numeric or []) if c in columns]
    categorical = args.categorical or [c for c in columns if c not in numeric]
    convert = pcsv.ConvertOptions(column_types={c: pa.string() for c in categorical})
    table = pcsv.read_csv(args.csv, convert_options=convert)
    if args.test:
        train, test = table, pcsv.read_csv(args.test, convert_options=convert)
    else:
        cut = table.num_rows - max(1, table.num_rows // 5)
        if args.csv == CRITEO:
            cut = 1_599
        train, test = table.slice(0, cut), table.slice(cut)
    spec = FeatureSpec(
        categorical=categorical,
        numeric=[NumericField(c) for c in numeric],
        hash_bits=args.hash_bits,
    )
    return train, test, spec


def labels(table: pa.Table, label: str) -> np.ndarray:
    return table.column(label).to_numpy(zero_copy_only=False).astype(np.float64)


def repeat_rows(rows: HashedRows, y: np.ndarray, n: int) -> tuple[HashedRows, np.ndarray]:
    reps = -(-n // len(rows))
    tiled = HashedRows.concat([rows] * reps).slice(0, n)
    return tiled, np.tile(y, reps)[:n]


clock = time.process_time  # CPU seconds of this process: per-core rates on a shared machine


def timed(fn, *args) -> float:
    start = clock()
    fn(*args)
    return clock() - start


def vw_lines(rows: HashedRows, y: np.ndarray | None) -> list[str]:
    out = []
    for i in range(len(rows)):
        features = " ".join(map(str, rows.row(i).tolist()))
        label = "" if y is None else ("1 " if y[i] == 1 else "-1 ")
        out.append(f"{label}|f {features}")
    return out


def vw_args(bits: int) -> str:
    return (
        f"--ftrl --ftrl_alpha 0.05 --ftrl_beta 1 -b {bits} --loss_function logistic "
        "--link logistic --quiet --noconstant"  # our rows carry their own bias feature
    )


def bench_vw(train, y_train, test, bits, speed_rows, speed_y) -> dict:
    from vowpalwabbit import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.vw"
        path.write_text("\n".join(vw_lines(train, y_train)) + "\n")
        vw = Workspace(f"{vw_args(bits)} -d {path}")
        vw.run_parser()
        test_p = np.array([vw.predict(line) for line in vw_lines(test, None)])
        vw.finish()
        # speed: VW's own C++ reader on a text file (its fastest input path) ...
        path.write_text("\n".join(vw_lines(speed_rows, speed_y)) + "\n")
        start = clock()
        vw = Workspace(f"{vw_args(bits)} -d {path}")
        vw.run_parser()
        file_s = clock() - start
        # ... and through Python, one example string at a time (as a server would)
        lines = vw_lines(speed_rows.slice(0, 50_000), speed_y[:50_000])
        learn_s = timed(lambda: [vw.learn(line) for line in lines])
        single = vw_lines(test, None)[:1]
        n = 20_000
        predict_s = timed(lambda: [vw.predict(single[0]) for _ in range(n)])
        vw.finish()
    return {
        "test_p": test_p,
        "train_rows_per_s": len(speed_rows) / file_s,
        "python_learn_rows_per_s": len(lines) / learn_s,
        "single_predict_us": predict_s / n * 1e6,
    }


def predictions_per_s(scorer: MultiModelScorer, rows: HashedRows, batch: int, seconds: float):
    """Predictions (rows x models) per CPU second, scoring `batch` rows per call."""
    n_batches = max(1, min(len(rows), 200 * 64) // batch)
    batches = [rows.slice(i * batch, (i + 1) * batch) for i in range(n_batches)]
    scorer.score_batch(batches[0])
    rates = []
    for _ in range(3):  # the median of 3 windows of at least `seconds` CPU time each
        start, done = clock(), 0
        while clock() - start < seconds:
            for b in batches:
                scorer.score_batch(b)
                done += len(b)
        rates.append(done * len(scorer.model_names) / (clock() - start))
    return float(np.median(rates))


def single_us(fn, n: int) -> float:
    fn()
    start = clock()
    for _ in range(n):
        fn()
    return (clock() - start) / n * 1e6


def first_sight_us(scorer: MultiModelScorer, spec: FeatureSpec, requests: list[dict]) -> float:
    """µs per request hashed by a fresh featurizer (every value new to its caches) and
    scored: the cost of the long tail of values a server sees for the first time."""
    featurizer = Featurizer(spec)
    scorer.score_one(featurizer.transform_one(requests[0]))  # numba dispatch warmed
    featurizer = Featurizer(spec)
    start = clock()
    for request in requests:
        scorer.score_one(featurizer.transform_one(request))
    return (clock() - start) / len(requests) * 1e6


def main() -> None:
    args = parse_args()
    speed_n = 300_000 if args.quick else 2_000_000
    train_t, test_t, spec = load(args)
    featurizer = Featurizer(spec)
    D = spec.n_features
    y_train, y_test = labels(train_t, args.label), labels(test_t, args.label)
    train, test = featurizer.transform_columns(train_t), featurizer.transform_columns(test_t)
    print(
        f"data: {args.csv.name}, {len(train)} train / {len(test)} test rows, "
        f"{featurizer.width} indices per row, 2^{spec.hash_bits} hash space"
    )

    # held-out quality
    ftrl = FTRLLogisticRegression(n_features=D).fit(train, y_train)
    fm = FactorizationMachine(n_features=D).fit(train, y_train)
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    used = np.unique(np.concatenate([train.indices, test.indices]))
    x_train, x_test = train.to_scipy()[:, used], test.to_scipy()[:, used]
    sk_lr = {}
    for c in (0.03, 0.1, 0.3, 1.0):
        sk_lr[c] = LogisticRegression(C=c, max_iter=2_000).fit(x_train, y_train)
    sk_lr_best = min(
        sk_lr.values(),
        key=lambda m: evaluate(y_test, m.predict_proba(x_test)[:, 1]).logloss,
    )
    sgd = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0).fit(x_train, y_train)
    speed_rows, speed_y = repeat_rows(train, y_train, speed_n)
    vw = bench_vw(train, y_train, test, spec.hash_bits, speed_rows, speed_y)
    quality = {
        "ftrl": evaluate(y_test, ftrl.predict_proba(test)[:, 1]),
        "fm": evaluate(y_test, fm.predict_proba(test)[:, 1]),
        "vw": evaluate(y_test, vw["test_p"]),
        "sklearn_lr": evaluate(y_test, sk_lr_best.predict_proba(x_test)[:, 1]),
        "sklearn_sgd": evaluate(y_test, sgd.predict_proba(x_test)[:, 1]),
    }
    base = evaluate(y_test, np.full(len(y_test), y_train.mean()))

    # training speed: pre-hashed repeated rows, random spread indices, and end to end
    ftrl_s = timed(FTRLLogisticRegression(n_features=D).fit, speed_rows, speed_y)
    fm_s = timed(FactorizationMachine(n_features=D).fit, speed_rows, speed_y)
    rng = np.random.default_rng(0)
    spread = HashedRows.from_matrix(rng.integers(0, D, (speed_n, featurizer.width)), D)
    spread_s = timed(FTRLLogisticRegression(n_features=D).fit, spread, speed_y)
    reps = -(-speed_n // train_t.num_rows)
    raw = pa.concat_tables([train_t] * reps).slice(0, speed_n)
    cold = Featurizer(spec)  # empty caches: hashing every distinct value is part of the cost
    start = clock()
    hashed_raw = cold.transform_columns(raw)
    hash_s = clock() - start
    FTRLLogisticRegression(n_features=D).fit(hashed_raw, speed_y)
    end_to_end_s = clock() - start
    sgd_n = min(speed_n, 300_000)
    sgd_x = speed_rows.slice(0, sgd_n).to_scipy()
    sgd_s = timed(
        SGDClassifier(loss="log_loss", max_iter=1, tol=None).partial_fit,
        sgd_x, speed_y[:sgd_n], [0.0, 1.0],
    )  # fmt: skip
    lr_s = timed(LogisticRegression(C=0.1, max_iter=2_000).fit, x_train, y_train)

    # prediction speed
    lr_model = ScoringModel.from_learner("lr", ftrl)
    fm_model = ScoringModel.from_learner("fm", fm)
    one_lr, one_fm = MultiModelScorer([lr_model]), MultiModelScorer([fm_model])
    eight_lr = MultiModelScorer([ScoringModel.from_learner(f"dsp{i}", ftrl) for i in range(8)])
    seconds = 0.1 if args.quick else 0.4
    lr_batch = predictions_per_s(one_lr, speed_rows, 64, seconds)
    fm_batch = predictions_per_s(one_fm, speed_rows, 64, seconds)
    eight_batch = predictions_per_s(eight_lr, speed_rows, 64, seconds)
    lr_large = predictions_per_s(one_lr, speed_rows, 4_096, seconds)
    fm_large = predictions_per_s(one_fm, speed_rows, 4_096, seconds)
    lr_spread = predictions_per_s(one_lr, spread, 64, seconds)
    fm_spread = predictions_per_s(one_fm, spread, 64, seconds)
    row = test.row(0)
    request = test_t.slice(0, 1).to_pylist()[0]
    n_single = 20_000 if args.quick else 100_000
    lr_one_us = single_us(lambda: one_lr.score_one(row), n_single)
    eight_one_us = single_us(lambda: eight_lr.score_one(row), n_single)
    fm_one_us = single_us(lambda: one_fm.score_one(row), n_single)
    e2e_one_us = single_us(lambda: eight_lr.score_one(featurizer.transform_one(request)), n_single)
    requests = pa.concat_tables([test_t, train_t]).to_pylist()
    e2e_first_us = first_sight_us(eight_lr, spec, requests)
    x_one = x_test[:1]
    sk_one_us = single_us(lambda: sk_lr_best.predict_proba(x_one), 2_000)
    sk_batch = 64 / (single_us(lambda: sk_lr_best.predict_proba(x_test[:64]), 2_000) / 1e6)

    print(f"\nheld-out (base rate log loss {base.logloss:.4f})")
    print(f"{'model':<34}{'log loss':>10}{'AUC':>8}{'NE':>8}{'exp/act':>9}")
    names = {
        "ftrl": "openbid FTRL-LR",
        "fm": "openbid FM (k=8)",
        "vw": "Vowpal Wabbit FTRL",
        "sklearn_lr": "sklearn LogisticRegression (best C)",
        "sklearn_sgd": "sklearn SGDClassifier",
    }
    for key, m in quality.items():
        print(
            f"{names[key]:<34}{m.logloss:>10.4f}{m.auc:>8.3f}"
            f"{m.normalized_entropy:>8.3f}{m.calibration_ratio:>9.3f}"
        )

    ftrl_rate = speed_n / ftrl_s
    rows_table = [
        ("train rows/s, FTRL-LR (pre-hashed)", "VW file", vw["train_rows_per_s"], ftrl_rate),
        ("train rows/s, FTRL-LR (pre-hashed)", "VW via Python", vw["python_learn_rows_per_s"], ftrl_rate),
        ("train rows/s, FTRL-LR (pre-hashed)", "sklearn SGD 1 epoch", sgd_n / sgd_s, ftrl_rate),
        ("train rows/s, FM k=8 (pre-hashed)", "VW file", vw["train_rows_per_s"], speed_n / fm_s),
        ("train rows/s, FTRL, random indices", "VW file", vw["train_rows_per_s"], speed_n / spread_s),
        ("train rows/s, hash + FTRL end to end", "VW file", vw["train_rows_per_s"], speed_n / end_to_end_s),
        ("hash rows/s (column path)", "-", float("nan"), speed_n / hash_s),
        ("train rows/s sklearn LR (lbfgs fit)", "-", float("nan"), len(train) / lr_s),
        ("batch-64 predictions/s, LR", "sklearn LR", sk_batch, lr_batch),
        ("batch-64 predictions/s, FM k=8", "sklearn LR", sk_batch, fm_batch),
        ("batch-64 predictions/s, 8 LR models", "sklearn LR", sk_batch, eight_batch),
        ("batch-4096 predictions/s, LR", "sklearn LR", sk_batch, lr_large),
        ("batch-4096 predictions/s, FM k=8", "sklearn LR", sk_batch, fm_large),
        ("batch-64 pred/s, LR, random indices", "sklearn LR", sk_batch, lr_spread),
        ("batch-64 pred/s, FM, random indices", "sklearn LR", sk_batch, fm_spread),
        ("single request us, 1 LR", "VW predict", vw["single_predict_us"], lr_one_us),
        ("single request us, 1 LR", "sklearn LR", sk_one_us, lr_one_us),
        ("single request us, 8 LR models", "VW x 8", 8 * vw["single_predict_us"], eight_one_us),
        ("single request us, 1 FM", "VW predict", vw["single_predict_us"], fm_one_us),
        ("single us, hash + 8 LR models", "VW x 8", 8 * vw["single_predict_us"], e2e_one_us),
        ("single us, first-sight hash + 8 LR", "VW x 8", 8 * vw["single_predict_us"], e2e_first_us),
    ]  # fmt: skip
    print(f"\n{'work':<40}{'baseline':<22}{'baseline':>12}{'ours':>12}{'ratio':>8}")
    for work, baseline_name, baseline, ours in rows_table:
        lower_is_better = "us" in work
        ratio = baseline / ours if lower_is_better else ours / baseline
        print(f"{work:<40}{baseline_name:<22}{baseline:>12,.1f}{ours:>12,.1f}{ratio:>8.2f}")

    print(
        json.dumps(
            {
                "bench": "learners",
                "data": args.csv.name,
                "clock": "process_cpu",
                "base_rate_logloss": round(base.logloss, 4),
                "ftrl_logloss": round(quality["ftrl"].logloss, 4),
                "fm_logloss": round(quality["fm"].logloss, 4),
                "vw_logloss": round(quality["vw"].logloss, 4),
                "sklearn_lr_logloss": round(quality["sklearn_lr"].logloss, 4),
                "sklearn_sgd_logloss": round(quality["sklearn_sgd"].logloss, 4),
                "ftrl_auc": round(quality["ftrl"].auc, 4),
                "fm_auc": round(quality["fm"].auc, 4),
                "ftrl_train_rows_per_s": round(ftrl_rate),
                "ftrl_random_indices_rows_per_s": round(speed_n / spread_s),
                "ftrl_end_to_end_rows_per_s": round(speed_n / end_to_end_s),
                "fm_train_rows_per_s": round(speed_n / fm_s),
                "vw_train_rows_per_s": round(vw["train_rows_per_s"]),
                "vw_python_train_rows_per_s": round(vw["python_learn_rows_per_s"]),
                "batch_predictions_per_s": round(lr_batch),
                "fm_batch_predictions_per_s": round(fm_batch),
                "large_batch_predictions_per_s": round(lr_large),
                "fm_large_batch_predictions_per_s": round(fm_large),
                "random_indices_batch_predictions_per_s": round(lr_spread),
                "fm_random_indices_batch_predictions_per_s": round(fm_spread),
                "single_8_models_us": round(eight_one_us, 2),
                "single_8_models_with_hashing_us": round(e2e_one_us, 2),
                "single_8_models_first_sight_us": round(e2e_first_us, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
