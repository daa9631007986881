"""Media attribution over user journeys: heuristics, Markov removal effects (exact), Shapley
values; journeys built from the event log on an ETL engine (`docs/insights.md`)."""

from openbid.insights.attribution.heuristics import HEURISTICS, Credit
from openbid.insights.attribution.markov import MarkovResult, markov
from openbid.insights.attribution.paths import Paths, paths_from_table, read_paths_csv
from openbid.insights.attribution.report import MODELS, AttributionReport, attribute, format_table
from openbid.insights.attribution.shapley import ShapleyResult, shapley
from openbid.insights.attribution.synthetic import simulate_paths

__all__ = [
    "HEURISTICS",
    "MODELS",
    "AttributionReport",
    "Credit",
    "MarkovResult",
    "Paths",
    "ShapleyResult",
    "attribute",
    "format_table",
    "markov",
    "paths_from_table",
    "read_paths_csv",
    "shapley",
    "simulate_paths",
]
