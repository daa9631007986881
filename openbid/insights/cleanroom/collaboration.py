"""A clean-room collaboration: two parties' tables joined inside openbid on DuckDB and
queried only through structured queries checked against both parties' rules; every query
(released or refused) is logged with the analyst who ran it, and differentially private
queries spend a per-collaboration epsilon budget, refused once spent.

Defences against singling out a user, without noise:

| defence | what it stops |
| --- | --- |
| minimum distinct users per row (the stricter party's) | a small row |
| secondary suppression: more rows are hidden until the hidden rows' users are 0 or at least the minimum | total minus the visible rows |
| overlap tracking: a row whose users differ from an earlier released row's by 1 to minimum - 1 users refuses the query | two queries whose difference singles out users (a narrower filter, a complement) |

Differences over three or more queries can still isolate users; differential privacy is the
defence that composes, and a party can require it (`require_dp`). The released rows' user
keys are kept in the ledger for the overlap test (inside openbid, like the tables).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from openbid import clock
from openbid.insights.cleanroom import dp
from openbid.insights.cleanroom.query import (
    Query,
    QueryError,
    Resolved,
    parse_query,
    resolve,
)
from openbid.insights.cleanroom.rules import Party, RuleError
from openbid.insights.cleanroom.sql import output_name, prepare
from openbid.insights.errors import InsightsError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS query_ids START 1;
CREATE TABLE IF NOT EXISTS queries (
  query_id BIGINT PRIMARY KEY, collaboration VARCHAR, analyst VARCHAR, ts_micros BIGINT,
  query VARCHAR, status VARCHAR, reason VARCHAR, epsilon DOUBLE, delta DOUBLE,
  rows_released BIGINT, rows_suppressed BIGINT
);
CREATE TABLE IF NOT EXISTS released_rows (query_id BIGINT, row_id BIGINT, users BIGINT);
CREATE TABLE IF NOT EXISTS released_members (query_id BIGINT, row_id BIGINT, user_key VARCHAR);
"""


class QueryRefused(InsightsError):
    """The query was logged and refused (`query_id`, `reason`)."""

    def __init__(self, query_id: int, reason: str) -> None:
        super().__init__(f"query {query_id} refused: {reason}")
        self.query_id = query_id
        self.reason = reason


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The released rows (dimensions as `party_column`, then the aggregates in the query's
    order), how many rows were suppressed, and what the query spent."""

    query_id: int
    table: pa.Table
    rows_suppressed: int
    min_users: int
    """The threshold applied: the rules' minimum, or the higher one noise needed."""
    epsilon: float
    delta: float


class Collaboration:
    """Two parties, their rules, and a ledger (`ledger_path`: a DuckDB file, or memory)."""

    def __init__(
        self,
        name: str,
        parties: Sequence[Party],
        *,
        epsilon_budget: float = 1.0,
        ledger_path: str = ":memory:",
        dp_max_rows_per_user: int = 5,
        dp_delta: float = 1e-6,
    ) -> None:
        if len(parties) != 2:
            raise RuleError(f"a collaboration has two parties, got {len(parties)}")
        if parties[0].name == parties[1].name:
            raise RuleError(f"the two parties need different names, both are {parties[0].name!r}")
        if not epsilon_budget >= 0:
            raise RuleError(f"epsilon_budget must be non-negative, got {epsilon_budget}")
        if dp_max_rows_per_user < 1 or not 0 < dp_delta < 1:
            raise RuleError("dp_max_rows_per_user must be >= 1 and dp_delta in (0, 1)")
        self.name = name
        self.parties = {p.name: p for p in parties}
        self.epsilon_budget = float(epsilon_budget)
        self.dp_max_rows_per_user = int(dp_max_rows_per_user)
        self.dp_delta = float(dp_delta)
        try:
            self._con = duckdb.connect(ledger_path)
        except duckdb.IOException as exc:  # another process holds the ledger
            raise InsightsError(f"cannot open the clean-room ledger {ledger_path}: {exc}") from None
        self._exec(_SCHEMA)
        for party in parties:
            self._con.register(f"party_{party.name}", party.table)

    def close(self) -> None:
        self._con.close()

    def _exec(self, sql: str, parameters: Sequence[object] | None = None) -> list[tuple]:
        # every result fetched to its end: DuckDB refuses new work on a connection that
        # holds an unfinished result
        return self._con.execute(sql, parameters or []).fetchall()

    def __enter__(self) -> Collaboration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the ledger

    def epsilon_spent(self) -> float:
        row = self._exec(
            "SELECT COALESCE(SUM(epsilon), 0) FROM queries WHERE collaboration = ? AND status = 'released'",
            [self.name],
        )[0]
        return float(row[0])

    def query_log(self) -> pa.Table:
        """Every query run: who, when, what, released or refused and why, what it spent."""
        relation = self._con.sql(
            "SELECT query_id, analyst, ts_micros, status, reason, epsilon, delta, rows_released, "
            f"rows_suppressed, query FROM queries WHERE collaboration = {_literal(self.name)} "
            "ORDER BY query_id"
        )
        fetch = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
        return fetch()

    def _log(
        self,
        query_id: int,
        analyst: str,
        query_text: str,
        status: str,
        reason: str = "",
        *,
        epsilon: float = 0.0,
        delta: float = 0.0,
        released: int = 0,
        suppressed: int = 0,
    ) -> None:
        self._exec(
            "INSERT INTO queries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                query_id,
                self.name,
                analyst,
                clock.now_micros(),
                query_text,
                status,
                reason,
                epsilon,
                delta,
                released,
                suppressed,
            ],
        )
        log.info(
            "clean-room query",
            extra={
                "collaboration": self.name,
                "query_id": query_id,
                "analyst": analyst,
                "status": status,
                "reason": reason,
                "epsilon": epsilon,
            },
        )

    # ------------------------------------------------------------------ running a query

    def run(self, query: Query | Mapping[str, object] | str | bytes, analyst: str) -> QueryResult:
        """Runs `query` for `analyst`; raises `QueryRefused` (logged) when a rule says no."""
        if not isinstance(analyst, str) or not analyst.strip():
            raise QueryError("analyst: who runs the query must be named")
        query_text = _query_text(query)
        query_id = int(self._exec("SELECT nextval('query_ids')")[0][0])
        self._exec("BEGIN TRANSACTION")
        try:
            result = self._run(query_id, query, query_text, analyst)
        except QueryRefused:
            self._exec("COMMIT")
            raise
        except Exception:
            self._exec("ROLLBACK")
            raise
        self._exec("COMMIT")
        return result

    def _refuse(self, query_id: int, analyst: str, query_text: str, reason: str) -> QueryRefused:
        self._log(query_id, analyst, query_text, "refused", reason)
        return QueryRefused(query_id, reason)

    def _run(self, query_id: int, query: object, query_text: str, analyst: str) -> QueryResult:
        try:
            parsed = query if isinstance(query, Query) else parse_query(query)  # type: ignore[arg-type]
            resolved = resolve(parsed, self.parties)
        except QueryError as exc:
            raise self._refuse(query_id, analyst, query_text, str(exc)) from None
        use_dp = parsed.dp is not None
        if resolved.dp_required and not use_dp:
            raise self._refuse(
                query_id,
                analyst,
                query_text,
                'a party requires differential privacy: add "dp": {"epsilon": ...}',
            )
        if use_dp:
            assert parsed.dp is not None
            spent = self.epsilon_spent()
            if parsed.dp.epsilon > self.epsilon_budget - spent + 1e-12:
                raise self._refuse(
                    query_id,
                    analyst,
                    query_text,
                    f"epsilon budget exhausted: {spent:g} of {self.epsilon_budget:g} spent, "
                    f"{parsed.dp.epsilon:g} asked",
                )
            try:
                prepare(
                    self._exec,
                    self.parties,
                    resolved,
                    dp_max_rows_per_user=self.dp_max_rows_per_user,
                )
            except QueryError as exc:
                raise self._refuse(query_id, analyst, query_text, str(exc)) from None
            return self._release_dp(query_id, resolved, analyst, query_text)
        prepare(self._exec, self.parties, resolved, dp_max_rows_per_user=None)
        return self._release_exact(query_id, resolved, analyst, query_text)

    def _groups(self) -> pa.Table:
        relation = self._con.sql("SELECT * FROM __groups ORDER BY __row")
        fetch = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
        return fetch()

    def _union_users(self, rows: Sequence[int]) -> int:
        if not rows:
            return 0
        marks = ", ".join(str(int(r)) for r in rows)
        return int(
            self._exec(f"SELECT COUNT(DISTINCT __user) FROM __members WHERE __row IN ({marks})")[0][
                0
            ]
        )

    def _release_exact(
        self, query_id: int, resolved: Resolved, analyst: str, query_text: str
    ) -> QueryResult:
        k = resolved.min_distinct_users
        groups = self._groups()
        users = groups["__users"].to_pylist()
        rows = groups["__row"].to_pylist()
        hidden = [r for r, n in zip(rows, users, strict=True) if n < k]
        visible = sorted((n, r) for r, n in zip(rows, users, strict=True) if n >= k)
        # secondary suppression: the hidden rows together must hold 0 or at least k users,
        # else a total minus the visible rows would show them
        while visible and 0 < self._union_users(hidden) < k:
            hidden.append(visible.pop(0)[1])
        kept = sorted(r for _, r in visible)
        if kept:
            marks = ", ".join(str(r) for r in kept)
            clash = self._exec(
                f"""
WITH new_sizes AS (
  SELECT __row, COUNT(*) AS n FROM __members WHERE __row IN ({marks}) GROUP BY __row
),
shared AS (
  SELECT m.__row AS new_row, r.query_id AS query_id, r.row_id AS row_id, COUNT(*) AS common
  FROM __members AS m JOIN released_members AS r ON r.user_key = m.__user
  WHERE m.__row IN ({marks})
  GROUP BY m.__row, r.query_id, r.row_id
)
SELECT s.new_row, s.query_id, s.row_id, ns.n + rr.users - 2 * s.common AS differ
FROM shared AS s
JOIN new_sizes AS ns ON ns.__row = s.new_row
JOIN released_rows AS rr ON rr.query_id = s.query_id AND rr.row_id = s.row_id
WHERE ns.n + rr.users - 2 * s.common BETWEEN 1 AND {k - 1}
ORDER BY s.query_id, s.row_id, s.new_row
LIMIT 1"""
            )
            if clash:
                new_row, old_query, old_row, differ = clash[0]
                raise self._refuse(
                    query_id,
                    analyst,
                    query_text,
                    f"row {new_row} would differ from row {old_row} of query {old_query} by "
                    f"{differ} users, fewer than the minimum {k}: together they would single "
                    "them out (widen the filters, or add differential privacy)",
                )
            self._exec(
                f"INSERT INTO released_rows SELECT {query_id}, __row, COUNT(*) FROM __members "
                f"WHERE __row IN ({marks}) GROUP BY __row"
            )
            self._exec(
                f"INSERT INTO released_members SELECT {query_id}, __row, __user FROM __members "
                f"WHERE __row IN ({marks})"
            )
        table = groups.filter(pa.array([r in set(kept) for r in rows], pa.bool_()))
        output = self._output(resolved, table, users_column=table["__users"])
        self._log(
            query_id, analyst, query_text, "released", released=len(kept), suppressed=len(hidden)
        )
        return QueryResult(query_id, output, len(hidden), k, 0.0, 0.0)

    def _release_dp(
        self, query_id: int, resolved: Resolved, analyst: str, query_text: str
    ) -> QueryResult:
        assert resolved.query.dp is not None
        epsilon = resolved.query.dp.epsilon
        measurements = 1 + sum(
            2 if f == "avg" else 1 for f, c in resolved.aggregates if c is not None
        )
        share = epsilon / measurements
        groups = self._groups()
        keys = [str(r) for r in groups["__row"].to_pylist()]
        released = dp.release_keys(
            dict(zip(keys, groups["__users"].to_pylist(), strict=True)),
            epsilon=share,
            min_users=resolved.min_distinct_users,
            max_rows_per_user=self.dp_max_rows_per_user,
            delta_target=self.dp_delta,
        )
        keep = [k in released.counts for k in keys]
        table = groups.filter(pa.array(keep, pa.bool_()))
        spent = released.epsilon
        cap = self.dp_max_rows_per_user
        noised: set[str] = set()
        for function, column in resolved.aggregates:
            if column is None:
                continue
            if function == "avg":
                parts = [(f"__sum_{column.label}", "sum"), (f"__count_{column.label}", "count")]
            else:
                parts = [(output_name(function, column), function)]
            for name, kind in parts:
                if name in noised:  # the same aggregate asked twice: one measurement
                    continue
                noised.add(name)
                sensitivity = float(cap)
                if kind == "sum":
                    low, high = self.parties[column.party].rule.bounds[column.name]
                    sensitivity = cap * max(abs(float(low)), abs(float(high)))
                values, used = dp.laplace(
                    [float(v or 0.0) for v in table[name].to_pylist()],
                    sensitivity=sensitivity,
                    epsilon=share,
                )
                spent += used
                if kind != "sum":  # counts stay counts (post-processing costs nothing)
                    values = [max(0.0, float(round(v))) for v in values]
                index = table.column_names.index(name)
                table = table.set_column(index, name, pa.array(values, pa.float64()))
        if spent > epsilon * (1 + 1e-9):  # OpenDP's maps, summed: never above what was asked
            raise InsightsError(f"privacy accounting: spent {spent} above the query's {epsilon}")
        users = pa.array(
            [float(released.counts[str(r)]) for r in table["__row"].to_pylist()], pa.float64()
        )
        output = self._output(resolved, table, users_column=users)
        self._log(
            query_id,
            analyst,
            query_text,
            "released",
            epsilon=epsilon,
            delta=released.delta,
            released=table.num_rows,
            suppressed=groups.num_rows - table.num_rows,
        )
        return QueryResult(
            query_id,
            output,
            groups.num_rows - table.num_rows,
            released.threshold,
            epsilon,
            released.delta,
        )

    @staticmethod
    def _output(
        resolved: Resolved, table: pa.Table, *, users_column: pa.Array | pa.ChunkedArray
    ) -> pa.Table:
        columns: dict[str, pa.Array | pa.ChunkedArray] = {}
        for column in resolved.dimensions:
            columns[column.label] = table[column.label]
        for function, column in resolved.aggregates:
            name = output_name(function, column)
            if column is None:
                columns[name] = users_column
            elif function == "avg":
                total = table[f"__sum_{column.label}"].to_pylist()
                count = table[f"__count_{column.label}"].to_pylist()
                columns[name] = pa.array(
                    [(s or 0.0) / c if c else None for s, c in zip(total, count, strict=True)],
                    pa.float64(),
                )
            else:
                columns[name] = table[name]
        return pa.table(columns)


def _query_text(query: object) -> str:
    if isinstance(query, Query):
        import msgspec

        return msgspec.json.encode(query).decode()
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    if isinstance(query, str):
        return query
    try:
        return json.dumps(query, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(query)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
