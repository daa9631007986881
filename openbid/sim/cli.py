"""`openbid sim`: run simulated publisher traffic against any OpenRTB endpoint.

The CLI owner registers `sim_command` as `openbid sim`; it can also run on its own with
`python -m openbid.sim.cli`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import click
from rich.console import Console
from rich.table import Table

from openbid.sim.config import MarketError
from openbid.sim.market import Market
from openbid.sim.traffic import TrafficError, TrafficReport, send_traffic


def _sent_mix(batch, feature: str, top: int = 5) -> str:
    counts = Counter(batch.values(feature))
    total = sum(counts.values())
    return ", ".join(f"{value} {count / total:.0%}" for value, count in counts.most_common(top))


def _print_report(console: Console, batch, report: TrafficReport, generate_s: float) -> None:
    summary = report.summary()
    sent = Table(title=f"sent to {report.target}", show_header=False)
    sent.add_row("requests", f"{report.sent:,} (generated in {generate_s:.2f} s)")
    sent.add_row(
        "rate", f"{summary['achieved_rate_per_s']:,} /s (target {report.target_rate_per_s:,})"
    )
    for feature in ("inventory", "format", "devicetype", "country", "consent"):
        sent.add_row(feature, _sent_mix(batch, feature))
    console.print(sent)
    got = Table(title="got", show_header=False)
    for status, count in summary["statuses"].items():
        got.add_row(f"status {status}" if status.isdigit() else status, f"{count:,}")
    got.add_row("responses with bids", f"{report.bid_responses:,} ({report.bids:,} bids)")
    got.add_row("malformed responses", f"{report.malformed_responses:,}")
    for name, value in summary["latency_ms"].items():
        got.add_row(f"latency {name}", f"{value:.1f} ms")
    console.print(got)


@click.command("sim")
@click.option(
    "--target", required=True, help="OpenRTB endpoint to POST bid requests to (http://...)."
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Requests per second (default: the market's traffic.rate_per_s).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds of traffic.",
)
@click.option(
    "--market",
    "market_name",
    default="default",
    show_default=True,
    help="Shipped market name (default, hard) or a market YAML file.",
)
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Seed of the generated traffic."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Keep-alive connections (one request in flight on each).",
)
@click.option(
    "--timeout-ms",
    type=click.FloatRange(min=1),
    default=1000.0,
    show_default=True,
    help="Give up on a reply after this long.",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    help="Extra request header, 'name: value' (e.g. the publisher's x-api-key); repeatable.",
)
def sim_command(
    target: str,
    rate: float | None,
    duration: float,
    market_name: str,
    seed: int,
    concurrency: int,
    timeout_ms: float,
    headers: tuple[str, ...],
) -> None:
    """Send simulated publisher traffic to an exchange (or any OpenRTB endpoint)."""
    console = Console()
    extra_headers = {}
    for header in headers:
        name, separator, value = header.partition(":")
        if not separator or not name.strip():
            raise click.BadParameter(f"{header!r}: expected 'name: value'", param_hint="--header")
        extra_headers[name.strip().lower()] = value.strip()
    try:
        market = Market.load(market_name)
    except MarketError as exc:
        raise click.ClickException(str(exc)) from None
    rate = rate or market.config.traffic.rate_per_s
    count = max(1, int(rate * duration))
    started = time.perf_counter()
    batch = market.generate(count, seed, start_s=time.time(), span_s=duration)
    bodies = batch.bodies
    generate_s = time.perf_counter() - started
    try:
        report = asyncio.run(
            send_traffic(
                target,
                bodies,
                rate,
                concurrency=concurrency,
                timeout_ms=timeout_ms,
                headers=extra_headers,
            )
        )
    except TrafficError as exc:
        raise click.ClickException(str(exc)) from None
    _print_report(console, batch, report, generate_s)


if __name__ == "__main__":
    sim_command()
