"""The banker: budget slices from one shared counter, spent locally; never past the budget,
in memory, on the real Redis, and across four worker processes."""

import asyncio
import threading

import pytest

from openbid.campaigns.banker import Banker, budget_key
from openbid.campaigns.budgets import BudgetError
from openbid.stores import MemoryCounterStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_slice_is_held_settled_and_released_locally(counter_store):
    banker = Banker(counter_store, min_slice_micros=10_000)
    account = banker.open("c1", day=3, budget_micros=1_000_000)
    assert not banker.hold("c1", 1)  # nothing reserved yet: no bid, and no waiting
    assert banker.top_up() == 1
    assert counter_store.get(budget_key("c1", 3)) == account.reserved_micros == 10_000
    assert banker.hold("c1", 4_000) and banker.hold("c1", 4_000)
    assert not banker.hold("c1", 4_000)  # 8,000 in flight: 2,000 left
    banker.settle("c1", held_micros=4_000, cost_micros=2_500)  # second price: paid less
    banker.release("c1", held_micros=4_000)  # lost
    assert (account.spent_micros, account.held_micros, account.available_micros) == (
        2_500,
        0,
        7_500,
    )
    banker.charge("c1", 500)  # a notice for a bid this worker did not hold
    assert account.available_micros == 7_000
    assert banker.give_back("c1", keep_micros=1_000) == 6_000
    assert counter_store.get(budget_key("c1", 3)) == 4_000 == account.reserved_micros
    assert not banker.hold("unknown", 1)


def test_bankers_sharing_a_budget_never_reserve_more_than_it(counter_store):
    budget = 200_000
    bankers = [Banker(counter_store, min_slice_micros=7_000) for _ in range(6)]
    for banker in bankers:
        banker.open("c1", day=1, budget_micros=budget)
    spent = [0] * len(bankers)

    def spend(index: int) -> None:
        banker = bankers[index]
        for _ in range(400):
            banker.top_up()
            if banker.hold("c1", 900):
                banker.settle("c1", 900, 900)
                spent[index] += 900

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(len(bankers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter_store.get(budget_key("c1", 1)) <= budget
    assert sum(spent) <= budget
    assert sum(spent) > budget - len(bankers) * 900  # only the crumbs below a bid remain
    for banker in bankers:
        banker.give_back_all()
    assert counter_store.get(budget_key("c1", 1)) == sum(spent)


def test_slices_shrink_as_the_budget_runs_out_and_come_back_when_returned(counter_store):
    clock = Clock()
    first = Banker(counter_store, min_slice_micros=1_000, max_slice_micros=50_000, clock=clock)
    second = Banker(counter_store, min_slice_micros=1_000, max_slice_micros=50_000, clock=clock)
    a = first.open("c1", day=2, budget_micros=40_000)
    b = second.open("c1", day=2, budget_micros=40_000)
    a.rate_micros_per_s = b.rate_micros_per_s = 1e9  # each wants a big slice
    first.top_up()
    assert a.reserved_micros == 10_000  # a quarter of what is left
    second.top_up()
    assert b.reserved_micros == 7_500
    for _ in range(100):  # the first worker spends all it can get
        first.top_up()
        while first.hold("c1", 500):
            first.settle("c1", 500, 500)
    assert counter_store.get(budget_key("c1", 2)) == 40_000
    assert a.exhausted and a.spent_micros == 40_000 - b.reserved_micros
    second.give_back("c1")
    assert first.top_up() == 0  # exhausted: it looks again only after recheck_s
    clock.now += first.recheck_s
    assert first.top_up() == 1 and not a.exhausted


def test_a_new_day_returns_yesterdays_unspent_slice(counter_store):
    banker = Banker(counter_store, min_slice_micros=5_000)
    banker.open("c1", day=7, budget_micros=100_000)
    banker.top_up()
    assert banker.hold("c1", 1_000)
    banker.settle("c1", 1_000, 1_000)
    account = banker.open("c1", day=8, budget_micros=100_000)
    assert counter_store.get(budget_key("c1", 7)) == 5_000  # open does no I/O
    assert banker.give_back_closed() == 4_000
    assert counter_store.get(budget_key("c1", 7)) == 1_000
    assert account.day == 8 and account.reserved_micros == 0 and not banker.closed


class _NoBlockingOnTheLoop(MemoryCounterStore):
    """A store whose blocking calls fail when made on a running event loop's thread."""

    def add(self, key, delta=1, ttl_s=None):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return super().add(key, delta, ttl_s)
        raise AssertionError("a blocking store call on the event loop")

    async def aadd(self, key, delta=1, ttl_s=None):
        return await asyncio.to_thread(self.add, key, delta, ttl_s)


def test_the_day_change_gives_yesterdays_slice_back_off_the_event_loop():
    store = _NoBlockingOnTheLoop()
    banker = Banker(store, min_slice_micros=5_000)
    banker.open("c1", day=7, budget_micros=100_000)
    banker.top_up()
    assert banker.hold("c1", 1_000)

    async def main() -> int:
        banker.open("c1", day=8, budget_micros=100_000)  # on the loop: no store call
        banker.settle("c1", 1_000, 1_000, day=7)  # yesterday's hold billed today
        return await banker.agive_back_closed()

    assert asyncio.run(main()) == 4_000
    assert store.get(budget_key("c1", 7)) == 1_000 and not banker.closed
    assert banker.accounts["c1"].spent_micros == 1_000  # charged to today's account


def test_the_keeper_tops_up_when_a_hold_is_refused_and_returns_the_slice_at_stop(counter_store):
    banker = Banker(counter_store, min_slice_micros=5_000)
    banker.open("c1", day=1, budget_micros=100_000)

    async def main() -> int:
        stop = asyncio.Event()
        keeper = asyncio.create_task(banker.keep(stop, interval_s=10.0))
        held = 0
        for _ in range(200):
            if banker.hold("c1", 1_000):
                banker.settle("c1", 1_000, 1_000)
                held += 1
            await asyncio.sleep(0.001)
        stop.set()
        await keeper
        return held

    held = asyncio.run(main())
    assert held >= 50  # refusals woke the keeper long before its 10 s interval
    assert counter_store.get(budget_key("c1", 1)) == held * 1_000  # the rest went back


def test_bad_settings_are_refused_naming_them():
    from openbid.stores import MemoryCounterStore

    with pytest.raises(BudgetError, match="min_slice_micros"):
        Banker(MemoryCounterStore(), min_slice_micros=0)
    with pytest.raises(BudgetError, match="budget_micros"):
        Banker(MemoryCounterStore()).open("c1", day=1, budget_micros=-1)


def test_four_worker_processes_on_redis_never_overspend_by_more_than_one_bid(redis_url):
    from openbid.campaigns.bankerload import run_load

    result = run_load(redis_url, workers=4, budget_micros=4_000_000, seconds=6.0, concurrency=16)
    assert result.overspend_bids <= 1.0
    assert result.spend_micros <= result.budget_micros + result.max_bid_micros
    assert result.reserved_micros == result.spend_micros  # every unspent slice came back
    assert result.delivered_share >= 0.95  # and little was stranded in a worker
    assert sum(w.spent_micros for w in result.workers) == result.spend_micros
    assert sum(w.duplicates_ignored for w in result.workers) > 0  # duplicates did arrive
    assert all(w.wins > 0 for w in result.workers)  # all four took part
