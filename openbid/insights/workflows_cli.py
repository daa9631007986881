"""`openbid insights run|jobs|reports`: the insights jobs from cron or an orchestrator, and
what they wrote (`docs/insights.md`); registered by `openbid/insights/cli.py`."""

from __future__ import annotations

import time

import click

from openbid.errors import OpenbidError


def _settings(settings_path, events_dir, out_dir):
    from openbid.insights.workflows import load_settings

    try:
        return load_settings(settings_path, events_dir=events_dir, out_dir=out_dir)
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from exc


_SETTINGS = click.option(
    "--settings",
    "settings_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Insights settings (TOML).",
)
_EVENTS = click.option("--events-dir", default=None, help="Overrides the settings' events_dir.")
_OUT = click.option("--out-dir", default=None, help="Overrides the settings' out_dir.")


@click.command("run")
@click.argument("job")
@_SETTINGS
@_EVENTS
@_OUT
@click.option("--retries", type=click.IntRange(0, 20), default=None, help="Default: the job's.")
@click.option("--now", default=None, help="Run as of this time (ISO 8601; default: the clock).")
def run_command(job, settings_path, events_dir, out_dir, retries, now):
    """Run one insights job (audiences, lookalike, attribution, personalize) with its
    retries, writing its report and the manifest. Exit 1 when it failed."""
    from openbid.insights.cli import _time_micros
    from openbid.insights.workflows import jobs, run_job

    settings = _settings(settings_path, events_dir, out_dir)
    if job not in jobs():
        raise click.BadParameter(f"expected one of {sorted(jobs())}", param_hint="JOB")
    now_micros = _time_micros(now, "--now", 0) if now else None
    result = run_job(job, settings, now_micros=now_micros, retries=retries)
    click.echo(f"{job}: {result.status}" + (f" ({result.reason})" if result.reason else ""))
    for name, value in sorted(result.metrics.items()):
        click.echo(f"  {name} = {value:g}")
    for output in result.files:
        click.echo(f"  wrote {output.path} ({output.format}, {output.rows:,} rows)")
    if result.status == "failed":
        raise SystemExit(1)


@click.command("jobs")
@_SETTINGS
def jobs_command(settings_path):
    """The insights jobs with their intervals and retries, as a scheduler registers them."""
    from openbid.insights.workflows import jobs

    settings = _settings(settings_path, None, None)
    click.echo(f"{'job':<12} {'interval_s':>10} {'retries':>7} {'backoff_s':>9}  title")
    for job in jobs().values():
        interval_s, retries, backoff_s = job.schedule(settings)
        click.echo(f"{job.name:<12} {interval_s:>10g} {retries:>7} {backoff_s:>9g}  {job.title}")


@click.command("reports")
@_SETTINGS
@_OUT
def reports_command(settings_path, out_dir):
    """What the jobs last wrote (the manifest the console reads)."""
    from openbid.insights.workflows import Manifest

    settings = _settings(settings_path, None, out_dir)
    data = Manifest(settings.out_dir).read()
    if not data["reports"]:
        click.echo(f"no reports under {settings.out_dir}")
        return
    for name, entry in sorted(data["reports"].items()):
        latest = entry.get("latest") or {}
        last = entry["history"][0] if entry.get("history") else {}
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last.get("ended_micros", 0) / 1e6))
        click.echo(
            f"{name}: {entry['title']}; last attempt {last.get('status', '-')} at {when}; "
            f"latest report {latest.get('status', '-')}, {len(latest.get('files', []))} files"
        )
