"""`openbid up --demo`: the whole loop on one machine, with a live summary in the terminal.

Beside the exchange it starts the simulated market's DSPs (real HTTP servers on loopback
ports), registers them and a demo publisher in the catalog, and sends the market's
publisher traffic to the exchange at a steady rate. Every second the terminal shows QPS,
fill rate, latency, revenue and, per DSP, calls, bid rate, errors and wins.

It also shows the learning loop (`openbid.demo_loop`): the market clock runs `--speed`
times faster (60 by default: a market hour a real minute), the scheduler trains shaping and
click models from the demo's own log every `DEMO_INTERVAL_REAL_S`, and the exchange swaps
each promoted model in without a restart. Its state lives in `var/demo/`, emptied at
start, so every demo starts with no model (every DSP called).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import time
from pathlib import Path

import msgspec
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from openbid import clock
from openbid.config import Config
from openbid.demo_loop import LoopPanel
from openbid.domain import DemandPartner
from openbid.http.client import FanoutClient, UpstreamError
from openbid.obs import REGISTRY
from openbid.platform import Platform, Service
from openbid.sim.market import Market
from openbid.sim.server import DspServers

log = logging.getLogger(__name__)

DEMO_API_KEY = "demo-publisher-key"
CHUNK_S = 2.0
RENDER_RATE = 0.9
DEMO_SPEED = 60.0
"""Market seconds per real second: a market hour a real minute, so the loop shows in minutes."""
DEMO_INTERVAL_REAL_S = 30.0
"""Real seconds between two training runs of each model."""
DEMO_DIR = Path("var/demo")
_DEMO_MARK = ".openbid-demo"


def demo_config(settings: Config, speed: float | None = None) -> Config:
    """The configuration `openbid up --demo` runs: the simulated DSPs (and their notice URLs)
    on loopback, a market clock (`speed`, default `DEMO_SPEED`), the scheduler training the
    shaping and click models, the exchange following both, and the demo's own state
    directory (`DEMO_DIR`, emptied here)."""
    replace = msgspec.structs.replace
    speed = speed or (settings.clock.speed if settings.clock.speed != 1.0 else DEMO_SPEED)
    if DEMO_DIR.exists() and (DEMO_DIR / _DEMO_MARK).exists():
        shutil.rmtree(DEMO_DIR)  # only a directory the demo made: a new demo, no model
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    (DEMO_DIR / _DEMO_MARK).touch()
    purposes = ["shaping", "ctr"]
    return replace(
        settings,
        exchange=replace(settings.exchange, notice_private_hosts=True),
        clock=replace(settings.clock, speed=speed),
        events=replace(settings.events, dir=str(DEMO_DIR / "events"), segments_url=""),
        etl=replace(
            settings.etl,
            out_url=str(DEMO_DIR / "training"),
            # the users click within 5 market minutes; a minute of wait is a real second
            click_window_s=600.0,
            late_wait_s=60.0,
        ),
        models=replace(
            settings.models,
            tracking_uri=f"sqlite:///{DEMO_DIR / 'mlflow.db'}",
            artifact_location=str(DEMO_DIR / "mlflow-artifacts"),
            store_url=str(DEMO_DIR / "models"),
            cache_dir=str(DEMO_DIR / "models-cache"),
            lock_file=str(DEMO_DIR / "registry.lock"),
            serve=list(dict.fromkeys([*settings.models.serve, *purposes])),
            poll_interval_s=1.0,
        ),
        train=replace(settings.train, history_s=6 * 3600.0),
        scheduler=replace(
            settings.scheduler,
            purposes=list(dict.fromkeys([*settings.scheduler.purposes, *purposes])),
            interval_s=DEMO_INTERVAL_REAL_S * speed,
            retry_backoff_s=5.0 * speed,
            runs_db=str(DEMO_DIR / "runs.db"),
        ),
    )


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class DemoState:
    """What the summary shows, updated by the traffic loop."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.sent = 0
        self.latencies_ms: list[float] = []
        self.statuses: dict[str, int] = {}


def _summary(state: DemoState, dsps: list[str], panel: LoopPanel | None = None) -> Group:
    elapsed = max(time.monotonic() - state.started, 1e-9)
    won = _value("openbid_requests_total", endpoint="auction", outcome="won")
    no_bid = _value("openbid_requests_total", endpoint="auction", outcome="no_bid")
    revenue_usd = _value("openbid_won_revenue_micros_total") / 1e6
    latencies = sorted(state.latencies_ms[-5000:])

    def pct(q: float) -> str:
        return (
            f"{latencies[min(int(q * len(latencies)), len(latencies) - 1)]:.1f}"
            if latencies
            else "-"
        )

    head = Table(title="openbid demo: exchange + simulated market", expand=False)
    for column in (
        "elapsed",
        "sent",
        "QPS",
        "fill",
        "p50 ms",
        "p99 ms",
        "imps",
        "revenue $",
        "RPM $",
    ):
        head.add_column(column, justify="right")
    auctions = won + no_bid
    head.add_row(
        f"{elapsed:.0f}s",
        f"{state.sent:,}",
        f"{state.sent / elapsed:,.0f}",
        f"{won / auctions:.1%}" if auctions else "-",
        pct(0.5),
        pct(0.99),
        f"{_value('openbid_impressions_total', outcome='counted'):,.0f}",
        f"{revenue_usd:,.2f}",
        f"{revenue_usd / auctions * 1000:,.2f}" if auctions else "-",
    )
    per_dsp = Table(title="demand partners", expand=False)
    for column in ("dsp", "calls", "bid rate", "timeouts", "errors", "wins", "circuit"):
        per_dsp.add_column(column, justify="right")
    for dsp in dsps:
        outcomes = {
            o: _value("openbid_dsp_calls_total", dsp=dsp, outcome=o)
            for o in (
                "bid",
                "no_bid",
                "timeout",
                "reset",
                "malformed",
                "http_status",
                "invalid_response",
                "connect",
            )
        }
        calls = sum(outcomes.values())
        errors = calls - outcomes["bid"] - outcomes["no_bid"] - outcomes["timeout"]
        state_value = _value("openbid_dsp_circuit_state", dsp=dsp)
        per_dsp.add_row(
            dsp,
            f"{calls:,.0f}",
            f"{outcomes['bid'] / calls:.1%}" if calls else "-",
            f"{outcomes['timeout']:,.0f}",
            f"{errors:,.0f}",
            f"{_value('openbid_dsp_wins_total', dsp=dsp):,.0f}",
            ("closed", "half-open", "open")[int(state_value)],
        )
    if panel is None:
        return Group(head, per_dsp)
    return Group(head, per_dsp, panel.render())


def demo_services(market_name: str = "default", rate_per_s: float = 200.0) -> list[Service]:
    """The tasks `openbid up --demo` runs beside the servers."""

    async def run(platform: Platform) -> None:
        market = Market.load(market_name)
        servers = await DspServers(market).start()
        refreshing: asyncio.Task[None] | None = None
        try:
            await asyncio.to_thread(_register, platform, market, servers.urls)
            state = DemoState()
            panel = LoopPanel(platform.config)
            refreshing = asyncio.create_task(panel.refresh_forever())
            target = f"http://127.0.0.1:{platform.port}/openrtb2/auction"
            console = Console(stderr=True)
            console.print(
                f"[bold green]openbid demo[/]: exchange on http://127.0.0.1:{platform.port} "
                f"(/metrics, /healthz), {len(servers.urls)} simulated DSPs, "
                f"{rate_per_s:.0f} requests/s; events in {platform.config.events.dir}. "
                f"The market clock runs x{clock.current().speed:g} (a market hour in "
                f"{3600 / clock.current().speed:.0f} real s): shaping and click models are "
                f"trained from this log every {DEMO_INTERVAL_REAL_S:.0f} s and swapped in "
                "(`openbid runs --config ...` lists the runs). Ctrl-C stops."
            )
            with Live(
                _summary(state, list(servers.urls), panel), console=console, refresh_per_second=1
            ) as live:
                seed = 0
                client = FanoutClient()
                rng = random.Random(0)
                # At least one request a chunk, the chunk as long as the rate needs: at
                # 0.2/s one request every 5 s (a chunk of int(0.2 * 2) = 0 requests made a
                # loop that never yielded: no /healthz, no Ctrl-C).
                count = max(1, round(rate_per_s * CHUNK_S))
                while True:
                    if rate_per_s <= 0:  # no traffic: the DSPs serve whoever sends some
                        await asyncio.sleep(1.0)
                    else:
                        batch = market.generate(
                            count,
                            seed=seed,
                            start_s=clock.now(),
                            span_s=count / rate_per_s * clock.current().speed,  # market time
                        )
                        seed += 1
                        await _send_paced(client, target, batch.bodies, rate_per_s, state, rng)
                    live.update(_summary(state, list(servers.urls), panel))
        finally:
            if refreshing is not None:
                refreshing.cancel()
            await servers.stop()

    return [run]


async def _send_paced(
    client: FanoutClient,
    target: str,
    bodies: list[bytes],
    rate_per_s: float,
    state: DemoState,
    rng: random.Random,
) -> None:
    """Sends `bodies` at `rate_per_s`; a won ad is rendered (its impression tracker, the
    bid's `burl`, fires) with probability RENDER_RATE, as a page that loads the ad would."""
    loop = asyncio.get_running_loop()
    headers = f"x-api-key: {DEMO_API_KEY}\r\n".encode()
    pending: set[asyncio.Task[None]] = set()

    async def one(body: bytes) -> None:
        started = time.perf_counter()
        try:
            reply = await client.post(target, body, timeout_s=2.0, headers=headers)
        except UpstreamError as error:
            state.statuses[error.kind] = state.statuses.get(error.kind, 0) + 1
            return
        state.latencies_ms.append((time.perf_counter() - started) * 1000)
        state.statuses[str(reply.status)] = state.statuses.get(str(reply.status), 0) + 1
        if reply.status != 200:
            return
        for seatbid in msgspec.json.decode(reply.body).get("seatbid", []):
            for bid in seatbid.get("bid", []):
                if bid.get("burl") and rng.random() < RENDER_RATE:
                    with contextlib.suppress(UpstreamError):
                        await client.get(bid["burl"], timeout_s=2.0)

    start = loop.time()
    for i, body in enumerate(bodies):
        delay = start + i / rate_per_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(body))
        pending.add(task)
        task.add_done_callback(pending.discard)
        state.sent += 1
    if pending:
        await asyncio.wait(pending)
    # The next batch starts one interval after this one's last request, not at once.
    await asyncio.sleep(max(start + len(bodies) / rate_per_s - loop.time(), 0.0))
    del state.latencies_ms[:-20_000]


def _register(platform: Platform, market: Market, urls: dict[str, str]) -> None:
    catalog = platform.catalog
    assert catalog is not None and platform.exchange_server is not None
    if catalog.publisher("demo") is None:
        catalog.add_publisher("demo", "Demo publisher", api_key=DEMO_API_KEY)
    vendor_ids = {dsp.name: dsp.vendor_id for dsp in market.config.dsps}
    for name, url in urls.items():
        catalog.upsert_demand_partner(
            DemandPartner(name, url, seat=name, vendor_id=vendor_ids.get(name), timeout_ms=200)
        )
    platform.exchange_server.refresh()
