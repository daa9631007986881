"""Identity resolution: pairwise precision, recall and F1 of our linkage (model chosen from
the columns present) against the labels, beside Splink's own documented settings (the
README's example: first_name, surname, dob, city, email; blocking on first_name or surname;
EM on first_name + surname and on dob; clusters at 0.95) on the same records.

    python bench/identity.py [--quick] [--csv FILE --cluster-col C [--id-col C] [--sep ,]]

Without --csv: a seeded synthetic CRM (typos, missing values, duplicates, people who moved or
changed email; emails and phones hashed), plus logged user ids that ours links too. The
peer gets the same table, its `email` column being our `email_hash` (the same hash: exact
matches count, its fuzzy email levels cannot), its dob cast to a date as its settings want.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from openbid.insights.identity import link, pairwise_scores, synthetic_crm


def _peer(records: pa.Table, seed: int) -> dict[str, str]:
    """Splink's README settings on `records`; record id -> cluster id."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    columns = {
        "unique_id": records["record_id"],
        "first_name": records["first_name"] if "first_name" in records.column_names else None,
        "surname": records["surname"] if "surname" in records.column_names else None,
        "dob": pc.cast(
            pc.if_else(
                pc.match_substring_regex(records["dob"], r"^\d{4}-\d{2}-\d{2}$"),
                records["dob"],
                None,
            ),
            pa.date32(),
            safe=False,
        )
        if "dob" in records.column_names
        else None,
        "city": records["city"] if "city" in records.column_names else None,
        "email": records["email_hash"] if "email_hash" in records.column_names else None,
    }
    table = pa.table({k: v for k, v in columns.items() if v is not None})
    present = set(table.column_names)
    comparisons = []
    if "first_name" in present:
        comparisons.append(cl.JaroWinklerAtThresholds("first_name", [0.9, 0.7]))
    if "surname" in present:
        comparisons.append(cl.JaroAtThresholds("surname", [0.9, 0.7]))
    if "dob" in present:
        comparisons.append(
            cl.DateOfBirthComparison(
                "dob",
                input_is_string=False,
                datetime_metrics=["year", "month"],
                datetime_thresholds=[1, 1],
            )
        )
    if "city" in present:
        comparisons.append(cl.ExactMatch("city").configure(term_frequency_adjustments=True))
    if "email" in present:
        comparisons.append(cl.EmailComparison("email"))
    db_api = DuckDBAPI()
    frame = db_api.register(table, dataset_display_name="records")
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=[block_on("first_name"), block_on("surname")],
    )
    linker = Linker(frame, settings, log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("first_name", "surname")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=seed)
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("first_name", "surname")
    )
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    predictions = linker.inference.predict(threshold_match_weight=-10)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, 0.95)
    result = clusters.as_pyarrow_table()
    return dict(
        zip(
            result["unique_id"].cast(pa.string()).to_pylist(),
            result["cluster_id"].cast(pa.string()).to_pylist(),
            strict=True,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--csv", default=None, help="records with a label column")
    parser.add_argument("--cluster-col", default="cluster", help="the label: the true entity")
    parser.add_argument(
        "--id-col", default="record_id", help="unique record id (row number if absent)"
    )
    parser.add_argument("--sep", default=",")
    parser.add_argument("--people", type=int, default=None, help="synthetic people")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.ERROR)

    logged = None
    if args.csv:
        records = pacsv.read_csv(
            args.csv,
            parse_options=pacsv.ParseOptions(delimiter=args.sep),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
        if args.cluster_col not in records.column_names:
            raise SystemExit(
                f"--cluster-col {args.cluster_col!r} is not a column: {records.column_names}"
            )
        if args.id_col not in records.column_names:
            records = records.append_column(
                args.id_col, pa.array([str(i) for i in range(records.num_rows)])
            )
        source = args.csv
    else:
        people = args.people or (600 if args.quick else 3000)
        records, logged = synthetic_crm(people, seed=args.seed)
        source = f"synthetic CRM: {people:,} people, seed {args.seed}"
    records = records.set_column(
        records.column_names.index(args.id_col), "record_id", records[args.id_col].cast(pa.string())
    )
    for name in ("first_name", "surname", "dob", "city", "postcode", "email_hash", "phone_hash"):
        if name in records.column_names:
            records = records.set_column(
                records.column_names.index(name), name, records[name].cast(pa.string())
            )
    ids = records["record_id"].to_pylist()
    truth = [None if v is None else str(v) for v in records[args.cluster_col].to_pylist()]

    started = time.perf_counter()
    ours = link(records, logged=logged, seed=args.seed)
    our_s = time.perf_counter() - started
    our_clusters = {
        r["record_id"]: r["cluster_id"]
        for r in ours.clusters.to_pylist()
        if r["source"] != "logged"
    }
    started = time.perf_counter()
    peer_clusters = _peer(records, args.seed)
    peer_s = time.perf_counter() - started

    ours_score = pairwise_scores(ids, predicted=[our_clusters[i] for i in ids], truth=truth)
    peer_score = pairwise_scores(ids, predicted=[peer_clusters[i] for i in ids], truth=truth)
    user_links = None
    if logged is not None:
        person = dict(zip(ids, truth, strict=True))
        owner = dict(zip(logged["user_id"].to_pylist(), logged["cluster"].to_pylist(), strict=True))
        pairs = [
            (u, row["record_id"]) for row in ours.user_ids.to_pylist() for u in row["user_ids"]
        ]
        right = sum(1 for u, r in pairs if str(owner[u]) == person[r])
        linked_users = {u for u, _ in pairs}
        user_links = {
            "user_link_precision": round(right / len(pairs), 4) if pairs else None,
            "users_linked": len(linked_users),
            "users_logged": logged.num_rows,
        }

    print(f"records: {source}; {len(ids):,} records, {ours_score.true_pairs:,} true pairs")
    print(f"ours: {'; '.join(ours.comparisons)}")
    print(f"ours blocking: {' | '.join(ours.blocking_rules)}")
    print(f"{'':<28}{'Splink README':>16}{'ours':>12}")
    for label, a, b in (
        ("precision", peer_score.precision, ours_score.precision),
        ("recall", peer_score.recall, ours_score.recall),
        ("F1", peer_score.f1, ours_score.f1),
        ("predicted pairs", peer_score.predicted_pairs, ours_score.predicted_pairs),
        ("seconds (wall)", peer_s, our_s),
    ):
        print(
            f"{label:<28}{a:>16,.4f}{b:>12,.4f}"
            if isinstance(a, float)
            else f"{label:<28}{a:>16,}{b:>12,}"
        )
    if user_links:
        print(
            f"logged user ids linked: {user_links['users_linked']} of {user_links['users_logged']}, "
            f"precision {user_links['user_link_precision']}"
        )
    summary = {
        "bench": "identity",
        "source": source,
        "records": len(ids),
        "f1": round(ours_score.f1, 4),
        "precision": round(ours_score.precision, 4),
        "recall": round(ours_score.recall, 4),
        "peer_f1": round(peer_score.f1, 4),
        "peer_precision": round(peer_score.precision, 4),
        "peer_recall": round(peer_score.recall, 4),
        "seconds": round(our_s, 2),
        "peer_seconds": round(peer_s, 2),
        **(user_links or {}),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
