"""One attribution report per channel from every model: heuristics, Markov removal effects,
Shapley values, as a table (`pyarrow.Table`), with a plain-text rendering for the CLI.

>>> from openbid.insights.attribution.paths import Paths
>>> p = Paths.from_strings(["a > b", "b"], conversions=[1, 1], nulls=[1, 1])
>>> r = attribute(p)
>>> r.table.column("markov_conversions").to_pylist()
[0.6666666666666666, 1.3333333333333333]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from openbid.insights.attribution.heuristics import HEURISTICS, Credit, heuristic
from openbid.insights.attribution.markov import MarkovResult, markov
from openbid.insights.attribution.paths import Paths
from openbid.insights.attribution.shapley import ShapleyResult, shapley
from openbid.insights.errors import InsightsError

MODELS: tuple[str, ...] = (*HEURISTICS, "markov", "shapley")


@dataclass(slots=True)
class AttributionReport:
    """`table`: one row per channel; `<model>_conversions` and `<model>_value` for each model
    run, `markov_removal_effect(_value)`, `shapley_value`. The model results are kept too."""

    table: pa.Table
    markov: MarkovResult | None = None
    shapley: ShapleyResult | None = None
    totals: dict[str, float] = field(default_factory=dict)


def attribute(
    paths: Paths,
    *,
    models: Sequence[str] = MODELS,
    order: int = 1,
    half_life: float = 1.0,
    touch_age: np.ndarray | None = None,
    time_decay_credit: Credit | None = None,
    shapley_game: str | None = None,
    shapley_permutations: int = 2000,
    shapley_min_journeys: float = 0.0,
    seed: int = 0,
) -> AttributionReport:
    """Runs `models` on `paths`. `time_decay_credit` replaces the time-decay model when the
    journeys' real ages were used upstream (`journeys.build_journeys`)."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise InsightsError(
            f"unknown attribution models {unknown}; expected some of {list(MODELS)}"
        )
    columns: dict[str, object] = {"channel": list(paths.channels)}
    report = AttributionReport(
        table=pa.table({}),
        totals={
            "paths": float(paths.n_paths),
            "conversions": paths.total_conversions,
            "value": paths.total_value,
            "nulls": float(paths.nulls.sum()),
        },
    )
    for model in models:
        if model in HEURISTICS:
            if model == "time_decay" and time_decay_credit is not None:
                credit = time_decay_credit
            elif model == "time_decay":
                credit = heuristic(paths, model, half_life=half_life, touch_age=touch_age)
            else:
                credit = heuristic(paths, model)
            columns[f"{model}_conversions"] = credit.conversions
            columns[f"{model}_value"] = credit.value
        elif model == "markov":
            result = markov(paths, order)
            report.markov = result
            columns["markov_conversions"] = result.conversions
            columns["markov_value"] = result.value
            columns["markov_removal_effect"] = result.removal_effect
            columns["markov_removal_effect_value"] = result.removal_effect_value
        else:
            sh = shapley(
                paths,
                game=shapley_game,
                permutations=shapley_permutations,
                seed=seed,
                min_journeys=shapley_min_journeys,
            )
            report.shapley = sh
            by_name = dict(zip(sh.channels, range(len(sh.channels)), strict=True))
            # channels pooled into `(other)` get no Shapley credit of their own: the pool's
            # credit goes on a row of its own below
            index = np.array([by_name.get(c, -1) for c in paths.channels])
            for name, values in (
                ("shapley_conversions", sh.conversions),
                ("shapley_value", sh.value),
            ):
                columns[name] = np.where(index >= 0, values[np.maximum(index, 0)], np.nan)
    table = pa.table(
        {k: (v if k == "channel" else np.asarray(v, dtype=np.float64)) for k, v in columns.items()}
    )
    if report.shapley is not None and "(other)" in report.shapley.channels:
        other: dict[str, list[object]] = {name: [None] for name in table.column_names}
        other["channel"] = ["(other)"]
        k = report.shapley.channels.index("(other)")
        other["shapley_conversions"] = [float(report.shapley.conversions[k])]
        other["shapley_value"] = [float(report.shapley.value[k])]
        table = pa.concat_tables([table, pa.table(other, schema=table.schema)])
    report.table = table
    return report


def format_table(table: pa.Table, columns: Sequence[str] | None = None, digits: int = 2) -> str:
    """`table` as aligned plain text (numbers rounded to `digits`)."""
    names = list(columns or table.column_names)
    rows = [names]
    for record in table.select(names).to_pylist():
        row = []
        for name in names:
            value = record[name]
            if isinstance(value, float):
                row.append("" if value != value else f"{value:,.{digits}f}")
            elif value is None:
                row.append("")
            else:
                row.append(str(value))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(names))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
