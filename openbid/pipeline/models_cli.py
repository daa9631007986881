"""`openbid models ...`: list, show, register, promote and roll back registered models.

MLflow is imported only when a command runs (it takes seconds), never by `openbid up`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from openbid.pipeline.modelstore import PURPOSES

purpose_argument = click.argument("purpose", type=click.Choice(PURPOSES))
alias_option = click.option(
    "--alias", default="production", show_default=True, help="The alias to move."
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (default: $OPENBID_CONFIG, else built-in defaults).",
)


def _registry(config_path: str | None):  # type: ignore[no-untyped-def]
    from openbid.config import ConfigError, load_config
    from openbid.obs import setup_logging

    try:
        settings = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    setup_logging("warning", settings.logging.format)
    from openbid.pipeline.registry import Registry

    return Registry(settings.models)


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _errors():  # type: ignore[no-untyped-def]
    from openbid.pipeline.modelstore import ModelStoreError
    from openbid.pipeline.registry import RegistryError

    return (RegistryError, ModelStoreError)


def _when(micros: int) -> str:
    if micros <= 0:
        return "-"
    return datetime.fromtimestamp(micros / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.command("list")
@config_option
@click.argument("purpose", type=click.Choice(PURPOSES), required=False)
def list_command(config_path: str | None, purpose: str | None) -> None:
    """Registered versions (newest first) with their aliases, training end and rows."""
    registry = _registry(config_path)
    try:
        rows = [info for p in ([purpose] if purpose else PURPOSES) for info in registry.versions(p)]
    except _errors() as exc:
        raise _fail(exc) from None
    if not rows:
        click.echo("no models registered")
        return
    click.echo(
        f"{'purpose':<8} {'version':>7}  {'aliases':<22} {'trained until':<20} {'rows':>10}  model"
    )
    for info in rows:
        aliases = ",".join(info.aliases) or "-"
        click.echo(
            f"{info.purpose:<8} {info.version:>7}  {aliases:<22} "
            f"{_when(info.trained_end_micros):<20} {info.rows:>10,}  {info.model_version}"
        )


@click.command("show")
@config_option
@purpose_argument
@click.argument("ref", default="@production")
def show_command(config_path: str | None, purpose: str, ref: str) -> None:
    """One version (a number or @alias, default @production): parameters, metrics, tags,
    the alias history, and what the servers' pointer in the store says."""
    registry = _registry(config_path)
    try:
        info = registry.version(purpose, ref)
        history = registry.history(purpose, "production")
        pointer = registry.pointer(purpose, "production")
    except _errors() as exc:
        raise _fail(exc) from None
    click.echo(f"{purpose} version {info.version}  aliases: {', '.join(info.aliases) or '-'}")
    click.echo(f"  model          {info.model_version}")
    click.echo(f"  registered at  {info.registered_at}")
    click.echo(f"  trained until  {_when(info.trained_end_micros)}  ({info.rows:,} rows)")
    click.echo(f"  spec hash      {info.spec_hash}")
    click.echo(f"  run            {info.run_id}")
    for title, values in (("params", info.params), ("metrics", info.metrics)):
        click.echo(f"  {title}:")
        for key in sorted(values):
            click.echo(f"    {key:<32} {values[key]}")
    click.echo("  production history (oldest first):")
    for entry in history:
        click.echo(f"    {entry.version:>5}  {entry.at}  {entry.reason}")
    if pointer is None:
        click.echo("  store: no production pointer (servers serve no store model)")
    else:
        click.echo(
            f"  store: production -> version {pointer.version} (promoted {pointer.promoted_at})"
        )


@click.command("register")
@config_option
@purpose_argument
@click.argument("artifact", type=click.Path(exists=True, file_okay=False))
@click.option("--alias", default=None, help="Promote the new version to this alias at once.")
def register_command(config_path: str | None, purpose: str, artifact: str, alias: str | None):
    """Register a model directory (validated first) as a new version."""
    registry = _registry(config_path)
    try:
        info = registry.register(purpose, artifact, alias=alias)
    except _errors() as exc:
        raise _fail(exc) from None
    suffix = f" as @{alias}" if alias else ""
    click.echo(f"registered {purpose} version {info.version}{suffix}")


@click.command("promote")
@config_option
@purpose_argument
@click.argument("version")
@alias_option
@click.option("--reason", default="", help="Recorded in the alias's history.")
def promote_command(config_path: str | None, purpose: str, version: str, alias: str, reason: str):
    """Point an alias at a version and publish it; servers following it swap it in."""
    registry = _registry(config_path)
    try:
        done = registry.promote(purpose, version, alias, reason=reason)
    except _errors() as exc:
        raise _fail(exc) from None
    click.echo(
        f"{purpose}@{alias}: version {done.previous or '-'} -> {done.version} "
        f"(published to {registry.store.url})"
    )


@click.command("rollback")
@config_option
@purpose_argument
@alias_option
@click.option("--reason", default="", help="Recorded in the alias's history.")
def rollback_command(config_path: str | None, purpose: str, alias: str, reason: str):
    """Point an alias back at the version it named before the current one."""
    registry = _registry(config_path)
    try:
        done = registry.rollback(purpose, alias, reason=reason)
    except _errors() as exc:
        raise _fail(exc) from None
    click.echo(f"{purpose}@{alias}: rolled back {done.previous} -> {done.version}")


@click.command("prune")
@config_option
@purpose_argument
@click.option("--keep", type=click.IntRange(min=1), default=50, show_default=True)
def prune_command(config_path: str | None, purpose: str, keep: int) -> None:
    """Delete old versions no alias names (now or in its history) beyond the newest KEEP."""
    registry = _registry(config_path)
    try:
        deleted = registry.prune(purpose, keep)
    except _errors() as exc:
        raise _fail(exc) from None
    click.echo(f"deleted {len(deleted)} {purpose} versions: {', '.join(deleted) or '-'}")


MODEL_COMMANDS = (
    list_command,
    show_command,
    register_command,
    promote_command,
    rollback_command,
    prune_command,
)
