"""`openbid monitor run`: the monitoring job over the event log, once or every N seconds."""

from __future__ import annotations

import time

import click

from openbid.errors import OpenbidError


@click.group("monitor")
def monitor_group() -> None:
    """Calibration, drift and model age from the event log."""


@monitor_group.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML config file (default: $OPENBID_CONFIG, else built-in defaults).")  # fmt: skip
@click.option("--window", "window_s", type=click.FloatRange(min=1.0), default=3600.0,
              show_default=True, help="Market seconds of recent events judged.")  # fmt: skip
@click.option("--out", default="var/monitoring", show_default=True,
              help="Where report.json and openbid.prom (node_exporter textfile) go.")  # fmt: skip
@click.option("--every", "every_s", type=click.FloatRange(min=0.0), default=0.0,
              help="Run again every this many real seconds (0: once).")  # fmt: skip
def monitor_run(config_path, window_s, out, every_s) -> None:  # type: ignore[no-untyped-def]
    """Expected / actual by slice, calibration, prediction and feature drift, model age;
    raises the calibration alert (log line, webhook) when a slice leaves the band."""
    from openbid.config import ConfigError, load_config
    from openbid.monitoring.alerts import Alerter
    from openbid.monitoring.job import run_monitor_job, write_outputs
    from openbid.obs import setup_logging

    try:
        settings = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    setup_logging(settings.logging.level, settings.logging.format)
    alerter = Alerter(settings.monitoring, source="openbid monitor")
    try:
        while True:
            try:
                job = run_monitor_job(settings, window_s=window_s, alerter=alerter)
            except (OpenbidError, OSError) as exc:
                raise click.ClickException(str(exc)) from None
            report, prom = write_outputs(job, out)
            for purpose in job.purposes:
                ratio = purpose.expected / purpose.actual if purpose.actual else float("inf")
                click.echo(
                    f"{purpose.purpose:<8} model {purpose.model or '-':<6} rows {purpose.rows:>9,} "
                    f"expected/actual {ratio:6.3f}  drift {purpose.mean_prediction_drift:+.1%}  "
                    f"age {purpose.model_age_s / 3600:.1f} h  {purpose.note}"
                )
            click.echo(f"written: {report}, {prom}")
            if every_s <= 0:
                return
            time.sleep(every_s)
    finally:
        alerter.close()
