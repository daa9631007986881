"""`openbid insights personalize simulate|evaluate` (`docs/insights.md`); registered by
`openbid/insights/cli.py`."""

from __future__ import annotations

import click

from openbid.errors import OpenbidError


@click.group("personalize")
def personalize() -> None:
    """Creatives chosen per audience segment by a bandit; policies evaluated offline."""


@personalize.command("simulate")
@click.option(
    "--segments", "n_segments", type=click.IntRange(1, 1000), default=6, show_default=True
)
@click.option(
    "--creatives", "n_creatives", type=click.IntRange(2, 100), default=4, show_default=True
)
@click.option("--rounds", type=click.IntRange(1000), default=50_000, show_default=True)
@click.option(
    "--batch",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Refit every N choices.",
)
@click.option("--epsilon", type=click.FloatRange(0, 1), default=0.05, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def simulate_command(n_segments, n_creatives, rounds, batch, epsilon, seed):
    """Regret of Thompson sampling, uniform and the oracle on a simulated segment market."""
    from openbid.insights.personalize.simulate import SegmentMarket, run_bandit

    market = SegmentMarket.random(n_segments, n_creatives, seed=seed)
    click.echo(f"{'policy':<10} {'regret':>10} {'clicks':>8} {'regret/uniform':>15}")
    runs = {
        p: run_bandit(market, p, rounds=rounds, batch=batch, epsilon=epsilon, seed=seed + 1)
        for p in ("uniform", "thompson", "oracle")
    }
    for name, run in runs.items():
        ratio = run.regret / runs["uniform"].regret if runs["uniform"].regret else float("nan")
        click.echo(f"{name:<10} {run.regret:>10.1f} {run.clicks:>8.0f} {ratio:>15.3f}")


@personalize.command("evaluate")
@click.option("--events-dir", required=True)
@click.option("--campaign", required=True)
@click.option("--window-days", type=float, default=7.0, show_default=True)
@click.option("--until", default=None, help="Window end (ISO 8601; default: the clock).")
@click.option(
    "--current",
    "current_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="The serving policy (JSON); default: the logged policies' own mean reward.",
)
@click.option("--epsilon", type=click.FloatRange(0, 1), default=0.05, show_default=True)
@click.option("--min-choices", type=click.IntRange(1), default=1000, show_default=True)
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), default=None, help="The candidate (JSON)."
)
def evaluate_command(
    events_dir, campaign, window_days, until, current_path, epsilon, min_choices, out_path
):
    """Fit a Thompson policy on the logged choices and estimate it offline (IPS, SNIPS, DM,
    DR) against the current one: would it serve?"""
    import msgspec

    from openbid import clock
    from openbid.insights.cli import _time_micros
    from openbid.insights.personalize.bandit import BetaPosteriors, ChoicePolicy
    from openbid.insights.personalize.logged import read_choices
    from openbid.insights.personalize.ope import evaluate_candidate
    from openbid.pipeline import DuckDBEngine, EventSource

    until_micros = _time_micros(until, "--until", clock.now_micros())
    try:
        engine = DuckDBEngine()
        try:
            choices = read_choices(
                EventSource(events_dir),
                engine,
                campaign,
                since_micros=until_micros - int(window_days * 86_400_000_000),
                until_micros=until_micros,
            )
        finally:
            engine.close()
        posteriors = BetaPosteriors(choices.segments, choices.creatives)
        posteriors.update(choices.logged.context, choices.logged.action, choices.logged.reward)
        candidate = posteriors.policy(campaign, epsilon=epsilon)
        current = None
        if current_path:
            with open(current_path, "rb") as handle:
                current = msgspec.json.decode(handle.read(), type=ChoicePolicy)
        evaluation = evaluate_candidate(
            choices.logged,
            candidate.aligned(choices.segments, choices.creatives),
            current.aligned(choices.segments, choices.creatives) if current else None,
            min_choices=min_choices,
        )
    except (OpenbidError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{evaluation.choices:,} logged choices by {len(choices.policies)} policies; "
        f"effective sample size {evaluation.effective_sample_size:,.0f}"
    )
    click.echo(f"{'estimator':<16} {'value':>9} {'95% interval':>22}")
    for label, e in (
        ("candidate IPS", evaluation.candidate_ips),
        ("candidate SNIPS", evaluation.candidate_snips),
        ("candidate DM", evaluation.candidate_dm),
        ("candidate DR", evaluation.candidate_dr),
        ("current", evaluation.current),
        ("difference (DR)", evaluation.difference),
    ):
        click.echo(f"{label:<16} {e.value:>9.5f} [{e.lower:>9.5f}, {e.upper:>9.5f}]")
    click.echo(("promote: " if evaluation.promote else "refuse: ") + evaluation.reason)
    if out_path:
        with open(out_path, "wb") as handle:
            handle.write(msgspec.json.format(msgspec.json.encode(candidate)))
        click.echo(f"candidate {candidate.name} written to {out_path}")
