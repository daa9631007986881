"""Spend recorded from billing events once per bid id, in memory and in the real Redis."""

import asyncio
import threading

import pytest

from openbid.campaigns.budgets import BudgetError, SpendLedger, day_of
from openbid.stores import MemoryCounterStore, StoreUnavailable


def test_a_billing_event_counts_once_however_often_it_arrives(counter_store):
    ledger = SpendLedger(counter_store)
    assert ledger.record("c1", "bid-1", 1_200, day=5)
    assert not ledger.record("c1", "bid-1", 1_200, day=5)
    assert ledger.record("c1", "bid-2", 800, day=5)
    assert ledger.record("c2", "bid-3", 500, day=5)
    assert ledger.spent_micros("c1", day=5) == 2_000
    assert ledger.spent_many(["c1", "c2", "c3"], day=5) == [2_000, 500, 0]
    assert ledger.spent_micros("c1", day=6) == 0


def test_concurrent_duplicates_from_many_threads_count_once(counter_store):
    ledger = SpendLedger(counter_store)
    recorded = []

    def notices(thread: int) -> None:
        for bid in range(50):  # every thread sends every notice: 8 copies of each
            recorded.append(ledger.record("c1", f"bid-{bid}", 100 + bid, day=1))

    threads = [threading.Thread(target=notices, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(recorded) == 50
    assert ledger.spent_micros("c1", day=1) == sum(100 + bid for bid in range(50))


def test_the_event_loop_twins_are_idempotent_too(counter_store):
    ledger = SpendLedger(counter_store)

    async def main():
        results = await asyncio.gather(*(ledger.arecord("c1", "bid-9", 700, 3) for _ in range(5)))
        return results, await ledger.aspent_many(["c1"], 3)

    results, spent = asyncio.run(main())
    assert sorted(results) == [False] * 4 + [True]
    assert spent == [700]


class FlakyAdds(MemoryCounterStore):
    """An in-process store whose adds fail while `failing`, as Redis does when it goes away
    between two commands."""

    failing = True

    def add(self, key, delta=1, ttl_s=None):
        if self.failing:
            raise StoreUnavailable("redis went away")
        return super().add(key, delta, ttl_s)


def test_a_failed_add_removes_the_mark_so_a_retry_records_the_spend_once():
    store = FlakyAdds()
    ledger = SpendLedger(store)
    with pytest.raises(StoreUnavailable):
        ledger.record("c1", "bid-1", 100, day=1)
    assert store.get("spend:bid:bid-1") == 0  # no mark left behind
    store.failing = False
    assert ledger.record("c1", "bid-1", 100, day=1)
    assert not ledger.record("c1", "bid-1", 100, day=1)
    assert ledger.spent_micros("c1", day=1) == 100


@pytest.mark.parametrize(
    ("cost", "bid_id", "message"), [(-1, "b", "cost_micros"), (5, "", "bid_id")]
)
def test_bad_spend_is_refused_naming_the_field(cost, bid_id, message):
    with pytest.raises(BudgetError, match=message):
        SpendLedger(MemoryCounterStore()).record("c1", bid_id, cost, day=1)


def test_days_are_market_days_in_the_campaigns_zone():
    assert day_of(0.0) == 0
    assert day_of(86_399.9) == 0 and day_of(86_400.0) == 1
    assert day_of(3_600.0, utc_offset_s=-7_200) == -1  # 01:00 UTC is yesterday in UTC-2
