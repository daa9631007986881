"""`openbid train {shaping,ctr,cvr}`: one training job (ETL -> train -> gate -> register ->
promote, `openbid.pipeline.train`) from the command line, the same job the scheduler runs,
so cron or an orchestrator can run it alike.

`TRAIN_COMMANDS` are registered by `openbid/cli.py` under `openbid train`.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click
import msgspec

from openbid.config import ConfigError, load_config
from openbid.errors import OpenbidError
from openbid.pipeline.cli import parse_time_micros

EXIT_REFUSED = 3
"""Exit status when the gate refused the model (cron and orchestrators see it failed)."""

_DESCRIPTIONS = {
    "shaping": "the traffic-shaping model (bid probability per DSP, thresholds)",
    "ctr": "the click model (P(click | impression))",
    "cvr": "the conversion model (P(conversion | click or view))",
}


def _command(purpose: str) -> click.Command:
    @click.command(purpose, help=f"Train, gate, register and promote {_DESCRIPTIONS[purpose]}.")
    @click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
    @click.option(
        "--since",
        default=None,
        help="Window start (ISO 8601, UTC when no zone); default: train.history_s before --until.",
    )
    @click.option("--until", default=None, help="Window end, exclusive; default: now (the clock).")
    @click.option(
        "--set",
        "set_path",
        default=None,
        help="Train on this training set (`openbid etl build`) instead of building one.",
    )
    @click.option(
        "--promote",
        type=click.Choice(["better", "gate", "never"]),
        default=None,
        help="What a model that passes becomes (default: train.promote).",
    )
    @click.option(
        "--register/--no-register",
        default=True,
        show_default=True,
        help="Register a model that passes the gate (--no-register: judge it only).",
    )
    @click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Also write the model that passed to this directory (replaced whole).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
    @click.option(
        "--progress/--no-progress", default=True, show_default=True, help="ETL progress bars."
    )
    def command(
        config_path: str | None,
        since: str | None,
        until: str | None,
        set_path: str | None,
        promote: str | None,
        register: bool,
        out_dir: str | None,
        as_json: bool,
        progress: bool,
    ) -> None:
        from openbid.obs import setup_logging
        from openbid.pipeline.train import run_job

        try:
            config = load_config(config_path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        setup_logging(config.logging.level, config.logging.format)
        bars = _progress_bars() if progress and not as_json else None
        try:
            with bars if bars is not None else contextlib.nullcontext():
                result = run_job(
                    purpose,
                    config,
                    since_micros=parse_time_micros(since, "--since"),
                    until_micros=parse_time_micros(until, "--until"),
                    set_path=set_path,
                    promote=promote,
                    register=register,
                    out_dir=Path(out_dir) if out_dir else None,
                    progress=bars,
                )
        except OpenbidError as exc:
            raise click.ClickException(str(exc)) from exc
        if as_json:
            click.echo(msgspec.json.encode(result).decode())
        else:
            click.echo(describe(result))
        if result.status == "refused":
            sys.exit(EXIT_REFUSED)

    return command


def _progress_bars():  # type: ignore[no-untyped-def]
    from openbid.pipeline.cli import _Bars

    return _Bars()


def describe(result) -> str:  # type: ignore[no-untyped-def]
    """A job's result for a person: what happened, on which rows, the held-out figures."""
    from openbid.pipeline.runs import iso

    lines = [
        f"{result.purpose}: {result.status}" + (f" - {result.reason}" if result.reason else "")
    ]
    if result.set_path:
        lines.append(
            f"training set {result.set_path}: {result.rows:,} rows, {result.positives:g} "
            f"positives, window {iso(result.window_since_micros)} .. "
            f"{iso(result.window_until_micros)}"
        )
    metrics = result.metrics
    if metrics:
        figures = [
            ("trained on", "train_rows", "{:,.0f} rows"),
            ("held out", "heldout_rows", "{:,.0f} rows"),
            ("held-out positives", "heldout_positives", "{:,.1f}"),
            ("expected / actual", "heldout_calibration_ratio", "{:.3f}"),
            ("log loss", "heldout_logloss", "{:.5f}"),
            ("base rate's log loss", "heldout_base_logloss", "{:.5f}"),
            ("production's log loss", "production_logloss", "{:.5f}"),
            ("production's expected / actual", "production_calibration_ratio", "{:.3f}"),
            ("AUC", "heldout_auc", "{:.3f}"),
            ("callouts saved", "heldout_callouts_saved", "{:.1%}"),
            ("bid value kept", "heldout_value_kept", "{:.2%}"),
            ("bids kept", "heldout_recall_kept", "{:.2%}"),
        ]
        for label, key, form in figures:
            if key in metrics:
                lines.append(f"  {label:<31}{form.format(metrics[key])}")
    if result.version:
        lines.append(
            f"registered as version {result.version}"
            + (" and promoted to production" if result.promoted else " (challenger)")
        )
    return "\n".join(lines)


TRAIN_COMMANDS: dict[str, click.Command] = {p: _command(p) for p in ("shaping", "ctr", "cvr")}
