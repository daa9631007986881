"""`openbid runs`: the scheduler's run table (`openbid.pipeline.runs`), newest first.

The command object is `runs_command`; `openbid/cli.py` registers it.
"""

from __future__ import annotations

import click
import msgspec

from openbid.config import ConfigError, load_config


def _summary(run) -> str:  # type: ignore[no-untyped-def]
    metrics = run.metrics
    parts = []
    if "heldout_logloss" in metrics:
        parts.append(f"ll {metrics['heldout_logloss']:.4f}")
    if "production_logloss" in metrics:
        parts.append(f"prod {metrics['production_logloss']:.4f}")
    if "heldout_calibration_ratio" in metrics:
        parts.append(f"e/a {metrics['heldout_calibration_ratio']:.2f}")
    if "heldout_callouts_saved" in metrics:
        parts.append(f"saved {metrics['heldout_callouts_saved']:.0%}")
    return ", ".join(parts)


@click.command("runs")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--purpose", type=click.Choice(["shaping", "ctr", "cvr"]), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
def runs_command(config_path: str | None, purpose: str | None, limit: int, as_json: bool) -> None:
    """The scheduler's training runs, newest first (times on openbid's clock)."""
    from rich.console import Console
    from rich.table import Table

    from openbid.pipeline.runs import iso, open_readonly, short_reason

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    table = open_readonly(config.scheduler.runs_db)
    if table is None:
        raise click.ClickException(
            f"no run table at {config.scheduler.runs_db} (scheduler.runs_db): the scheduler "
            "has not run (scheduler.purposes is empty, or `openbid up` has not started)"
        )
    with table:
        runs = table.recent(limit, purpose)
    if as_json:
        for run in runs:
            click.echo(msgspec.json.encode(run).decode())
        return
    view = Table(title=f"training runs ({config.scheduler.runs_db})")
    for column in ("id", "purpose", "started", "ended", "s", "status", "rows", "held out"):
        view.add_column(column, justify="right" if column in ("id", "s", "rows") else "left")
    view.add_column("version")
    view.add_column("reason (--json: in full)", overflow="fold")
    for run in runs:
        version = run.version + (" (prod)" if run.promoted else "") if run.version else ""
        view.add_row(
            str(run.id) + (f"#{run.attempt}" if run.attempt > 1 else ""),
            run.purpose,
            iso(run.started_micros),
            iso(run.ended_micros),
            f"{run.real_seconds:.1f}",
            run.status,
            f"{run.rows:,}",
            _summary(run),
            version,
            short_reason(run.reason) if run.status != "registered" else run.reason[:60],
        )
    Console().print(view)
