"""The request path of an auction: one exchange worker's parts, and `Exchange.auction()`,
which runs the auction's named stages over one `AuctionState`.

`Exchange.auction()` is the one path both front doors use: `POST /openrtb2/auction`
(OpenRTB 2.6 in, BidResponse out) and `GET /ad` (an ad tag: a request built from the
placement, rendered HTML out). The stages and their contracts are in `stages.py`; the
decisions they make are pure functions (`auction.py`, `openbid.privacy.consent`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping

from openbid.campaigns.house import HouseDemand
from openbid.config import ExchangeConfig
from openbid.creative import TrackerSigner
from openbid.demand import DemandRegistry
from openbid.domain import Publisher
from openbid.enrich.device import default_ua_parser
from openbid.events import EventLog
from openbid.exchange import stages
from openbid.exchange.fanout import FanOut
from openbid.exchange.ids import IdSource
from openbid.exchange.notices import NoticeSender
from openbid.exchange.settle import Settler
from openbid.exchange.state import NOT_SENT, AuctionOutcome, AuctionState, DspCall, Winner
from openbid.http.client import FanoutClient
from openbid.openrtb import BidRequest
from openbid.shaping.base import PassThroughShaper, Shaper

__all__ = ["NOT_SENT", "AuctionOutcome", "AuctionState", "DspCall", "Exchange", "Winner"]


class Exchange:
    """One exchange worker's state: demand, shaping, client, signer, sinks."""

    def __init__(
        self,
        config: ExchangeConfig,
        *,
        registry: DemandRegistry,
        client: FanoutClient,
        signer: TrackerSigner,
        event_log: EventLog | None = None,
        shaper: Shaper | None = None,
        geo_reader: object | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.client = client
        self.signer = signer
        self.event_log = event_log
        self.shaper: Shaper = shaper or PassThroughShaper()
        self._ids = IdSource()
        # Ties are broken by a hash of (dsp, bid id) under this seed; a secret one by default,
        # so a DSP cannot choose bid ids that win ties.
        self._tie_seed = config.auction_seed or secrets.randbits(31)
        self.geo_reader = geo_reader
        # Built here, not on the first request: loading the parser's rules takes ~0.3 s.
        self.ua_parser = default_ua_parser()
        self.notices = NoticeSender(
            client,
            event_log,
            max_in_flight=config.max_notices_in_flight,
            public_only=not config.notice_private_hosts,
        )
        self.fan_out = FanOut(client)
        self.settler = Settler(signer, self.notices, config.public_url)
        self.arms: stages.ArmRouter | None = None
        """A/B arms (`openbid.experiments`), set by the platform; None: no test runs."""
        self.monitor: stages.AuctionObserver | None = None
        """Live calibration (`openbid.monitoring.live`), set by the platform."""
        self.house: HouseDemand | None = None
        """House demand (`openbid.campaigns.house`), set by the platform; None: none."""

    def _deadline_s(self, request: BidRequest) -> float:
        tmax_ms = request.tmax or self.config.default_tmax_ms
        return min(tmax_ms, self.config.max_tmax_ms) / 1000.0

    async def auction(
        self,
        request: BidRequest,
        publisher: Publisher | None,
        *,
        started: float,
        measured_from: float | None = None,
        extra_floor_micros: int = 0,
        gpc_header: str | None = None,
        final: bool = True,
    ) -> AuctionOutcome:
        """Runs one auction end to end and returns its state: the winners (possibly none)
        and every partner's call.

        `final`: our auction decides the impression (an ad tag we render), so winners' win
        notices go out now. When we answer an OpenRTB caller that runs its own auction
        (`final=False`), a winner's notice waits for that caller to hit our signed `nurl`.

        `started` is the loop time the request arrived at (deadlines run on the loop's clock);
        `measured_from` its `time.perf_counter()`, for the latency we log: uvloop's clock
        has millisecond resolution, too coarse for an auction that takes one.
        """
        config = self.config
        state = AuctionState(
            request,
            publisher,
            self._ids.next(),
            started + self._deadline_s(request),
            time.perf_counter() if measured_from is None else measured_from,
            final,
        )
        stages.prepare(
            state,
            config,
            geo_reader=self.geo_reader,
            ua_parser=self.ua_parser,
            gpc_header=gpc_header,
            extra_floor_micros=extra_floor_micros,
        )
        now = time.monotonic()
        eligible = stages.select(self.registry.states, now)
        ids = [s.partner.id for s in eligible]
        arm = stages.assign_arm(state, self.arms)
        shaper = arm.shaper or self.shaper
        stages.shape(state, eligible, await shaper.decide_async(state.features, ids))
        loop = asyncio.get_running_loop()
        house = self.house
        # House demand bids beside the fan-out (its one await is the frequency caps' read).
        house_task = (
            loop.create_task(stages.house_bid(state, house, house.settings.vendor_id, arm.models))
            if house is not None and house.live
            else None
        )
        budget_s = state.deadline - loop.time() - config.own_budget_ms / 1000.0
        if stages.gate(state, now, budget_s):
            fan_out = self.fan_out
            waiter = fan_out.send(state, max(int(budget_s * 1000), 1), loop)
            await waiter.wait(loop, state.deadline)
            fan_out.collect(state, shaper)
        if house_task is not None:
            await house_task
        stages.decide(state, config.currency_rates, self._tie_seed)
        if state.results:
            await self.settler.settle(state)
        if state.house_bids:
            stages.house_finish(state, house)  # type: ignore[arg-type]
        if self.event_log is not None:
            stages.log(
                state,
                self.event_log,
                config.currency_rates,
                tmax_ms=request.tmax or config.default_tmax_ms,
                shaping_model=shaper.model_version,
                ab_arm=arm.label,
            )
        if self.monitor is not None:
            self.monitor.observe(state, arm.label, shaper.model_version)
        return state

    async def win_notice(self, params: Mapping[str, str]) -> tuple[str, str] | None:
        """Our caller's first hit on a winner's signed `nurl`: the DSP's win notice fires;
        for a bid that came without markup, the markup and its content type come back
        (`Settler.win_notice`)."""
        return await self.settler.win_notice(params)
