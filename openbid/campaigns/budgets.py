"""Spend: what each campaign spent each day, recorded from billing (or impression) events
once per bid id, in a `CounterStore` shared by every serving process (Redis) or in process.

A billing notice can arrive twice (a retried pixel, a second notice URL), and at any worker;
`SpendLedger.record` marks the bid id first (`set_once`) and adds the cost only the first
time. If adding fails after the mark was set, the mark is removed again so a retry of the
same notice can record it (at worst, when Redis fails between the two, a notice is lost,
which the budget's banker bounds: spend is also counted against the worker's slice).

Days are market days (`openbid.clock`): `day_of(ts_s)` counts whole days since the epoch in
the campaign's time zone, given as an offset from UTC.

>>> from openbid.stores import MemoryCounterStore
>>> ledger = SpendLedger(MemoryCounterStore())
>>> ledger.record("c1", "bid-1", 2_500, day=20_000), ledger.record("c1", "bid-1", 2_500, day=20_000)
(True, False)
>>> ledger.spent_micros("c1", day=20_000)
2500
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from openbid.errors import OpenbidError
from openbid.stores.base import CounterStore, StoreUnavailable

DAY_S = 86_400


class BudgetError(OpenbidError, ValueError):
    """A spend or budget value that cannot be right; the message names it."""


def day_of(ts_s: float, utc_offset_s: int = 0) -> int:
    """The market day of a time (seconds since the epoch), in a zone `utc_offset_s` east of UTC.

    >>> day_of(86_400 * 20_000 + 10), day_of(86_400 * 20_000 + 10, utc_offset_s=-3600)
    (20000, 19999)
    """
    return int((ts_s + utc_offset_s) // DAY_S)


def bid_mark_key(bid_id: str) -> str:
    """The once-per-bid-id mark of a recorded spend (its existence: the bid was billed)."""
    return f"spend:bid:{bid_id}"


def spend_key(campaign_id: str, day: int) -> str:
    return f"spend:{campaign_id}:{day}"


def _check(cost_micros: int, bid_id: str) -> None:
    if not bid_id:
        raise BudgetError("bid_id: required to record spend once")
    if cost_micros < 0:
        raise BudgetError(f"cost_micros: must be >= 0, got {cost_micros}")


class SpendLedger:
    """Per campaign and day spend, idempotent by bid id.

    Marks live `mark_ttl_s` (a notice later than that for the same bid counts again: keep it
    longer than the notice URLs live, `TrackerSigner.mark_ttl_s`); day counters live
    `day_ttl_s`.
    """

    def __init__(
        self,
        store: CounterStore,
        *,
        mark_ttl_s: float = 3 * DAY_S,
        day_ttl_s: float = 8 * DAY_S,
    ) -> None:
        self.store = store
        self.mark_ttl_s = mark_ttl_s
        self.day_ttl_s = day_ttl_s

    def record(self, campaign_id: str, bid_id: str, cost_micros: int, day: int) -> bool:
        """Adds the cost of a bid's billing event; False (nothing added) for a duplicate."""
        _check(cost_micros, bid_id)
        mark = bid_mark_key(bid_id)
        if not self.store.set_once(mark, self.mark_ttl_s):
            return False
        try:
            self.store.add(spend_key(campaign_id, day), int(cost_micros), self.day_ttl_s)
        except StoreUnavailable:
            with contextlib.suppress(StoreUnavailable):
                self.store.delete(mark)
            raise
        return True

    async def arecord(self, campaign_id: str, bid_id: str, cost_micros: int, day: int) -> bool:
        """`record` without blocking the event loop."""
        _check(cost_micros, bid_id)
        mark = bid_mark_key(bid_id)
        if not await self.store.aset_once(mark, self.mark_ttl_s):
            return False
        try:
            await self.store.aadd(spend_key(campaign_id, day), int(cost_micros), self.day_ttl_s)
        except StoreUnavailable:
            with contextlib.suppress(StoreUnavailable):
                await self.store.adelete(mark)
            raise
        return True

    def spent_micros(self, campaign_id: str, day: int) -> int:
        return self.store.get(spend_key(campaign_id, day))

    def spent_many(self, campaign_ids: Sequence[str], day: int) -> list[int]:
        """Several campaigns' spend in one round trip."""
        return self.store.get_many([spend_key(c, day) for c in campaign_ids])

    async def aspent_many(self, campaign_ids: Sequence[str], day: int) -> list[int]:
        return await self.store.aget_many([spend_key(c, day) for c in campaign_ids])
