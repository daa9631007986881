"""`openbid insights audiences refresh|segments-of` and `openbid insights lookalike`
(`docs/insights.md`); registered by `openbid/insights/cli.py`. Analyses are imported inside
the commands."""

from __future__ import annotations

import json

import click

from openbid.errors import OpenbidError


def _now(value: str | None) -> int | None:
    if value is None:
        return None
    from openbid.insights.cli import _time_micros

    return _time_micros(value, "--now", 0)


@click.group("audiences")
def audiences() -> None:
    """Audience segments from logged behaviour: refresh them, look a user up."""


@audiences.command("refresh")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--events-dir", required=True, help="The event log.")
@click.option(
    "--state",
    "state_dir",
    default="var/insights/audiences/state",
    show_default=True,
    help="State kept between runs (the watermark and counts).",
)
@click.option("--store", default="", help="Publish membership: 'memory' or a redis:// URL.")
@click.option("--store-prefix", default="openbid:", show_default=True)
@click.option("--now", default=None, help="Membership at this time (ISO 8601; default: the clock).")
@click.option(
    "--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb", show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Sizes as JSON lines.")
def refresh_command(spec_path, events_dir, state_dir, store, store_prefix, now, engine, as_json):
    """Read the segment files no run read yet, update membership, publish the changes."""
    from openbid.insights.attribution import format_table
    from openbid.insights.audiences.refresh import refresh
    from openbid.insights.audiences.sketches import sizes_table, sketches_by_segment
    from openbid.insights.audiences.spec import load_spec
    from openbid.pipeline import open_engine
    from openbid.stores import SegmentMembership, set_store_from_url

    try:
        spec = load_spec(spec_path)
        the_store = set_store_from_url(store, prefix=store_prefix, timeout_s=5.0) if store else None
        the_engine = open_engine(engine)
        try:
            result = refresh(
                spec,
                events_dir,
                state_dir,
                engine=the_engine,
                now_micros=_now(now),
                membership=SegmentMembership(the_store) if the_store else None,
            )
        finally:
            the_engine.close()
            if the_store is not None:
                the_store.close()
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from exc
    members: dict[str, list[str]] = {s.id: [] for s in spec.segments}
    for segment, user in zip(
        result.members["segment"].to_pylist(), result.members["user_id"].to_pylist(), strict=True
    ):
        members[segment].append(user)
    sizes = sizes_table(sketches_by_segment(members), {s: len(u) for s, u in members.items()})
    rows = sizes.to_pylist()
    for row in rows:
        row["added"] = len(result.added.get(row["segment"], []))
        row["removed"] = len(result.removed.get(row["segment"], []))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
    else:
        import pyarrow as pa

        click.echo(format_table(pa.Table.from_pylist(rows), digits=0))
    click.echo(
        f"run {result.run}: {result.files_read} new segment files, {result.hits_read:,} "
        f"behaviours, {result.pending} waiting for their auction"
        + ("; spec changed: rebuilt" if result.rebuilt else "")
        + (f"; {result.published_users:,} users published" if the_store else ""),
        err=True,
    )


@audiences.command("segments-of")
@click.argument("user_id")
@click.option("--store", required=True, help="The set store: a redis:// URL.")
@click.option("--store-prefix", default="openbid:", show_default=True)
def segments_of_command(user_id, store, store_prefix):
    """The segments a user is in, as the exchange's targeting reads them."""
    from openbid.stores import SegmentMembership, set_store_from_url

    try:
        the_store = set_store_from_url(store, prefix=store_prefix, timeout_s=2.0)
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        click.echo(" ".join(sorted(SegmentMembership(the_store).segments_of(user_id))))
    finally:
        the_store.close()


@click.command("lookalike")
@click.option("--events-dir", required=True)
@click.option("--seed-segment", default=None, help="A segment of the audience state.")
@click.option(
    "--seed-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Seed user ids, one a line (instead of a segment).",
)
@click.option("--state", "state_dir", default="var/insights/audiences/state", show_default=True)
@click.option("--window-days", type=float, default=30.0, show_default=True)
@click.option("--until", default=None, help="Window end (ISO 8601; default: the clock).")
@click.option(
    "--size", type=int, default=None, help="Lookalikes to keep (default: the seed's size)."
)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Parquet.")
@click.option("--seed", "random_seed", type=int, default=0, show_default=True)
def lookalike_command(
    events_dir, seed_segment, seed_file, state_dir, window_days, until, size, out_path, random_seed
):
    """Train a lookalike model on a seed segment; report its holdout lift over random."""
    import pyarrow.parquet as pq

    from openbid import clock
    from openbid.insights.audiences.lookalike import LIFT_AT, train_lookalike, user_features
    from openbid.insights.audiences.refresh import AudienceState
    from openbid.pipeline import DuckDBEngine, EventSource

    if (seed_segment is None) == (seed_file is None):
        raise click.UsageError("give exactly one of --seed-segment, --seed-file")
    until_micros = _now(until) or clock.now_micros()
    try:
        if seed_file:
            with open(seed_file) as handle:
                seed = [line.strip() for line in handle if line.strip()]
        else:
            _, state = AudienceState(state_dir).load()
            members = state["members"]
            seed = [
                u
                for s, u in zip(
                    members["segment"].to_pylist(), members["user_id"].to_pylist(), strict=True
                )
                if s == seed_segment
            ]
        engine = DuckDBEngine()
        try:
            features = user_features(
                EventSource(events_dir),
                engine,
                since_micros=until_micros - int(window_days * 86_400_000_000),
                until_micros=until_micros,
            )
        finally:
            engine.close()
        result = train_lookalike(features, seed, size=size, seed=random_seed)
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from exc
    m = result.metrics
    click.echo(
        f"seed {result.seed_size:,} users of {int(m['users']):,}; holdout {int(m['holdout_users']):,} "
        f"users ({int(m['holdout_seed_members']):,} seed); AUC {m['holdout_auc']:.3f}"
    )
    click.echo("top share   lift   random")
    for k in LIFT_AT:
        click.echo(f"{k:>8}%  {m[f'lift_at_{k}pct']:5.2f}  {m[f'random_lift_at_{k}pct']:6.2f}")
    if out_path:
        pq.write_table(result.lookalikes, out_path)
        click.echo(f"{result.lookalikes.num_rows:,} lookalikes written to {out_path}")
