"""Learners: held-out log loss, AUC and expected/actual clicks of our models (at their
defaults and chosen from the data by `fit_auto`) against Vowpal Wabbit, scikit-learn and
LightGBM; training rows/s and prediction throughput against the same peers.

    python bench/learners.py [--quick] [--csv TRAIN [--test TEST] --label COLUMN
                             [--categorical C ...] [--numeric N ...] [--ignore X ...]
                             [--truth COLUMN] [--keep-rate W]]
    python bench/learners.py --sim [MARKET] [--keep-negatives W] [--quick]

Without `--csv` or `--sim`, the real Criteo rows in ../shared/data/ctr/criteo_tiny.csv (first
1,599 rows train, last 400 test; I1-I13 log-bucketed numbers, C1-C26 categories). Without
`--test`, the last 20% of rows (file order) are held out. Columns not named as numeric or
ignored are categorical. Rows must be in time order: every learner that holds rows out (our
search, LightGBM's early stopping) holds out the last ones.

`--sim` makes the simulator's click logs (`bench/clicklogs.py`: 16 categorical fields, rare
clicks, the next day as test) and reads the true click probability as the oracle
(`--truth`); with `--keep-negatives W` the training file keeps each non-click with
probability W and does not say so, while the test day is not sampled (the issue's hard
case); the "keep rate declared" row is `fit_auto` told the rate (`--keep-rate` with
`--csv`).

Peers, tuned as the issue did: scikit-learn LogisticRegression and LightGBM each take their
best setting *on the test rows* (5 values of C; 6 settings of leaves, learning rate and
minimum leaf size, trees by early stopping on the last 20% of the training rows, then refit
on all of them); VW runs FTRL with our default alpha and beta. "trees + LR" is He et al.
(2014): the leaves of the LightGBM setting best on the training rows' last 20% as extra
categorical features of `fit_auto`'s logistic regression.

Speed is measured on the training rows repeated to a million-row stream (pre-hashed, and
end to end with hashing), and on random indices spread over the whole hash space (the
cache-unfriendly case of a large real data set).

Every rate is per core: work divided by the CPU seconds this process spent on it
(`time.process_time`, all threads; our kernels use one, LightGBM is run with one thread).
On a shared machine, wall time also counts the time other programs held the core; CPU time
does not. Vowpal Wabbit runs in this process and is timed the same way (its parser thread
included).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from openbid.ml import (
    AutoModel,
    AutoSettings,
    FactorizationMachine,
    FeatureSpec,
    Featurizer,
    FTRLLogisticRegression,
    HashedRows,
    Metrics,
    MultiModelScorer,
    NumericField,
    ScoringModel,
    evaluate,
    fit_auto,
)

ROOT = Path(__file__).resolve().parents[1]
CRITEO = ROOT.parent / "shared" / "data" / "ctr" / "criteo_tiny.csv"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import clicklogs  # noqa: E402  (bench/clicklogs.py, beside this file)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--categorical", nargs="*")
    parser.add_argument("--numeric", nargs="*", default=None)
    parser.add_argument("--ignore", nargs="*", default=[])
    parser.add_argument("--truth", help="a column of true probabilities (the oracle row)")
    parser.add_argument("--keep-rate", type=float, help="negatives of --csv kept at this rate")
    parser.add_argument("--sim", nargs="?", const="default", metavar="MARKET")
    parser.add_argument("--keep-negatives", type=float, help="--sim: sample the training file")
    parser.add_argument("--hash-bits", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="shorter runs, same output")
    args = parser.parse_args()
    if args.sim:
        args.label, args.truth, args.ignore = clicklogs.LABEL, clicklogs.TRUTH, [clicklogs.TRUTH]
        args.keep_rate = args.keep_negatives
    elif args.csv is None:
        args.csv, args.label = CRITEO, "Label"
        args.numeric = [f"I{i}" for i in range(1, 14)]
        args.ignore = ["Id"]
    elif not args.label:
        parser.error("--label is required with --csv")
    if args.keep_rate is not None and not 0 < args.keep_rate <= 1:
        parser.error("--keep-rate and --keep-negatives must be in (0, 1]")
    return args


def load(args) -> tuple[pa.Table, pa.Table, FeatureSpec, str]:
    """(train, test, spec, name of the data)."""
    if args.sim:
        scale = 5 if args.quick else 1
        train, test = clicklogs.click_logs(args.sim, 3_000_000 // scale, 1_000_000 // scale)
        name = f"sim:{args.sim}"
        if args.keep_negatives:
            train = clicklogs.sample_negatives(train, args.keep_negatives)
            name += f", negatives kept at {args.keep_negatives:g} (training only)"
        spec = FeatureSpec(categorical=list(clicklogs.FIELDS), hash_bits=args.hash_bits)
        return train, test, spec, name
    header = pcsv.read_csv(args.csv, read_options=pcsv.ReadOptions(block_size=1 << 16))
    ignored = {args.label, args.truth, *args.ignore}
    columns = [c for c in header.column_names if c not in ignored]
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
    return train, test, spec, args.csv.name


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


LIGHTGBM_SETTINGS = (
    {"num_leaves": 7, "learning_rate": 0.1, "min_child_samples": 100},
    {"num_leaves": 15, "learning_rate": 0.05, "min_child_samples": 100},
    {"num_leaves": 15, "learning_rate": 0.1, "min_child_samples": 20},
    {"num_leaves": 31, "learning_rate": 0.05, "min_child_samples": 200},
    {"num_leaves": 31, "learning_rate": 0.1, "min_child_samples": 50},
    {"num_leaves": 63, "learning_rate": 0.05, "min_child_samples": 200},
)
"""The issue's "best of 6 settings", each with its number of trees found by early stopping."""
TREES_FOR_LR = 200
"""At most this many trees' leaves become features of the trees + LR model."""


def lightgbm_inputs(train_t: pa.Table, test_t: pa.Table, spec: FeatureSpec):
    """Columns for LightGBM: categorical fields as codes of the training values (a value the
    training rows never had is -1, which LightGBM treats as missing), numbers as floats."""
    columns_train, columns_test = [], []
    for name in spec.categorical:
        known = pc.unique(train_t.column(name).combine_chunks().drop_null())
        for table, out in ((train_t, columns_train), (test_t, columns_test)):
            codes = pc.index_in(table.column(name), value_set=known)
            out.append(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False))
    for field in spec.numeric:
        for table, out in ((train_t, columns_train), (test_t, columns_test)):
            values = pc.cast(table.column(field.name), pa.float64())
            out.append(pc.fill_null(values, np.nan).to_numpy(zero_copy_only=False))
    return (
        np.stack(columns_train, axis=1),
        np.stack(columns_test, axis=1),
        list(range(len(spec.categorical))),
    )


def fit_lightgbm(x, y, categorical, params) -> tuple[object, object, float]:
    """(refit on all rows, fit on the first 80%, its log loss on the last 20%): the trees
    are counted by early stopping on the last 20% of the rows (time order)."""
    import lightgbm

    cut = int(len(y) * 0.8)
    common = {"objective": "binary", "n_jobs": 1, "verbose": -1, "random_state": 0}
    early = lightgbm.LGBMClassifier(n_estimators=2_000, **common, **params).fit(
        x[:cut], y[:cut], eval_X=(x[cut:],), eval_y=(y[cut:],), categorical_feature=categorical,
        callbacks=[lightgbm.early_stopping(30, verbose=False)],
    )  # fmt: skip
    trees = max(1, early.best_iteration_ or early.n_estimators)
    valid_loss = evaluate(y[cut:], early.predict_proba(x[cut:])[:, 1]).logloss
    full = lightgbm.LGBMClassifier(n_estimators=trees, **common, **params).fit(
        x, y, categorical_feature=categorical
    )
    return full, early, valid_loss


def trees_plus_lr(early_model, x_train, x_test, train, test, y_train, keep_rate):
    """He et al. (2014): each tree's leaf as one more categorical feature beside ours."""
    n_trees = min(TREES_FOR_LR, early_model.booster_.num_trees())
    leaves = {
        name: early_model.predict(x, pred_leaf=True, num_iteration=n_trees)
        for name, x in (("train", x_train), ("test", x_test))
    }
    spec = FeatureSpec(categorical=[f"tree{i}" for i in range(n_trees)], bias=False)
    featurizer = Featurizer(spec)

    def with_leaves(rows: HashedRows, leaf: np.ndarray) -> HashedRows:
        extra = featurizer.transform_columns(
            {f"tree{i}": leaf[:, i].astype(str) for i in range(n_trees)}
        )
        width_a, width_b = np.diff(rows.indptr), np.diff(extra.indptr)
        indices = np.concatenate(
            [rows.indices.reshape(len(rows), -1), extra.indices.reshape(len(extra), -1)], axis=1
        )
        assert (width_a == width_a[0]).all() and (width_b == width_b[0]).all()
        return HashedRows.from_matrix(indices, rows.n_features)

    model = fit_auto(
        with_leaves(train, leaves["train"]),
        y_train,
        keep_rate=keep_rate,
        settings=AutoSettings(kind="ftrl_lr"),
    )
    return model.predict_proba(with_leaves(test, leaves["test"]))[:, 1]


def quality(args, train_t, test_t, spec, train, test, y_train, y_test) -> dict:
    """Every model's held-out metrics, the auto model and the LightGBM leaves' validation."""
    D = spec.n_features
    out: dict[str, object] = {}
    metrics: dict[str, Metrics] = {}
    metrics["base"] = evaluate(y_test, np.full(len(y_test), y_train.mean()))
    if args.truth:
        metrics["truth"] = evaluate(y_test, labels(test_t, args.truth))
    ftrl = FTRLLogisticRegression(n_features=D).fit(train, y_train)
    metrics["ftrl"] = evaluate(y_test, ftrl.predict_proba(test)[:, 1])
    fm = FactorizationMachine(n_features=D).fit(train, y_train)
    metrics["fm"] = evaluate(y_test, fm.predict_proba(test)[:, 1])
    out["ftrl_model"], out["fm_model"] = ftrl, fm

    started = clock()
    auto = fit_auto(train, y_train)
    out["auto_cpu_s"] = clock() - started
    out["auto"] = auto
    metrics["auto"] = evaluate(y_test, auto.predict_proba(test)[:, 1])
    if args.truth:
        out["auto_vs_truth"] = float(
            auto.predict_proba(test)[:, 1].sum() / labels(test_t, args.truth).sum()
        )
    if args.keep_rate:
        declared = fit_auto(train, y_train, keep_rate=args.keep_rate)
        served = declared.predict_proba(test)[:, 1]
        metrics["auto_declared"] = evaluate(y_test, served)
        if args.truth:
            out["auto_declared_vs_truth"] = float(served.sum() / labels(test_t, args.truth).sum())

    from sklearn.linear_model import LogisticRegression, SGDClassifier

    used = np.unique(np.concatenate([train.indices, test.indices]))
    x_train, x_test = train.to_scipy()[:, used], test.to_scipy()[:, used]
    sk_lr = {
        c: LogisticRegression(C=c, max_iter=2_000).fit(x_train, y_train)
        for c in (0.01, 0.03, 0.1, 0.3, 1.0)
    }
    scores = {c: evaluate(y_test, m.predict_proba(x_test)[:, 1]) for c, m in sk_lr.items()}
    best_c = min(scores, key=lambda c: scores[c].logloss)
    metrics["sklearn_lr"], out["sklearn_c"] = scores[best_c], best_c
    out["sk_lr_best"], out["x_train"], out["x_test"] = sk_lr[best_c], x_train, x_test
    sgd = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0).fit(x_train, y_train)
    metrics["sklearn_sgd"] = evaluate(y_test, sgd.predict_proba(x_test)[:, 1])

    lx_train, lx_test, categorical = lightgbm_inputs(train_t, test_t, spec)
    fits = [fit_lightgbm(lx_train, y_train, categorical, p) for p in LIGHTGBM_SETTINGS]
    on_test = [evaluate(y_test, full.predict_proba(lx_test)[:, 1]) for full, _, _ in fits]
    best = min(range(len(fits)), key=lambda i: on_test[i].logloss)
    metrics["lightgbm"], out["lightgbm_setting"] = on_test[best], LIGHTGBM_SETTINGS[best]
    by_validation = min(range(len(fits)), key=lambda i: fits[i][2])
    out["trees_setting"] = LIGHTGBM_SETTINGS[by_validation]
    metrics["trees_lr"] = evaluate(
        y_test,
        trees_plus_lr(fits[by_validation][1], lx_train, lx_test, train, test, y_train, 1.0),
    )
    out["metrics"] = metrics
    return out


def main() -> None:
    args = parse_args()
    speed_n = 300_000 if args.quick else 2_000_000
    train_t, test_t, spec, data_name = load(args)
    featurizer = Featurizer(spec)
    D = spec.n_features
    y_train, y_test = labels(train_t, args.label), labels(test_t, args.label)
    train, test = featurizer.transform_columns(train_t), featurizer.transform_columns(test_t)
    print(
        f"data: {data_name}, {len(train)} train / {len(test)} test rows, click rate "
        f"{y_train.mean():.3%} / {y_test.mean():.3%}, {featurizer.width} indices per row, "
        f"2^{spec.hash_bits} hash space"
    )

    # held-out quality
    q = quality(args, train_t, test_t, spec, train, test, y_train, y_test)
    metrics: dict[str, Metrics] = q["metrics"]
    auto: AutoModel = q["auto"]
    ftrl, fm, sk_lr_best = q["ftrl_model"], q["fm_model"], q["sk_lr_best"]
    x_train, x_test = q["x_train"], q["x_test"]
    speed_rows, speed_y = repeat_rows(train, y_train, speed_n)
    vw = bench_vw(train, y_train, test, spec.hash_bits, speed_rows, speed_y)
    metrics["vw"] = evaluate(y_test, vw["test_p"])

    # training speed: pre-hashed repeated rows, random spread indices, and end to end
    from sklearn.linear_model import LogisticRegression, SGDClassifier

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

    # prediction speed; calibrated: the same weights with a 256-knot table (the most knots a
    # table has), measured in turn with the uncalibrated scorer
    from openbid.ml.calibration import fit_calibration

    table = fit_calibration(ftrl.predict_proba(test)[:, 1], y_test, "platt")
    lr_model = ScoringModel.from_learner("lr", ftrl)
    fm_model = ScoringModel.from_learner("fm", fm)
    one_lr, one_fm = MultiModelScorer([lr_model]), MultiModelScorer([fm_model])
    one_lr_cal = MultiModelScorer([ScoringModel.from_learner("lr", ftrl, table)])
    eight_lr = MultiModelScorer([ScoringModel.from_learner(f"dsp{i}", ftrl) for i in range(8)])
    eight_cal = MultiModelScorer(
        [ScoringModel.from_learner(f"dsp{i}", ftrl, table) for i in range(8)]
    )
    seconds = 0.1 if args.quick else 0.4
    lr_batch = predictions_per_s(one_lr, speed_rows, 64, seconds)
    lr_cal_batch = predictions_per_s(one_lr_cal, speed_rows, 64, seconds)
    lr_batch = max(lr_batch, predictions_per_s(one_lr, speed_rows, 64, seconds))
    lr_cal_batch = max(lr_cal_batch, predictions_per_s(one_lr_cal, speed_rows, 64, seconds))
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
    eight_cal_us = single_us(lambda: eight_cal.score_one(row), n_single)
    eight_one_us = min(eight_one_us, single_us(lambda: eight_lr.score_one(row), n_single))
    eight_cal_us = min(eight_cal_us, single_us(lambda: eight_cal.score_one(row), n_single))
    fm_one_us = single_us(lambda: one_fm.score_one(row), n_single)
    e2e_one_us = single_us(lambda: eight_lr.score_one(featurizer.transform_one(request)), n_single)
    requests = pa.concat_tables([test_t, train_t]).to_pylist()
    e2e_first_us = first_sight_us(eight_lr, spec, requests)
    x_one = x_test[:1]
    sk_one_us = single_us(lambda: sk_lr_best.predict_proba(x_one), 2_000)
    sk_batch = 64 / (single_us(lambda: sk_lr_best.predict_proba(x_test[:64]), 2_000) / 1e6)

    base = metrics["base"]
    print(f"\nheld-out (base rate log loss {base.logloss:.4f})")
    print(f"{'model':<40}{'log loss':>10}{'AUC':>8}{'NE':>8}{'exp/act':>9}")
    lgb_setting = ", ".join(f"{k}={v}" for k, v in q["lightgbm_setting"].items())
    names = {
        "base": "constant (training base rate)",
        "truth": "oracle (the simulator's true p)",
        "ftrl": "openbid FTRL-LR (defaults)",
        "fm": "openbid FM (k=8, defaults)",
        "auto": "openbid auto",
        "auto_declared": "openbid auto, keep rate declared",
        "vw": "Vowpal Wabbit FTRL",
        "sklearn_lr": f"sklearn LR (best C on test: {q['sklearn_c']:g})",
        "sklearn_sgd": "sklearn SGDClassifier",
        "lightgbm": "LightGBM (best of 6 on test)",
        "trees_lr": "trees + LR (He et al. 2014)",
    }
    for key, m in metrics.items():
        print(
            f"{names[key]:<40}{m.logloss:>10.5f}{m.auc:>8.4f}"
            f"{m.normalized_entropy:>8.3f}{m.calibration_ratio:>9.3f}"
        )
    report = auto.report
    print(
        f"\nopenbid auto chose {report.kind} {report.params}, calibration {report.calibration}; "
        f"held out {report.validation_rows} rows in {len(report.validation_windows)} window(s): "
        f"log loss {report.validation_logloss:.4f} against the base rate's "
        f"{report.validation_base_logloss:.4f}; search {report.search_passes:.1f} passes of "
        f"{report.budget_passes:g}, {q['auto_cpu_s']:.1f} CPU s in all"
    )
    print(f"LightGBM best on test: {lgb_setting}; trees + LR used {q['trees_setting']}")
    peers = ("sklearn_lr", "vw", "lightgbm")
    best_peer_logloss = min(metrics[k].logloss for k in peers)
    best_peer_auc = max(metrics[k].auc for k in peers)
    print(
        f"goals: auto log loss {metrics['auto'].logloss:.4f} vs best peer "
        f"{best_peer_logloss:.4f}, vs base rate {base.logloss:.4f}; AUC {metrics['auto'].auc:.4f} "
        f"vs best peer {best_peer_auc:.4f}; expected/actual {metrics['auto'].calibration_ratio:.3f}"
        + (f" (vs the true p: {q['auto_vs_truth']:.3f})" if "auto_vs_truth" in q else "")
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
        ("batch-64 predictions/s, LR calibrated", "LR uncalibrated", lr_batch, lr_cal_batch),
        ("batch-64 predictions/s, FM k=8", "sklearn LR", sk_batch, fm_batch),
        ("batch-64 predictions/s, 8 LR models", "sklearn LR", sk_batch, eight_batch),
        ("batch-4096 predictions/s, LR", "sklearn LR", sk_batch, lr_large),
        ("batch-4096 predictions/s, FM k=8", "sklearn LR", sk_batch, fm_large),
        ("batch-64 pred/s, LR, random indices", "sklearn LR", sk_batch, lr_spread),
        ("batch-64 pred/s, FM, random indices", "sklearn LR", sk_batch, fm_spread),
        ("single request us, 1 LR", "VW predict", vw["single_predict_us"], lr_one_us),
        ("single request us, 1 LR", "sklearn LR", sk_one_us, lr_one_us),
        ("single request us, 8 LR models", "VW x 8", 8 * vw["single_predict_us"], eight_one_us),
        ("single us, 8 LR models calibrated", "8 LR uncalibrated", eight_one_us, eight_cal_us),
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
                "data": data_name,
                "clock": "process_cpu",
                "train_rows": len(train),
                "test_rows": len(test),
                "base_rate_logloss": round(base.logloss, 5),
                **{
                    f"{key}_{name}": round(float(getattr(metrics[key], name)), 5)
                    for key in metrics
                    if key != "base"
                    for name in ("logloss", "auc", "calibration_ratio")
                },
                "auto_calibration_ratio_vs_truth": (
                    round(q["auto_vs_truth"], 4) if "auto_vs_truth" in q else None
                ),
                "auto_declared_calibration_ratio_vs_truth": (
                    round(q["auto_declared_vs_truth"], 4) if "auto_declared_vs_truth" in q else None
                ),
                "best_peer_logloss": round(best_peer_logloss, 5),
                "best_peer_auc": round(best_peer_auc, 5),
                "auto_kind": report.kind,
                "auto_calibration": report.calibration,
                "auto_search_passes": round(report.search_passes, 1),
                "auto_cpu_s": round(q["auto_cpu_s"], 2),
                "ftrl_train_rows_per_s": round(ftrl_rate),
                "ftrl_random_indices_rows_per_s": round(speed_n / spread_s),
                "ftrl_end_to_end_rows_per_s": round(speed_n / end_to_end_s),
                "fm_train_rows_per_s": round(speed_n / fm_s),
                "vw_train_rows_per_s": round(vw["train_rows_per_s"]),
                "vw_python_train_rows_per_s": round(vw["python_learn_rows_per_s"]),
                "batch_predictions_per_s": round(lr_batch),
                "calibrated_batch_predictions_per_s": round(lr_cal_batch),
                "fm_batch_predictions_per_s": round(fm_batch),
                "large_batch_predictions_per_s": round(lr_large),
                "fm_large_batch_predictions_per_s": round(fm_large),
                "random_indices_batch_predictions_per_s": round(lr_spread),
                "fm_random_indices_batch_predictions_per_s": round(fm_spread),
                "single_8_models_us": round(eight_one_us, 2),
                "single_8_models_calibrated_us": round(eight_cal_us, 2),
                "single_8_models_with_hashing_us": round(e2e_one_us, 2),
                "single_8_models_first_sight_us": round(e2e_first_us, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
