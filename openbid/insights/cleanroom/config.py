"""A collaboration from a TOML file: its parties' tables (Parquet or CSV, paths relative to
the file), their rules, the epsilon budget and the ledger. Errors name the key.

    name = "acme-x-news"
    epsilon_budget = 3.0
    ledger = "acme-x-news.duckdb"

    [parties.advertiser]
    table = "conversions.parquet"
    join_column = "user_key"
    dimensions = ["product"]
    min_distinct_users = 50
    aggregates = { value = ["sum", "avg"], conversion_id = ["count_distinct"] }
    bounds = { value = [0, 500] }

    [parties.publisher]
    table = "exposures.csv"
    join_column = "user_key"
    dimensions = ["site", "device"]
    min_distinct_users = 100
    require_dp = false
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from openbid.insights.cleanroom.collaboration import Collaboration
from openbid.insights.cleanroom.rules import AnalysisRule, Party, RuleError

_PARTY_KEYS = {
    "table",
    "join_column",
    "dimensions",
    "min_distinct_users",
    "aggregates",
    "bounds",
    "require_dp",
}
_TOP_KEYS = {"name", "epsilon_budget", "ledger", "parties", "dp_max_rows_per_user", "dp_delta"}


def read_table(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        return pacsv.read_csv(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise RuleError(f"cannot read the table {path}: {exc}") from None


def load_collaboration(path: str | os.PathLike[str], *, ledger: str | None = None) -> Collaboration:
    """The collaboration described by the TOML file at `path`."""
    file = Path(path)
    try:
        document = tomllib.loads(file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RuleError(f"cannot read the collaboration {file}: {exc}") from None
    unknown = set(document) - _TOP_KEYS
    if unknown:
        raise RuleError(
            f"{file}: unknown keys {sorted(unknown)}; expected some of {sorted(_TOP_KEYS)}"
        )
    parties_doc = document.get("parties")
    if not isinstance(parties_doc, dict) or len(parties_doc) != 2:
        raise RuleError(f"{file}: [parties] must define two parties")
    parties = []
    for name, spec in parties_doc.items():
        where = f"{file}: parties.{name}"
        if not isinstance(spec, dict):
            raise RuleError(f"{where} must be a table")
        unknown = set(spec) - _PARTY_KEYS
        if unknown:
            raise RuleError(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("table", "join_column"):
            if not isinstance(spec.get(key), str):
                raise RuleError(f"{where}.{key} is required (a string)")
        try:
            rule = AnalysisRule(
                join_column=spec["join_column"],
                dimensions=tuple(spec.get("dimensions", ())),
                aggregates={k: tuple(v) for k, v in dict(spec.get("aggregates", {})).items()},
                min_distinct_users=int(spec.get("min_distinct_users", 100)),
                require_dp=bool(spec.get("require_dp", False)),
                bounds={
                    k: (float(v[0]), float(v[1])) for k, v in dict(spec.get("bounds", {})).items()
                },
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise RuleError(f"{where}: {exc}") from None
        parties.append(Party(name, read_table(file.parent / spec["table"]), rule))
    ledger_path = ledger or document.get("ledger") or ":memory:"
    if ledger_path != ":memory:":
        ledger_path = str(file.parent / ledger_path)
    return Collaboration(
        str(document.get("name", file.stem)),
        parties,
        epsilon_budget=float(document.get("epsilon_budget", 1.0)),
        ledger_path=ledger_path,
        dp_max_rows_per_user=int(document.get("dp_max_rows_per_user", 5)),
        dp_delta=float(document.get("dp_delta", 1e-6)),
    )
