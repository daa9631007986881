"""The command line of experiments: `openbid backtest a.yaml b.yaml ...` and
`openbid ab start|resize|stop|status|report` (`docs/experiments.md`)."""

from __future__ import annotations

from pathlib import Path

import click

from openbid.errors import OpenbidError

END_OF_LOG_MICROS = 1 << 62
"""`openbid ab report`'s default end: every event logged so far, whatever its clock."""

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (default: $OPENBID_CONFIG, else built-in defaults).",
)


def _config(config_path: str | None):  # type: ignore[no-untyped-def]
    from openbid.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("backtest")
@config_option
@click.argument("experiments", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--jobs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Backtests run at once, each in its own process (0: one per core).")  # fmt: skip
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              default="var/backtests/report.html", show_default=True,
              help="The comparison report (self-contained HTML).")  # fmt: skip
@click.option("--mlflow/--no-mlflow", default=True, show_default=True,
              help="Log each run to the registry's MLflow tracking URI.")  # fmt: skip
def backtest_command(config_path, experiments, jobs, report_path, mlflow) -> None:  # type: ignore[no-untyped-def]
    """Backtest EXPERIMENTS (YAML files) side by side on logged traffic."""
    from openbid.experiments.report import html_report, text_table
    from openbid.experiments.runner import log_to_mlflow, run_experiments
    from openbid.experiments.spec import load_experiment

    settings = _config(config_path)
    try:
        loaded = [load_experiment(path) for path in experiments]
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from None
    names = [e.name for e in loaded]
    if len(set(names)) != len(names):
        raise click.ClickException(f"experiment names must differ: {names}")
    results = run_experiments(loaded, settings, jobs=jobs)
    click.echo(text_table(results))
    report = Path(report_path)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(html_report(results), encoding="utf-8")
    click.echo(f"\nreport: {report.resolve()}")
    if mlflow:
        try:
            run_ids = log_to_mlflow(results, settings.models, report)
        except OpenbidError as exc:
            click.echo(f"not logged to MLflow: {exc}", err=True)
        else:
            click.echo(f"MLflow runs ({settings.models.tracking_uri}): {', '.join(run_ids)}")
    if any(r.error for r in results):
        raise SystemExit(1)


@click.group("ab")
def ab_group() -> None:
    """Live A/B tests: a share of a purpose's traffic served by another model."""


def _store(settings):  # type: ignore[no-untyped-def]
    from openbid.pipeline.modelstore import ModelStore

    return ModelStore(settings.models.store_url)


purpose_argument = click.argument("purpose", type=click.Choice(["shaping", "ctr", "cvr"]))


@ab_group.command("start")
@config_option
@purpose_argument
@click.option("--arm", default="challenger", show_default=True, help="The arm's name.")
@click.option("--model", default="@challenger", show_default=True,
              help="A registered version (7) or an alias (@challenger).")  # fmt: skip
@click.option("--share", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              default=0.1, show_default=True)  # fmt: skip
def ab_start(config_path, purpose, arm, model, share) -> None:  # type: ignore[no-untyped-def]
    """Start an arm: SHARE of PURPOSE's traffic goes to MODEL (every server, no restart)."""
    from openbid.experiments.arms import read_arms, start_arm, write_arms

    settings = _config(config_path)
    store = _store(settings)
    try:
        if model.isdigit() and store.published_checksum(purpose, model) is None:
            from openbid.pipeline.registry import Registry

            # publishes the version to the store (an alias of its own says it is under test)
            Registry(settings.models).promote(purpose, model, f"ab-{arm}", reason="A/B arm")
        arms = start_arm(read_arms(store, purpose), purpose, arm, model, share)
        write_arms(store, arms)
    except (OpenbidError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{purpose}: arm {arm} serves {model} on {share:.1%} of traffic "
               f"(experiment {arms.experiment}); servers follow within a poll")  # fmt: skip


@ab_group.command("resize")
@config_option
@purpose_argument
@click.argument("arm")
@click.argument("share", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True))
def ab_resize(config_path, purpose, arm, share) -> None:  # type: ignore[no-untyped-def]
    """Give ARM another SHARE (its users stay in it when it grows)."""
    from openbid.experiments.arms import read_arms, resize_arm, write_arms

    store = _store(_config(config_path))
    try:
        write_arms(store, resize_arm(read_arms(store, purpose), arm, share))
    except (OpenbidError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{purpose}: arm {arm} now on {share:.1%} of traffic")


@ab_group.command("stop")
@config_option
@purpose_argument
@click.argument("arm", required=False)
def ab_stop(config_path, purpose, arm) -> None:  # type: ignore[no-untyped-def]
    """Stop ARM (every arm when none is named): its traffic goes back to control."""
    from openbid.experiments.arms import read_arms, stop_arm, write_arms

    store = _store(_config(config_path))
    try:
        write_arms(store, stop_arm(read_arms(store, purpose), purpose, arm))
    except (OpenbidError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{purpose}: {'arm ' + arm if arm else 'every arm'} stopped")


@ab_group.command("status")
@config_option
def ab_status(config_path) -> None:  # type: ignore[no-untyped-def]
    """The arms in force for each purpose (store file, else config)."""
    from openbid.experiments.arms import PURPOSES, from_config, read_arms

    settings = _config(config_path)
    store = _store(settings)
    for purpose in PURPOSES:
        try:
            arms = read_arms(store, purpose)
            source = "store"
        except (OpenbidError, OSError) as exc:
            click.echo(f"{purpose}: cannot read the arms: {exc}")
            continue
        if arms is None:
            arms, source = from_config(settings.experiments, purpose), "config"
        if arms is None or not arms.arms:
            click.echo(f"{purpose}: no arm")
            continue
        described = ", ".join(f"{a.name}={a.model} {a.share:.1%}" for a in arms.arms)
        click.echo(f"{purpose}: {described} (experiment {arms.experiment}, from the {source})")


@ab_group.command("report")
@config_option
@click.argument("purpose", type=click.Choice(["shaping", "ctr", "cvr"]), default="shaping")
@click.option("--since", default=None, help="ISO-8601 UTC (default: the experiment's start).")
@click.option("--until", default=None, help="ISO-8601 UTC (default: the end of the log).")
@click.option("--min-effect", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.01,
              show_default=True, help="The smallest relative difference worth telling.")  # fmt: skip
def ab_report_command(config_path, purpose, since, until, min_effect) -> None:  # type: ignore[no-untyped-def]
    """Each arm against control with 95% intervals and a plain verdict."""
    from openbid.events import EventReader
    from openbid.experiments.abreport import ab_report, report_text
    from openbid.experiments.arms import read_arms
    from openbid.experiments.spec import parse_time

    settings = _config(config_path)
    try:
        since_micros = parse_time(since or "", end_micros=0)
        # the log's end, not this process's clock: a demo's market clock runs ahead of it
        until_micros = parse_time(until or "", end_micros=0) or END_OF_LOG_MICROS
    except ValueError as exc:
        raise click.ClickException(f"--since/--until: {exc}") from None
    if since_micros is None:
        try:
            arms = read_arms(_store(settings), purpose)
        except (OpenbidError, OSError):
            arms = None
        since_micros = arms.started_at_micros if arms is not None else 0
    reader = EventReader(settings.events.dir, segments_url=settings.events.segments_url)
    report = ab_report(reader, purpose, since_micros=since_micros, until_micros=until_micros,
                       min_effect=min_effect)  # fmt: skip
    click.echo(report_text(report))
