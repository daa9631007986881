"""`openbid insights ...`: attribution, identity resolution, clean-room queries
(`docs/insights.md`). The group object is `insights`; `openbid/cli.py` registers it. The
analyses are imported inside their commands, so `openbid --help` stays fast."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from openbid.errors import OpenbidError


@click.group()
def insights() -> None:
    """Analyses over the event log and partners' data: attribution, identity, clean rooms."""


def _time_micros(value: str | None, option: str, default: int) -> int:
    if value is None:
        return default
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}", param_hint=option) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


@insights.command("attribution")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Aggregated paths, one row per distinct path.",
)
@click.option("--sep", default=";", show_default=True, help="CSV field separator.")
@click.option(
    "--path-sep", default=">", show_default=True, help="Separator between a path's channels."
)
@click.option("--path-col", default="path", show_default=True)
@click.option("--conv-col", default="total_conversions", show_default=True)
@click.option("--value-col", default=None)
@click.option("--null-col", default=None)
@click.option(
    "--events-dir", default=None, help="Build journeys from this event log instead of a CSV."
)
@click.option(
    "--by",
    type=click.Choice(["campaign", "publisher", "dsp", "creative"]),
    default="campaign",
    show_default=True,
    help="What names a channel (event log).",
)
@click.option(
    "--since", default=None, help="Conversions from (ISO 8601; default: the log's start)."
)
@click.option(
    "--until", default=None, help="Conversions until, exclusive (default: now, by the clock)."
)
@click.option(
    "--lookback-days",
    type=float,
    default=30.0,
    show_default=True,
    help="Touches this long before a conversion count.",
)
@click.option(
    "--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb", show_default=True
)
@click.option(
    "--simulate", type=int, default=None, help="Simulated journeys instead of data (seeded)."
)
@click.option(
    "--order", type=click.IntRange(1, 3), default=1, show_default=True, help="Markov order."
)
@click.option(
    "--half-life",
    type=float,
    default=1.0,
    show_default=True,
    help="Time decay half-life in touches (CSV).",
)
@click.option("--json", "as_json", is_flag=True, help="The table as JSON lines.")
def attribution_command(
    csv_path,
    sep,
    path_sep,
    path_col,
    conv_col,
    value_col,
    null_col,
    events_dir,
    by,
    since,
    until,
    lookback_days,
    engine,
    simulate,
    order,
    half_life,
    as_json,
) -> None:
    """Attribute conversions to channels with every model: last/first touch, linear,
    position-based, time decay, Markov removal effect, Shapley."""
    from openbid.insights.attribution import attribute, format_table, read_paths_csv, simulate_paths

    sources = [x is not None for x in (csv_path, events_dir, simulate)]
    if sum(sources) != 1:
        raise click.UsageError("give exactly one of --csv, --events-dir, --simulate")
    try:
        time_decay_credit = None
        if csv_path:
            paths = read_paths_csv(
                csv_path,
                sep=sep,
                path_sep=path_sep,
                path_col=path_col,
                conv_col=conv_col,
                value_col=value_col,
                null_col=null_col,
            )
        elif simulate is not None:
            paths = simulate_paths(simulate)
        else:
            from openbid import clock
            from openbid.insights.attribution.journeys import build_journeys
            from openbid.pipeline import EventSource, open_engine

            source = EventSource(events_dir)
            the_engine = open_engine(engine)
            try:
                journeys = build_journeys(
                    source,
                    the_engine,
                    since_micros=_time_micros(since, "--since", 0),
                    until_micros=_time_micros(until, "--until", clock.now_micros()),
                    by=by,
                    lookback_s=lookback_days * 86400.0,
                )
            finally:
                the_engine.close()
            paths, time_decay_credit = journeys.paths, journeys.time_decay
            click.echo(
                "journeys: "
                + ", ".join(
                    f"{k} {v:,.0f}" for k, v in journeys.stats.items() if not k.endswith("_s")
                ),
                err=True,
            )
        report = attribute(
            paths, order=order, half_life=half_life, time_decay_credit=time_decay_credit
        )
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for row in report.table.to_pylist():
            click.echo(json.dumps(row))
        return
    totals = report.totals
    click.echo(
        f"{totals['paths']:,.0f} distinct paths, {totals['conversions']:,.0f} conversions, "
        f"value {totals['value']:,.2f}, {totals['nulls']:,.0f} null journeys; Markov order {order}"
    )
    names = [c for c in report.table.column_names if c.endswith("_conversions")]
    shown = report.table.select(["channel", *names, "markov_removal_effect"])
    shown = shown.rename_columns(
        ["channel", *(c.removesuffix("_conversions") for c in names), "markov_RE"]
    )
    click.echo(format_table(shown))


@insights.group("identity")
def identity() -> None:
    """Identity resolution: hash identifiers (advertiser side), link records (Splink)."""


@identity.command("hash")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True)
@click.option("--email-col", default="email", show_default=True)
@click.option("--phone-col", default="phone", show_default=True)
@click.option(
    "--country-code", default="", help="Country code of national phone numbers (e.g. 44)."
)
@click.option(
    "--salt-file", default=None, help="The collaboration's salt (default: $OPENBID_IDENTITY_SALT)."
)
def identity_hash(csv_path, out_path, email_col, phone_col, country_code, salt_file) -> None:
    """Replace emails and phones by salted hashes of their normalised forms (what may leave
    the advertiser's side)."""
    import pyarrow.csv as pacsv

    from openbid.insights.identity import hash_records, load_salt

    try:
        salt = load_salt(path=salt_file)
        table = pacsv.read_csv(
            csv_path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)
        )
        hashed = hash_records(
            table,
            salt=salt,
            email_col=email_col,
            phone_col=phone_col,
            default_country_code=country_code,
        )
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from exc
    pacsv.write_csv(hashed, out_path)
    click.echo(f"{hashed.num_rows:,} records hashed to {out_path}: columns {hashed.column_names}")


@identity.command("link")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, exists=True),
    required=True,
    help="CRM records (hashed).",
)
@click.option("--id-col", default="record_id", show_default=True)
@click.option(
    "--logged",
    "logged_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Logged identities: user_id, email_hash, phone_hash.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.95,
    show_default=True,
)
@click.option(
    "--cluster-col", default=None, help="A label column: report pairwise precision and recall."
)
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Clusters as CSV."
)
def identity_link(csv_path, id_col, logged_path, threshold, cluster_col, out_path) -> None:
    """Link CRM records to each other and to logged user ids; cluster them."""
    import pyarrow.csv as pacsv

    from openbid.insights.identity import link, pairwise_scores

    read = pacsv.ConvertOptions(strings_can_be_null=True)
    try:
        crm = pacsv.read_csv(csv_path, convert_options=read)
        logged = pacsv.read_csv(logged_path, convert_options=read) if logged_path else None
        result = link(crm, logged=logged, id_col=id_col, threshold=threshold)
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from exc
    clusters = result.clusters
    crm_rows = [r for r in clusters.to_pylist() if r["source"] == "crm"]
    click.echo(
        f"{len(crm_rows):,} records in {len({r['cluster_id'] for r in crm_rows}):,} clusters; "
        f"{sum(1 for r in result.user_ids.to_pylist() if r['user_ids']):,} records with a user id"
    )
    click.echo("comparisons: " + "; ".join(result.comparisons))
    click.echo("blocking: " + " | ".join(result.blocking_rules))
    if cluster_col:
        if cluster_col not in crm.column_names:
            raise click.BadParameter(f"{cluster_col!r} is not a column", param_hint="--cluster-col")
        ids = [str(v) for v in crm[id_col].to_pylist()]
        cluster = {r["record_id"]: r["cluster_id"] for r in crm_rows}
        s = pairwise_scores(
            ids, predicted=[cluster[i] for i in ids], truth=crm[cluster_col].to_pylist()
        )
        click.echo(f"precision {s.precision:.4f}  recall {s.recall:.4f}  F1 {s.f1:.4f}")
    if out_path:
        pacsv.write_csv(clusters, out_path)
        click.echo(f"clusters written to {out_path}")


@insights.group("cleanroom")
def cleanroom() -> None:
    """Clean-room aggregates between two parties, under their rules."""


@cleanroom.command("query")
@click.option(
    "--collab",
    "collab_path",
    type=click.Path(dir_okay=False, exists=True),
    required=True,
    help="The collaboration (TOML).",
)
@click.option("--query", "query_text", required=True, help="The query as JSON, or @file.json.")
@click.option("--as", "analyst", required=True, help="Who runs the query (logged).")
def cleanroom_query(collab_path, query_text, analyst) -> None:
    """Run one structured query; refused queries are logged too."""
    from openbid.insights.attribution import format_table
    from openbid.insights.cleanroom.config import load_collaboration

    if query_text.startswith("@"):
        try:
            with open(query_text[1:]) as handle:
                query_text = handle.read()
        except OSError as exc:
            raise click.BadParameter(str(exc), param_hint="--query") from None
    try:
        with load_collaboration(collab_path) as room:
            result = room.run(query_text, analyst=analyst)
            left = room.epsilon_budget - room.epsilon_spent()
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_table(result.table) if result.table.num_rows else "(no row passed the rules)")
    click.echo(
        f"query {result.query_id}: {result.table.num_rows} rows, {result.rows_suppressed} suppressed "
        f"(minimum {result.min_users} users); epsilon {result.epsilon:g} spent, {left:g} left",
        err=True,
    )


@cleanroom.command("log")
@click.option(
    "--collab", "collab_path", type=click.Path(dir_okay=False, exists=True), required=True
)
def cleanroom_log(collab_path) -> None:
    """Every query run in the collaboration: who, when, released or refused, epsilon."""
    from openbid.insights.attribution import format_table
    from openbid.insights.cleanroom.config import load_collaboration

    try:
        with load_collaboration(collab_path) as room:
            table = room.query_log()
            spent, budget = room.epsilon_spent(), room.epsilon_budget
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_table(table.drop_columns(["query"]), digits=3))
    click.echo(f"epsilon spent {spent:g} of {budget:g}")
