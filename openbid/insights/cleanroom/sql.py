"""The SQL of a clean-room query, built from a query checked against the rules (identifiers
quoted, filter values bound as parameters, never pasted): the joined rows it reads
(`__src`, bounded per user under differential privacy), its groups (`__groups`) and, without
noise, which users each group holds (`__members`, for suppression and overlap tracking).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from openbid.insights.cleanroom.query import Column, QueryError, Resolved
from openbid.insights.cleanroom.rules import Party


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def output_name(function: str, column: Column | None) -> str:
    return "users" if column is None else f"{function}_{column.label}"


def prepare(
    execute: Callable[..., object],
    parties: Mapping[str, Party],
    resolved: Resolved,
    *,
    dp_max_rows_per_user: int | None,
) -> None:
    """`__src`: the joined rows the query reads (bounded per user under DP); `__groups`:
    one row per group with its distinct users and aggregates; `__members` without noise.
    `dp_max_rows_per_user`: the bound on each user's rows under DP (None: no noise)."""
    dp_bounded = dp_max_rows_per_user is not None
    a, b = list(parties.values())
    columns: dict[Column, str] = {}
    for column in resolved.dimensions:
        columns[column] = column.label
    for _, column in resolved.aggregates:
        if column is not None:
            columns[column] = column.label
    for column, _ in resolved.filters:
        columns.setdefault(column, column.label)
    alias = {a.name: "t0", b.name: "t1"}
    select = [f"CAST(t0.{quote(a.rule.join_column)} AS VARCHAR) AS __user"] + [
        f"{alias[c.party]}.{quote(c.name)} AS {quote(label)}" for c, label in columns.items()
    ]
    where, parameters = [], []
    for column, values in resolved.filters:
        where.append(
            f"{alias[column.party]}.{quote(column.name)} IN ({', '.join('?' for _ in values)})"
        )
        parameters.extend(values)
    sql = (
        f"SELECT {', '.join(select)} FROM party_{a.name} AS t0 JOIN party_{b.name} AS t1 "
        f"ON t0.{quote(a.rule.join_column)} = t1.{quote(b.rule.join_column)}"
        + (f" WHERE {' AND '.join(where)}" if where else "")
    )
    if dp_bounded:
        order = ", ".join(quote(label) for label in columns.values()) or "__user"
        sql = (
            f"SELECT * EXCLUDE (__nth) FROM (SELECT j.*, ROW_NUMBER() OVER (PARTITION BY __user "
            f"ORDER BY {order}) AS __nth FROM ({sql}) AS j) WHERE __nth <= {dp_max_rows_per_user}"
        )
    execute(f"CREATE OR REPLACE TEMP TABLE __src AS {sql}", parameters)
    dims = [quote(c.label) for c in resolved.dimensions]
    aggregates = []
    for function, column in resolved.aggregates:
        if column is None:
            continue
        expression = quote(column.label)
        if dp_bounded and function in ("sum", "avg"):
            bounds = parties[column.party].rule.bounds.get(column.name)
            if bounds is None:
                raise QueryError(
                    f"$.dp: party {column.party!r} gives no bounds for {column.name!r}, "
                    f"needed to add noise to its {function}"
                )
            expression = (
                f"LEAST(GREATEST({expression}, {float(bounds[0])!r}), {float(bounds[1])!r})"
            )
        name = quote(output_name(function, column))
        if function == "count":
            aggregates.append(f"COUNT({expression}) AS {name}")
        elif function == "count_distinct":
            aggregates.append(f"COUNT(DISTINCT {expression}) AS {name}")
        elif function == "sum":
            aggregates.append(f"CAST(SUM({expression}) AS DOUBLE) AS {name}")
        else:  # avg: kept as sum and count, so noise can go on each
            aggregates.append(
                f"CAST(SUM({expression}) AS DOUBLE) AS {quote('__sum_' + column.label)}"
            )
            aggregates.append(f"COUNT({expression}) AS {quote('__count_' + column.label)}")
    group = f" GROUP BY {', '.join(dims)}" if dims else ""
    order = f"ORDER BY {', '.join(dims)}" if dims else ""
    execute(
        "CREATE OR REPLACE TEMP TABLE __groups AS SELECT "
        f"CAST(ROW_NUMBER() OVER ({order}) - 1 AS BIGINT) AS __row, "
        + ", ".join([*dims, "COUNT(DISTINCT __user) AS __users", *aggregates])
        + f" FROM __src{group}"
    )
    if dp_bounded:  # noise protects; no overlap test, no members kept
        return
    on = " AND ".join(f"s.{d} IS NOT DISTINCT FROM g.{d}" for d in dims) or "TRUE"
    execute(
        "CREATE OR REPLACE TEMP TABLE __members AS "
        f"SELECT DISTINCT g.__row AS __row, s.__user AS __user FROM __src AS s JOIN __groups AS g ON {on}"
    )
