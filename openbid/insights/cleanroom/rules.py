"""The clean room's analysis rules: what each party lets the other query of its table.

Like AWS Clean Rooms' aggregation rules: a party names its join column (never output), the
columns that may be grouped or filtered on (dimensions), the aggregate functions allowed on
each other column, and a minimum of distinct users per output row (2 to 100,000); the
stricter party's minimum wins. A party may require differential privacy, and bounds each
summed column (values are clamped to them before noise).

>>> rule = AnalysisRule(join_column="user_key", dimensions=("site",),
...                     aggregates={"value": ("sum",)}, min_distinct_users=50)
>>> rule.allows("value", "sum"), rule.allows("value", "avg")
(True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from openbid.insights.errors import InsightsError

FUNCTIONS: tuple[str, ...] = ("count", "count_distinct", "sum", "avg")
MIN_USERS_RANGE = (2, 100_000)


class RuleError(InsightsError):
    """A party's analysis rule is malformed (the message names the party and the key)."""


@dataclass(frozen=True, slots=True)
class AnalysisRule:
    """One party's rule over its table."""

    join_column: str
    dimensions: tuple[str, ...] = ()
    aggregates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    min_distinct_users: int = 100
    require_dp: bool = False
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Per summed column, the (low, high) its values are clamped to under differential privacy."""

    def allows(self, column: str, function: str) -> bool:
        return function in self.aggregates.get(column, ())

    def check(self, party: str, table: pa.Table) -> None:
        """Raises `RuleError` naming `party` and the key if the rule does not fit `table`."""
        where = f"party {party!r}"
        columns = set(table.column_names)
        if self.join_column not in columns:
            raise RuleError(
                f"{where}: join_column {self.join_column!r} is not a column of its table"
            )
        low, high = MIN_USERS_RANGE
        if not low <= self.min_distinct_users <= high:
            raise RuleError(
                f"{where}: min_distinct_users must be {low} to {high:,}, got {self.min_distinct_users}"
            )
        for name in self.dimensions:
            if name not in columns:
                raise RuleError(f"{where}: dimensions names {name!r}, not a column of its table")
            if name == self.join_column:
                raise RuleError(f"{where}: the join column {name!r} cannot be a dimension")
        for name, functions in self.aggregates.items():
            if name not in columns:
                raise RuleError(f"{where}: aggregates names {name!r}, not a column of its table")
            if name == self.join_column:
                raise RuleError(
                    f"{where}: the join column {name!r} cannot be aggregated (distinct users are "
                    "counted by the `users` aggregate)"
                )
            unknown = [f for f in functions if f not in FUNCTIONS]
            if unknown:
                raise RuleError(
                    f"{where}: aggregates.{name}: unknown functions {unknown}; allowed {list(FUNCTIONS)}"
                )
        for name, bound in self.bounds.items():
            if len(bound) != 2 or not bound[0] <= bound[1]:
                raise RuleError(f"{where}: bounds.{name} must be [low, high] with low <= high")


@dataclass(frozen=True, slots=True)
class Party:
    """A party's name, its table (inside openbid only) and its rule."""

    name: str
    table: pa.Table
    rule: AnalysisRule

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise RuleError(f"party name {self.name!r} must be an identifier (letters, digits, _)")
        self.rule.check(self.name, self.table)
