"""A demand partner's QPS cap shared by every worker, through the counter store (Redis).

The auction path never waits on Redis: each worker spends call tokens it holds
(`LeasedQpsLimiter.allow`, a subtraction), and a keeper task tops them up every `TICK_S`
from one counter per partner per second (`qps:<dsp>:<second>`) that every worker adds its
take to, never past the cap (`take_tokens`). So that a busy worker does not take the whole
second in its first ticks and starve a quiet one, each worker paces its takes to its part of
the cap: every second each publishes how many calls it was asked for in the last one, and
the parts are the max-min fair split of the cap over those demands (`fair_shares`: each its
demand or an equal part, what one leaves going to the others). Tokens for the next second
are taken shortly before it starts, so a second does not begin with every worker empty.

If the store fails, a worker falls back to 1/N of the cap per second, on its own, until the
store answers again; the keeper logs it once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from openbid.demand.registry import DemandRegistry
from openbid.stores import CounterStore, StoreUnavailable

log = logging.getLogger(__name__)

TICK_S = 0.1
MARGIN = 1.5
"""A tick's take: the calls asked in the last tick times this (and at least one)."""
KEY_TTL_S = 10.0


async def take_tokens(store: CounterStore, key: str, wanted: int, cap: int) -> int:
    """Takes up to `wanted` of the `cap` tokens of `key`; returns how many it got.

    One atomic add, then what went past the cap is given back: whatever the interleaving of
    workers, no more than `cap` tokens are ever handed out for a key (each worker keeps
    `wanted - (total after its add - cap)`, floored at 0, and the sum of those cannot exceed
    what was left)."""
    if wanted <= 0:
        return 0
    total = await store.aadd(key, wanted, KEY_TTL_S)
    over = total - cap
    if over <= 0:
        return wanted
    given_back = min(over, wanted)
    await store.aadd(key, -given_back)
    return wanted - given_back


class LeasedQpsLimiter:
    """The hot path's side: tokens of the current second, spent one per call."""

    __slots__ = ("qps", "tokens", "asked", "second", "next_tokens")

    def __init__(self, qps: float) -> None:
        self.qps = float(qps)
        self.tokens = 0
        self.asked = 0
        self.second = -1
        self.next_tokens = 0

    def with_rate(self, qps: float) -> LeasedQpsLimiter:
        """Kept across catalog refreshes (the keeper reads the cap from the catalog)."""
        return self

    def allow(self, now: float) -> bool:
        self.asked += 1
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def fair_shares(demands: list[float], cap: float) -> list[float]:
    """Max-min fair parts of `cap` for these demands, plus what nobody asked for in equal
    parts (the hard cap is the shared counter's: the parts only pace the takes).

    >>> fair_shares([600, 20], 200)
    [180.0, 20.0]
    >>> fair_shares([30, 20], 200), fair_shares([0, 0, 0, 0], 100)
    ([105.0, 95.0], [25.0, 25.0, 25.0, 25.0])
    """
    count = len(demands)
    parts = [0.0] * count
    left = float(cap)
    order = sorted(range(count), key=lambda i: demands[i])
    for position, i in enumerate(order):
        parts[i] = min(float(demands[i]), left / (count - position))
        left -= parts[i]
    return [part + left / count for part in parts]


class _Partner:
    """The keeper's view of one capped partner in this worker."""

    __slots__ = (
        "asked_at_tick",
        "asked_at_second",
        "part",
        "shares_of",
        "fallback_second",
        "taken_second",
    )

    def __init__(self, part: float) -> None:
        self.asked_at_tick = 0
        self.asked_at_second = 0
        self.part = part
        self.shares_of = -1  # the second whose demands `part` comes from
        self.fallback_second = -1
        self.taken_second = -1  # the last second some of whose tokens came from the store


class SharedQpsKeeper:
    """Keeps the capped partners of one worker's registry on leased limiters, topped up."""

    def __init__(
        self, registry: DemandRegistry, store: CounterStore, workers: int, index: int = 0
    ) -> None:
        self.registry = registry
        self.store = store
        self.workers = workers
        self.index = index
        self._partners: dict[str, _Partner] = {}
        self._store_down = False

    async def run_forever(self) -> None:
        while True:
            await self.tick(time.time())
            await asyncio.sleep(TICK_S)

    async def tick(self, now_s: float) -> None:
        """One top-up of every capped partner. `now_s` is wall-clock seconds, not the loop's
        clock: the same in every worker, so that they share each second's counter."""
        second = int(now_s)
        into_second_s = now_s - second
        for state in list(self.registry.states):
            cap = state.partner.qps_cap
            if not cap:
                continue
            limiter = state.limiter
            if not isinstance(limiter, LeasedQpsLimiter):
                limiter = state.limiter = LeasedQpsLimiter(cap)
            limiter.qps = float(cap)
            dsp = state.partner.id
            partner = self._partners.get(dsp)
            if partner is None:
                partner = self._partners[dsp] = _Partner(cap / self.workers)
                partner.asked_at_tick = partner.asked_at_second = limiter.asked
            try:
                await self._top_up(limiter, partner, dsp, cap, second, into_second_s)
            except StoreUnavailable as exc:
                self._fall_back(limiter, partner, cap, second, exc)
            else:
                if self._store_down:
                    self._store_down = False
                    log.warning("QPS caps shared through the counter store again")

    async def _top_up(
        self,
        limiter: LeasedQpsLimiter,
        partner: _Partner,
        dsp: str,
        cap: int,
        second: int,
        into_second_s: float,
    ) -> None:
        if limiter.second != second:  # a new second: last second's tokens are gone
            if limiter.second >= 0:
                asked = limiter.asked - partner.asked_at_second
                await self.store.aadd(
                    f"qps-asked:{dsp}:{limiter.second}:{self.index}", asked, KEY_TTL_S
                )
            partner.asked_at_second = limiter.asked
            limiter.tokens = limiter.next_tokens if limiter.second == second - 1 else 0
            if limiter.tokens:
                partner.taken_second = second
            limiter.next_tokens = 0
            limiter.second = second
        if partner.shares_of != second - 1 and into_second_s >= TICK_S:
            # Every worker has published last second's demand by now (give or take a tick).
            keys = [f"qps-asked:{dsp}:{second - 1}:{i}" for i in range(self.workers)]
            demands = await self.store.aget_many(keys)
            partner.part = fair_shares([float(d) for d in demands], cap)[self.index]
            partner.shares_of = second - 1
        asked = limiter.asked - partner.asked_at_tick
        partner.asked_at_tick = limiter.asked
        wanted = min(max(1, math.ceil(asked * MARGIN)), max(1, math.ceil(partner.part * TICK_S)))
        short = wanted - limiter.tokens
        if short > 0:
            limiter.tokens += await take_tokens(self.store, f"qps:{dsp}:{second}", short, cap)
            partner.taken_second = second
        if into_second_s > 1.0 - 2 * TICK_S and limiter.next_tokens == 0:
            limiter.next_tokens = await take_tokens(
                self.store, f"qps:{dsp}:{second + 1}", wanted, cap
            )

    def _fall_back(
        self,
        limiter: LeasedQpsLimiter,
        partner: _Partner,
        cap: int,
        second: int,
        error: Exception,
    ) -> None:
        if not self._store_down:
            self._store_down = True
            log.error(
                "counter store unavailable: each worker keeps partners under 1/N of their "
                "QPS cap on its own",
                extra={"error": str(error), "workers": self.workers},
            )
        if partner.fallback_second != second:  # this worker's part of the second, once
            partner.fallback_second = second
            if partner.taken_second != second:  # none of this second's tokens from the store:
                # had some been, its 1/N on top could take the partner past its cap.
                limiter.second = second
                limiter.next_tokens = 0
                limiter.tokens = max(1, cap // self.workers)


async def keep_shared_qps(
    registry: DemandRegistry, store: CounterStore, workers: int, index: int
) -> None:
    """The keeper as a task of the worker's life."""
    keeper = SharedQpsKeeper(registry, store, workers, index)
    with contextlib.suppress(asyncio.CancelledError):
        await keeper.run_forever()
