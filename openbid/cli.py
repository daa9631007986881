"""The `openbid` command line: serve the platform, inspect config and events, run jobs."""

from __future__ import annotations

import asyncio
import sys

import click
import msgspec

from openbid.config import Config, ConfigError, config_to_toml, load_config
from openbid.obs import setup_logging


def _load(config_path: str | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (default: $OPENBID_CONFIG, else built-in defaults).",
)


@click.group()
@click.version_option(package_name="openbid")
def main() -> None:
    """openbid: an open-source real-time advertising platform."""


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@config_option
def config_show(config_path: str | None) -> None:
    """Print the effective configuration (file plus OPENBID_* overrides) as TOML."""
    click.echo(config_to_toml(_load(config_path)))


@main.command()
@config_option
@click.option("--demo", is_flag=True, help="Run with a simulated market and traffic.")
@click.option("--market", default="default", show_default=True, help="Demo market (name or YAML).")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.0),
    default=400.0,
    show_default=True,
    help="Demo requests per second at most: fewer when the machine cannot serve them in time "
    "(0: no traffic, the market's DSPs only).",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Market seconds per real second (default: clock.speed; the demo's: 60).",
)
def up(config_path: str | None, demo: bool, market: str, rate: float, speed: float | None) -> None:
    """Start the servers of the config; Ctrl-C (SIGINT) or SIGTERM stops them cleanly."""
    from openbid import clock
    from openbid.errors import OpenbidError
    from openbid.platform import run_platform

    settings = _load(config_path)
    setup_logging(settings.logging.level, settings.logging.format)
    services = []
    if demo:
        from openbid.demo import demo_services
        from openbid.demo_loop import demo_config

        settings = demo_config(settings, speed)
        services = demo_services(market, rate)
    elif speed is not None:
        settings = msgspec.structs.replace(
            settings, clock=msgspec.structs.replace(settings.clock, speed=speed)
        )
    if settings.console.enabled:
        # The console serves on its own port from a process of its own (docs/console.md).
        from openbid.console.serve import console_service

        services = [*services, console_service]
    try:
        # One clock for the processes of this platform: the workers and the job process
        # are handed its spec.
        clock.set_clock(clock.from_settings(settings.clock.speed, settings.clock.start))
        if settings.scheduler.purposes:
            from openbid.pipeline.scheduler import scheduler_service

            services.append(scheduler_service(settings))
        if settings.server.worker_count() > 1:
            from openbid.workers import run_workers

            _run_event_loop(run_workers(settings, services))
        else:
            _run_event_loop(run_platform(settings, services))
    except OpenbidError as exc:  # a config, store or port problem: one message, no traceback
        raise click.ClickException(str(exc)) from None


def _run_event_loop(coroutine) -> None:  # type: ignore[no-untyped-def]
    """Runs the servers on uvloop where it is installed (it is on Linux and macOS)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


@main.group()
def etl() -> None:
    """Turn the event log into training sets."""


@etl.command("events")
@config_option
def etl_events(config_path: str | None) -> None:
    """Count the events in the log, by kind: rolled segments and the not-yet-rolled tail."""
    from openbid.events import EVENT_TYPES, EventReader

    settings = _load(config_path)
    reader = EventReader(settings.events.dir, segments_url=settings.events.segments_url)
    for kind in EVENT_TYPES:
        rolled = sum(t.num_rows for t in reader.tables(kind, include_tail=False))
        total = reader.read_table(kind).num_rows
        click.echo(f"{kind:<12} {total:>12,} events ({total - rolled:,} not yet rolled)")
    if reader.bad_records:
        click.echo(f"damaged records skipped: {reader.bad_records}", err=True)


@main.command("conversion-key")
@config_option
@click.argument("advertiser")
def conversion_key_command(config_path: str | None, advertiser: str) -> None:
    """Print the key ADVERTISER (its domain) signs its conversions with (GET/POST /conv)."""
    from openbid.creative import TrackerSigner
    from openbid.exchange.conversions import conversion_key
    from openbid.platform import tracker_key

    settings = _load(config_path).exchange
    if not (settings.tracker_secret or settings.tracker_secret_file):
        raise click.ClickException(
            "exchange.tracker_secret (or tracker_secret_file) is not set: advertisers' keys "
            "derive from it, and a random one changes with every start"
        )
    try:
        click.echo(conversion_key(TrackerSigner(tracker_key(settings)), advertiser))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def train() -> None:
    """Train models from the event log."""


@main.group()
def models() -> None:
    """List, promote and inspect registered models."""


from openbid.campaigns.cli import campaigns_command  # noqa: E402 - after the core commands
from openbid.experiments.cli import ab_group, backtest_command  # noqa: E402
from openbid.insights.cli import insights as insights_group  # noqa: E402
from openbid.monitoring.cli import monitor_group  # noqa: E402
from openbid.pipeline.cli import build_command as etl_build_command  # noqa: E402
from openbid.pipeline.models_cli import MODEL_COMMANDS  # noqa: E402
from openbid.pipeline.runs_cli import runs_command  # noqa: E402
from openbid.pipeline.train_cli import TRAIN_COMMANDS  # noqa: E402
from openbid.sim.cli import sim_command  # noqa: E402

for _command in MODEL_COMMANDS:
    models.add_command(_command)

main.add_command(sim_command, "sim")
main.add_command(campaigns_command, "campaigns")
main.add_command(insights_group, "insights")
main.add_command(backtest_command, "backtest")
main.add_command(ab_group, "ab")
main.add_command(monitor_group, "monitor")
etl.add_command(etl_build_command, "build")
# The training jobs (ETL -> train -> gate -> register -> promote) and the scheduler's runs.
for _purpose, _command in TRAIN_COMMANDS.items():
    train.add_command(_command, _purpose)
main.add_command(runs_command, "runs")

if __name__ == "__main__":
    sys.exit(main())
