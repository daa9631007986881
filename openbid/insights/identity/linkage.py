"""Identity resolution with Splink (Fellegi-Sunter, trained without labels): an advertiser's
CRM records linked to each other and to logged user ids, on DuckDB by default (Spark at
scale, with a session that has Splink's similarity jar).

The model is chosen from the columns present:

| column | comparison | blocking rule for predictions |
| --- | --- | --- |
| `first_name`, `surname` (or `name`) | Jaro-Winkler at 0.92 and 0.8, term frequencies | first_name + surname; each with dob |
| `dob` (ISO date) | Splink's date-of-birth comparison (exact, typo, month, year, 10 years) | surname + dob |
| `postcode` | Levenshtein at 1 and 2 (upper case, no spaces) | postcode + surname |
| `city` | exact, term frequencies | |
| `email_hash`, `phone_hash` | exact (hashes: no fuzzy level) | each alone |

Logged user ids (a login: a user id with hashed email or phone, nothing else) are attached
to the cluster that holds the same hash, deterministically.

Training: the prior from the hashed identifiers as deterministic rules (recall 0.7), u from
random pairs (seeded), m by expectation maximisation in sessions blocked on different
columns so every comparison is estimated. Pairs above `threshold` match probability are
clustered (connected components).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from openbid.insights.errors import InsightsError
from openbid.insights.identity.hashing import normalise_name

log = logging.getLogger(__name__)

NAME_COLUMNS = ("first_name", "surname", "name")
KNOWN_COLUMNS = (*NAME_COLUMNS, "dob", "postcode", "city", "email_hash", "phone_hash")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(slots=True)
class LinkResult:
    """`clusters`: every record (`record_id`, `source`: crm or logged) with its `cluster_id`;
    `user_ids`: each CRM record with the logged user ids of its cluster; `predictions`: the
    scored pairs (`match_weight`, `match_probability`); the model Splink trained."""

    clusters: pa.Table
    user_ids: pa.Table
    predictions: pa.Table
    model: dict[str, Any] = field(default_factory=dict)
    comparisons: list[str] = field(default_factory=list)
    blocking_rules: list[str] = field(default_factory=list)


def prepare(table: pa.Table, *, id_col: str = "record_id") -> pa.Table:
    """The linkage columns of `table`, normalised: names without accents in lower case,
    postcodes in upper case without spaces, cities in lower case, dates as ISO strings
    (anything else null), empty strings null. Other columns are dropped."""
    if id_col not in table.column_names:
        raise InsightsError(
            f"the id column {id_col!r} is not in the table; columns: {table.column_names}"
        )
    ids = table[id_col].cast(pa.string())
    if pc.count_distinct(ids).as_py() != table.num_rows or ids.null_count:
        raise InsightsError(f"the id column {id_col!r} must be unique and never empty")
    columns: dict[str, pa.Array] = {"record_id": ids.combine_chunks()}
    for name in KNOWN_COLUMNS:
        if name not in table.column_names:
            continue
        values = [None if v is None else str(v) for v in table[name].to_pylist()]
        if name in NAME_COLUMNS or name == "city":
            values = [normalise_name(v) for v in values]
        elif name == "postcode":
            values = [re.sub(r"\s+", "", v).upper() or None if v else None for v in values]
        elif name == "dob":
            values = [v.strip()[:10] if v and _DATE.match(v.strip()[:10]) else None for v in values]
        else:
            values = [v.strip().lower() or None if v else None for v in values]
        columns[name] = pa.array(values, pa.string())
    if len(columns) == 1:
        raise InsightsError(
            f"no linkage column in the table: expected some of {list(KNOWN_COLUMNS)}"
        )
    return pa.table(columns)


def _settings(columns: set[str], link_type: str):
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    comparisons, described = [], []
    for name in ("first_name", "surname", "name"):
        if name in columns:
            comparisons.append(
                cl.JaroWinklerAtThresholds(name, [0.92, 0.8]).configure(
                    term_frequency_adjustments=True
                )
            )
            described.append(f"{name}: Jaro-Winkler 0.92/0.8, term frequencies")
    if "dob" in columns:
        comparisons.append(cl.DateOfBirthComparison("dob", input_is_string=True))
        described.append("dob: date of birth (exact, typo, 1 month, 1 year, 10 years)")
    if "postcode" in columns:
        comparisons.append(cl.LevenshteinAtThresholds("postcode", [1, 2]))
        described.append("postcode: Levenshtein 1/2")
    if "city" in columns:
        comparisons.append(cl.ExactMatch("city").configure(term_frequency_adjustments=True))
        described.append("city: exact, term frequencies")
    for name in ("email_hash", "phone_hash"):
        if name in columns:
            comparisons.append(cl.ExactMatch(name))
            described.append(f"{name}: exact")
    candidates = [
        ("email_hash",),
        ("phone_hash",),
        ("first_name", "surname"),
        ("surname", "dob"),
        ("first_name", "dob"),
        ("name", "dob"),
        ("postcode", "surname"),
        ("postcode", "name"),
    ]
    rules = [names for names in candidates if all(n in columns for n in names)]
    if not rules:
        raise InsightsError(
            f"no blocking rule fits the columns {sorted(columns)}: give email_hash, phone_hash, "
            "or names with dob or postcode"
        )
    settings = SettingsCreator(
        link_type=link_type,
        unique_id_column_name="record_id",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=[block_on(*names) for names in rules],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )
    return settings, described, [" AND ".join(names) for names in rules]


def _train(linker, columns: set[str], *, seed: int, max_pairs: float) -> None:
    from splink import block_on

    deterministic = [block_on(n) for n in ("email_hash", "phone_hash") if n in columns]
    if not deterministic:
        deterministic = [
            block_on(*names)
            for names in (("first_name", "surname", "dob"), ("name", "dob"))
            if all(n in columns for n in names)
        ]
    if deterministic:
        linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
    # EM blocked on one column cannot estimate that column's m: sessions on different ones
    sessions = [
        names
        for names in (("dob",), ("surname",), ("email_hash",), ("postcode",), ("name",))
        if all(n in columns for n in names)
    ][:3]
    for names in sessions:
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(block_on(*names))
        except Exception as exc:  # a session can find no pairs on small data: say so, go on
            log.warning("EM session skipped", extra={"blocking": names, "error": str(exc)})


def link(
    crm: pa.Table,
    *,
    logged: pa.Table | None = None,
    id_col: str = "record_id",
    logged_id_col: str = "user_id",
    threshold: float = 0.95,
    seed: int = 42,
    max_pairs: float = 1e6,
    spark_session: Any | None = None,
) -> LinkResult:
    """Links `crm`'s records to each other (Splink) and clusters them; when given, attaches
    `logged` identities (`user_id` with `email_hash` / `phone_hash`) to the clusters."""
    if not 0 < threshold < 1:
        raise InsightsError(f"threshold must be a match probability in (0, 1), got {threshold}")
    import splink

    records = prepare(crm, id_col=id_col)
    columns = set(records.column_names) - {"record_id"}
    settings, described, rules = _settings(columns, "dedupe_only")
    if spark_session is not None:
        db_api = splink.SparkAPI(spark_session=spark_session)
    else:
        db_api = splink.DuckDBAPI()
    frame = db_api.register(records, dataset_display_name="crm")
    linker = splink.Linker(frame, settings, log_level=logging.ERROR)
    _train(linker, columns, seed=seed, max_pairs=max_pairs)
    predictions = linker.inference.predict(threshold_match_probability=min(0.5, threshold))
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold
    )
    cluster_table = clustered.as_pyarrow_table()
    pair_table = predictions.as_pyarrow_table()
    clusters = pa.table(
        {
            "record_id": cluster_table["record_id"].cast(pa.string()),
            "source": pa.array(["crm"] * cluster_table.num_rows, pa.string()),
            "cluster_id": cluster_table["cluster_id"].cast(pa.string()),
        }
    )
    if logged is not None:
        clusters = _attach_logged(records, clusters, prepare(logged, id_col=logged_id_col))
    keep = [
        c
        for c in pair_table.column_names
        if c
        in (
            "record_id_l",
            "record_id_r",
            "source_dataset_l",
            "source_dataset_r",
            "match_weight",
            "match_probability",
        )
    ]
    return LinkResult(
        clusters=clusters,
        user_ids=_user_ids(clusters),
        predictions=pair_table.select(keep),
        model=linker.misc.save_model_to_json(),
        comparisons=described,
        blocking_rules=rules,
    )


def _attach_logged(records: pa.Table, clusters: pa.Table, identities: pa.Table) -> pa.Table:
    """Logged identities joined to the CRM clusters holding their hashed email or phone.

    Deterministic: an exact match of a salted hash of a normalised identifier is already an
    identifier match, and a probabilistic model cannot add evidence where the other fields
    are absent (a login carries only the hashes). A hash found in two clusters (a shared
    family address) links to neither; such identities stay alone."""
    cluster_of = dict(
        zip(clusters["record_id"].to_pylist(), clusters["cluster_id"].to_pylist(), strict=True)
    )
    owners: dict[tuple[str, str], set[str]] = {}
    for name in ("email_hash", "phone_hash"):
        if name not in records.column_names:
            continue
        pairs = zip(records["record_id"].to_pylist(), records[name].to_pylist(), strict=True)
        for record_id, value in pairs:
            if value:
                owners.setdefault((name, value), set()).add(cluster_of[record_id])
    ids, targets = [], []
    for row in identities.to_pylist():
        found: set[str] = set()
        for name in ("email_hash", "phone_hash"):
            if row.get(name):
                found |= owners.get((name, row[name]), set())
        ids.append(row["record_id"])
        targets.append(next(iter(found)) if len(found) == 1 else f"logged:{row['record_id']}")
    logged = pa.table(
        {
            "record_id": pa.array(ids, pa.string()),
            "source": pa.array(["logged"] * len(ids), pa.string()),
            "cluster_id": pa.array(targets, pa.string()),
        }
    )
    return pa.concat_tables([clusters, logged])


def _user_ids(clusters: pa.Table) -> pa.Table:
    """Each CRM record with the logged user ids clustered with it (none when alone)."""
    rows = clusters.to_pylist()
    users: dict[str, list[str]] = {}
    for row in rows:
        if row["source"] == "logged":
            users.setdefault(row["cluster_id"], []).append(row["record_id"])
    crm = [r for r in rows if r["source"] != "logged"]
    return pa.table(
        {
            "record_id": [r["record_id"] for r in crm],
            "cluster_id": [r["cluster_id"] for r in crm],
            "user_ids": pa.array(
                [sorted(users.get(r["cluster_id"], [])) for r in crm], pa.list_(pa.string())
            ),
        }
    )
