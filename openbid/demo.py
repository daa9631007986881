"""`openbid up --demo`: the whole loop on one machine, with a live summary in the terminal.

Beside the exchange it starts the simulated market's DSPs (real HTTP servers on loopback
ports), registers them and a demo publisher in the catalog, and sends the market's
publisher traffic to the exchange at a steady rate. The market's users see the ads won,
click and convert (`openbid.sim.users`; their ground truth in `truth/` beside the events).
Every second the terminal shows QPS, fill rate, latency, revenue, clicks and conversions
and, per DSP, calls, bid rate, errors and wins.

And the learning loop (`openbid.demo_loop`, whose `demo_config` is what `--demo` runs): a
market clock `--speed` times faster (60: a market hour a real minute), the scheduler
training shaping and click models from the demo's own log every 30 real seconds, the
exchange swapping each promoted model in without a restart. The demo's state lives in
`var/demo/`, emptied at start: every demo starts with no model (every DSP called).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import msgspec
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from openbid import clock
from openbid.creative import TrackerSigner
from openbid.demo_loop import LoopPanel, Snapshot
from openbid.domain import DemandPartner
from openbid.exchange.conversions import conversion_key
from openbid.http.client import FanoutClient, UpstreamError
from openbid.platform import Platform, Service, tracker_key
from openbid.sim.generator import RequestBatch
from openbid.sim.market import Market
from openbid.sim.server import DspServers
from openbid.sim.truthlog import TruthLog
from openbid.sim.users import SimUsers

log = logging.getLogger(__name__)

DEMO_API_KEY = "demo-publisher-key"
CHUNK_S = 2.0
RENDER_RATE = 0.9
"""Share of won ads whose page loads them (the impression tracker fires)."""
MAX_LAG_S = 0.02
"""The demo's traffic keeps its event loop's lag (how late a timer fires: the process
waiting for CPU) under this: it adjusts how many requests it keeps under way (`InFlight`),
so on a machine too busy for `--rate` it sends fewer (the QPS column says how many)
instead of queueing requests until every DSP call times out and nothing is won, seen or
clicked."""


class InFlight:
    """The most requests the traffic keeps under way: every `EVERY_S`, cut by a quarter when
    the event loop's median lag since the last adjustment was above `MAX_LAG_S`, grown by a
    tenth when it was below a third of it. `probe` (a task) measures the lag."""

    EVERY_S = 0.5
    """Real seconds between two adjustments."""
    PROBE_S = 0.02

    def __init__(self, rate_per_s: float) -> None:
        self.most = max(8, round(rate_per_s))  # a second of requests: never the bound when idle
        self.limit = min(16, self.most)  # grown while the loop keeps up
        self.next_at = 0.0
        self.lags: list[float] = []

    async def probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.PROBE_S)
            self.lags.append(loop.time() - before - self.PROBE_S)

    def maybe_adjust(self, now: float) -> None:
        if now < self.next_at or not self.lags:
            return
        self.next_at = now + self.EVERY_S
        lag = sorted(self.lags)[len(self.lags) // 2]
        self.lags.clear()
        if lag > MAX_LAG_S:
            self.limit = max(4, int(self.limit * 0.75))
        elif lag < MAX_LAG_S / 3:
            self.limit = min(self.most, self.limit + max(1, self.limit // 10))


def _value(name: str, **labels: str) -> float:
    return (_snapshot or Snapshot()).value(name, **labels)


class DemoState:
    """What the summary shows, updated by the traffic loop."""

    def __init__(self) -> None:
        self.campaign_names: dict[str, str] = {}
        """House campaign id -> name, read from the catalog at the start (the table's rows)."""
        self.started = time.monotonic()
        self.sent = 0
        self.latencies_ms: list[float] = []
        self.statuses: dict[str, int] = {}
        self.in_flight: InFlight | None = None
        self.users: SimUsers | None = None


def _summary(state: DemoState, dsps: list[str], panel: LoopPanel | None = None) -> Group:
    global _snapshot
    _snapshot = Snapshot()
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
    groups = [head, per_dsp]
    house_table = _house_table(state.campaign_names)
    if house_table is not None:
        groups.append(house_table)
    if state.users is not None:
        groups.append(_users_table(state.users))
    if panel is not None:
        groups.append(panel.render(_snapshot))
    return Group(*groups)


def _house_table(names: dict[str, str] | None = None) -> Table | None:
    """House campaigns (`openbid/campaigns/demo.yaml`): today's spend against the daily
    budget, and what pacing does about it, from the metrics (every worker's, gathered);
    each row named by the campaign's name (`names`: id -> name; the id when unknown)."""
    names = names or {}
    snapshot = _snapshot or Snapshot()
    budgets = {
        labels["campaign"]: value
        for labels, value in snapshot.samples("openbid_house_budget_today_micros")
        if "campaign" in labels
    }
    if not budgets:
        return None
    day_share = (clock.now() % 86_400) / 86_400
    wins = _value("openbid_dsp_wins_total", dsp="openbid")
    table = Table(
        title=f"house campaigns: {wins:,.0f} auctions won beside the DSPs "
        f"(market day {day_share:.0%} gone)",
        expand=False,
    )
    for column in ("campaign", "spent $", "budget $", "spent", "bid x", "bids"):
        table.add_column(column, justify="right")
    for campaign in sorted(budgets, key=lambda c: (names.get(c, c), c)):
        budget = budgets[campaign]
        spent = _value("openbid_house_spend_today_micros", campaign=campaign)
        multiplier = _value("openbid_house_pacing", campaign=campaign, control="bid_multiplier")
        participation = _value("openbid_house_pacing", campaign=campaign, control="participation")
        table.add_row(
            names.get(campaign, campaign),
            f"{spent / 1e6:,.2f}",
            f"{budget / 1e6:,.0f}",
            f"{spent / budget:.1%}" if budget else "-",
            f"{multiplier:.2f}",
            f"{participation:.0%}",
        )
    return table


def _users_table(users: SimUsers) -> Table:
    stats = users.stats
    truth = users.truth
    table = Table(title="simulated users", expand=False)
    for column in ("ads seen", "clicks", "expected", "CTR", "conv click/view/none", "waiting"):
        table.add_column(column, justify="right")
    conversions = stats.conversions
    table.add_row(
        f"{stats.rendered:,}",
        f"{stats.clicks:,}",
        f"{truth.expected_clicks:,.1f}" if truth is not None else "-",
        f"{stats.clicks / stats.rendered:.2%}" if stats.rendered else "-",
        f"{conversions['click']:,}/{conversions['view']:,}/{conversions['unattributed']:,}",
        f"{users.pending:,}",
    )
    return table


def demo_services(market_name: str = "default", rate_per_s: float = 400.0) -> list[Service]:
    """The tasks `openbid up --demo` runs beside the servers."""

    async def run(platform: Platform) -> None:
        # The sites' consent platform lists our vendor id beside the DSPs' (`demo_config`
        # sets it): EU users consent to house demand as they do to a DSP.
        vendor_id = platform.config.campaigns.vendor_id
        market = Market.load(market_name, buyer_vendor_ids=[vendor_id] if vendor_id else [])
        servers = await DspServers(market).start()
        client = FanoutClient()
        users = _users(platform, market, client)
        playing = asyncio.create_task(users.run())
        panel = LoopPanel(platform.config, platform)
        refreshing = asyncio.create_task(panel.refresh_forever())
        probing: asyncio.Task[None] | None = None
        try:
            names = await asyncio.to_thread(_register, platform, market, servers.urls)
            console_line = await asyncio.to_thread(_console_admin, platform.config)
            state = DemoState()
            state.campaign_names = names
            state.users = users
            state.in_flight = InFlight(rate_per_s)
            probing = asyncio.create_task(state.in_flight.probe())
            target = f"http://127.0.0.1:{platform.port}/openrtb2/auction"
            console = Console(stderr=True)
            speed = clock.current().speed
            config = platform.config
            console.print(
                f"[bold green]openbid demo[/]: exchange on http://127.0.0.1:{platform.port} "
                f"(/metrics, /healthz), {len(servers.urls)} simulated DSPs, "
                f"up to {rate_per_s:.0f} requests/s; events in {platform.config.events.dir}, "
                f"the users' ground truth in {users.truth.directory if users.truth else '-'}. "
                f"The market clock runs x{speed:g} (a market hour in {3600 / speed:.0f} real "
                f"s): shaping and click models are trained from this log every "
                f"{config.scheduler.interval_s / speed:.0f} s and swapped in (`openbid runs` "
                f"with OPENBID_SCHEDULER__RUNS_DB={config.scheduler.runs_db}); once a second "
                f"shaping model exists, its challenger serves 10% of the traffic (`openbid ab "
                f"report` with OPENBID_EVENTS__DIR={config.events.dir} "
                f"OPENBID_MODELS__STORE_URL={config.models.store_url}). Ctrl-C stops."
            )
            if console_line:
                console.print(console_line)
            with Live(
                _summary(state, list(servers.urls), panel),
                console=console,
                refresh_per_second=1,
            ) as live:
                seed = 0
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
                        await _send_paced(client, target, batch, rate_per_s, state, users)
                    live.update(_summary(state, list(servers.urls), panel))
        finally:
            refreshing.cancel()
            if probing is not None:
                probing.cancel()
            playing.cancel()
            await users.close()
            await servers.stop()

    return [run]


def _users(platform: Platform, market: Market, client: FanoutClient) -> SimUsers:
    """The market's users, browsing on the demo's exchange; conversion keys as its operator
    would hand them out (`openbid conversion-key`)."""
    signer = TrackerSigner(tracker_key(platform.config.exchange))
    truth_dir = Path(platform.config.events.dir).parent / "truth"
    return SimUsers(
        market,
        f"http://127.0.0.1:{platform.port}",
        lambda advertiser: conversion_key(signer, advertiser),
        client=client,
        truth=TruthLog(truth_dir),
        render_rate=RENDER_RATE,
    )


async def _send_paced(
    client: FanoutClient,
    target: str,
    batch: RequestBatch,
    rate_per_s: float,
    state: DemoState,
    users: SimUsers,
) -> None:
    """Sends the requests of `batch` at `rate_per_s`; every won ad goes to its user (who
    may load it, click it, convert: `SimUsers.saw`)."""
    loop = asyncio.get_running_loop()
    headers = f"x-api-key: {DEMO_API_KEY}\r\n".encode()
    pending: set[asyncio.Task[None]] = set()

    async def one(row: int, body: bytes) -> None:
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
        response = msgspec.json.decode(reply.body)
        for seatbid in response.get("seatbid", []):
            for bid in seatbid.get("bid", []):
                await users.saw(batch, row, bid, response.get("bidid", ""))

    if state.in_flight is None:
        state.in_flight = InFlight(rate_per_s)
    in_flight = state.in_flight
    start = loop.time()
    bodies = batch.bodies
    for i, body in enumerate(bodies):
        delay = start + i / rate_per_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        in_flight.maybe_adjust(loop.time())
        while len(pending) >= in_flight.limit:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        task = loop.create_task(one(i, body))
        pending.add(task)
        task.add_done_callback(pending.discard)
        state.sent += 1
    if pending:
        await asyncio.wait(pending)
    # The next batch starts one interval after this one's last request, not at once.
    await asyncio.sleep(max(start + len(bodies) / rate_per_s - loop.time(), 0.0))
    del state.latencies_ms[:-20_000]


def _console_admin(config) -> str:  # type: ignore[no-untyped-def]
    """The console's demo admin (a fresh password and token each run), as the banner's line."""
    if not config.console.enabled:
        return ""
    from openbid.console.auth.bootstrap import ensure_admin
    from openbid.console.serve import console_url

    user, password, token, path = ensure_admin(config)
    return (
        f"[bold green]console[/]: {console_url(config)} (API: /api/v1, /openapi.json), "
        f"user [bold]{user}[/], password [bold]{password}[/], token {token} (also in {path})"
    )


def _register(platform: Platform, market: Market, urls: dict[str, str]) -> dict[str, str]:
    """Registers the simulated DSPs and the demo's house campaigns; returns the campaigns'
    names by id (the house table's rows)."""
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
    # House demand: the demo's campaigns (an import changes nothing the second time),
    # bidding beside the simulated DSPs from the next index refresh.
    from openbid.campaigns.bulk import load_demo_campaigns
    from openbid.campaigns.store import CampaignCatalog

    if isinstance(catalog, CampaignCatalog):
        load_demo_campaigns(catalog)
        names = {c.id: c.name for c in catalog.campaign_set().campaigns}
    else:  # workers serve: the supervisor's catalog; each worker polls the revision
        campaigns = CampaignCatalog(platform.config.stores.catalog_url)
        try:
            load_demo_campaigns(campaigns)
            names = {c.id: c.name for c in campaigns.campaign_set().campaigns}
        finally:
            campaigns.close()
    house = getattr(platform, "house", None)
    if house is not None:
        house.matcher.refresh()
    return names
