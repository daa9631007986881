"""The banker: budget shared by several serving processes without a Redis call per bid.

Each worker takes slices of a campaign's daily budget from one shared counter
(`budget:<campaign>:<day>`, a `CounterStore.reserve`: add only while the total stays within
the budget, atomically) and spends them locally (RTBkit's banker and its agents work the
same way). On the hot path a bid holds its price against the worker's slice (`hold`: two
integer operations, no I/O); the auction's outcome settles the hold (`settle`: the cost
becomes spend, the rest goes back to the slice) or frees it (`release`). A keeper in the
background (`top_up`, or the `keep` task) takes a new slice before the current one runs
out, sized to a few seconds of the worker's spend, and smaller as the budget's end nears so
the last of it is shared rather than stranded in one worker; `give_back` returns what a
worker does not need (at the end of a day, at shutdown, or when it holds far more than its
recent spend). A day's change closes yesterday's account without I/O (`open`): what it
did not spend waits in `closed` until `give_back_closed` / `agive_back_closed` (the keeper,
or the house's pacing tick) returns it, off the event loop.

Why spend never exceeds a budget by more than one bid: the workers' slices together never
exceed the budget (the compare-and-add), and a worker only bids what its slice still holds,
counting its bids in flight against it. The one way past is spend a worker did not hold: a
win notice for a bid whose hold was already released (`charge`), which a caller bounds by
keeping holds until the notice window closes.

>>> from openbid.stores import MemoryCounterStore
>>> store = MemoryCounterStore()
>>> worker = Banker(store, min_slice_micros=2_000)
>>> account = worker.open("c1", day=1, budget_micros=10_000)
>>> worker.top_up(), account.available_micros, store.get("budget:c1:1")
(1, 2000, 2000)
>>> worker.hold("c1", 1_500), worker.hold("c1", 1_500)   # the second waits for a top-up
(True, False)
>>> worker.settle("c1", held_micros=1_500, cost_micros=1_200); account.available_micros
800
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from openbid.campaigns.budgets import DAY_S, BudgetError
from openbid.stores.base import CounterStore, StoreUnavailable

log = logging.getLogger(__name__)


def budget_key(campaign_id: str, day: int) -> str:
    return f"budget:{campaign_id}:{day}"


@dataclass
class Account:
    """One campaign-day in one worker. `reserved` came from the shared counter; `spent` and
    `held` (bids in flight) are counted against it."""

    campaign_id: str
    day: int
    budget_micros: int
    reserved_micros: int = 0
    spent_micros: int = 0
    held_micros: int = 0
    exhausted: bool = False
    """The shared budget had nothing left to give at the last look (at `exhausted_s`)."""
    exhausted_s: float = 0.0
    refused: int = 0
    """Holds refused for want of a slice."""
    refused_micros: int = 0
    """What the refused holds asked for, in all: the demand the slice did not meet."""
    refused_seen: int = 0
    refused_micros_seen: int = 0
    last_slice_micros: int = 0
    checked_s: float = 0.0
    spent_at_check: int = 0
    rate_micros_per_s: float = 0.0

    @property
    def available_micros(self) -> int:
        return self.reserved_micros - self.spent_micros - self.held_micros


class Banker:
    """One worker's side of the shared budgets.

    Slices: `horizon_s` of the worker's recent spend rate, within `[min_slice_micros,
    max_slice_micros]` and at most `1 / share_divisor` of what is left unreserved (about the
    number of workers, so the last of a budget is split among them). A top-up starts once an
    account holds less than `low_water` of its next slice.
    """

    def __init__(
        self,
        store: CounterStore,
        *,
        min_slice_micros: int = 1_000,
        max_slice_micros: int = 5_000_000,
        horizon_s: float = 2.0,
        low_water: float = 0.5,
        share_divisor: int = 4,
        recheck_s: float = 0.5,
        key_ttl_s: float = 3 * DAY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < min_slice_micros <= max_slice_micros:
            raise BudgetError("min_slice_micros: must be > 0 and <= max_slice_micros")
        if not 0 < low_water <= 1 or share_divisor < 1 or horizon_s <= 0:
            raise BudgetError("low_water in (0, 1], share_divisor >= 1, horizon_s > 0")
        self.store = store
        self.min_slice_micros = min_slice_micros
        self.max_slice_micros = max_slice_micros
        self.horizon_s = horizon_s
        self.low_water = low_water
        self.share_divisor = share_divisor
        self.recheck_s = recheck_s
        self.key_ttl_s = key_ttl_s
        self._clock = clock
        self.accounts: dict[str, Account] = {}
        self.closed: list[Account] = []
        """Accounts of past days whose unspent slice is still to be given back. Nothing
        changes them once closed (holds of their day settle as charges to the new one)."""
        self._wanted: asyncio.Event | None = None

    # ---- the hot path: no I/O --------------------------------------------------------

    def hold(self, campaign_id: str, amount_micros: int) -> bool:
        """Holds a bid's price against the slice; False (do not bid) when it does not fit."""
        account = self.accounts.get(campaign_id)
        if account is None:
            return False
        if account.reserved_micros - account.spent_micros - account.held_micros >= amount_micros:
            account.held_micros += amount_micros
            return True
        account.refused += 1
        account.refused_micros += amount_micros
        if self._wanted is not None:
            self._wanted.set()
        return False

    def settle(
        self, campaign_id: str, held_micros: int, cost_micros: int, day: int | None = None
    ) -> None:
        """A held bid won: its cost (at most what it held) is spent, the rest freed. `day`:
        the day of the account that held it; a hold of a day since closed was never counted
        in today's account, so only its cost is (as a `charge`)."""
        account = self.accounts.get(campaign_id)
        if account is None:
            return
        if day is None or day == account.day:
            account.held_micros -= held_micros
        account.spent_micros += cost_micros

    def release(self, campaign_id: str, held_micros: int, day: int | None = None) -> None:
        """A held bid lost, timed out or was not sent: its hold is freed (nothing, for a hold
        of a day since closed: `settle`)."""
        account = self.accounts.get(campaign_id)
        if account is not None and (day is None or day == account.day):
            account.held_micros -= held_micros

    def day_of(self, campaign_id: str) -> int | None:
        """The day of a campaign's open account (None: none open)."""
        account = self.accounts.get(campaign_id)
        return account.day if account is not None else None

    def charge(self, campaign_id: str, cost_micros: int) -> None:
        """Spend this worker did not hold (a notice that reached it for another worker's bid,
        or after the hold was released): counted against its slice all the same."""
        account = self.accounts.get(campaign_id)
        if account is not None:
            account.spent_micros += cost_micros

    # ---- accounts ----------------------------------------------------------------------

    def open(self, campaign_id: str, day: int, budget_micros: int) -> Account:
        """Starts (or continues) a campaign's day; a previous day's account is closed (no
        I/O: its unspent slice is given back later, `agive_back_closed`)."""
        if budget_micros < 0:
            raise BudgetError(f"budget_micros: must be >= 0, got {budget_micros}")
        current = self.accounts.get(campaign_id)
        if current is not None and current.day == day:
            current.budget_micros = budget_micros
            current.exhausted = False
            return current
        if current is not None and current.available_micros > 0:
            self.closed.append(current)
        account = Account(campaign_id, day, budget_micros, checked_s=self._clock())
        self.accounts[campaign_id] = account
        return account

    def _slice(self, account: Account, left_micros: int) -> int:
        # Enough for `horizon_s` of spend plus what is in flight; and while holds are being
        # refused (the rate estimate lags a rising load: a worker starting, a burst), at least
        # twice the last slice and twice the demand refused since it (slow start).
        wanted = account.rate_micros_per_s * self.horizon_s + account.held_micros
        if account.refused > account.refused_seen:
            unmet = account.refused_micros - account.refused_micros_seen
            wanted = max(wanted, 2 * account.last_slice_micros, 2 * unmet)
        size = min(max(wanted, self.min_slice_micros), self.max_slice_micros)
        share = max(left_micros // self.share_divisor, self.min_slice_micros)
        return int(min(size, share, left_micros))

    def _measure(self, account: Account, now: float) -> None:
        elapsed = now - account.checked_s
        if elapsed <= 0:
            return
        rate = (account.spent_micros - account.spent_at_check) / elapsed
        # Weight the new measurement by how long it covered (a 1 s time constant).
        weight = 1.0 - math.exp(-elapsed)
        account.rate_micros_per_s += weight * (rate - account.rate_micros_per_s)
        account.checked_s = now
        account.spent_at_check = account.spent_micros

    def _needs(self, account: Account, now: float) -> bool:
        if account.exhausted and now - account.exhausted_s < self.recheck_s:
            return False
        if account.refused > account.refused_seen:
            return True
        wanted = max(account.rate_micros_per_s * self.horizon_s, self.min_slice_micros)
        return account.available_micros < self.low_water * min(wanted, self.max_slice_micros)

    def top_up(self) -> int:
        """Takes a slice for every account running low (blocking store calls: run it in a
        thread or a process's keeper, never on the event loop); returns how many it took."""
        if self.closed:
            self.give_back_closed()
        taken = 0
        now = self._clock()
        for account in list(self.accounts.values()):
            self._measure(account, now)
            if not self._needs(account, now):
                continue
            key = budget_key(account.campaign_id, account.day)
            try:
                taken += self._take(account, key)
            except StoreUnavailable as exc:
                log.warning("budget top-up failed", extra={"key": key, "error": str(exc)})
        return taken

    def _take(self, account: Account, key: str) -> int:
        for _ in range(3):
            left = account.budget_micros - self.store.get(key)
            size = self._slice(account, left)
            if size <= 0:
                account.exhausted, account.exhausted_s = True, self._clock()
                return 0
            if self.store.reserve(key, size, account.budget_micros, self.key_ttl_s):
                self._took(account, size)
                return 1
        return 0

    @staticmethod
    def _took(account: Account, size: int) -> None:
        account.reserved_micros += size
        account.exhausted = False
        account.refused_seen = account.refused
        account.refused_micros_seen = account.refused_micros
        account.last_slice_micros = size

    async def atop_up(self) -> int:
        """`top_up` on the event loop (the store's asynchronous calls)."""
        if self.closed:
            await self.agive_back_closed()
        taken = 0
        now = self._clock()
        for account in list(self.accounts.values()):
            self._measure(account, now)
            if not self._needs(account, now):
                continue
            key = budget_key(account.campaign_id, account.day)
            try:
                for _ in range(3):
                    left = account.budget_micros - await self.store.aget(key)
                    size = self._slice(account, left)
                    if size <= 0:
                        account.exhausted, account.exhausted_s = True, self._clock()
                        break
                    if await self.store.areserve(key, size, account.budget_micros, self.key_ttl_s):
                        self._took(account, size)
                        taken += 1
                        break
            except StoreUnavailable as exc:
                log.warning("budget top-up failed", extra={"key": key, "error": str(exc)})
        return taken

    async def keep(self, stop: asyncio.Event, interval_s: float = 0.05) -> None:
        """The keeper task: tops up every `interval_s` (real time), or at once when a hold is
        refused; returns the accounts' unspent slices when `stop` is set."""
        self._wanted = wanted = asyncio.Event()
        try:
            while not stop.is_set():
                await self.atop_up()
                wanted.clear()
                waiter = asyncio.ensure_future(wanted.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait(
                    {waiter, stopper}, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                stopper.cancel()
        finally:
            self._wanted = None
            await self.agive_back_all()

    def _give_back(self, account: Account, amount_micros: int) -> int:
        amount = min(amount_micros, account.available_micros)
        if amount <= 0:
            return 0
        key = budget_key(account.campaign_id, account.day)
        try:
            self.store.add(key, -amount, self.key_ttl_s)
        except StoreUnavailable as exc:
            log.warning("budget give-back failed", extra={"key": key, "error": str(exc)})
            return 0
        account.reserved_micros -= amount
        return amount

    def give_back_closed(self) -> int:
        """Returns the closed accounts' unspent slices (blocking store calls: a thread or a
        process's keeper); an account whose give-back failed stays for the next call."""
        pending, self.closed = self.closed, []
        returned = 0
        for account in pending:
            amount = self._give_back(account, account.available_micros)
            returned += amount
            if account.available_micros > 0:
                self.closed.append(account)
        return returned

    async def agive_back_closed(self) -> int:
        """`give_back_closed` on the event loop (the store's asynchronous calls). The list is
        taken whole first, so accounts closed meanwhile wait for the next call."""
        pending, self.closed = self.closed, []
        returned = 0
        for index, account in enumerate(pending):
            amount = account.available_micros
            key = budget_key(account.campaign_id, account.day)
            try:
                await self.store.aadd(key, -amount, self.key_ttl_s)
            except StoreUnavailable as exc:
                log.warning("budget give-back failed", extra={"key": key, "error": str(exc)})
                self.closed.extend(pending[index:])
                break
            account.reserved_micros -= amount
            returned += amount
        return returned

    def give_back(self, campaign_id: str, keep_micros: int = 0) -> int:
        """Returns the unspent, unheld part of a slice beyond `keep_micros` to the shared
        budget (for other workers to take); returns the amount."""
        account = self.accounts.get(campaign_id)
        if account is None:
            return 0
        return self._give_back(account, account.available_micros - keep_micros)

    def give_back_all(self) -> int:
        returned = self.give_back_closed()
        return returned + sum(self.give_back(campaign_id) for campaign_id in list(self.accounts))

    async def agive_back_all(self) -> int:
        """`give_back_all` on the event loop."""
        returned = await self.agive_back_closed()
        for account in list(self.accounts.values()):
            amount = account.available_micros
            if amount <= 0:
                continue
            key = budget_key(account.campaign_id, account.day)
            try:
                await self.store.aadd(key, -amount, self.key_ttl_s)
            except StoreUnavailable as exc:
                log.warning("budget give-back failed", extra={"key": key, "error": str(exc)})
                continue
            account.reserved_micros -= amount
            returned += amount
        return returned
