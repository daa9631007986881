"""The pacing of many line items over many days, on the one clock: what a serving process
keeps, updated every slot off the request path, read by every bid.

`Pacer.tick(spent, requests)` takes each line item's spend today (all workers: the shared
ledger) and the requests it could bid on since the last tick (this worker's count, scaled
by the caller if it wants the fleet's), reads market time from `openbid.clock` (a market
clock runs days in minutes), starts a new day's controller when the day turns (with what
the old one learned), and returns each line item's `PacingDecision`. `decision(item)` is
the hot path's read: one dict lookup.

>>> from openbid.campaigns.pacing import PacingSettings
>>> pacer = Pacer(PacingSettings(slot_s=600))
>>> pacer.set_line_item("li-1", daily_budget_micros=24_000_000)
>>> decision = pacer.tick({"li-1": 0}, {"li-1": 1_000}, now_s=86_400.0 * 20_000 + 3_600)
>>> decision["li-1"].target_micros > 0, pacer.decision("li-1") is decision["li-1"]
(True, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from openbid import clock
from openbid.campaigns.pacing import (
    DAY_S,
    PacingController,
    PacingDecision,
    PacingMemory,
    PacingSettings,
    SpendPlan,
)

NO_BIDS = PacingDecision(0.0, 0.0, 0, 0)
"""The decision for an unknown line item, or one whose day has not started."""


@dataclass
class _LineItem:
    daily_budget_micros: int
    shares: tuple[float, ...] | None
    utc_offset_s: int
    settings: PacingSettings
    controller: PacingController | None = None
    memory: PacingMemory | None = None
    decision: PacingDecision = NO_BIDS


class Pacer:
    """Controllers by line item, rolled over at each line item's midnight."""

    def __init__(self, settings: PacingSettings | None = None) -> None:
        self.settings = settings or PacingSettings()
        self._items: dict[str, _LineItem] = {}

    def set_line_item(
        self,
        line_item_id: str,
        daily_budget_micros: int,
        forecast: Sequence[float] | None = None,
        utc_offset_s: int = 0,
        settings: PacingSettings | None = None,
    ) -> None:
        """Adds or changes a line item: its daily budget, its plan's shape (`forecast`:
        traffic by hour of its day; None: even), and its own settings if they differ from
        the pacer's (a guaranteed line item at a fixed price: `mode="throttle"`). A change
        applies from the next day."""
        item = self._items.get(line_item_id)
        shares = tuple(float(x) for x in forecast) if forecast is not None else None
        chosen = settings or self.settings
        if item is None:
            item = _LineItem(daily_budget_micros, shares, utc_offset_s, chosen)
            self._items[line_item_id] = item
        else:
            item.daily_budget_micros, item.shares = daily_budget_micros, shares
            item.utc_offset_s, item.settings = utc_offset_s, chosen

    def remove_line_item(self, line_item_id: str) -> None:
        self._items.pop(line_item_id, None)

    def decision(self, line_item_id: str) -> PacingDecision:
        """The current decision for a line item (the hot path's read)."""
        item = self._items.get(line_item_id)
        return item.decision if item is not None else NO_BIDS

    def tick(
        self,
        spent_micros: Mapping[str, int],
        requests: Mapping[str, int] | None = None,
        now_s: float | None = None,
    ) -> dict[str, PacingDecision]:
        """Updates every line item's controller; market time from `openbid.clock` unless
        `now_s` is given. A line item missing from `spent_micros` has spent nothing today."""
        now_s = clock.now() if now_s is None else now_s
        decisions = {}
        for line_item_id, item in self._items.items():
            day_start = (now_s + item.utc_offset_s) // DAY_S * DAY_S - item.utc_offset_s
            controller = item.controller
            if controller is None or controller.plan.day_start_s != day_start:
                if controller is not None:
                    item.memory = controller.remember()
                plan = (
                    SpendPlan.from_forecast(day_start, item.shares)
                    if item.shares
                    else SpendPlan.even(day_start)
                )
                controller = item.controller = PacingController(
                    plan, item.daily_budget_micros, item.settings, memory=item.memory
                )
            count = None if requests is None else requests.get(line_item_id, 0)
            item.decision = controller.update(now_s, spent_micros.get(line_item_id, 0), count)
            decisions[line_item_id] = item.decision
        return decisions
