"""`openbid train shaping`: train the shaping model from the event log and print its frontier.

The command object is `train_shaping_command`; `openbid/cli.py` registers it under
`openbid train` as `shaping`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.compute as pc

from openbid.config import load_config
from openbid.errors import OpenbidError
from openbid.events import EventReader
from openbid.shaping.features import LAYOUTS
from openbid.shaping.model import save_shaping_model
from openbid.shaping.thresholds import RECALL_TARGETS
from openbid.shaping.training import (
    DEFAULT_EXPLORATION_SHARE,
    DEFAULT_TARGET,
    DEFAULT_TARGET_KIND,
    FTRLParams,
    TrainedShaping,
    rows_from_events,
    train_shaping,
)


def _micros(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}", param_hint=option) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def _window(table: pa.Table, since: int | None, until: int | None) -> pa.Table:
    if since is not None:
        table = table.filter(pc.greater_equal(table["ts_micros"], since))
    if until is not None:
        table = table.filter(pc.less(table["ts_micros"], until))
    return table


def frontier_table(trained: TrainedShaping) -> str:
    """The held-out day's frontier: per DSP, the share of callouts saved at each bid recall
    target, with the threshold at the chosen target and the model's quality."""
    targets = sorted({p.target for p in trained.frontier}) or list(RECALL_TARGETS)
    saved = {(p.dsp, p.target): p.saved for p in trained.frontier}
    header = f"{'dsp':<14}" + "".join(f"{f'saved@{t:g}':>13}" for t in targets)
    header += f"{'threshold':>11}{'bid rate':>10}{'auc':>7}"
    lines = [header]
    for dsp in trained.dsps:
        metrics = trained.metrics.get(dsp, {})
        cells = "".join(
            f"{saved[(dsp, t)]:>13.1%}" if (dsp, t) in saved else f"{'-':>13}" for t in targets
        )
        threshold = trained.thresholds.get(dsp)
        lines.append(
            f"{dsp:<14}{cells}"
            + (f"{threshold:>11.4f}" if threshold is not None else f"{'always':>11}")
            + f"{metrics.get('bid_rate', float('nan')):>10.2%}"
            + f"{metrics.get('auc', float('nan')):>7.3f}"
        )
    return "\n".join(lines)


@click.command("shaping")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--events-dir", default=None, help="Event log directory (default: events.dir).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="var/models/shaping",
    show_default=True,
    help="Model directory to write (replaced atomically).",
)
@click.option(
    "--target", default=DEFAULT_TARGET, show_default=True, help="Share of bids (or value) kept."
)
@click.option(
    "--target-kind",
    type=click.Choice(["recall", "value"]),
    default=DEFAULT_TARGET_KIND,
    show_default=True,
    help="Keep a share of each DSP's bids (recall) or of their value.",
)
@click.option(
    "--exploration-share",
    default=DEFAULT_EXPLORATION_SHARE,
    show_default=True,
    help="Share of filtered calls sent anyway, stored with the model.",
)
@click.option("--holdout-hours", default=24.0, show_default=True, help="Held out for thresholds.")
@click.option("--since", default=None, help="Window start (ISO 8601, UTC when no zone).")
@click.option("--until", default=None, help="Window end, exclusive.")
@click.option("--layout", type=click.Choice(list(LAYOUTS)), default="per_dsp", show_default=True)
@click.option("--hash-bits", default=20, show_default=True)
@click.option(
    "--passes",
    type=int,
    default=None,
    help="Fix the learners' passes (and the other settings to their former defaults); "
    "by default every setting is chosen from the data.",
)
def train_shaping_command(
    config_path: str | None,
    events_dir: str | None,
    out_dir: str,
    target: float,
    target_kind: str,
    exploration_share: float,
    holdout_hours: float,
    since: str | None,
    until: str | None,
    layout: str,
    hash_bits: int,
    passes: int | None,
) -> None:
    """Train the traffic-shaping model from the event log and print its frontier."""
    try:
        config = load_config(config_path)
        since_micros, until_micros = _micros(since, "--since"), _micros(until, "--until")
        reader = EventReader(
            events_dir or config.events.dir, segments_url=config.events.segments_url
        )
        auctions = _window(reader.read_table("auction"), since_micros, until_micros)
        bids = _window(reader.read_table("bid"), since_micros, until_micros)
        click.echo(f"read {auctions.num_rows} auctions and {bids.num_rows} bid events")
        rows = rows_from_events(auctions, bids)
        trained = train_shaping(
            rows,
            layout=layout,  # type: ignore[arg-type]
            target_kind=target_kind,  # type: ignore[arg-type]
            target=target,
            exploration_share=exploration_share,
            holdout_s=holdout_hours * 3600,
            params=None if passes is None else FTRLParams(n_passes=passes),
            hash_bits=hash_bits,
        )
        path = save_shaping_model(trained, Path(out_dir), overwrite=True)
    except OpenbidError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"trained on {trained.rows} rows ({len(trained.dsps)} DSPs, layout {layout}); "
        f"thresholds for {target_kind} {target:g} chosen on the last {holdout_hours:g} h"
    )
    click.echo(frontier_table(trained))
    click.echo(f"model written to {path}")
