"""`openbid campaigns import|export|list`: the buy side's catalog from the command line.

The command group is `campaigns_command`; `openbid/cli.py` registers it as `campaigns`. The
catalog is the config's (`stores.catalog_url`) unless `--catalog` names another; its schema
is brought up to date first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from openbid.campaigns.validate import InvalidRecord, units
from openbid.config import load_config
from openbid.errors import OpenbidError

catalog_option = click.option(
    "--catalog",
    "catalog_url",
    default=None,
    help="Catalog database URL (default: the config's stores.catalog_url).",
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (default: $OPENBID_CONFIG, else built-in defaults).",
)


def _open_catalog(config_path: str | None, catalog_url: str | None):  # type: ignore[no-untyped-def]
    from openbid.campaigns.store import CampaignCatalog

    try:
        url = catalog_url or load_config(config_path).stores.catalog_url
        catalog = CampaignCatalog(url)
        catalog.migrate()
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from None
    return catalog


@click.group("campaigns")
def campaigns_command() -> None:
    """Advertisers, campaigns, line items and creatives: import, export, list."""


@campaigns_command.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row and report; write nothing.")
@catalog_option
@config_option
def import_command(file: Path, dry_run: bool, catalog_url: str | None, config_path: str | None):  # type: ignore[no-untyped-def]
    """Upsert the records of a YAML or CSV FILE by id; bad rows are reported (row, field,
    reason) and the good ones imported. Exits 1 when a row was refused."""
    from openbid.campaigns.bulk import BulkError, import_file

    catalog = _open_catalog(config_path, catalog_url)
    try:
        report = import_file(catalog, file, dry_run=dry_run)
    except (BulkError, InvalidRecord) as exc:
        raise click.ClickException(str(exc)) from None
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        catalog.close()
    for error in report.errors:
        click.echo(f"{file}: {error}", err=True)
    click.echo(report.summary())
    if report.errors:
        raise SystemExit(1)


@campaigns_command.command("export")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["yaml", "csv"]),
    default=None,
    help="Default: from the --out suffix, else yaml.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@catalog_option
@config_option
def export_command(  # type: ignore[no-untyped-def]
    file_format: str | None, out: Path | None, catalog_url: str | None, config_path: str | None
):
    """Write every advertiser, campaign, line item and creative (to stdout, or --out)."""
    from openbid.campaigns.bulk import export_csv, export_yaml

    if file_format is None:
        file_format = "csv" if out is not None and out.suffix.lower() == ".csv" else "yaml"
    catalog = _open_catalog(config_path, catalog_url)
    try:
        records = catalog.campaign_set()
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        catalog.close()
    text = export_csv(records) if file_format == "csv" else export_yaml(records)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(
            f"wrote {len(records.campaigns)} campaigns, {len(records.line_items)} line items,"
            f" {len(records.creatives)} creatives to {out}"
        )


def _day(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, tz=UTC).strftime("%Y-%m-%d")


@campaigns_command.command("list")
@catalog_option
@config_option
def list_command(catalog_url: str | None, config_path: str | None) -> None:  # type: ignore[no-untyped-def]
    """One line a campaign: tier, goal, budgets, flight (UTC dates), line items, status."""
    catalog = _open_catalog(config_path, catalog_url)
    try:
        records = catalog.campaign_set()
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        catalog.close()
    line_items: dict[str, int] = {}
    for line_item in records.line_items:
        line_items[line_item.campaign_id] = line_items.get(line_item.campaign_id, 0) + 1
    header = (
        f"{'campaign':<24} {'advertiser':<16} {'tier':<10} {'goal':<12} {'daily':>9}"
        f" {'total':>10} {'flight':<23} {'items':>5} status"
    )
    click.echo(header)
    for campaign in records.campaigns:
        goal = f"{campaign.goal.upper()} {units(campaign.goal_amount_micros)}"
        daily = units(campaign.daily_budget_micros) if campaign.daily_budget_micros else "-"
        flight = f"{_day(campaign.start_micros)}..{_day(campaign.end_micros)}"
        click.echo(
            f"{campaign.id:<24} {campaign.advertiser_id:<16} {campaign.tier:<10} {goal:<12}"
            f" {daily:>9} {units(campaign.total_budget_micros):>10} {flight:<23}"
            f" {line_items.get(campaign.id, 0):>5} {campaign.status}"
        )
    click.echo(
        f"{len(records.campaigns)} campaigns, {len(records.line_items)} line items,"
        f" {len(records.creatives)} creatives, {len(records.advertisers)} advertisers"
    )
