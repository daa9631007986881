"""A check of the banker's promise under load: several worker processes, each with its own
`Banker` over a real Redis, bid concurrently against one shared budget; at the end, spend
must not pass the budget by more than one bid and little of it may be left stranded.
The tests run it on the test Redis and `bench/pacing.py` measures it; it runs against any
Redis (under a fresh key prefix, deleted afterwards).

Each worker runs `concurrency` bidding tasks on an asyncio loop: a bid holds its price
against the worker's slice (no Redis on that path), waits for its auction (a few ms), then
wins (its billing notice is recorded in the `SpendLedger`, idempotent by bid id, and is sent
twice for a share of the bids, as a retried pixel would) or loses. The banker's keeper tops
the slice up in the background. A worker stops at its deadline, or once the budget has
had nothing to give for `idle_stop_s`, and returns its unspent slice.

>>> result = run_load(None, workers=2, budget_micros=200_000, seconds=1.0, concurrency=8)
>>> result.overspend_bids <= 1.0, result.reserved_micros <= result.budget_micros
(True, True)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import secrets
import time
from dataclasses import dataclass

from openbid.campaigns.banker import Banker, budget_key
from openbid.campaigns.budgets import SpendLedger
from openbid.stores.base import CounterStore
from openbid.stores.memory import MemoryCounterStore

CAMPAIGN = "load-campaign"
DAY = 1


@dataclass(frozen=True)
class WorkerLoad:
    """What one worker did."""

    holds: int
    refused: int
    starved: int
    """Holds refused while the shared budget still had money (the slice ran dry first)."""
    wins: int
    duplicates_ignored: int
    spent_micros: int
    hold_ns_p99: int
    """The 99th percentile of one `hold` call (the hot path), in nanoseconds."""


@dataclass(frozen=True)
class LoadResult:
    budget_micros: int
    spend_micros: int
    """What the ledger recorded (every worker, deduplicated)."""
    reserved_micros: int
    """What the shared budget counter holds at the end (all slices returned: the spend)."""
    max_bid_micros: int
    workers: list[WorkerLoad]

    @property
    def overspend_bids(self) -> float:
        """Spend past the budget, in bids of the largest price (0 when within it)."""
        return max(0, self.spend_micros - self.budget_micros) / self.max_bid_micros

    @property
    def delivered_share(self) -> float:
        return self.spend_micros / self.budget_micros


async def _work(
    store: CounterStore,
    budget_micros: int,
    seconds: float,
    concurrency: int,
    seed: int,
    win_rate: float,
    duplicate_share: float,
    bid_range_micros: tuple[int, int],
    idle_stop_s: float,
    worker: int,
) -> WorkerLoad:
    banker = Banker(store, min_slice_micros=bid_range_micros[1], horizon_s=0.5)
    banker.open(CAMPAIGN, DAY, budget_micros)
    ledger = SpendLedger(store)
    stop = asyncio.Event()
    keeper = asyncio.create_task(banker.keep(stop, interval_s=0.02))
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    counts = {"holds": 0, "refused": 0, "starved": 0, "wins": 0, "duplicates": 0}
    account = banker.accounts[CAMPAIGN]
    hold_ns: list[int] = []
    last_hold = [time.monotonic()]

    async def bidder(task: int) -> None:
        serial = 0
        while time.monotonic() < deadline and not stop.is_set():
            price = rng.randint(*bid_range_micros)
            started = time.perf_counter_ns()
            held = banker.hold(CAMPAIGN, price)
            if len(hold_ns) < 200_000:
                hold_ns.append(time.perf_counter_ns() - started)
            if not held:
                counts["refused"] += 1
                counts["starved"] += not account.exhausted
                if time.monotonic() - last_hold[0] > idle_stop_s:
                    stop.set()
                await asyncio.sleep(0.002)
                continue
            counts["holds"] += 1
            last_hold[0] = time.monotonic()
            await asyncio.sleep(rng.uniform(0.0005, 0.003))  # the auction
            if rng.random() < win_rate:
                serial += 1
                bid_id = f"w{worker}-t{task}-{serial}-{seed}"
                recorded = await ledger.arecord(CAMPAIGN, bid_id, price, DAY)
                if rng.random() < duplicate_share and not await ledger.arecord(
                    CAMPAIGN, bid_id, price, DAY
                ):
                    counts["duplicates"] += 1
                if recorded:
                    banker.settle(CAMPAIGN, price, price)
                    counts["wins"] += 1
                else:
                    banker.release(CAMPAIGN, price)
            else:
                banker.release(CAMPAIGN, price)

    await asyncio.gather(*(bidder(task) for task in range(concurrency)))
    stop.set()
    await keeper
    spent = banker.accounts[CAMPAIGN].spent_micros
    hold_ns.sort()
    p99 = hold_ns[int(len(hold_ns) * 0.99)] if hold_ns else 0
    return WorkerLoad(
        counts["holds"],
        counts["refused"],
        counts["starved"],
        counts["wins"],
        counts["duplicates"],
        spent,
        p99,
    )


def _worker_main(arguments: dict) -> WorkerLoad:
    from openbid.stores.redis import RedisCounterStore

    store = RedisCounterStore(
        arguments.pop("redis_url"), prefix=arguments.pop("prefix"), timeout_s=1.0
    )
    start_at = arguments.pop("start_at")
    time.sleep(max(0.0, start_at - time.time()))  # every worker starts at once

    async def main() -> WorkerLoad:
        try:
            return await _work(store, **arguments)
        finally:
            await store.aclose()

    return asyncio.run(main())


def run_load(
    redis_url: str | None,
    *,
    workers: int = 4,
    budget_micros: int = 2_000_000,
    seconds: float = 5.0,
    concurrency: int = 32,
    win_rate: float = 0.3,
    duplicate_share: float = 0.05,
    bid_range_micros: tuple[int, int] = (500, 5_000),
    idle_stop_s: float = 0.5,
    seed: int = 1,
) -> LoadResult:
    """Runs `workers` processes on Redis at `redis_url` (under a fresh key prefix), or, with
    `None`, the same workers as tasks of this process on one in-process store."""
    common = dict(
        budget_micros=budget_micros,
        seconds=seconds,
        concurrency=concurrency,
        win_rate=win_rate,
        duplicate_share=duplicate_share,
        bid_range_micros=bid_range_micros,
        idle_stop_s=idle_stop_s,
    )
    if redis_url is None:
        store: CounterStore = MemoryCounterStore()

        async def together() -> list[WorkerLoad]:
            return await asyncio.gather(
                *(_work(store, seed=seed + i, worker=i, **common) for i in range(workers))
            )

        loads = asyncio.run(together())
    else:
        from openbid.stores.redis import RedisCounterStore

        prefix = f"budgetload:{secrets.token_hex(4)}:"
        start_at = time.time() + 1.5 + 0.5 * workers  # time for the processes to start
        jobs = [
            dict(
                common,
                seed=seed + i,
                worker=i,
                redis_url=redis_url,
                prefix=prefix,
                start_at=start_at,
            )
            for i in range(workers)
        ]
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            loads = pool.map(_worker_main, jobs)
        store = RedisCounterStore(redis_url, prefix=prefix, timeout_s=1.0)
    ledger = SpendLedger(store)
    spend = ledger.spent_micros(CAMPAIGN, DAY)
    reserved = store.get(budget_key(CAMPAIGN, DAY))
    if redis_url is not None:
        _cleanup(store, prefix)
        store.close()
    return LoadResult(budget_micros, spend, reserved, bid_range_micros[1], list(loads))


def _cleanup(store, prefix: str) -> None:
    """Deletes the run's keys (bid marks, counters) under its own prefix."""
    import redis

    client = redis.Redis.from_url(store.url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()
