"""Backtests side by side: a text table for the terminal and a self-contained HTML report
(tables, calibration curves and shaping frontiers as inline SVG: no file beside it, no
script, nothing fetched) a user can open or attach.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from openbid.experiments.backtest import BacktestResult

METRICS = (
    ("log loss", "logloss", "{:.5f}"),
    ("NE", "normalized_entropy", "{:.4f}"),
    ("AUC", "auc", "{:.4f}"),
    ("expected / actual", "calibration_ratio", "{:.3f}"),
    ("mean prediction", "mean_prediction", "{:.5f}"),
    ("base rate", "base_rate", "{:.5f}"),
)
SHAPING = (
    ("target", "target", "{:.3f}"),
    ("callouts saved", "callouts_saved", "{:.2%}"),
    ("bids kept", "bids_kept", "{:.2%}"),
    ("revenue kept", "revenue_kept", "{:.2%}"),
)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _fmt(pattern: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return pattern.format(value)


def _rows(results: Sequence[BacktestResult]) -> list[tuple[str, list[str]]]:
    rows = [
        ("purpose", [r.purpose for r in results]),
        ("learner", [r.learner for r in results]),
        ("train / test rows", [f"{r.train_rows:,} / {r.test_rows:,}" for r in results]),
        ("test positives", [f"{r.test_positives:,.0f}" for r in results]),
    ]
    for label, key, pattern in METRICS:
        rows.append((label, [_fmt(pattern, r.metrics.get(key)) for r in results]))
    if any(r.shaping for r in results):
        for label, key, pattern in SHAPING:
            rows.append((label, [_fmt(pattern, r.shaping.get(key)) for r in results]))
    fields = sorted({f for r in results for f in r.slices})
    for field in fields:
        rows.append((f"worst e/a by {field}", [_worst(r, field) for r in results]))
    rows.append(("error", [r.error[:60] if r.error else "" for r in results]))
    return rows


def _worst(result: BacktestResult, field: str) -> str:
    """The slice value (of those with 10 positives or more) farthest from 1."""
    rows = [s for s in result.slices.get(field, []) if s.actual >= 10]
    if not rows:
        return "-"
    worst = max(rows, key=lambda s: abs(math.log(max(s.ratio, 1e-9))))
    return f"{worst.value}: {worst.ratio:.2f}"


def text_table(results: Sequence[BacktestResult]) -> str:
    """The experiments side by side, one column each."""
    header = ["", *[r.name for r in results]]
    rows = [header, *[[label, *values] for label, values in _rows(results)]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                               for i, cell in enumerate(row)).rstrip())  # fmt: skip
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- inline SVG
def _svg_plot(
    series: list[tuple[str, list[tuple[float, float]]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    diagonal: bool = False,
    percent: bool = False,
) -> str:
    width, height, margin = 460, 340, 52
    points = [p for _, line in series for p in line]
    if not points:
        return ""
    x_max = max(max(p[0] for p in points), 1e-9)
    y_max = max(max(p[1] for p in points), 1e-9)
    x_min = min(p[0] for p in points) if percent else 0.0
    y_min = min(p[1] for p in points) if percent else 0.0
    if diagonal:
        x_max = y_max = max(x_max, y_max) * 1.05
    span_x, span_y = (x_max - x_min) or 1.0, (y_max - y_min) or 1.0

    def sx(x: float) -> float:
        return margin + (x - x_min) / span_x * (width - 2 * margin)

    def sy(y: float) -> float:
        return height - margin - (y - y_min) / span_y * (height - 2 * margin)

    label = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:.3g}")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
        f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" stroke="#333"/>',
        f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="#333"/>',
        f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle" font-size="12">{html.escape(x_label)}</text>',
        f'<text x="14" y="{height / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {height / 2})">{html.escape(y_label)}</text>',
    ]  # fmt: skip
    for i in range(5):
        x = x_min + span_x * i / 4
        y = y_min + span_y * i / 4
        parts.append(f'<text x="{sx(x):.1f}" y="{height - margin + 16}" text-anchor="middle" '
                     f'font-size="10">{label(x)}</text>')  # fmt: skip
        parts.append(f'<text x="{margin - 4}" y="{sy(y) + 3:.1f}" text-anchor="end" '
                     f'font-size="10">{label(y)}</text>')  # fmt: skip
    if diagonal:
        parts.append(f'<line x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(x_max):.1f}" '
                     f'y2="{sy(y_max):.1f}" stroke="#999" stroke-dasharray="4 3"/>')  # fmt: skip
    for n, (name, line) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>'
        )
        for x, y in line:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{margin + 8}" y="{margin + 4 + 14 * n}" font-size="11" '
                     f'fill="{colour}">{html.escape(name)}</text>')  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts)


def html_report(results: Sequence[BacktestResult], title: str = "openbid backtests") -> str:
    """The comparison report (module doc)."""
    esc = html.escape
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}"
        "figure{display:inline-block;margin:0 1em 1em 0}.error{color:#b00}</style>",
        f"</head><body><h1>{esc(title)}</h1>",
        "<h2>Side by side (test windows)</h2><table><tr><th></th>",
        *[f"<th>{esc(r.name)}</th>" for r in results],
        "</tr>",
    ]
    for label, values in _rows(results):
        out.append(f"<tr><td>{esc(label)}</td>" + "".join(f"<td>{esc(v)}</td>" for v in values)
                   + "</tr>")  # fmt: skip
    out.append("</table>")
    for purpose in sorted({r.purpose for r in results}):
        group = [r for r in results if r.purpose == purpose and r.curve]
        series = [(r.name, [(c[0], c[1]) for c in r.curve]) for r in group]
        out.append(f"<h2>{esc(purpose)}</h2><figure>")
        out.append(_svg_plot(series, title=f"calibration ({purpose})",
                             x_label="mean predicted", y_label="observed rate", diagonal=True))  # fmt: skip
        out.append("<figcaption>Equal-count bins of the test window; on the dashed line the "
                   "model is calibrated.</figcaption></figure>")  # fmt: skip
        shaped = [r for r in group if r.frontier]
        if shaped:
            series = [
                (r.name, [(f.callouts_saved, f.bids_kept) for f in r.frontier]) for r in shaped
            ]
            out.append("<figure>")
            out.append(_svg_plot(series, title="frontier: callouts saved vs bids kept",
                                 x_label="callouts saved", y_label="bids kept", percent=True))  # fmt: skip
            out.append("<figcaption>Thresholds at 95%, 98%, 99% and 99.5% bid recall, chosen "
                       "on the training window's tail, applied to the test window.</figcaption>"
                       "</figure>")  # fmt: skip
    for r in results:
        out.append(f"<h3>{esc(r.name)}: expected / actual by slice</h3>")
        if r.error:
            out.append(f'<p class="error">{esc(r.error)}</p>')
        window = ", ".join(f"{k} {v}" for k, v in r.window.items())
        out.append(f"<p>window (µs): {esc(window)}; spec {esc(r.spec_hash)}</p>")
        for field, rows in r.slices.items():
            out.append(f"<table><tr><th>{esc(field)}</th><th>rows</th><th>expected</th>"
                       "<th>actual</th><th>e/a</th></tr>")  # fmt: skip
            for s in rows:
                out.append(f"<tr><td>{esc(s.value)}</td><td>{s.rows:,}</td><td>{s.expected:,.1f}"
                           f"</td><td>{s.actual:,.0f}</td><td>{_fmt('{:.3f}', s.ratio)}</td></tr>")  # fmt: skip
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
