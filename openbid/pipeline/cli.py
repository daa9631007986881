"""`openbid etl build {shaping,click,conversion}`: build a training set from the event log.

The command object is `build_command`; `openbid/cli.py` registers it under `openbid etl`.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import click

from openbid.config import load_config
from openbid.errors import OpenbidError
from openbid.pipeline.transforms import SETS


def parse_time_micros(value: str | None, option: str) -> int | None:
    """An ISO 8601 time (UTC when it names no zone) as microseconds since the epoch."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"not an ISO 8601 time: {value!r} (e.g. 2026-11-22T21:00)", param_hint=option
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class _Bars:
    """Draws `progress(step, done, total)` calls as rich progress bars on stderr (a spinner
    with a count while the total is unknown)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.tasks: dict[str, int] = {}

    def __call__(self, step: str, done: int, total: int) -> None:
        task = self.tasks.get(step)
        if task is None:
            task = self.tasks[step] = self.progress.add_task(step, total=total or None)
        self.progress.update(task, completed=done, total=total or None)
        if total and done >= total:
            self.progress.update(task, completed=total)

    def __enter__(self) -> _Bars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self.progress.tasks:
            if task.total is None:  # a read whose total was only known at its end
                self.progress.update(
                    task.id, total=task.completed or 1, completed=task.completed or 1
                )
        self.progress.stop()


@click.command("build")
@click.argument("set_name", metavar="{shaping,click,conversion}", type=click.Choice(SETS))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option(
    "--since",
    default=None,
    help="Window start (ISO 8601, UTC when no zone); default: the log's start.",
)
@click.option("--until", default=None, help="Window end, exclusive; default: now, by the clock.")
@click.option(
    "--engine",
    type=click.Choice(["duckdb", "spark"]),
    default=None,
    help="Default: etl.engine (duckdb). Spark runs on etl.spark_master.",
)
@click.option(
    "--out", "out_url", default=None, help="Directory or fsspec URL (default: etl.out_url)."
)
@click.option("--events-dir", default=None, help="Event log directory (default: events.dir).")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr."
)
def build_command(
    set_name: str,
    config_path: str | None,
    since: str | None,
    until: str | None,
    engine: str | None,
    out_url: str | None,
    events_dir: str | None,
    progress: bool,
) -> None:
    """Build a training set (shaping, click or conversion) from the event log: Parquet and a
    manifest under OUT/<set>/<since>_<until>/."""
    from openbid.pipeline.build import Windows, build_training_set
    from openbid.pipeline.engines import open_engine
    from openbid.pipeline.source import EventSource

    try:
        config = load_config(config_path)
        since_micros = parse_time_micros(since, "--since")
        until_micros = parse_time_micros(until, "--until")
        etl = config.etl
        engine_name = engine or etl.engine
        source = EventSource(
            events_dir or config.events.dir, segments_url=config.events.segments_url
        )
        bars = _Bars() if progress else None
        the_engine = open_engine(
            engine_name, duckdb_threads=etl.duckdb_threads, spark_master=etl.spark_master
        )
        try:
            with bars if bars is not None else contextlib.nullcontext():
                manifest = build_training_set(
                    set_name,
                    source,
                    the_engine,
                    Windows.from_config(etl),
                    out_url or etl.out_url,
                    since_micros=since_micros,
                    until_micros=until_micros,
                    progress=bars,
                )
        finally:
            the_engine.close()
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from exc
    window = manifest.window
    click.echo(
        f"{set_name}: {manifest.rows:,} rows, {manifest.positives:,} positives "
        f"from {manifest.events_in:,} events ({engine_name}, "
        f"{manifest.seconds.get('join', 0.0):.2f} s join)"
    )
    click.echo(
        f"window {window['since']} .. {window['until']}; rows after {window['closed_until']} "
        "wait for their window to close"
    )
    click.echo(f"written to {manifest.path}")
