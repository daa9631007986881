"""Clean-room aggregates: two parties' tables joined inside openbid and queried only through
analysis rules, with suppression, overlap tracking and optional differential privacy
(`docs/insights.md`)."""

from openbid.insights.cleanroom.collaboration import Collaboration, QueryRefused, QueryResult
from openbid.insights.cleanroom.query import Query, QueryError, parse_query
from openbid.insights.cleanroom.rules import AnalysisRule, Party, RuleError

__all__ = [
    "AnalysisRule",
    "Collaboration",
    "Party",
    "Query",
    "QueryError",
    "QueryRefused",
    "QueryResult",
    "RuleError",
    "parse_query",
]
