"""The clean room's query language: a small structured object, never free SQL, validated
against the parties' rules with errors that name the field.

    {"aggregates": [{"function": "count_distinct", "column": "users"},
                    {"function": "sum", "column": "advertiser.value"}],
     "dimensions": ["publisher.site"],
     "filters": [{"column": "publisher.site", "in": ["news", "sport"]}],
     "dp": {"epsilon": 0.5}}

Columns are named `party.column`; `users` is the distinct count of the join column (the only
way the join column appears). Filters keep rows whose dimension is in a list of values.

>>> q = parse_query({"aggregates": [{"function": "count_distinct", "column": "users"}]})
>>> q.aggregates[0].column, q.dimensions, q.dp
('users', (), None)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from openbid.insights.cleanroom.rules import FUNCTIONS, Party
from openbid.insights.errors import InsightsError

USERS = "users"
MAX_DIMENSIONS = 5
MAX_AGGREGATES = 10
MAX_FILTER_VALUES = 100


class QueryError(InsightsError):
    """A query is malformed or breaks a rule; the message names the field."""


class Aggregate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    function: str
    column: str


class Filter(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename={"values": "in"}):
    column: str
    values: tuple[str | int | float | bool, ...]


class DP(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    epsilon: float


class Query(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    aggregates: tuple[Aggregate, ...]
    dimensions: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = ()
    dp: DP | None = None


def parse_query(document: Mapping[str, object] | bytes | str) -> Query:
    """A query from a mapping or JSON text; errors name the field (`$.aggregates[0].function`)."""
    try:
        if isinstance(document, bytes | str):
            return msgspec.json.decode(document, type=Query)
        return msgspec.convert(document, Query)
    except msgspec.ValidationError as exc:
        raise QueryError(f"invalid query: {exc}") from None
    except msgspec.DecodeError as exc:
        raise QueryError(f"query is not JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a party's table, as named in a query."""

    party: str
    name: str

    @property
    def label(self) -> str:
        """Its name in the output: `party_column`."""
        return f"{self.party}_{self.name}"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A query checked against the rules: its columns resolved to the parties' tables."""

    query: Query
    dimensions: tuple[Column, ...]
    aggregates: tuple[tuple[str, Column | None], ...]
    """(function, column); `None` is the distinct users (`users`)."""
    filters: tuple[tuple[Column, tuple[object, ...]], ...]
    min_distinct_users: int
    dp_required: bool


def _column(text: str, field: str, parties: Mapping[str, Party]) -> Column:
    party, dot, name = text.partition(".")
    if not dot or party not in parties:
        raise QueryError(
            f"{field}: {text!r} must name a column as party.column with a party of "
            f"{sorted(parties)}"
        )
    if name not in parties[party].table.column_names:
        raise QueryError(f"{field}: party {party!r} has no column {name!r}")
    if name == parties[party].rule.join_column:
        raise QueryError(f"{field}: {text!r} is a join column, which is never output or filtered")
    return Column(party, name)


def resolve(query: Query, parties: Mapping[str, Party]) -> Resolved:
    """Checks `query` against every party's rule; raises `QueryError` naming the field."""
    if not query.aggregates:
        raise QueryError("$.aggregates: at least one aggregate is needed")
    if len(query.aggregates) > MAX_AGGREGATES:
        raise QueryError(f"$.aggregates: at most {MAX_AGGREGATES}")
    if len(query.dimensions) > MAX_DIMENSIONS:
        raise QueryError(f"$.dimensions: at most {MAX_DIMENSIONS}")
    dimensions = []
    for i, text in enumerate(query.dimensions):
        field = f"$.dimensions[{i}]"
        column = _column(text, field, parties)
        if column.name not in parties[column.party].rule.dimensions:
            raise QueryError(
                f"{field}: party {column.party!r} does not allow grouping by {column.name!r}"
            )
        if column in dimensions:
            raise QueryError(f"{field}: {text!r} is named twice")
        dimensions.append(column)
    aggregates: list[tuple[str, Column | None]] = []
    for i, aggregate in enumerate(query.aggregates):
        field = f"$.aggregates[{i}]"
        if aggregate.function not in FUNCTIONS:
            raise QueryError(
                f"{field}.function: {aggregate.function!r} is not one of {list(FUNCTIONS)}"
            )
        if aggregate.column == USERS:
            if aggregate.function != "count_distinct":
                raise QueryError(f"{field}: {USERS!r} can only be counted (count_distinct)")
            aggregates.append(("count_distinct", None))
            continue
        column = _column(aggregate.column, f"{field}.column", parties)
        if not parties[column.party].rule.allows(column.name, aggregate.function):
            raise QueryError(
                f"{field}: party {column.party!r} does not allow {aggregate.function} of {column.name!r}"
            )
        aggregates.append((aggregate.function, column))
    filters = []
    for i, item in enumerate(query.filters):
        field = f"$.filters[{i}]"
        column = _column(item.column, f"{field}.column", parties)
        if column.name not in parties[column.party].rule.dimensions:
            raise QueryError(
                f"{field}.column: party {column.party!r} does not allow filtering on {column.name!r}"
            )
        if not item.values or len(item.values) > MAX_FILTER_VALUES:
            raise QueryError(f"{field}.in: 1 to {MAX_FILTER_VALUES} values")
        filters.append((column, tuple(item.values)))
    if query.dp is not None and not query.dp.epsilon > 0:
        raise QueryError(f"$.dp.epsilon: must be positive, got {query.dp.epsilon}")
    return Resolved(
        query=query,
        dimensions=tuple(dimensions),
        aggregates=tuple(aggregates),
        filters=tuple(filters),
        min_distinct_users=max(p.rule.min_distinct_users for p in parties.values()),
        dp_required=any(p.rule.require_dp for p in parties.values()),
    )
